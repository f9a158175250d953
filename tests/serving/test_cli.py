"""`sglang-glm5 serve` builds SGLang's own launch_server command: CPU defaults added only where the user gave none."""

import sys

import pytest

from sglang_glm5.serving.cli import launch_command
from sglang_glm5.serving.cpu import STUB_DIR, THREADS_BIND_ENV, cpu_defaults, ranks_on_this_node, threads_bind


def test_cpu_defaults_fill_only_missing_flags():
    command, env = launch_command(["--model-path", "M", "--device", "cpu", "--max-total-tokens=128"], {"PYTHONPATH": "/x"})
    assert command[:3] == [sys.executable, "-m", "sglang.launch_server"]
    args = command[3:]
    assert args.count("--max-total-tokens") == 0 and "--max-total-tokens=128" in args
    assert args.count("--device") == 1
    for flag, value in cpu_defaults()["flags"].items():
        if flag in ("--device", "--max-total-tokens"):
            continue
        i = args.index(flag)
        assert value is None or args[i + 1] == value
    assert env["PYTHONPATH"].split(":")[:2] == [str(STUB_DIR), "/x"]
    assert env["SGLANG_USE_CPU_ENGINE"] == "1"


def test_gpu_device_passes_flags_through_untouched():
    argv = ["--model-path", "M", "--device", "cuda", "--tp", "8"]
    command, env = launch_command(argv, {})
    assert command[3:] == argv
    assert "SGLANG_USE_CPU_ENGINE" not in env


@pytest.mark.parametrize(
    "argv,ranks",
    [
        (["--tp-size", "2"], 2), (["--tp", "4"], 4), (["--tensor-parallel-size=2", "--dp-size", "2"], 4),
        (["--tp-size", "2", "--attn-dp-size", "2"], 2), (["--tp-size", "4", "--nnodes", "2"], 2), ([], 1),
    ],
    ids=["tp2", "tp-abbrev", "tp-times-dp", "attn-dp-inside-tp", "split-over-nodes", "default"],
)
def test_ranks_on_this_node(argv, ranks):
    assert ranks_on_this_node(argv) == ranks


@pytest.mark.parametrize(
    "ranks,cpus,bind",
    [(2, [0, 1], "0|1"), (2, [0, 1, 2, 3, 4], "0-1|2-3"), (4, [0, 1], "0|1|0|1"), (2, [3, 5, 8, 9], "3,5|8-9"), (1, [0, 1], "0-1")],
    ids=["one-each", "slices-drop-remainder", "more-ranks-than-cpus", "gaps", "one-rank"],
)
def test_threads_bind(ranks, cpus, bind):
    assert threads_bind(ranks, cpus) == bind


def test_serve_binds_threads_for_tp_on_cpu_unless_given():
    _, env = launch_command(["--model-path", "M", "--device", "cpu", "--tp-size", "2"], {})
    assert env[THREADS_BIND_ENV].count("|") == 1
    _, env = launch_command(["--model-path", "M", "--device", "cpu", "--tp-size", "2"], {THREADS_BIND_ENV: "0|0"})
    assert env[THREADS_BIND_ENV] == "0|0"
    _, env = launch_command(["--model-path", "M", "--device", "cpu"], {})
    assert THREADS_BIND_ENV not in env
    # one rank on this node of two: SGLang still counts all ranks against the NUMA nodes, so one entry is set
    _, env = launch_command(["--model-path", "M", "--device", "cpu", "--tp-size", "2", "--nnodes", "2"], {})
    assert THREADS_BIND_ENV in env and "|" not in env[THREADS_BIND_ENV]


def test_bad_tp_value_is_named():
    with pytest.raises(ValueError, match="--tp-size needs an integer, got 'two'"):
        ranks_on_this_node(["--tp-size", "two"])


def test_has_cuda_agrees_with_torch():
    """The torch-free driver probe gives torch's answer (here: no GPU driver, so both say no)."""
    import torch

    from sglang_glm5.serving.cli import _has_cuda

    assert _has_cuda() == torch.cuda.is_available()


def test_serve_reaches_its_exec_without_importing_torch():
    """`sglang-glm5 serve` builds only its own parser and resolves the device without torch, so every server start
    goes straight to launch_server (which imports torch itself once)."""
    import subprocess

    probe = (
        "import sys, os; os.execvpe = lambda *a: sys.exit(0 if 'torch' not in sys.modules else 'torch imported')\n"
        "from sglang_glm5.cli import main; main(['serve', '--model-path', 'M'])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--device cpu" in done.stdout  # the `+ command` line: resolved to CPU here (no GPU driver)
