"""Lightning-indexer logits over SGLang's slot-indexed cache, causal and per-request ragged (spec: dsa_reference)."""

import torch
import triton
import triton.language as tl

from sglang_glm5.kernels.triton.common import (
    FLOAT_DTYPES,
    FP8_DTYPE,
    block_size,
    check_batch,
    check_out,
    check_size,
    check_tensor,
    mma,
    tile_sum,
)

BLOCK_L = 64  # cached positions per program
NUM_WARPS = 4


@triton.jit
def _indexer_logits_kernel(
    q_ptr,  # [T, H, D]
    q_scale_ptr,  # [T, H] fp32, read only if HAS_SCALES
    weights_ptr,  # [T, H]
    k_ptr,  # [S, D]
    k_scale_ptr,  # [S] fp32, read only if HAS_SCALES
    page_table_ptr,  # [B, L]
    q_seq_ptr,  # [T]
    q_pos_ptr,  # [T]
    out_ptr,  # [T, L] fp32
    length,
    stride_qt,
    stride_qh,
    stride_qst,
    stride_wt,
    stride_k,
    stride_pt,
    stride_ot,
    score_scale,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_L: tl.constexpr,
    HAS_SCALES: tl.constexpr,
):
    token = tl.program_id(0)
    pos = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)  # [BL]
    q_pos = tl.load(q_pos_ptr + token)
    valid = pos <= q_pos  # [BL]
    logits = tl.full([BLOCK_L], float("-inf"), tl.float32)
    # blocks wholly after the query's position only write -inf
    if tl.program_id(1) * BLOCK_L <= q_pos:
        heads = tl.arange(0, BLOCK_H)
        head_ok = heads < HEADS
        dims = tl.arange(0, HEAD_DIM)
        q_offs = token.to(tl.int64) * stride_qt + heads[:, None] * stride_qh + dims[None, :]
        # q and k enter the tensor cores in their own dtype (e4m3 x e4m3 or bf16 x bf16), fp32 accumulation
        q = tl.load(q_ptr + q_offs, mask=head_ok[:, None], other=0.0)  # [BH, D]
        request = tl.load(q_seq_ptr + token).to(tl.int64)
        slots = tl.load(page_table_ptr + request * stride_pt + pos, mask=valid, other=0).to(tl.int64)  # [BL]
        k = tl.load(k_ptr + slots[:, None] * stride_k + dims[None, :], mask=valid[:, None], other=0.0)  # [BL, D]
        # keys as rows (M = BLOCK_L >= 64), heads as columns: an M of 64 is what Hopper's wgmma takes, and its
        # e4m3 form needs it (at M = 16/32 heads Triton falls back to mma.sync, which widens e4m3 to f16)
        scores = mma(k.to(q.dtype), tl.trans(q), tl.full([BLOCK_L, BLOCK_H], 0, tl.float32))  # [BL, BH]
        if HAS_SCALES:
            q_scale = tl.load(q_scale_ptr + token.to(tl.int64) * stride_qst + heads, mask=head_ok, other=0.0)
            k_scale = tl.load(k_scale_ptr + slots, mask=valid, other=0.0)
            scores = scores * k_scale.to(tl.float32)[:, None] * q_scale.to(tl.float32)[None, :]
        scores = tl.maximum(scores * score_scale, 0.0)
        weights = tl.load(weights_ptr + token.to(tl.int64) * stride_wt + heads, mask=head_ok, other=0.0)
        logits = tile_sum(scores * weights.to(tl.float32)[None, :], 1)  # [BL]
        logits = tl.where(valid, logits, float("-inf"))
    tl.store(out_ptr + token.to(tl.int64) * stride_ot + pos, logits, mask=pos < length)


