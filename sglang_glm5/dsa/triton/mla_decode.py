"""Sparse MLA decode: the top-k columns of each token split over programs (flash-decoding), then merged by lse."""

import math

import torch
import triton
import triton.language as tl

from sglang_glm5.dsa.triton.common import check_out, multiprocessor_count, tile_max, tile_sum
from sglang_glm5.dsa.triton.mla_prefill import (
    LN2,
    attend_topk,
    check_sparse_mla_args,
    kv_views,
    tile_config,
)

# Batch-1 decode is latency bound (topk -> page table -> KV gather, three dependent loads per step), so programs
# are worth more than columns per program: splits as short as half a step, e.g. 2048 / 16 = 128 programs at batch 1
# on a 132-SM GPU. A split may start mid-step (attend_topk masks its columns), so splits need not be BLOCK_N wide.
MIN_COLUMNS_PER_SPLIT = 16
CPU_COLUMNS_PER_SPLIT = 256  # no SM count to fill (the interpreter): GLM-5's 2048 -> 8 splits
MAX_SPLITS = 128
NUM_WARPS = 8  # as prefill: no spills at a 16/32-head tile on sm_90a (tests/dsa/test_resources.py)
COMBINE_NUM_WARPS = 4
MERGE_BLOCK_V = 64  # value columns per merge program: (T, H, 512 / 64) programs share the merge, [128, 64] fp32 each


@triton.jit
def _sparse_mla_split_kernel(
    q_ptr,  # [T, H, Dqk]
    kv_ptr,  # [S, Dqk] float, or the e4m3 view of [S, 656] FP8 rows
    scale_ptr,  # fp32 view of the FP8 rows (KV_FP8 only)
    rope_ptr,  # kv_ptr, or the bf16 view of the FP8 rows
    page_table_ptr,  # [B, L]
    q_seq_ptr,  # [T]
    topk_ptr,  # [T, K]
    part_out_ptr,  # [T, H, NS, V] fp32, normalised per split
    part_lse_ptr,  # [T, H, NS] fp32, log2 units
    topk_width, columns_per_split,
    stride_qt, stride_qh, stride_kv, stride_scale, stride_rope, stride_pt, stride_tt,
    qk_scale_log2,
    HEADS: tl.constexpr, V_DIM: tl.constexpr, ROPE_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    KV_FP8: tl.constexpr, SCALE_OFFSET: tl.constexpr, ROPE_OFFSET: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    head_start = tl.program_id(1) * BLOCK_H
    split = tl.program_id(2)
    col_start = split * columns_per_split
    col_end = tl.minimum(col_start + columns_per_split, topk_width)
    request = tl.load(q_seq_ptr + token).to(tl.int64)
    acc, m, l = attend_topk(
        q_ptr, kv_ptr, scale_ptr, rope_ptr, page_table_ptr + request * stride_pt,
        topk_ptr + token.to(tl.int64) * stride_tt, token, head_start, col_start, col_end,
        stride_qt, stride_qh, stride_kv, stride_scale, stride_rope, qk_scale_log2,
        HEADS, V_DIM, ROPE_DIM, BLOCK_H, BLOCK_V, BLOCK_R, BLOCK_N, KV_FP8, SCALE_OFFSET, ROPE_OFFSET,
    )  # fmt: skip
    heads = head_start + tl.arange(0, BLOCK_H)
    v_dims = tl.arange(0, BLOCK_V)
    part = (token.to(tl.int64) * HEADS + heads) * NUM_SPLITS + split  # [BH] index into [T, H, NS]
    out = tl.where(l[:, None] > 0, acc / tl.where(l > 0, l, 1.0)[:, None], 0.0)  # [BH, BV]
    out_mask = (heads[:, None] < HEADS) & (v_dims[None, :] < V_DIM)
    tl.store(part_out_ptr + part[:, None] * V_DIM + v_dims[None, :], out, mask=out_mask)
    # a split with no valid column has weight exp2(-inf) = 0 in the merge
    part_lse = tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)), float("-inf"))
    tl.store(part_lse_ptr + part, part_lse, mask=heads < HEADS)


