"""bench/graph_decode.py's correctness check, on CPU (--device cpu: tests/attention/cpu_graph.py's recorder stands in
for the CUDA graph, the reference's graph-safe ops are captured): capture on one set of values, replay on new ones,
equal to eager bit for bit; the eager reference (host reads, value-dependent shapes) captured the same way fails it,
so the comparison is live. The GPU timing part runs in bench/gpu_check.sh."""

import argparse

import pytest

from bench import graph_decode
from sglang_glm5.dsa.impls import DSA_IMPLS

CONTEXT = 6000  # q_pos in [3000, 6000) > GLM-5's index top-k (2048): the indexer really selects


@pytest.mark.parametrize("batch", [1, 3])
def test_cpu_replay_equals_eager_on_new_values(batch):
    row = graph_decode.measure("reference", batch, CONTEXT, device="cpu")
    assert row == {"equal": True, "inputs_change_output": True}


def test_eager_reference_captured_fails_the_check():
    """The eager reference sizes each request's key set from q_pos on the host: frozen at capture, wrong on replay."""
    eager = DSA_IMPLS["reference"].load("reference", "decode")
    row = graph_decode.measure("reference", 3, CONTEXT, device="cpu", impl=eager)
    assert row["inputs_change_output"] and row["equal"] is False


def test_cli_cpu_mode_runs_the_check_and_skips_graph_unsafe_impls():
    args = argparse.Namespace(impls=["reference", "trtllm"], batch=[2], context=CONTEXT, device="cpu", no_write=False)
    rows = graph_decode.run(args)
    assert rows[0]["equal"] is True
    assert rows[1]["skipped"].startswith("--dsa-decode-backend trtllm:"), rows[1]  # the capability table's reason
    assert graph_decode.main(["--device", "cpu", "--impls", "reference", "--batch", "1", "--context", "100"]) == 0
