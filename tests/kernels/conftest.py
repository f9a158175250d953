"""Kernel tests run the Triton interpreter on CPU.

TRITON_INTERPRET=1 is set only while our kernel modules are (re)imported, so their @triton.jit functions become
interpreted ones; it is then restored, so servers and subprocesses started by other tests never inherit it.
Triton itself is imported before, decorated for the compiler as everywhere else in this process (its launcher
imports gluon lazily, which refuses interpreted library functions); the kernels use no triton library @jit function.
"""

import importlib
import os
import sys

import pytest
import triton  # noqa: F401
import triton.experimental.gluon  # noqa: F401

KERNEL_MODULES = [
    "sglang_glm5.kernels.triton.common",
    "sglang_glm5.kernels.triton.kv_layout",
    "sglang_glm5.kernels.triton.indexer",
    "sglang_glm5.kernels.triton.topk",
    "sglang_glm5.kernels.triton.mla_prefill",
    "sglang_glm5.kernels.triton.mla_decode",
    "sglang_glm5.kernels.triton",
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
