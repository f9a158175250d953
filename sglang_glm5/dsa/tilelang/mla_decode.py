"""Sparse MLA decode: each token's top-k columns split over programs (flash-decoding), then merged by lse.

The split count fills the GPU's SMs once (decode_launch: 128 splits of 16 columns at batch 1 on 132 SMs); the
partial buffers come from the plan (graph_plan.py's arena under CUDA graphs, fresh per call otherwise); the merge is a
second launch queued right behind the split kernel, nothing read on the host between them.
"""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.devices import multiprocessor_count
from sglang_glm5.dsa.tilelang.common import (
    LN2,
    MIN_GEMM_M,
    fresh_buffer,
    head_tile,
)
from sglang_glm5.dsa.tilelang.mla_prefill import (
    PASS_CONFIGS,
    alloc_attend_buffers,
    attend_parts,
    check_sparse_mla_args,
    dense_operands,
    kernel_args,
)

MIN_BLOCK_N = MIN_GEMM_M  # smallest key tile: a 16-wide k-step of P @ V and the n of the score mma
KEYS_PER_WARP = 8  # the score gemm [BH, BN] gives every warp at least 8 key columns (TileLang's warp_col_tiles)
ACC_REGS = 128  # fp32 registers per thread the [BH, V] accumulator may take (of 255), so nothing spills


