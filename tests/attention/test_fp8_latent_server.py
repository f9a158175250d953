"""Through launch_server on CPU: GLM-5's real attention dims (`real-attn`: 512-d latent, 64-d rope) with
`--kv-cache-dtype fp8_e4m3`, so SGLang's DSA pool holds the 656 B FP8 latent rows that our backend writes and the
reference reads. Prompt logprobs against HF transformers in fp32 stay within the FP8 latent's stated tolerance
(README: KV cache dtype). The indexer keys stay in the model dtype (`model` store) and the prompt is shorter than
index_topk (256), so every position attends to every earlier one: only the latent's FP8 rounding moves the result."""

import os

import pytest

from sglang_glm5.attention.index_k_policy import MODEL, STORE_ENV
from sglang_glm5.checkpoint.archs import get_arch
from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from bench.lib import load_client as client
from sglang_glm5.serving.process import ServerProcess
from tests.models.test_hf_parity import prompt_ids, server_logprobs, vocab_size
from tests.oracle import hf_logprobs

pytestmark = pytest.mark.slow

ARCH = get_arch("real-attn")
LENGTH = 130  # < index_topk: the indexer selects every position
# Measured (README: KV cache dtype): FP8 latent max 0.25, mean 0.03; BF16 latent max 0.018, mean 0.002; GLM-5-FP8's
# own weight quantization on the same checkpoint moves HF's logprobs by max 2.4, mean 0.1.
FP8_LATENT_MAX = 0.4
FP8_LATENT_MEAN = 0.05
FLAGS = ["--dtype", "float32", "--kv-cache-dtype", "fp8_e4m3", "--max-total-tokens", "4096", "--mem-fraction-static", "0.3"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("real-attn-bf16"), dtype="bf16", arch=ARCH.name)


@pytest.fixture(scope="module")
def served(checkpoint, server_log_dir):
    log = server_log_dir / "fp8-latent.log"
    ids = prompt_ids(LENGTH, vocab_size(checkpoint))
    with ServerProcess(checkpoint, log, FLAGS, env={**os.environ, STORE_ENV: MODEL}) as server:
        logprobs = server_logprobs(server.url, ids, vocab_size(checkpoint))
        first = client.generate(server.url, ids, 4)
        again = client.generate(server.url, ids, 4)  # a radix-cache hit: the prefix's FP8 rows read back
    return {"ids": ids, "logprobs": logprobs, "first": first, "again": again, "log": log.read_text()}


def test_pool_holds_the_656_byte_fp8_rows(served):
    assert "GLM-5 DSA latent cache: FP8, 656 B per token per layer in SGLang's pool" in served["log"]


def test_prompt_logprobs_within_the_fp8_latent_tolerance_of_hf(served, checkpoint):
    diff = (served["logprobs"] - hf_logprobs(checkpoint, served["ids"]).double()).abs()
    assert diff.max().item() <= FP8_LATENT_MAX and diff.mean().item() <= FP8_LATENT_MEAN, (diff.max(), diff.mean())


def test_radix_cache_hit_reads_the_same_fp8_rows(served):
    assert served["again"]["meta_info"]["cached_tokens"] >= 64
    assert served["again"]["output_ids"] == served["first"]["output_ids"]
