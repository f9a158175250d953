"""GLM-5's real per-layer attention and indexer dims (the `real-attn` arch: 64 heads, q_lora 2048, kv_lora 512 + rope
64, nope 192, v 256, 32 x 128 indexer), served by launch_server, against HF transformers; prompts longer than the
arch's index_topk, so DSA selects.

bf16: the checkpoint is the one HF transformers' own `save_pretrained` writes for a `GlmMoeDsaForCausalLM` (how
community fine-tunes of GLM-5 are published): no MTP tensors while config.json keeps one next-n layer. It serves
without speculative decoding, with a warning naming what is missing; EAGLE on it is refused at start-up naming the
missing tensors. fp8: our writer's block-FP8 checkpoint at GLM-5-FP8's 128 x 128 blocks, HF on a dequantized copy.
"""

import json

import pytest
import torch
from transformers import AutoTokenizer, GlmMoeDsaForCausalLM

from sglang_glm5.checkpoint.archs import get_arch
from sglang_glm5.checkpoint.schema import mtp_tensor_specs
from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from sglang_glm5.checkpoint.validate import read_headers
from sglang_glm5.config import Glm5Config
from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess, ServerStartError
from tests.models.test_hf_parity import assert_prompt_logprobs_match_hf, prompt_ids, vocab_size
from tests.oracle import dequantized_copy, hf_greedy

ARCH = get_arch("real-attn")
PROMPT_LENGTHS = (ARCH.index_topk + 45,)  # > index_topk: DSA selects a strict subset (one length: ~1 min each at real dims)
GREEDY_TOKENS = 8
REQUEST_TIMEOUT_S = 600
SERVER_FLAGS = ["--dtype", "float32", "--max-total-tokens", "8192", "--mem-fraction-static", "0.3"]  # ~0.7 GB of weights
EAGLE_FLAGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]

pytestmark = pytest.mark.slow


def hf_saved(src, dst):
    """`src` loaded by HF transformers and written back by its own save_pretrained (model and tokenizer)."""
    GlmMoeDsaForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    ours = write_tiny_checkpoint(tmp_path_factory.mktemp("real-attn-bf16"), dtype="bf16", arch=ARCH.name)
    return hf_saved(ours, tmp_path_factory.mktemp("real-attn-hf-saved"))


@pytest.fixture(scope="module", params=["hf-saved-bf16", "fp8"])
def served(request, hf_checkpoint, server_log_dir, tmp_path_factory):
    if request.param == "fp8":
        checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("real-attn-fp8"), dtype="fp8", arch=ARCH.name)
        oracle_dir = dequantized_copy(checkpoint, tmp_path_factory.mktemp("oracle") / "real-attn-fp8-dequantized")
    else:
        checkpoint = oracle_dir = hf_checkpoint
    with ServerProcess(checkpoint, server_log_dir / f"real-attn-{request.param}.log", SERVER_FLAGS) as server:
        yield request.param, server, oracle_dir


def test_hf_saved_checkpoint_has_real_dims_and_no_mtp(hf_checkpoint):
    config = json.loads((hf_checkpoint / "config.json").read_text())
    cfg = Glm5Config.from_pretrained(hf_checkpoint)
    assert cfg.num_nextn_predict_layers == 1 and "transformers_version" in config
    for key in ("num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                "v_head_dim", "index_n_heads", "index_head_dim"):
        assert config[key] == ARCH.dims[key]
    names = set(read_headers(hf_checkpoint))
    assert not names & {spec.name for spec in mtp_tensor_specs(cfg)}


@pytest.mark.parametrize("length", PROMPT_LENGTHS, ids=lambda n: f"L{n}-topk{ARCH.index_topk}")
def test_prefill_logprobs_match_hf(served, length):
    _, server, oracle_dir = served
    assert_prompt_logprobs_match_hf(server.url, oracle_dir, length)


@pytest.mark.parametrize("length", PROMPT_LENGTHS, ids=lambda n: f"L{n}-greedy{GREEDY_TOKENS}")
def test_greedy_continuation_matches_hf(served, length):
    _, server, oracle_dir = served
    ids = prompt_ids(length, vocab_size(oracle_dir))
    out = load_client.generate(server.url, ids, GREEDY_TOKENS, timeout_s=REQUEST_TIMEOUT_S)
    assert out["output_ids"] == hf_greedy(oracle_dir, ids, GREEDY_TOKENS)


def test_the_mtp_warning_names_the_missing_tensors_only_when_missing(served):
    kind, server, oracle_dir = served
    log = server.log_path.read_text()
    cfg = Glm5Config.from_pretrained(oracle_dir)
    warned = "serving without speculative decoding" in log
    if kind == "hf-saved-bf16":
        assert warned and f"'model.layers.{cfg.mtp_layer_index}.enorm.weight'" in log
    else:
        assert not warned, "the fp8 checkpoint has its MTP layer: no warning expected"


def test_eagle_on_hf_saved_is_refused_naming_the_missing_tensors(hf_checkpoint, server_log_dir):
    cfg = Glm5Config.from_pretrained(hf_checkpoint)
    with pytest.raises(ServerStartError) as err:
        ServerProcess(hf_checkpoint, server_log_dir / "real-attn-hf-eagle.log", SERVER_FLAGS + EAGLE_FLAGS).start()
    message = str(err.value)
    assert "--speculative-algorithm EAGLE" in message
    assert f"'model.layers.{cfg.mtp_layer_index}.enorm.weight'" in message
    assert f"misses {len(mtp_tensor_specs(cfg))} of {len(mtp_tensor_specs(cfg))} tensors" in message