def num_splits_for(topk: int, block_n: int, columns_per_split: int) -> int:
    assert columns_per_split % block_n == 0, (
        f"columns_per_split {columns_per_split} must be a multiple of block_n {block_n}: no split starts mid-tile"
    )
    return max(1, -(-topk // columns_per_split))


def min_key_tile(block_h: int, v_dim: int) -> int:
    """The narrowest key tile a head tile can take: its accumulator [BH, V] needs BH x V / ACC_REGS threads, and each
    of their warps 8 key columns. 16 heads: 2 warps, 16 columns; 32: 4 warps, 32; 64: 8 warps, 64."""
    warps = -(-block_h * v_dim // (ACC_REGS * 32))
    return max(MIN_BLOCK_N, KEYS_PER_WARP * warps)


def decode_split(
    num_tokens: int, head_tiles: int, topk: int, num_sms: int | None, block_n: int, min_block_n: int = MIN_BLOCK_N
) -> tuple[int, int, int]:  # fmt: skip
    """(block_n, columns_per_split, num_splits) so that the grid (T, head tiles, NS) fills the GPU's SMs once, as the
    Triton decode's default_num_splits: NS ~ SMs / (T x head tiles), each split a whole number of key tiles, the
    tuned tile halved (down to min_block_n) while it is wider than a split, the tiles per split rounded up to a power
    of two (each split size is its own compiled kernel: at most log2(K / 16) + 1 of them over every batch size, at
    most half the wanted grid lost). K 2048 on 132 SMs, one 16-head tile: batch 1 -> 16-column tiles, 128 splits;
    batch 2 -> 32 x 64; batch 8 -> 64-column tiles, 16 splits of 128; batch 12 -> 8 splits of 256; batch >= 132 ->
    one split of K in the tuned tiles. Without an SM count (num_sms None): one split."""
    wanted = -(-num_sms // max(num_tokens * head_tiles, 1)) if num_sms else 1
    per_split = -(-max(topk, 1) // wanted)  # columns per split for `wanted` splits
    while block_n > min_block_n and block_n > per_split:
        block_n //= 2
    tiles = -(-per_split // block_n)
    columns = block_n * (1 << (tiles - 1).bit_length())  # a power of two of tiles: few kernel variants to compile
    return block_n, columns, num_splits_for(topk, block_n, columns)


def decode_launch(num_tokens: int, heads: int, topk: int, v_dim: int, num_sms: int | None, knobs: dict) -> dict:
    """The split kernel's knobs for a launch: the tuning's, with the key tile, columns per split (decode_split) and
    threads (as many as the tuning allows and the tile feeds, 8 key columns per warp) for this grid."""
    block_h = head_tile(heads, knobs["max_block_h"])
    block_n, columns, _ = decode_split(num_tokens, -(-heads // block_h), topk, num_sms, knobs["block_n"],
                                       min_key_tile(block_h, v_dim))  # fmt: skip
    threads = min(knobs["threads"], 32 * block_n // KEYS_PER_WARP)
    return {**knobs, "block_n": block_n, "columns_per_split": columns, "threads": threads}


@tilelang.jit(pass_configs=PASS_CONFIGS)
def sparse_mla_split_kernel(
    *, heads, v_dim=512, rope_dim=64, topk=2048, sm_scale, dtype="bfloat16", index_dtype="int32", seq_dtype="int64",
    max_block_h=64, block_n=64, num_stages=2, threads=256, gemm_policy="FullRow", columns_per_split=256,
):  # fmt: skip
    num_splits = num_splits_for(topk, block_n, columns_per_split)
    steps_per_split = columns_per_split // block_n
    parts = attend_parts(heads=heads, v_dim=v_dim, rope_dim=rope_dim, topk=topk, sm_scale=sm_scale, dtype=dtype,
                         index_dtype=index_dtype, seq_dtype=seq_dtype, max_block_h=max_block_h, block_n=block_n,
                         num_steps=steps_per_split, num_stages=num_stages, gemm_policy=gemm_policy)  # fmt: skip
    block_h, head_tiles, accum, ops, attend, scale_log2 = (
        parts.block_h, parts.head_tiles, parts.accum, parts.ops, parts.attend, parts.scale_log2)  # fmt: skip
    num_tokens = ops.num_tokens

    @T.prim_func
    def main(
        Q: ops.Q,  # [T, H, Dqk]
        KV: ops.KV,  # [S, Dqk]
        PageTable: ops.PageTable,  # [B, L]
        QSeq: ops.QSeq,  # [T]
        Topk: ops.Topk,  # [T, K]
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


def plan_sparse_mla_decode(
    q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False, *, out=None, lse=None, empty=fresh_buffer
):  # fmt: skip
    """What sparse_mla_decode does before its launches, done once per shape under CUDA graphs (graph_plan.py): the
    argument checks, the tuning lookup, the split choice for the device's SM count (decode_split), the outputs and
    partial buffers from `empty`, and the JIT-compiled kernels looked up. -> sparse_mla_decode's keyword arguments
    for its launch-only path (checked=True)."""
    out, lse = check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, out, lse, empty)
    num_tokens, num_heads, _ = q.shape
    planned = {"out": out, "lse": lse, "kernels": None, "workspace": None, "checked": True}
    if not num_tokens:
        return planned
    args = kernel_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, "decode")
    args = decode_launch(num_tokens, num_heads, topk.shape[1], v_dim, multiprocessor_count(q.device), args)
    num_splits = num_splits_for(topk.shape[1], args["block_n"], args["columns_per_split"])
    planned["workspace"] = (
        empty("sparse_mla.part_out", (num_tokens, num_heads, num_splits, v_dim), torch.float32, q.device),
        empty("sparse_mla.part_lse", (num_tokens, num_heads, num_splits), torch.float32, q.device),
    )  # [T, H, NS, V], [T, H, NS]
    planned["kernels"] = (
        sparse_mla_split_kernel(**args),
        merge_splits_kernel(heads=num_heads, v_dim=v_dim, num_splits=num_splits, dtype=args["dtype"]),
    )
    return planned


def sparse_mla_decode(
    q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False, *, out=None, lse=None, kernels=None,
    workspace=None, checked=False,
):  # fmt: skip
    """Sparse MLA for decode, same contract as dsa_reference.sparse_mla_decode; `out` / `lse` written if given.

    q [T, H, Dqk] fp16/bf16, kv_cache [S, Dqk], topk [T, K] int32 -> out [T, H, v_dim] in q.dtype (and lse [T, H]).
    Decode has few tokens, so each token's K columns are split over NS programs (decode_launch: the grid fills the
    GPU's SMs once, e.g. NS 128 of 16 columns at batch 1 with 8-16 heads on 132 SMs; a 64-head tile's accumulator
    needs 8 warps and so 64-column tiles: NS 32):
    1. grid (T, head tiles, NS): each program runs sparse_mla_prefill's attention over its columns
       -> normalised partial out and lse in log2 units                                # [T, H, NS, V], [T, H, NS]
    2. merge, one program per (t, h), queued behind 1 (no host read between them):
       w_s = exp2(lse_s - max lse); out = sum_s w_s out_s / sum_s w_s
       (splits without a valid column weigh 0; an all -1 row gives out 0 and lse -inf)
    The kernel does not need one token per request. Index values are trusted.
    checked=True: plan_sparse_mla_decode ran for these shapes (under CUDA graphs, once) and passes out, lse, the
    kernels and the partial buffers (`workspace`); only the two launches run here. Otherwise it runs per call.
    """
    if not checked:
        planned = plan_sparse_mla_decode(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, out=out, lse=lse)
        out, lse, kernels, workspace = planned["out"], planned["lse"], planned["kernels"], planned["workspace"]
    if kernels is not None:  # None: no tokens
        split, merge = kernels
        part_out, part_lse = workspace
        q, kv_cache, page_table, q_seq, topk = dense_operands(q, kv_cache, page_table, q_seq, topk)
        split(q, kv_cache, page_table, q_seq, topk, part_out, part_lse)
        merge(part_out, part_lse, out, lse)
    return (out, lse) if return_lse else out