def _launch(q, q_scale, weights, k_cache, k_scale, page_table, q_seq, q_pos, out, checked=False):
    num_tokens, num_heads, head_dim = q.shape
    length = page_table.shape[1]
    out = out if checked else check_out(out, (num_tokens, length), torch.float32, q.device)
    if num_tokens == 0 or length == 0:
        return out
    has_scales = q_scale is not None
    grid = (num_tokens, triton.cdiv(length, BLOCK_L))
    _indexer_logits_kernel[grid](
        q, q_scale if has_scales else q, weights, k_cache, k_scale if has_scales else k_cache,
        page_table, q_seq, q_pos, out,
        length, q.stride(0), q.stride(1), q_scale.stride(0) if has_scales else 0, weights.stride(0),
        k_cache.stride(0), page_table.stride(0), out.stride(0), head_dim**-0.5,
        HEADS=num_heads, HEAD_DIM=head_dim, BLOCK_H=block_size(num_heads), BLOCK_L=BLOCK_L,
        HAS_SCALES=has_scales,
        num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


def _check_common(q, weights, k_cache, page_table, q_seq, q_pos, q_dtypes, k_dtypes):
    check_tensor("q", q, 3, q_dtypes)
    num_tokens, num_heads, head_dim = q.shape
    check_tensor("weights", weights, 2, FLOAT_DTYPES, q.device)
    check_size("weights", tuple(weights.shape), (num_tokens, num_heads), "shape")
    check_tensor("k_cache", k_cache, 2, k_dtypes, q.device)
    check_size("k_cache", k_cache.shape[1], head_dim, "head dim")
    if head_dim < block_size(1) or head_dim & (head_dim - 1):
        raise ValueError(f"q: head dim {head_dim} must be a power of two >= {block_size(1)} (one tl.dot tile)")
    check_batch(page_table, q_seq, q_pos, num_tokens, q.device)


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos, *, out=None, checked=False):
    """Indexer logits, same contract as dsa_reference.indexer_logits; `out` [T, L] fp32 is written if given.

    q [T, H, D] (RoPE applied), weights [T, H] (already * H**-0.5), k_cache [S, D] -> logits [T, L] fp32.
    One program per (query token t, block of BLOCK_L positions p):
    1. blocks with every p > q_pos[t] store -inf and stop
    2. slots = page_table[q_seq[t], p] for p <= q_pos[t]                  # [BL]   (never reads entries past it)
    3. k = k_cache[slots]; s = q[t] @ k^T * D**-0.5 (operands in k's dtype)  # [BL, D], [H, BL]
    4. logits = sum_h weights[t, h] * relu(s[h]); -inf where p > q_pos[t]  # [BL]
    Heads are padded to a 16-row tile (tl.dot's minimum), not to 64.
    Index values (q_seq, q_pos) are trusted, not checked: that would sync the device; the reference checks them.
    checked=True: the arguments (and `out`) were checked by a plan for these shapes (plans.py); no check here.
    """
    if not checked:
        _check_common(q, weights, k_cache, page_table, q_seq, q_pos, FLOAT_DTYPES, FLOAT_DTYPES)
    return _launch(q, None, weights, k_cache, None, page_table, q_seq, q_pos, out, checked)


def indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos, *, out=None, checked=False):
    """FP8 indexer logits, same contract as dsa_reference.indexer_logits_fp8.

    q_fp8 [T, H, D] e4m3 + q_scale [T, H], k_fp8 [S, D] e4m3 + k_scale [S] -> logits [T, L] fp32.
    Dataflow of indexer_logits, with step 3 as s = (q_fp8[t] @ k_fp8^T) * q_scale[t, h] * k_scale[slot] * D**-0.5:
    an e4m3 x e4m3 tensor-core dot (wgmma with e4m3 operands on sm_90a, asserted in tests/kernels/test_resources.py)
    into fp32, and scaling after the dot keeps one multiply per score. checked: see indexer_logits.
    """
    if not checked:
        check_fp8_args(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos)
    return _launch(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos, out, checked)


def check_fp8_args(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos):
    _check_common(q_fp8, weights, k_fp8, page_table, q_seq, q_pos, (FP8_DTYPE,), (FP8_DTYPE,))
    check_tensor("q_scale", q_scale, 2, FLOAT_DTYPES, q_fp8.device)
    check_size("q_scale", tuple(q_scale.shape), tuple(q_fp8.shape[:2]), "shape")
    check_tensor("k_scale", k_scale, 1, FLOAT_DTYPES, q_fp8.device)
    check_size("k_scale", k_scale.shape[0], k_fp8.shape[0], "number of cache slots")
