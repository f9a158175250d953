"""Stand-in for the CUDA-only `sgl_kernel` on machines without a GPU.

SGLang imports `sgl_kernel` unconditionally in a few modules; PyPI's wheel cannot load without libcuda. Every
attribute here is a function that raises when *called*, so an import succeeds and any kernel actually reached on
CPU fails loudly instead of computing something wrong; submodules do not import. On a CPU without AMX, SGLang
dispatches its fused ops to their `forward_native` torch paths and never calls these.
"""

import importlib.abc
import sys

__version__ = "0.0.0+cpu-stub"
IS_CPU_STUB = True


def _missing(qualname):
    def call(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{qualname} is a CUDA kernel; sglang_glm5's CPU stand-in for sgl_kernel cannot run it"
        )

    call.__name__ = qualname.rsplit(".", 1)[-1]
    call.__qualname__ = qualname
    return call


class _NoSubmodules(importlib.abc.MetaPathFinder):
    """`sgl_kernel.<sub>` raises ImportError: SGLang guards those imports and falls back to its pure-torch code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            raise ImportError(f"{fullname}: CUDA kernels are not available on CPU (sglang_glm5 stand-in)")
        return None


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    stub = _missing(name)
    globals()[name] = stub
    return stub


sys.meta_path.insert(0, _NoSubmodules())
