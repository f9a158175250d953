"""bench/kernels.py's bookkeeping: every number of a context comes from one sweep; the decode step sums that sweep."""

import pytest

from bench import kernels


def _sweep(indexer, topk, sparse, dense):
    ops = {"indexer": indexer, "topk": topk, "sparse_mla": sparse, "dense_mla": dense}
    return {("reference", op): (seconds, "wall") for op, seconds in ops.items()}


def test_one_sweep_per_context_never_per_op_minima():
    # sweep 0 has the fastest indexer, sweep 1 the fastest sparse MLA and the least total: only sweep 1 is reported
    sweeps = {(64, 4096): [_sweep(1.0, 0.1, 9.0, 30.0), _sweep(2.0, 0.1, 5.0, 31.0)]}
    chosen = kernels.chosen_sweeps(sweeps)
    assert chosen[(64, 4096)] is sweeps[(64, 4096)][1]
    rows = kernels._rows(chosen, None)
    assert {r["op"]: r["seconds"] for r in rows} == {"indexer": 2.0, "topk": 0.1, "sparse_mla": 5.0, "dense_mla": 31.0}
    args = kernels.parse_args(["--contexts", "4096", "--heads", "64"])
    (point,) = kernels.decode_curves(rows, args)[0]["points"]
    assert point["sparse_s"] == pytest.approx(7.1) and point["dense_s"] == 31.0
    assert point["indexer_share"] == pytest.approx(2.0 / 7.1)


def test_an_empty_sweep_is_never_chosen():
    sweeps = {(8, 4096): [{}, _sweep(1.0, 0.1, 1.0, 3.0)], (8, 8192): [{}]}
    assert kernels.chosen_sweeps(sweeps) == {(8, 4096): sweeps[(8, 4096)][1]}
