"""What the DSA TileLang kernels share: dtype names, head tiling, argument checks with named errors."""

import torch
from sglang_glm5.kernels.checks import (  # noqa: F401
    INDEX_DTYPES,
    check_batch,
    check_out,
    check_size,
    check_tensor,
)

FLOAT_DTYPES = (
    torch.float16,
    torch.bfloat16,
)  # tensor-core operand types the gemms take
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


def dense(x):
    """Kernels declare dense tensors: a strided input is copied once (a no-op for the usual contiguous ones)."""
    return x.contiguous()


def dense_rows(page_table):
    """page_table rows may keep their stride (SGLang's req_to_token[:, :L] slice); entries within a row must be dense."""
    return page_table if page_table.stride(-1) == 1 else page_table.contiguous()


def require_gpu(x, name="q"):
    """TileLang kernels are GPU programs: CPU tensors are refused before any compilation starts."""
    if x.device.type != "cuda":
        raise ValueError(f"{name} is on {x.device}: the tilelang DSA kernels run on a CUDA or ROCm GPU only "
                         "(use --dsa-*-backend reference on CPU)")  # fmt: skip
