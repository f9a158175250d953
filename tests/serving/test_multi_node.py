"""Two "nodes" on this machine: the per-node commands of `sglang-glm5 launch` (tp 2, --nnodes 2, one rank each)
run as two launch_server processes that meet over torch.distributed (gloo) at --dist-init-addr.

They serve the tiny checkpoint with HF transformers' greedy tokens; stopping the head stops the other node; a node
whose head never answers fails with a message naming --dist-init-addr within a bounded time.
"""

import os
import subprocess
import time

import pytest

from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.presets.compose import compose
from sglang_glm5.presets.launch_cli import head_address, node_commands
from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess, free_port
from tests.models.test_hf_parity import prompt_ids, vocab_size
from tests.oracle import hf_greedy
from tests.started_together import Started, commands_started_together

GREEDY_TOKENS = 12
PROMPT_LENGTHS = (41, 77)
REQUEST_TIMEOUT_S = 300
FOLLOWER_STOP_S = 300  # the head's shutdown reaches the other node's scheduler over the process group
UNREACHABLE_WAIT_S = 20  # how long a node waits for its head here (SGLANG_GLM5_HEAD_WAIT_S)
UNREACHABLE_BOUND_S = 240  # its whole run, start-up included, on a loaded 2-core machine

pytestmark = pytest.mark.slow


def launch_nodes(checkpoint, http_port: int, dist_port: int, env: dict | None = None):
    """[(command, env)] of node 0 and node 1, exactly as `sglang-glm5 launch --preset cpu-tiny --tp 2 --nnodes 2
    --head-address 127.0.0.1:PORT -- ...` prints and runs them."""
    catalog = load_catalog()
    spec = compose(catalog, "cpu-tiny", tp=2, model_path=str(checkpoint), nnodes=2)
    extra = ["--host", "127.0.0.1", "--port", str(http_port), "--dtype", "float32"]
    nodes = node_commands(catalog, spec, extra, dict(os.environ if env is None else env), head_address(f"127.0.0.1:{dist_port}"))
    return [(command, node_env) for command, node_env, _ in nodes]


@pytest.fixture(scope="module")
def unreachable_node(tiny_checkpoint, server_log_dir):
    """Node 1 of a pair whose head never starts, started before `two_nodes` so its start-up and wait overlap theirs
    (tests/started_together.py); -> (its process, the dead head port)."""
    env = dict(os.environ, SGLANG_GLM5_HEAD_WAIT_S=str(UNREACHABLE_WAIT_S))
    dead_port = free_port()  # nothing listens there
    (_, _), (command, node_env) = launch_nodes(tiny_checkpoint("bf16"), free_port(), dead_port, env)
    node = Started(command, server_log_dir / "node1-unreachable.log", env=node_env)
    with commands_started_together({"node1": node}):
        yield node, dead_port


@pytest.fixture(scope="module")
def two_nodes(tiny_checkpoint, server_log_dir, unreachable_node):
    checkpoint = tiny_checkpoint("bf16")
    port, dist_port = free_port(), free_port()
    head_cmd, head_env = launch_nodes(checkpoint, port, dist_port)[0]
    # Both "nodes" share this machine: node 1's own endpoints (SGLang's follower listener) need another --port.
    other_cmd, other_env = launch_nodes(checkpoint, free_port(), dist_port)[1]
    other = ServerProcess(checkpoint, server_log_dir / "node1.log", env=other_env, command=other_cmd)
    head = ServerProcess(checkpoint, server_log_dir / "node0.log", port=port, env=head_env, command=head_cmd)
    other.start(wait_ready=False)
    try:
        head.start()
        yield checkpoint, head, other
    finally:
        head.stop()
        other.stop()


def test_two_nodes_serve_hf_greedy_tokens(two_nodes):
    checkpoint, head, other = two_nodes
    batch = [prompt_ids(n, vocab_size(checkpoint)) for n in PROMPT_LENGTHS]
    outputs = load_client.generate(head.url, batch, GREEDY_TOKENS, timeout_s=REQUEST_TIMEOUT_S)
    assert [o["output_ids"] for o in outputs] == [hf_greedy(checkpoint, ids, GREEDY_TOKENS) for ids in batch]
    assert other.proc.poll() is None, "node 1 exited while serving"
    assert "TP1]" in other.log_path.read_text() and "TP1]" not in head.log_path.read_text(), "rank 1 must run on node 1"


def test_stopping_the_head_stops_the_other_node(two_nodes):
    """SIGTERM to the head: SGLang's shutdown reaches node 1's scheduler, and node 1's launch_server exits with 0."""
    _, head, other = two_nodes
    head.stop()
    try:
        returncode = other.proc.wait(timeout=FOLLOWER_STOP_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node 1 still runs {FOLLOWER_STOP_S}s after the head stopped:\n{other.log_tail()}")
    assert returncode == 0, other.log_tail()


def test_a_node_that_cannot_reach_its_head_fails_clearly_in_bounded_time(unreachable_node):
    node, dead_port = unreachable_node
    try:
        returncode, text = node.result(UNREACHABLE_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node 1 still waits for an absent head after {UNREACHABLE_BOUND_S}s:\n{node.log.read_text()[-3000:]}")
    assert returncode != 0
    assert f"cannot reach the head node at 127.0.0.1:{dead_port} (--dist-init-addr) after {UNREACHABLE_WAIT_S} s" in text, text[-3000:]
    assert node.run_s is not None and node.run_s < UNREACHABLE_BOUND_S
