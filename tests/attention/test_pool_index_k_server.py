"""Through launch_server on CPU with the FP8 index-K store (SGLANG_GLM5_INDEX_K_STORE=pool-fp8, the NVIDIA default):
the indexer keys live only in SGLang's DSATokenToKVPool (no private tensor; every indexer call reads the pool),
a radix-cache hit and a retracted-and-resumed request give the tokens of a fresh one, and where the indexer cannot
matter (positions before index_topk) the prompt logprobs equal HF transformers'.

One server at a time: the plain one, then one that SGLang retracts every few decode steps (SGLANG_TEST_RETRACT).
"""

import os

import pytest

from sglang_glm5.attention.index_k_policy import POOL_FP8, STORE_ENV
from bench.lib import load_client as client
from sglang_glm5.serving.process import ServerProcess
from tests.models.test_hf_parity import LOGPROB_ATOL, prompt_ids, server_logprobs, vocab_size
from tests.conftest import PARITY_INDEX_TOPK
from tests.oracle import hf_logprobs, hf_logprobs_fp8_indexer

pytestmark = pytest.mark.slow

PROMPT_LENGTHS = (77, 130, 41, 101)  # all longer than the tiny checkpoint's index_topk (16): the indexer selects
INDEX_TOPK = PARITY_INDEX_TOPK
PAGE = 64  # SGLang's DSA page (tokens)
NEW_TOKENS = 12
RETRACT_ENV = {"SGLANG_TEST_RETRACT": "1", "SGLANG_TEST_RETRACT_INTERVAL": "4"}  # SGLang's own retraction test hook


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="module")
def prompts(checkpoint):
    vocab = vocab_size(checkpoint)
    return [prompt_ids(n, vocab) for n in PROMPT_LENGTHS]


def serve(checkpoint, log, **env):
    environment = {**os.environ, STORE_ENV: POOL_FP8, "SGLANG_GLM5_TRACE_INDEXER": "1", **env}
    return ServerProcess(checkpoint, log, ["--dtype", "float32"], env=environment)


@pytest.fixture(scope="module")
def plain(checkpoint, prompts, server_log_dir):
    """Fresh outputs (each from an empty cache), the same prompts again (radix hits), and prompt logprobs."""
    log = server_log_dir / "pool-index-k.log"
    with serve(checkpoint, log) as server:
        fresh, hits = [], []
        for ids in prompts:
            client.flush_cache(server.url)
            fresh.append(client.generate(server.url, ids, NEW_TOKENS))
            hits.append(client.generate(server.url, ids, NEW_TOKENS))  # its prefix is cached: keys read from the pool
        vocab = vocab_size(checkpoint)
        client.flush_cache(server.url)
        logprobs = server_logprobs(server.url, prompts[1], vocab)
    return {"fresh": fresh, "hits": hits, "logprobs": logprobs, "log": log.read_text()}


def test_keys_live_only_in_sglangs_pool(plain):
    log = plain["log"]
    assert f"GLM-5 DSA index-K store: {POOL_FP8} ({STORE_ENV}={POOL_FP8}), layers [0, 1, 2, 3], 0.0 MiB beside" in log
    assert "never reads" not in log  # the model-dtype store's line about SGLang's unread buffer
    calls = [line for line in log.splitlines() if "GLM-5 DSA indexer call" in line]
    assert calls and all(f"({POOL_FP8} keys)" in line for line in calls)


def test_radix_cache_hit_gives_the_fresh_tokens(plain):
    # SGLang caches whole 64-token pages: every prompt longer than one page hits
    assert all(h["meta_info"]["cached_tokens"] >= PAGE for h, n in zip(plain["hits"], PROMPT_LENGTHS) if n > PAGE)
    assert [h["output_ids"] for h in plain["hits"]] == [f["output_ids"] for f in plain["fresh"]]


def test_prompt_logprobs_where_the_indexer_selects_everything_equal_hf(plain, checkpoint, prompts):
    """Positions before index_topk attend to every earlier position whatever the indexer scores, so there the FP8
    keys cannot matter and the server must equal HF. Past it, the distance to HF with the same FP8 indexer (tests/
    oracle.fp8_indexer) is measured, not bounded: on the random tiny checkpoint 1e-5 relative noise in the indexer's
    inputs already moves HF's own FP8-indexer logprobs by 1.4 (unquantized: 0.0), so the server's 1e-6-level
    differences from HF swap near-tied top-16 entries (README: Indexer keys)."""
    ours = plain["logprobs"]
    theirs = hf_logprobs(checkpoint, prompts[1]).double()
    head = (ours[:INDEX_TOPK] - theirs[:INDEX_TOPK]).abs().max().item()
    same_math = (ours - hf_logprobs_fp8_indexer(checkpoint, prompts[1]).double()).abs().max().item()
    print(f"pool-fp8 store, {len(prompts[1])}-token prompt: max |logprob diff| first {INDEX_TOPK} positions {head:.3g};"
          f" all positions vs HF with the same FP8 indexer {same_math:.3g}, vs HF unquantized "
          f"{(ours - theirs).abs().max().item():.3g}")
    assert head <= LOGPROB_ATOL


def test_retracted_and_resumed_requests_give_the_fresh_tokens(plain, checkpoint, prompts, server_log_dir):
    with serve(checkpoint, server_log_dir / "pool-index-k-retract.log", **RETRACT_ENV) as server:
        results = client.generate(server.url, prompts, NEW_TOKENS)  # one batch: SGLang retracts some mid-decode
    assert sum(r["meta_info"]["num_retractions"] for r in results) > 0, "SGLang retracted nothing"
    assert [r["output_ids"] for r in results] == [f["output_ids"] for f in plain["fresh"]]
