"""bench/indexcache.py's parts at a small context: the S path reuses exactly the F path's top-k, patterns are valid."""

import pytest
import torch

from bench import indexcache
from bench.lib import common
from sglang_glm5.indexcache.plan import IndexerPlan


@pytest.fixture(scope="module")
def decode():
    args = indexcache.parse_args(["--context", "4100", "--repeats", "1", "--skip-prefill", "--no-write"])
    return args, indexcache.run_decode(args)


def test_f_layer_selects_what_s_layer_reuses():
    p = indexcache.decode_problem(3001)
    topk = indexcache.f_layer_topk(p)  # [1, 2048]
    assert topk.shape == (1, indexcache.INDEX_TOPK) and torch.equal(topk, p["topk"])
    assert set(topk[0].tolist()) <= set(range(3001))
    out = indexcache.sparse_attention(p, topk)  # [1, H, 512]
    assert out.shape == (1, indexcache.D["num_attention_heads"], indexcache.D["kv_lora_rank"])
    assert torch.isfinite(out.float()).all()


def test_decode_result_and_markdown(decode):
    args, result = decode
    assert 0 < result["s_over_f"] < 1 and 0 < result["indexer_flop_share"] < 1
    payload = {"command": "x", "date": "d", "commit": "c", "machine": common.machine(), "repeats": 1,
               "prefill_repeats": 1, "decode": result}  # fmt: skip
    assert f"{args.context} cached tokens" in indexcache.markdown(payload)


@pytest.mark.parametrize("layers", [4, 8, 78], ids=lambda n: f"L{n}")
def test_prefill_patterns_are_valid_plans(layers):
    patterns = indexcache.prefill_patterns(layers)
    assert patterns["all-F"] == "F" * layers
    for pattern in patterns.values():
        IndexerPlan(pattern, "bench")
    assert IndexerPlan(patterns["75% removed"], "bench").num_full == -(-layers // 4)
