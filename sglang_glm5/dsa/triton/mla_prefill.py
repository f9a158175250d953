"""Sparse MLA over per-token top-k positions in the absorbed latent space, one program per (token, head tile)."""

import math

import torch
import triton
import triton.language as tl

from sglang_glm5.dsa.triton.common import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    block_size,
    check_batch,
    check_out,
    check_size,
    check_tensor,
    mma,
    tile_max,
    tile_sum,
)
from sglang_glm5.dsa.triton.kv_layout import FP8_TILE, check_fp8_kv, fp8_kv_offsets

BLOCK_N = 32  # selected positions per step
# head tile cap: a [512, 32] fp32 accumulator over 8 warps leaves room for the [32, 512] bf16 KV tile without
# spilling on sm_90a (186 registers; a 64-head tile reaches 245); 64 heads run as two programs per token
MAX_BLOCK_H = 32
NUM_WARPS = 8
LN2 = tl.constexpr(math.log(2.0))
FP8_TILE_SIZE = tl.constexpr(FP8_TILE)  # latent values per fp32 scale in FP8 rows


@triton.jit
def attend_topk(
    q_ptr, kv_ptr, scale_ptr, rope_ptr, page_row_ptr, topk_row_ptr,
    token, head_start, col_start, col_end,
    stride_qt, stride_qh, stride_kv, stride_scale, stride_rope, qk_scale_log2,
    HEADS: tl.constexpr, V_DIM: tl.constexpr, ROPE_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    KV_FP8: tl.constexpr, SCALE_OFFSET: tl.constexpr, ROPE_OFFSET: tl.constexpr,
):  # fmt: skip
    """Online softmax of one token's head tile over its topk columns [col_start, col_end) -> acc, m, l.

    Scores are in log2 units (s * sm_scale * log2 e, so exp2 replaces exp). m [BH]: running max, -inf while no
    valid column was seen; l [BH]: sum of exp2(s - m); acc [BH, BV]: sum of exp2(s - m) * v.
    Inside, heads are the columns (s^T [BN, BH], acc^T [BV, BH]): the P @ V product then has M = BV = 512 rows,
    which Hopper's wgmma takes (M >= 64), where a head-row tile of 16/32 rows would fall back to mma.sync.
    A cache row's latent is at kv_ptr, its rope key at rope_ptr + ROPE_OFFSET (the same row of a float cache);
    with KV_FP8 the latent is e4m3 and its per-tile fp32 scales are at scale_ptr + SCALE_OFFSET (kv_layout.py).
    """
    heads = head_start + tl.arange(0, BLOCK_H)
    head_ok = heads < HEADS
    v_dims = tl.arange(0, BLOCK_V)
    r_dims = tl.arange(0, BLOCK_R)
    v_ok = v_dims < V_DIM
    r_ok = r_dims < ROPE_DIM
    q_row = q_ptr + token.to(tl.int64) * stride_qt + heads[:, None] * stride_qh
    # q stays in its own dtype: bf16/fp16 tiles go straight into the tensor cores; the scale is applied to s
    q_v = tl.load(q_row + v_dims[None, :], mask=head_ok[:, None] & v_ok[None, :], other=0.0)  # [BH, BV]
    q_r = tl.load(q_row + V_DIM + r_dims[None, :], mask=head_ok[:, None] & r_ok[None, :], other=0.0)  # [BH, BR]

    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l = tl.full([BLOCK_H], 0, tl.float32)
    acc = tl.full([BLOCK_V, BLOCK_H], 0, tl.float32)  # transposed: [BV, BH]
    cols = tl.arange(0, BLOCK_N)
    for start in range(col_start, col_end, BLOCK_N):
        in_range = start + cols < col_end
        pos = tl.load(topk_row_ptr + start + cols, mask=in_range, other=-1)  # [BN]
        valid = pos >= 0
        slots = tl.load(page_row_ptr + pos, mask=valid, other=0).to(tl.int64)  # [BN]
        v_mask = valid[:, None] & v_ok[None, :]
        kv_v = tl.load(kv_ptr + slots[:, None] * stride_kv + v_dims[None, :], mask=v_mask, other=0.0)  # [BN, BV]
        if KV_FP8:
            # one fp32 scale per 128-value tile: load [BN, tiles] and broadcast, not one load per value
            tiles = tl.arange(0, BLOCK_V // FP8_TILE_SIZE)
            tile_scale = tl.load(scale_ptr + slots[:, None] * stride_scale + SCALE_OFFSET + tiles[None, :],
                                 mask=valid[:, None], other=0.0)  # [BN, BV / 128]
            kv_tiles = tl.reshape(kv_v.to(tl.float32), [BLOCK_N, BLOCK_V // FP8_TILE_SIZE, FP8_TILE_SIZE])
            # dequantize in fp32, round once to q's dtype (FlashMLA rounds to bf16 likewise)
            kv_v = tl.reshape(kv_tiles * tile_scale[:, :, None], [BLOCK_N, BLOCK_V]).to(q_v.dtype)
        else:
            kv_v = kv_v.to(q_v.dtype)
        rope_row = rope_ptr + slots[:, None] * stride_rope + ROPE_OFFSET
        kv_r = tl.load(rope_row + r_dims[None, :], mask=valid[:, None] & r_ok[None, :], other=0.0).to(q_r.dtype)
        scores = mma(kv_v, tl.trans(q_v), tl.full([BLOCK_N, BLOCK_H], 0, tl.float32))  # [BN, BH]
        scores = mma(kv_r, tl.trans(q_r), scores)
        scores = tl.where(valid[:, None], scores * qk_scale_log2, float("-inf"))
        m_new = tl.maximum(m, tile_max(scores, 0))  # [BH]
        # while m_new is -inf every score is -inf: subtract 0 so exp2 gives 0, not exp2(-inf + inf) = NaN
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(scores - m_safe[None, :])  # [BN, BH]
        alpha = tl.exp2(m - m_safe)  # [BH]
        l = l * alpha + tile_sum(p, 0)
        # p in [0, 1] rounded to the value dtype (as flash attention does): a bf16 x bf16 dot into fp32 acc
        acc = mma(tl.trans(kv_v), p.to(kv_v.dtype), acc * alpha[None, :])  # [BV, BH]
        m = m_new
    return tl.trans(acc), m, l


@triton.jit
def _sparse_mla_prefill_kernel(
    q_ptr,  # [T, H, Dqk]
    kv_ptr,  # [S, Dqk] float, or the e4m3 view of [S, 656] FP8 rows
    scale_ptr,  # fp32 view of the FP8 rows (KV_FP8 only)
    rope_ptr,  # kv_ptr, or the bf16 view of the FP8 rows
    page_table_ptr,  # [B, L]
    q_seq_ptr,  # [T]
    topk_ptr,  # [T, K]
    out_ptr,  # [T, H, V] q.dtype
    lse_ptr,  # [T, H] fp32, written if WRITE_LSE
    topk_width,
    stride_qt, stride_qh, stride_kv, stride_scale, stride_rope, stride_pt, stride_tt, stride_ot, stride_oh, stride_lt,
    qk_scale_log2,
    HEADS: tl.constexpr, V_DIM: tl.constexpr, ROPE_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    KV_FP8: tl.constexpr, SCALE_OFFSET: tl.constexpr, ROPE_OFFSET: tl.constexpr,
    WRITE_LSE: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    head_start = tl.program_id(1) * BLOCK_H
    request = tl.load(q_seq_ptr + token).to(tl.int64)
    acc, m, l = attend_topk(
        q_ptr, kv_ptr, scale_ptr, rope_ptr, page_table_ptr + request * stride_pt,
        topk_ptr + token.to(tl.int64) * stride_tt, token, head_start, 0, topk_width,
        stride_qt, stride_qh, stride_kv, stride_scale, stride_rope, qk_scale_log2,
        HEADS, V_DIM, ROPE_DIM, BLOCK_H, BLOCK_V, BLOCK_R, BLOCK_N, KV_FP8, SCALE_OFFSET, ROPE_OFFSET,
    )  # fmt: skip
    # an all -1 row has l = 0: output 0 and lse -inf, as the reference
    out = tl.where(l[:, None] > 0, acc / tl.where(l > 0, l, 1.0)[:, None], 0.0)  # [BH, BV]
    heads = head_start + tl.arange(0, BLOCK_H)
    v_dims = tl.arange(0, BLOCK_V)
    out_offs = token.to(tl.int64) * stride_ot + heads[:, None] * stride_oh + v_dims[None, :]
    out_mask = (heads[:, None] < HEADS) & (v_dims[None, :] < V_DIM)
    tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=out_mask)
    if WRITE_LSE:
        lse = tl.where(l > 0, (m + tl.log2(tl.where(l > 0, l, 1.0))) * LN2, float("-inf"))  # natural log
        tl.store(lse_ptr + token.to(tl.int64) * stride_lt + heads, lse, mask=heads < HEADS)


def check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim):
    check_tensor("q", q, 3, FLOAT_DTYPES)
    num_tokens, num_heads, qk_dim = q.shape
    check_tensor("kv_cache", kv_cache, 2, FLOAT_DTYPES + (torch.uint8,), q.device)
    check_tensor("topk", topk, 2, INDEX_DTYPES, q.device)
    check_size("topk", topk.shape[0], num_tokens, "number of query tokens")
    check_batch(page_table, q_seq, None, num_tokens, q.device)
    if not isinstance(v_dim, int) or not 0 < v_dim <= qk_dim:
        raise ValueError(f"v_dim must be an int in [1, {qk_dim}], got {v_dim!r}")
    if kv_cache.dtype == torch.uint8:
        check_fp8_kv("kv_cache", kv_cache, v_dim, qk_dim - v_dim)
    else:
        check_size("kv_cache", kv_cache.shape[1], qk_dim, "head dim")
    if not sm_scale > 0:
        raise ValueError(f"sm_scale must be > 0, got {sm_scale!r}")


def kv_views(kv_cache, v_dim):
    """(kv, scale, rope) tensors, their row strides, and the constexprs saying where each row part is."""
    if kv_cache.dtype != torch.uint8:
        views = (kv_cache, kv_cache, kv_cache)
        constexprs = dict(KV_FP8=False, SCALE_OFFSET=0, ROPE_OFFSET=v_dim)
    else:
        # three typed views of the same FP8 rows, so each part is loaded with its own dtype
        views = (kv_cache.view(torch.float8_e4m3fn), kv_cache.view(torch.float32), kv_cache.view(torch.bfloat16))
        scale_offset, rope_offset = fp8_kv_offsets(v_dim)
        constexprs = dict(KV_FP8=True, SCALE_OFFSET=scale_offset, ROPE_OFFSET=rope_offset)
    return views, tuple(view.stride(0) for view in views), constexprs


def tile_config(num_heads: int, qk_dim: int, v_dim: int) -> dict:
    """Tile sizes (head tile right-sized to the head count up to MAX_BLOCK_H, latent / rope parts padded to powers
    of two). tests/dsa/compile_targets.py compiles exactly these for the resource contracts."""
    return dict(
        HEADS=num_heads, V_DIM=v_dim, ROPE_DIM=qk_dim - v_dim,
        BLOCK_H=min(block_size(num_heads), MAX_BLOCK_H), BLOCK_V=block_size(v_dim),
        BLOCK_R=block_size(max(qk_dim - v_dim, 1)), BLOCK_N=BLOCK_N,
    )  # fmt: skip


def sparse_mla_prefill(
    q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False, *, out=None, lse=None, checked=False
):
    """Sparse MLA, same contract as dsa_reference.sparse_mla_prefill; `out` / `lse` are written if given.

    q [T, H, Dqk], kv_cache [S, Dqk] (latent | rope key) or [S, 656] uint8 in FlashMLA's FP8 layout
    (kv_layout.py), topk [T, K] positions (-1 = skip) -> out [T, H, v_dim] in q.dtype (and lse [T, H] fp32,
    natural log, if return_lse).
    One program per (query token t, tile of up to 32 heads: 64 heads are two programs); heads are not padded
    past a 16-row tile. Every dot takes q.dtype operands (bf16 / fp16 tensor cores) into fp32 accumulators:
    1. q[t] split into latent [BH, v_dim] and rope [BH, Dqk - v_dim] parts, in q.dtype
    2. per BLOCK_N topk columns: slots = page_table[q_seq[t], pos] for pos >= 0            # [BN]
       kv = kv_cache[slots] in q.dtype; FP8 latents * their tile scale in fp32, then rounded to q.dtype (as
       FlashMLA rounds to bf16); -1 columns: no load                                         # [BN, Dqk]
       s = (q_latent @ kv_latent^T + q_rope @ kv_rope^T) * sm_scale * log2 e, -inf at -1     # [BH, BN]
    3. online softmax in base 2: m, l, acc += exp2(s - m) in q.dtype @ kv_latent            # [BH, v_dim]
    4. out = acc / l (0 for an all -1 row); lse = (m + log2 l) * ln 2 (-inf for an all -1 row)
    Index values (q_seq, topk) are trusted, not checked: that would sync the device; the reference checks them.
    checked=True: a plan for these shapes (plans.py) checked the arguments and passes out (and lse); no check here.
    """
    if not checked:
        check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim)
    num_tokens, num_heads, _ = q.shape
    if not checked:
        out = check_out(out, (num_tokens, num_heads, v_dim), q.dtype, q.device)
        lse = check_out(lse, (num_tokens, num_heads), torch.float32, q.device) if return_lse else None
    config = tile_config(num_heads, q.shape[2], v_dim)
    (kv, scale, rope), (stride_kv, stride_scale, stride_rope), layout = kv_views(kv_cache, v_dim)
    if num_tokens:
        grid = (num_tokens, triton.cdiv(num_heads, config["BLOCK_H"]))
        _sparse_mla_prefill_kernel[grid](
            q, kv, scale, rope, page_table, q_seq, topk, out, lse if return_lse else out, topk.shape[1],
            q.stride(0), q.stride(1), stride_kv, stride_scale, stride_rope, page_table.stride(0), topk.stride(0),
            out.stride(0), out.stride(1), lse.stride(0) if return_lse else 0, sm_scale * math.log2(math.e),
            WRITE_LSE=return_lse, num_warps=NUM_WARPS, **config, **layout,
        )  # fmt: skip
    return (out, lse) if return_lse else out
