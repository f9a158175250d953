"""What the DSA TileLang kernels share: dtype names, head tiling, argument checks with named errors."""

from types import SimpleNamespace

import tilelang.language as T
import torch
from sglang_glm5.dsa.checks import (  # noqa: F401
    INDEX_DTYPES,
    check_batch,
    check_out,
    check_size,
    check_tensor,
    fresh_buffer,
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


def out_buffer(out, name, shape, dtype, device, empty):
    """A caller's output buffer checked, or one from the plan's `empty` (graph_plan.py) under the slot `name`."""
    return empty(name, shape, dtype, device) if out is None else check_out(out, shape, dtype, device)


def sparse_mla_operands(*, heads, v_dim, rope_dim, topk, dtype, index_dtype, seq_dtype):
    """The input tensor types every sparse MLA kernel (prefill, warp-specialized prefill, decode split) declares,
    over the same dynamic sizes: Q [T, H, Dqk], KV [S, Dqk], PageTable [B, L] (rows keep their stride), QSeq [T],
    Topk [T, K]; and `num_tokens`, the dynamic T, for the outputs."""
    num_tokens, num_slots = T.dynamic("num_tokens"), T.dynamic("num_slots")
    batch, length, pt_stride = T.dynamic("batch"), T.dynamic("length"), T.dynamic("pt_stride")
    return SimpleNamespace(
        num_tokens=num_tokens,
        Q=T.Tensor((num_tokens, heads, v_dim + rope_dim), dtype),  # [T, H, Dqk]
        KV=T.Tensor((num_slots, v_dim + rope_dim), dtype),  # [S, Dqk]
        PageTable=T.StridedTensor((batch, length), (pt_stride, 1), index_dtype),  # [B, L]
        QSeq=T.Tensor((num_tokens,), seq_dtype),  # [T]
        Topk=T.Tensor((num_tokens, topk), "int32"),  # [T, K]
    )


def online_softmax_macro(*, block_h, block_n, width):
    """A T.macro: one key tile's online-softmax update in exp2 units, shared by the pipelined attend (mla_prefill) and
    the warp-specialized score consumer (mla_prefill_ws). With scores acc_s [BH, BN] in raw units:
    m_i = max(m_prev, row max); alpha = exp2((m_prev - m_i) * scale_log2); acc_s = exp2((acc_s - m_i) * scale_log2)
    (the tile's numerators); sumexp = sumexp * alpha + row sum; acc_o [BH, width] *= alpha."""

    @T.macro
    def update(acc_s, acc_o, sumexp, sumexp_i, m_i, m_prev, alpha, scale_log2):
        T.copy(m_i, m_prev)
        T.reduce_max(acc_s, m_i, dim=1, clear=False)
        for h in T.Parallel(block_h):
            alpha[h] = T.exp2((m_prev[h] - m_i[h]) * scale_log2)
        for h, n in T.Parallel(block_h, block_n):
            acc_s[h, n] = T.exp2(acc_s[h, n] * scale_log2 - m_i[h] * scale_log2)
        T.reduce_sum(acc_s, sumexp_i, dim=1)
        for h in T.Parallel(block_h):
            sumexp[h] = sumexp[h] * alpha[h] + sumexp_i[h]
        for h, d in T.Parallel(block_h, width):
            acc_o[h, d] = acc_o[h, d] * alpha[h]

    return update