@triton.jit
def _merge_splits_kernel(
    part_out_ptr,  # [T, H, NS, V] fp32
    part_lse_ptr,  # [T, H, NS] fp32, log2 units
    out_ptr,  # [T, H, V] q.dtype
    lse_ptr,  # [T, H] fp32, written if WRITE_LSE
    stride_ot, stride_oh, stride_lt,
    HEADS: tl.constexpr, V_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_V: tl.constexpr, WRITE_LSE: tl.constexpr,
):  # fmt: skip
    """One program per (token, head, BLOCK_V value columns); the first column block also writes the lse."""
    token = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, BLOCK_S)
    v_dims = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    part = (token.to(tl.int64) * HEADS + head) * NUM_SPLITS + splits  # [BS]
    part_lse = tl.load(part_lse_ptr + part, mask=splits < NUM_SPLITS, other=float("-inf"))  # [BS]
    part_out = tl.load(
        part_out_ptr + part[:, None] * V_DIM + v_dims[None, :],
        mask=(splits[:, None] < NUM_SPLITS) & (v_dims[None, :] < V_DIM), other=0.0,
    )  # [BS, BV]
    top = tile_max(part_lse, 0)
    top_safe = tl.where(top == float("-inf"), 0.0, top)
    weight = tl.exp2(part_lse - top_safe)  # [BS], 0 for empty splits
    total = tile_sum(weight, 0)
    out = tile_sum(weight[:, None] * part_out, 0) / tl.where(total > 0, total, 1.0)  # [BV]
    tl.store(out_ptr + token.to(tl.int64) * stride_ot + head * stride_oh + v_dims, out.to(out_ptr.dtype.element_ty),
             mask=v_dims < V_DIM)  # fmt: skip
    if WRITE_LSE and tl.program_id(2) == 0:
        lse = tl.where(total > 0, (top_safe + tl.log2(tl.where(total > 0, total, 1.0))) * LN2, float("-inf"))
        tl.store(lse_ptr + token.to(tl.int64) * stride_lt + head, lse)


def default_num_splits(num_tokens: int, head_tiles: int, topk_width: int, num_sms: int | None) -> int:
    """Splits per (token, head tile) so that the grid fills the GPU's SMs once, e.g. 132 SMs at batch 1 with one
    8-head tile and K 2048: min(132, 2048 / 16) = 128 splits; at batch >= 132 one split. Splits never shorter
    than MIN_COLUMNS_PER_SPLIT columns; without an SM count (CPU) one split per CPU_COLUMNS_PER_SPLIT columns.
    The launch may use fewer (split_columns: equal splits of whole MIN_COLUMNS_PER_SPLIT columns, none empty)."""
    by_columns = triton.cdiv(max(topk_width, 1), MIN_COLUMNS_PER_SPLIT)
    if num_sms is None:
        wanted = triton.cdiv(max(topk_width, 1), CPU_COLUMNS_PER_SPLIT)
    else:
        wanted = triton.cdiv(num_sms, max(num_tokens * head_tiles, 1))
    return max(1, min(MAX_SPLITS, by_columns, wanted))


def split_columns(topk_width: int, num_splits: int) -> tuple[int, int]:
    """(columns per split, splits launched): num_splits equal splits rounded up to MIN_COLUMNS_PER_SPLIT columns,
    then only as many as hold a column (K 2048 in 132 wanted -> 16 columns x 128 splits). Applied to its own
    launched count it gives the same split."""
    columns = triton.cdiv(triton.cdiv(max(topk_width, 1), num_splits), MIN_COLUMNS_PER_SPLIT) * MIN_COLUMNS_PER_SPLIT
    return columns, triton.cdiv(max(topk_width, 1), columns)


def check_decode_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse, out, lse, num_splits):
    """-> (out, lse, num_splits): checked or allocated / the splits launched (split_columns) for num_splits or
    default_num_splits' for the device."""
    check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim)
    num_tokens, num_heads, _ = q.shape
    if num_splits is None:
        head_tiles = triton.cdiv(num_heads, tile_config(num_heads, q.shape[2], v_dim)["BLOCK_H"])
        num_splits = default_num_splits(num_tokens, head_tiles, topk.shape[1], multiprocessor_count(q.device))
    if not isinstance(num_splits, int) or not 1 <= num_splits <= MAX_SPLITS:
        raise ValueError(f"num_splits must be an int in [1, {MAX_SPLITS}], got {num_splits!r}")
    num_splits = split_columns(topk.shape[1], num_splits)[1]
    out = check_out(out, (num_tokens, num_heads, v_dim), q.dtype, q.device)
    lse = check_out(lse, (num_tokens, num_heads), torch.float32, q.device) if return_lse else None
    return out, lse, num_splits


