"""Glm5DSABackend under SGLang's CUDA graph hooks, driven on CPU as SGLang's graph runners drive them (worker:
graph_worker.py; the CPU graph: cpu_graph.py), on a ModelRunner with the tiny checkpoint and the reference
implementation: decode, EAGLE target verify (3 draft tokens) and the multi-step draft decode (3 steps).

Capture sizes 1, 2, 4, 8; real batches of 3 (padded to 4), 5 (padded to 8), 1 and 8 requests at other lengths.
"""

import json
import os
import subprocess
import sys

import pytest

from sglang_glm5.attention.index_k_policy import POOL_FP8, STORE_ENV
from tests.conftest import PARITY_INDEX_TOPK

MODES = ("decode", "verify", "draft")
BATCHES = ("bs3", "bs5", "bs1", "bs8")
ROUNDING_ATOL = 1e-5  # eager on the unpadded batch: CPU GEMMs round differently for another number of rows
WORKER_TIMEOUT_S = 900


def run_worker(checkpoint, out, *extra, env=None):
    cmd = [sys.executable, "-m", "tests.attention.graph_worker", str(checkpoint), str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def report(tiny_checkpoint, tmp_path_factory):
    return run_worker(tiny_checkpoint("bf16"), tmp_path_factory.mktemp("graph") / "report.json")


def test_decode_graphs_with_the_fp8_index_k_store(tiny_checkpoint, tmp_path_factory):
    """The GPU default store (keys FP8 in SGLang's pool): the graph-safe FP8 indexer (dsa_static), key rows
    translated once per forward into the graph state; replay == padded eager bit for bit, nothing allocated in the
    prep, no host sync, and the layer still compiles fullgraph."""
    out = tmp_path_factory.mktemp("graph-fp8") / "report.json"
    r = run_worker(tiny_checkpoint("bf16"), out, "--modes", "decode", env=dict(os.environ, **{STORE_ENV: POOL_FP8}))
    assert r["index_k_store"] == POOL_FP8
    d = r["decode"]
    assert d["capture_host_syncs"] == {"8": [], "4": [], "2": [], "1": []} and d["static_ptrs_unchanged"]
    assert d["in_graph_allocations"] == [] and all(x["out_graph_allocations"] == [] for x in d["replays"])
    for x in d["replays"]:
        assert x["bitwise_equal_padded_eager"] and x["topk_equal_eager"], x["batch"]
        assert x["finite"] and x["max_abs_diff_eager"] <= ROUNDING_ATOL, x["batch"]
    assert d["frozen_eager_control_equal"] is False
    assert r["compile_fullgraph"] == {"error": "", "equal": True}


def replay(report, mode, batch):
    return next(r for r in report[mode]["replays"] if r["batch"] == batch)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("mode", MODES)
def test_replay_is_bitwise_the_eager_forward(report, mode, batch):
    """Replayed graph == eager forward (metadata.py + reference ops) of the same padded batch, bit for bit; the
    real rows' top-k equal the unpadded eager batch's and their outputs agree to rounding."""
    r = replay(report, mode, batch)
    assert r["graph_bs"] >= r["raw_bs"] and (r["graph_bs"] > r["raw_bs"]) == (batch in ("bs3", "bs5"))
    assert max(r["seq_lens"]) > PARITY_INDEX_TOPK, "contexts longer than index_topk: DSA really selects"
    assert r["bitwise_equal_padded_eager"]
    assert r["topk_equal_eager"] and r["finite"] and r["max_abs_diff_eager"] <= ROUNDING_ATOL


@pytest.mark.parametrize("mode", MODES)
def test_capture_has_no_host_sync_and_buffers_never_move(report, mode):
    r = report[mode]
    assert r["capture_host_syncs"] == {"8": [], "4": [], "2": [], "1": []}
    assert r["static_ptrs_unchanged"], "a static buffer changed address between capture and replay"
    assert r["topk_in_layer_buffers"], "the captured top-k must be written into the layer's own graph-state buffer"
    assert r["metadata_views_of_buffers"], "captured metadata must be views of the graph state"
    assert r["page_table_width"] == r["req_to_token_width"], "static page table: the pool's full width"


@pytest.mark.parametrize("mode", MODES)
def test_replay_prep_allocates_nothing(report, mode):
    assert report[mode]["in_graph_allocations"] == []
    for r in report[mode]["replays"]:
        assert r["out_graph_allocations"] == [], r["batch"]


def test_harness_catches_frozen_host_values(report):
    """Controls: the eager metadata builder reads the host (int(q_pos.max())) and, captured, replays wrongly."""
    assert "aten._local_scalar_dense.default" in report["eager_metadata_host_syncs"]
    assert report["decode"]["frozen_eager_control_equal"] is False


def test_decode_layer_compiles_fullgraph(report):
    """torch.compile(fullgraph=True) of in_graph + one GLM-5 decoder layer (indexer, DSA attention through the
    backend and SGLang's KV pool, dense MLP) with the reference's graph-safe ops: no graph break, same outputs.
    The same region with the eager metadata builder breaks (its host read), so the check is live."""
    assert report["compile_fullgraph"] == {"error": "", "equal": True}
    assert report["compile_fullgraph_eager_control_error"], "the eager metadata builder must not compile fullgraph"
