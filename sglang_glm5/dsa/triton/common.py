"""What the DSA Triton kernels share: tile reductions, dot precision, and argument checks with named errors."""

import os
from functools import partial

import torch
import triton
import triton.language as tl
from sglang_glm5.dsa import checks
from sglang_glm5.dsa.checks import INDEX_DTYPES, check_size  # noqa: F401
from sglang_glm5.devices import multiprocessor_count  # noqa: F401  (one answer for every kernel family)
from triton.language.standard import _elementwise_max, _sum_combine

MIN_DOT = 16  # tl.dot needs every tile dimension >= 16
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FP8_DTYPE = torch.float8_e4m3fn


# Reductions and scans go through the builtins tl.reduce / tl.associative_scan, and fills through tl.full: tl.sum,
# tl.max, tl.cumsum and tl.zeros are @triton.jit library functions, compiled-only when triton was imported before
# TRITON_INTERPRET was set, which the interpreter cannot call. With triton's own two combine functions the
# interpreter runs numpy instead of one Python call per element.
@triton.jit
def tile_sum(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _sum_combine)


@triton.jit
def tile_max(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _elementwise_max)


@triton.jit
def tile_exclusive_cumsum(x, axis: tl.constexpr):
    return tl.associative_scan(x, axis, _sum_combine) - x


# Triton's interpreter (3.8) multiplies bf16 tiles as their uint16 bit patterns; interpreted, `mma` widens bf16
# operands to fp32 first, which is exact, so the interpreter still checks every rounding the kernels do themselves.
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def mma(a, b, acc):
    """acc + a @ b with a, b fed to the tensor cores in their own dtype (bf16, fp16, fp8) and fp32 accumulation.

    fp32 operands (CPU tests) multiply exactly ("ieee"); the setting means nothing to other dtypes, and gfx950
    refuses "tf32"."""
    if INTERPRETED:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
        if b.dtype == tl.bfloat16:
            b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


def block_size(n: int) -> int:
    """The power-of-two tile covering n, at least MIN_DOT so the tile can feed tl.dot."""
    return max(MIN_DOT, triton.next_power_of_2(n))


# Triton kernels load rows as they are given: every checked tensor must be dense in its last dim.
check_tensor = partial(checks.check_tensor, rows_dense=True)
check_batch = partial(checks.check_batch, rows_dense=True)
check_out = partial(checks.check_out, rows_dense=True)