def split_workspace(num_tokens, num_heads, num_splits, v_dim, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(part_out [T, H, NS, v_dim], part_lse [T, H, NS]) fp32: each split's normalised output and lse."""
    return (
        torch.empty((num_tokens, num_heads, num_splits, v_dim), dtype=torch.float32, device=device),
        torch.empty((num_tokens, num_heads, num_splits), dtype=torch.float32, device=device),
    )


def sparse_mla_decode(
    q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False, *, out=None, lse=None, num_splits=None,
    workspace=None, checked=False,
):  # fmt: skip
    """Sparse MLA for decode, same contract as dsa_reference.sparse_mla_decode; `out` / `lse` written if given.

    q [T, H, Dqk], kv_cache [S, Dqk] float or [S, 656] uint8 FP8 rows (kv_layout.py), topk [T, K]
    -> out [T, H, v_dim] in q.dtype (and lse [T, H] fp32).
    Decode has few tokens, so each token's K columns are split over NS programs to fill the GPU:
    1. grid (T, head tiles, NS): each program runs sparse_mla_prefill's attend_topk over its
       ceil(K / NS) columns -> normalised partial out [BH, v_dim] and lse in log2 units     # [T, H, NS, v_dim]
    2. merge, one program per (t, h, 64 value columns): w_s = exp2(lse_s - max lse); out = sum_s w_s out_s / sum_s w_s
       (splits without a valid column weigh 0; an all -1 row gives out 0 and lse -inf)
    num_splits: default_num_splits (enough programs to fill the device's SMs once, at least 16 columns each). The
    merge is a second launch queued right behind the first: nothing is read on the host between them, as FlashMLA
    queues its combine kernel. The partial buffers are allocated per call unless `workspace` is given (under CUDA
    graphs, plans.py gives it once per shape).
    The kernel does not need one token per request.
    workspace: (part_out, part_lse) of split_workspace, else allocated per call. checked=True: a plan for these
    shapes (plans.py) checked the arguments and passes out, lse, num_splits and the workspace; nothing is checked,
    looked up or allocated here.
    """
    if not checked:
        out, lse, num_splits = check_decode_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse,
                                                 out, lse, num_splits)  # fmt: skip
    num_tokens, num_heads, _ = q.shape
    topk_width = topk.shape[1]
    config = tile_config(num_heads, q.shape[2], v_dim)
    head_tiles = triton.cdiv(num_heads, config["BLOCK_H"])
    if num_tokens == 0:
        return (out, lse) if return_lse else out
    columns_per_split = split_columns(topk_width, num_splits)[0]
    part_out, part_lse = workspace or split_workspace(num_tokens, num_heads, num_splits, v_dim, q.device)
    (kv, scale, rope), (stride_kv, stride_scale, stride_rope), layout = kv_views(kv_cache, v_dim)
    grid = (num_tokens, head_tiles, num_splits)
    _sparse_mla_split_kernel[grid](
        q, kv, scale, rope, page_table, q_seq, topk, part_out, part_lse, topk_width, columns_per_split,
        q.stride(0), q.stride(1), stride_kv, stride_scale, stride_rope, page_table.stride(0), topk.stride(0),
        sm_scale * math.log2(math.e), NUM_SPLITS=num_splits, num_warps=NUM_WARPS, **config, **layout,
    )  # fmt: skip
    _merge_splits_kernel[(num_tokens, num_heads, triton.cdiv(v_dim, MERGE_BLOCK_V))](
        part_out, part_lse, out, lse if return_lse else out, out.stride(0), out.stride(1),
        lse.stride(0) if return_lse else 0,
        HEADS=num_heads, V_DIM=v_dim, NUM_SPLITS=num_splits, BLOCK_S=triton.next_power_of_2(num_splits),
        BLOCK_V=MERGE_BLOCK_V, WRITE_LSE=return_lse, num_warps=COMBINE_NUM_WARPS,
    )  # fmt: skip
    return (out, lse) if return_lse else out
