"""Sparse MLA decode: each token's top-k columns split over programs (flash-decoding), then merged by lse."""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.kernels.tilelang.common import (
    LN2,
    LOG2E,
    head_tile,
)
from sglang_glm5.kernels.tilelang.mla_prefill import (
    PASS_CONFIGS,
    alloc_attend_buffers,
    attend_topk_macro,
    check_sparse_mla_args,
    dense_operands,
    kernel_args,
)


def num_splits_for(topk: int, block_n: int, columns_per_split: int) -> int:
    assert columns_per_split % block_n == 0, (
        f"columns_per_split {columns_per_split} must be a multiple of block_n {block_n}: no split starts mid-tile"
    )
    return max(1, -(-topk // columns_per_split))


@tilelang.jit(pass_configs=PASS_CONFIGS)
def sparse_mla_split_kernel(
    *, heads, v_dim=512, rope_dim=64, topk=2048, sm_scale, dtype="bfloat16", index_dtype="int32", seq_dtype="int64",
    max_block_h=64, block_n=64, num_stages=2, threads=256, gemm_policy="FullRow", columns_per_split=256,
):  # fmt: skip
    assert v_dim % 16 == 0 and rope_dim % 16 == 0, f"v_dim {v_dim} and rope_dim {rope_dim}: gemm k-steps are 16 wide"
    assert block_n % 16 == 0, f"block_n {block_n}: it is a gemm tile dimension, a multiple of 16"
    num_splits = num_splits_for(topk, block_n, columns_per_split)
    steps_per_split = columns_per_split // block_n
    block_h = head_tile(heads, max_block_h)
    head_tiles = T.ceildiv(heads, block_h)
    accum = "float"
    scale_log2 = sm_scale * LOG2E
    num_tokens, num_slots = T.dynamic("num_tokens"), T.dynamic("num_slots")
    batch, length, pt_stride = (
        T.dynamic("batch"),
        T.dynamic("length"),
        T.dynamic("pt_stride"),
    )
    attend = attend_topk_macro(heads=heads, block_h=block_h, v_dim=v_dim, rope_dim=rope_dim, block_n=block_n,
                               topk=topk, num_steps=steps_per_split, dtype=dtype, accum=accum, num_stages=num_stages,
                               policy=getattr(T.GemmWarpPolicy, gemm_policy))  # fmt: skip

    @T.prim_func
    def main(
        Q: T.Tensor((num_tokens, heads, v_dim + rope_dim), dtype),  # [T, H, Dqk]
        KV: T.Tensor((num_slots, v_dim + rope_dim), dtype),  # [S, Dqk]
        PageTable: T.StridedTensor((batch, length), (pt_stride, 1), index_dtype),  # [B, L]
        QSeq: T.Tensor((num_tokens,), seq_dtype),  # [T]
        Topk: T.Tensor((num_tokens, topk), "int32"),  # [T, K]
        PartOut: T.Tensor((num_tokens, heads, num_splits, v_dim), accum),  # [T, H, NS, V], normalised per split
        PartLse: T.Tensor((num_tokens, heads, num_splits), accum),  # [T, H, NS], log2 units
    ):
        with T.Kernel(num_tokens, head_tiles, num_splits, threads=threads) as (
            token,
            head_tile_id,
            split,
        ):
            bufs = alloc_attend_buffers(block_h, v_dim, rope_dim, block_n, dtype, accum, index_dtype)
            acc_o, sumexp, m_i = bufs[7], bufs[9], bufs[11]
            h0 = head_tile_id * block_h
            request = QSeq[token]
            attend(
                Q,
                KV,
                PageTable,
                Topk,
                token,
                request,
                h0,
                split * steps_per_split,
                scale_log2,
                *bufs,
            )
            for h, d in T.Parallel(block_h, v_dim):
                if h0 + h < heads:
                    PartOut[token, h0 + h, split, d] = T.if_then_else(sumexp[h] > 0, acc_o[h, d] / sumexp[h], 0)
            for h in T.Parallel(block_h):
                if h0 + h < heads:  # a split without a valid column weighs exp2(-inf) = 0 in the merge
                    PartLse[token, h0 + h, split] = T.if_then_else(
                        sumexp[h] > 0, T.log2(sumexp[h]) + m_i[h] * scale_log2, -T.infinity(accum))  # fmt: skip

    return main


@tilelang.jit
def merge_splits_kernel(*, heads, v_dim=512, num_splits, dtype="bfloat16", threads=128):
    accum = "float"
    num_tokens = T.dynamic("num_tokens")

    @T.prim_func
    def main(
        PartOut: T.Tensor((num_tokens, heads, num_splits, v_dim), accum),  # [T, H, NS, V]
        PartLse: T.Tensor((num_tokens, heads, num_splits), accum),  # [T, H, NS], log2 units
        Out: T.Tensor((num_tokens, heads, v_dim), dtype),  # [T, H, V]
        Lse: T.Tensor((num_tokens, heads), accum),  # [T, H], natural log
    ):
        with T.Kernel(num_tokens, heads, threads=threads) as (token, head):
            acc = T.alloc_fragment([v_dim], accum)
            top = T.alloc_var(accum)
            total = T.alloc_var(accum)
            top = -T.infinity(accum)
            for s in T.serial(num_splits):
                top = T.max(top, PartLse[token, head, s])
            # all splits empty: weigh against 0 instead, so exp2(-inf - 0) = 0 rather than NaN
            top = T.if_then_else(top == -T.infinity(accum), 0, top)
            total = 0
            for s in T.serial(num_splits):
                total += T.exp2(PartLse[token, head, s] - top)
            T.fill(acc, 0)
            for s in T.serial(num_splits):
                for d in T.Parallel(v_dim):
                    acc[d] += T.exp2(PartLse[token, head, s] - top) * PartOut[token, head, s, d]
            for d in T.Parallel(v_dim):
                Out[token, head, d] = T.cast(T.if_then_else(total > 0, acc[d] / total, 0), dtype)
            Lse[token, head] = T.if_then_else(total > 0, (top + T.log2(total)) * LN2, -T.infinity(accum))

    return main


def sparse_mla_decode(
    q,
    kv_cache,
    page_table,
    q_seq,
    topk,
    sm_scale,
    v_dim,
    return_lse=False,
    *,
    out=None,
    lse=None,
):
    """Sparse MLA for decode, same contract as dsa_reference.sparse_mla_decode; `out` / `lse` written if given.

    q [T, H, Dqk] fp16/bf16, kv_cache [S, Dqk], topk [T, K] int32 -> out [T, H, v_dim] in q.dtype (and lse [T, H]).
    Decode has few tokens, so each token's K columns are split over NS = ceil(K / columns_per_split) programs:
    1. grid (T, head tiles, NS): each program runs sparse_mla_prefill's attention over its columns
       -> normalised partial out and lse in log2 units                                # [T, H, NS, V], [T, H, NS]
    2. merge, one program per (t, h): w_s = exp2(lse_s - max lse); out = sum_s w_s out_s / sum_s w_s
       (splits without a valid column weigh 0; an all -1 row gives out 0 and lse -inf)
    The kernel does not need one token per request. Index values are trusted.
    """
    out, lse_buf = check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, out, lse)
    num_tokens, num_heads, _ = q.shape
    if num_tokens:
        q, kv_cache, page_table, q_seq, topk = dense_operands(q, kv_cache, page_table, q_seq, topk)
        args = kernel_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, "decode")
        num_splits = num_splits_for(args["topk"], args["block_n"], args["columns_per_split"])
        part_out = torch.empty(
            (num_tokens, num_heads, num_splits, v_dim),
            dtype=torch.float32,
            device=q.device,
        )
        part_lse = torch.empty((num_tokens, num_heads, num_splits), dtype=torch.float32, device=q.device)
        sparse_mla_split_kernel(**args)(q, kv_cache, page_table, q_seq, topk, part_out, part_lse)
        merge = merge_splits_kernel(heads=num_heads, v_dim=v_dim, num_splits=num_splits, dtype=args["dtype"])
        merge(part_out, part_lse, out, lse_buf)
    return (out, lse_buf) if return_lse else out
