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


def _runs(*seconds_and_shares):
    return [dict(seconds=s, indexer_share=share, forward_samples=100, forward_share=0.9, samples=110, profile="p")
            for s, share in seconds_and_shares]  # fmt: skip


def test_prefill_rows_measure_the_indexer_per_run_and_predict_from_all_f():
    measured = {"all-F": ("FFFF", _runs((10.0, 0.5), (8.0, 0.4))), "75% removed": ("FSSS", _runs((6.0, 0.1)))}
    all_f, quarter = indexcache.prefill_rows(measured, 4)
    # each pattern's fastest run, its own share: 0.4 x 8 s = 3.2 s of indexers, 0.8 s per F layer
    assert (all_f["seconds"], all_f["indexer_s"], all_f["indexer_s_per_layer"]) == (8.0, 3.2, 0.8)
    assert all_f["predicted_s"] == 8.0
    assert quarter["indexer_s"] == pytest.approx(0.6) and quarter["indexer_s_per_layer"] == pytest.approx(0.6)
    assert quarter["predicted_s"] == pytest.approx(8.0 - 3 * 0.8)  # all-F minus one all-F indexer per S layer
