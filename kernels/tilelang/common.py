"""What the DSA TileLang kernels share: dtype names, head tiling, argument checks with named errors."""

import torch

FLOAT_DTYPES = (
    torch.float16,
    torch.bfloat16,
)  # tensor-core operand types the gemms take
INDEX_DTYPES = (torch.int32, torch.int64)
MIN_GEMM_M = 16  # smallest gemm tile row count on every target (mma m16 on CUDA, mfma 16x16 on CDNA)
MAX_HEAD_TILE = 64  # heads per program: one gemm tile of rows
LN2 = 0.6931471805599453
LOG2E = 1.4426950408889634
NEG_BIG = -(2.0**30)  # running-max start: finite, so max - max never makes inf - inf = NaN

TL_DTYPE = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.int32: "int32",
    torch.int64: "int64",
}


def head_tile(heads: int, max_block_h: int = MAX_HEAD_TILE) -> int:
    """Heads per program: the power of two covering `heads`, at least one gemm tile (16), at most max_block_h.

    8 heads run as one 16-row tile, 16/32/64 as themselves (up to max_block_h); more split over programs.
    """
    assert heads >= 1, f"heads must be >= 1, got {heads}"
    assert max_block_h >= MIN_GEMM_M and max_block_h & (max_block_h - 1) == 0, (
        f"max_block_h {max_block_h}: a power of two >= {MIN_GEMM_M}, the smallest gemm tile"
    )
    tile = MIN_GEMM_M
    while tile < min(heads, max_block_h):
        tile *= 2
    return tile


def check_tensor(name, x, ndim, dtypes, device=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device} (where q is)")


def dense(x):
    """Kernels declare dense tensors: a strided input is copied once (a no-op for the usual contiguous ones)."""
    return x.contiguous()


def dense_rows(page_table):
    """page_table rows may keep their stride (SGLang's req_to_token[:, :L] slice); entries within a row must be dense."""
    return page_table if page_table.stride(-1) == 1 else page_table.contiguous()


def check_size(name, actual, expected, what):
    if actual != expected:
        raise ValueError(f"{name}: {what} is {actual}, expected {expected}")


def check_batch(page_table, q_seq, q_pos, num_tokens, device):
    """page_table [B, L] (rows may be strided: SGLang's req_to_token slice) and q_seq [T] / q_pos [T] on q's device."""
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
        raise ValueError("out must be contiguous: kernels write it with the row strides of a dense tensor")
    return out


def require_gpu(x, name="q"):
    """TileLang kernels are GPU programs: CPU tensors are refused before any compilation starts."""
    if x.device.type != "cuda":
        raise ValueError(f"{name} is on {x.device}: the tilelang DSA kernels run on a CUDA or ROCm GPU only "
                         "(use --dsa-*-backend reference on CPU)")  # fmt: skip
