"""Kernel tests run the Triton interpreter on CPU.

TRITON_INTERPRET=1 is set only while our kernel modules are (re)imported, so their @triton.jit functions become
interpreted ones; it is then restored, so servers and subprocesses started by other tests never inherit it.
Triton itself is imported before, decorated for the compiler as everywhere else in this process (its launcher
imports gluon lazily, which refuses interpreted library functions); the kernels use no triton library @jit function.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton  # noqa: F401
import triton.experimental.gluon  # noqa: F401

KERNEL_MODULES = [
    "sglang_glm5.dsa.triton.common",
    "sglang_glm5.dsa.triton.kv_layout",
    "sglang_glm5.dsa.triton.indexer",
    "sglang_glm5.dsa.triton.topk",
    "sglang_glm5.dsa.triton.mla_prefill",
    "sglang_glm5.dsa.triton.mla_decode",
    "sglang_glm5.dsa.triton",
    "sglang_glm5.dsa.triton.plans",  # binds the interpreted modules' checks
]


def _import_interpreted():
    """Returns TRITON_INTERPRET as it was (None: unset), which it is again afterwards."""
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        for name in KERNEL_MODULES:  # drop copies decorated for the compiler by an earlier import
            sys.modules.pop(name, None)
        for name in KERNEL_MODULES:
            importlib.import_module(name)
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    return previous


TRITON_INTERPRET_BEFORE = _import_interpreted()


@pytest.fixture
def triton_interpret_before():
    return TRITON_INTERPRET_BEFORE


REPO = Path(__file__).resolve().parents[2]
COMPILE_TIMEOUT_S = 1200


@pytest.fixture(scope="session")
def triton_compiled():
    """{(kernel id, target): record} from one `python -m tests.dsa.compile_targets` run (no TRITON_INTERPRET),
    shared by the compile test and the resource contracts."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.dsa.compile_targets"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=COMPILE_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {(r["kernel"], r["target"]): r for r in records}
