"""The environment and default flags for serving on CPU, read from `cpu_defaults.json`."""

import json
import os
import sys
from importlib import resources
from pathlib import Path

from sglang_glm5.hooks.model_choice import UPSTREAM, model_choice

STUB_DIR = Path(__file__).parent / "cpu_stubs"  # holds the `sgl_kernel` stand-in
EXTERNAL_MODEL_PACKAGE = "SGLANG_EXTERNAL_MODEL_PACKAGE"


def cpu_defaults() -> dict:
    return json.loads(resources.files(__package__).joinpath("cpu_defaults.json").read_text())


def cpu_environment(base: dict[str, str]) -> dict[str, str]:
    """`base` plus SGLang's CPU switch and the `sgl_kernel` stand-in first on PYTHONPATH (reaches SGLang's subprocesses)."""
    env = dict(base)
    env.update(cpu_defaults()["env"])
    if model_choice(env) == UPSTREAM:  # SGLang's own GLM-5 class: our model package must not be registered
        env.pop(EXTERNAL_MODEL_PACKAGE)
    paths = [str(STUB_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(STUB_DIR)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def with_cpu_defaults(argv: list[str]) -> list[str]:
    """launch_server argv plus every CPU default flag the user did not give (`--flag` or `--flag=value`)."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    extra: list[str] = []
    for flag, value in cpu_defaults()["flags"].items():
        if flag not in given:
            extra += [flag] if value is None else [flag, value]
    return argv + extra


def prepare_this_process() -> None:
    """Make *this* Python process CPU-ready (for `sglang.Engine` in-process); call before importing SGLang."""
    os.environ.update(cpu_environment(dict(os.environ)))
    if str(STUB_DIR) not in sys.path:
        sys.path.insert(0, str(STUB_DIR))
