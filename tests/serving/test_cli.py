"""`sglang-glm5 serve` builds SGLang's own launch_server command: CPU defaults added only where the user gave none."""

import sys

from sglang_glm5.serving.cli import launch_command
from sglang_glm5.serving.cpu import STUB_DIR, cpu_defaults


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
