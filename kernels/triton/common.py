"""What the DSA Triton kernels share: tile reductions, dot precision, and argument checks with named errors."""

import torch
import triton
import triton.language as tl
from triton.language.standard import _elementwise_max, _sum_combine

MIN_DOT = 16  # tl.dot needs every tile dimension >= 16
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)
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


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 operands need "ieee"; fp16/bf16/fp8 values are exact in tf32 (<= 10 mantissa bits), so tf32 loses nothing."""
    return "ieee" if dtype == torch.float32 else "tf32"


def block_size(n: int) -> int:
    """The power-of-two tile covering n, at least MIN_DOT so the tile can feed tl.dot."""
    return max(MIN_DOT, triton.next_power_of_2(n))


def check_tensor(name, x, ndim, dtypes, device=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device} (where q is)")
    if x.numel() and x.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dim (stride {x.stride(-1)}): kernels load rows")


def check_size(name, actual, expected, what):
    if actual != expected:
        raise ValueError(f"{name}: {what} is {actual}, expected {expected}")


def check_batch(page_table, q_seq, q_pos, num_tokens, device):
    """page_table [B, L] and q_seq [T] (and q_pos [T] unless None) as integer tensors on q's device."""
    check_tensor("page_table", page_table, 2, INDEX_DTYPES, device)
    check_tensor("q_seq", q_seq, 1, INDEX_DTYPES, device)
    check_size("q_seq", q_seq.shape[0], num_tokens, "number of query tokens")
    if q_pos is not None:
        check_tensor("q_pos", q_pos, 1, INDEX_DTYPES, device)
        check_size("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")


def check_out(out, shape, dtype, device):
    """A caller-provided output buffer must match exactly: kernels write it in place."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    check_tensor("out", out, len(shape), (dtype,), device)
    check_size("out", tuple(out.shape), tuple(shape), "shape")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous: kernels write it with row strides of a dense tensor")
    return out
