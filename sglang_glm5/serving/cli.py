"""`sglang-glm5 serve`: SGLang's own `launch_server`, with the CPU environment prepared when `--device cpu`."""

import argparse
import ctypes
import os
import sys

from sglang_glm5.attention.kv_policy import STRICT_ENV
from sglang_glm5.serving.cpu import cpu_environment, with_cpu_defaults, with_threads_bind

STRICT_FLAG = "--strict"  # ours, not launch_server's: refuse FP8 KV without calibrated scales instead of warning


def launch_command(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    if STRICT_FLAG in argv:
        argv = [a for a in argv if a != STRICT_FLAG]
        env = dict(env, **{STRICT_ENV: "1"})
    device = _flag_value(argv, "--device") or ("cpu" if not _has_cuda() else None)
    if device == "cpu":
        env = with_threads_bind(cpu_environment(env), argv)
        return [sys.executable, "-m", "sglang.launch_server", *with_cpu_defaults(argv)], env
    return [sys.executable, "-m", "sglang.launch_server", *argv], dict(env)


def run(args: argparse.Namespace) -> int:
    command, env = launch_command(args.rest, dict(os.environ))
    print("+", " ".join(command), flush=True)
    os.execvpe(command[0], command, env)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run SGLang's launch_server for GLM-5 (CPU-ready with --device cpu, the default without a GPU)",
        description="All arguments go to `python -m sglang.launch_server` (e.g. --model-path DIR); on CPU the "
        "flags in configs/cpu-defaults.json are added unless given. Ours: --strict refuses FP8 KV for a "
        f"checkpoint without calibrated k/v scales instead of warning (sets {STRICT_ENV}=1).",
    )
    parser.set_defaults(func=run, passthrough=True)


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _has_cuda() -> bool:
    """torch.cuda.is_available(), answered without importing torch (seconds before every start) where no GPU driver is
    present: a CUDA build needs the NVIDIA driver's libcuda.so.1, a ROCm build the AMD kernel driver's /dev/kfd."""
    if not os.path.exists("/dev/kfd"):
        try:
            ctypes.CDLL("libcuda.so.1")
        except OSError:
            return False
    import torch

    return torch.cuda.is_available()
