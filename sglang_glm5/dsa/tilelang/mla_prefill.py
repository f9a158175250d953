"""Sparse MLA over per-token top-k positions in the absorbed latent space, one program per (token, head tile).

Two schedules of the same computation, picked per architecture by the tuning file's `schedule` (PREFILL_SCHEDULES):
`pipelined`, this module's kernel, for every target; `warp_specialized` (mla_prefill_ws) for sm_90a, where a
producer warpgroup gathers with cp.async into two stages and two consumer warpgroups split the value columns.
"""

from types import SimpleNamespace

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.dsa.tilelang.common import (
    FLOAT_DTYPES,
    LN2,
    LOG2E,
    NEG_BIG,
    TL_DTYPE,
    check_batch,
    check_size,
    check_tensor,
    dense,
    dense_rows,
    fresh_buffer,
    head_tile,
    online_softmax_macro,
    out_buffer,
    require_gpu,
    sparse_mla_operands,
)
from sglang_glm5.dsa.tilelang.mla_prefill_ws import sparse_mla_prefill_ws_kernel
from sglang_glm5.dsa.tilelang.tuning import TuningError, tuning

PASS_CONFIGS = {
    # the rows are gathered through page_table, so there is no box for TMA to load and nothing to warp-specialize
    tilelang.PassConfigKey.TL_DISABLE_TMA_LOWER: True,
    tilelang.PassConfigKey.TL_DISABLE_WARP_SPECIALIZED: True,
}


def attend_topk_macro(
    *,
    heads,
    block_h,
    v_dim,
    rope_dim,
    block_n,
    topk,
    num_steps,
    dtype,
    accum,
    num_stages,
    policy,
):
    """A T.macro: online softmax of one token's head tile over topk columns [step0 * block_n, ...) for num_steps.

    Leaves acc_o [BH, V] (sum of exp2(s - m) * v), sumexp [BH] and m_i [BH] (raw score units, NEG_BIG while no
    valid column was seen); scores are scaled inside exp2 by scale_log2 = sm_scale * log2(e).
    """

    softmax_update = online_softmax_macro(block_h=block_h, block_n=block_n, width=v_dim)

    @T.macro
    def attend(Q, KV, PageTable, Topk, token, request, h0, step0, scale_log2,
               q_s, q_rope_s, kv_s, k_rope_s, p_s, slots, valid, acc_o, acc_s, sumexp, sumexp_i, m_i, m_prev, alpha):  # fmt: skip
        for h, d in T.Parallel(block_h, v_dim):  # [BH, V], heads past `heads` are zero rows
            q_s[h, d] = T.if_then_else(h0 + h < heads, Q[token, h0 + h, d], T.cast(0, dtype))
        for h, d in T.Parallel(block_h, rope_dim):  # [BH, R]
            q_rope_s[h, d] = T.if_then_else(h0 + h < heads, Q[token, h0 + h, v_dim + d], T.cast(0, dtype))
        T.fill(acc_o, 0)
        T.fill(sumexp, 0)
        T.fill(m_i, NEG_BIG)
        for step in T.Pipelined(num_steps, num_stages=num_stages):
            for n in T.Parallel(block_n):  # [BN]
                col = (step0 + step) * block_n + n
                # the ternary reads topk only inside the row; -1 entries fall back to position 0 (always valid)
                pos = T.if_then_else(col < topk, Topk[token, T.min(col, topk - 1)], -1)
                valid[n] = pos >= 0
                slots[n] = PageTable[request, T.max(pos, 0)]
            for n, d in T.Parallel(block_n, v_dim):  # [BN, V], zeros (not the row) where invalid: 0 * NaN is NaN
                kv_s[n, d] = T.if_then_else(valid[n], KV[slots[n], d], T.cast(0, dtype))
            for n, d in T.Parallel(block_n, rope_dim):  # [BN, R]
                k_rope_s[n, d] = T.if_then_else(valid[n], KV[slots[n], v_dim + d], T.cast(0, dtype))
            for h, n in T.Parallel(block_h, block_n):
                acc_s[h, n] = T.if_then_else(valid[n], 0, -T.infinity(accum))
            T.gemm(q_s, kv_s, acc_s, transpose_B=True, policy=policy)  # [BH, BN]
            T.gemm(q_rope_s, k_rope_s, acc_s, transpose_B=True, policy=policy)
            softmax_update(acc_s, acc_o, sumexp, sumexp_i, m_i, m_prev, alpha, scale_log2)
            T.copy(acc_s, p_s)
            T.gemm(p_s, kv_s, acc_o, policy=policy)  # [BH, V]

    return attend


def alloc_attend_buffers(block_h, v_dim, rope_dim, block_n, dtype, accum, index_dtype):
    """The shared tiles and fragments attend_topk_macro works in, in its argument order."""
    return (
        T.alloc_shared([block_h, v_dim], dtype),  # q_s
        T.alloc_shared([block_h, rope_dim], dtype),  # q_rope_s
        T.alloc_shared([block_n, v_dim], dtype),  # kv_s
        T.alloc_shared([block_n, rope_dim], dtype),  # k_rope_s
        T.alloc_shared([block_h, block_n], dtype),  # p_s
        T.alloc_shared([block_n], index_dtype),  # slots
        T.alloc_shared([block_n], "bool"),  # valid
        T.alloc_fragment([block_h, v_dim], accum),  # acc_o
        T.alloc_fragment([block_h, block_n], accum),  # acc_s
        T.alloc_fragment([block_h], accum),  # sumexp
        T.alloc_fragment([block_h], accum),  # sumexp_i
        T.alloc_fragment([block_h], accum),  # m_i
        T.alloc_fragment([block_h], accum),  # m_prev
        T.alloc_fragment([block_h], accum),  # alpha
    )


def attend_parts(
    *, heads, v_dim, rope_dim, topk, sm_scale, dtype, index_dtype, seq_dtype, max_block_h, block_n, num_steps,
    num_stages, gemm_policy,
):  # fmt: skip
    """What the pipelined prefill kernel and the decode split kernel build alike: the head tile, the operand types
    (common.sparse_mla_operands) and the attend macro over `num_steps` key tiles (all of K, or one split's)."""
    assert v_dim % 16 == 0 and rope_dim % 16 == 0, f"v_dim {v_dim} and rope_dim {rope_dim}: gemm k-steps are 16 wide"
    assert block_n % 16 == 0, f"block_n {block_n}: it is a gemm tile dimension, a multiple of 16"
    block_h = head_tile(heads, max_block_h)
    accum = "float"
    attend = attend_topk_macro(heads=heads, block_h=block_h, v_dim=v_dim, rope_dim=rope_dim, block_n=block_n,
                               topk=topk, num_steps=num_steps, dtype=dtype, accum=accum, num_stages=num_stages,
                               policy=getattr(T.GemmWarpPolicy, gemm_policy))  # fmt: skip
    ops = sparse_mla_operands(heads=heads, v_dim=v_dim, rope_dim=rope_dim, topk=topk, dtype=dtype,
                              index_dtype=index_dtype, seq_dtype=seq_dtype)  # fmt: skip
    # exp2 of log2-unit scores is cheaper than exp
    return SimpleNamespace(block_h=block_h, head_tiles=T.ceildiv(heads, block_h), accum=accum, ops=ops,
                           attend=attend, scale_log2=sm_scale * LOG2E)  # fmt: skip


@tilelang.jit(pass_configs=PASS_CONFIGS)
def sparse_mla_prefill_kernel(
    *, heads, v_dim=512, rope_dim=64, topk=2048, sm_scale, dtype="bfloat16", index_dtype="int32", seq_dtype="int64",
    max_block_h=64, block_n=64, num_stages=2, threads=256, gemm_policy="FullRow",
):  # fmt: skip
    parts = attend_parts(heads=heads, v_dim=v_dim, rope_dim=rope_dim, topk=topk, sm_scale=sm_scale, dtype=dtype,
                         index_dtype=index_dtype, seq_dtype=seq_dtype, max_block_h=max_block_h, block_n=block_n,
                         num_steps=T.ceildiv(topk, block_n), num_stages=num_stages, gemm_policy=gemm_policy)  # fmt: skip
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
        Out: T.Tensor((num_tokens, heads, v_dim), dtype),  # [T, H, V]
        Lse: T.Tensor((num_tokens, heads), accum),  # [T, H]
    ):
        with T.Kernel(num_tokens, head_tiles, threads=threads) as (token, head_tile_id):
            bufs = alloc_attend_buffers(block_h, v_dim, rope_dim, block_n, dtype, accum, index_dtype)
            acc_o, sumexp, m_i = bufs[7], bufs[9], bufs[11]
            h0 = head_tile_id * block_h
            request = QSeq[token]
            attend(Q, KV, PageTable, Topk, token, request, h0, 0, scale_log2, *bufs)
            for h, d in T.Parallel(block_h, v_dim):
                if h0 + h < heads:  # an all -1 row has sumexp 0 and writes 0
                    Out[token, h0 + h, d] = T.cast(
                        T.if_then_else(sumexp[h] > 0, acc_o[h, d] / sumexp[h], 0), dtype)  # fmt: skip
            for h in T.Parallel(block_h):
                if h0 + h < heads:  # natural log: (log2(sum) + m * scale_log2) * ln 2
                    Lse[token, h0 + h] = T.if_then_else(
                        sumexp[h] > 0, (T.log2(sumexp[h]) + m_i[h] * scale_log2) * LN2, -T.infinity(accum))  # fmt: skip

    return main


PREFILL_SCHEDULES = {  # tuning knob `schedule` -> kernel factory; the other knobs are its keyword arguments
    "pipelined": sparse_mla_prefill_kernel,  # any target: one thread block does gather, scores and P @ V in turn
    "warp_specialized": sparse_mla_prefill_ws_kernel,  # sm_90a: cp.async + mbarrier stages, setmaxnreg per warpgroup
}


def prefill_factory(knobs: dict):
    """(kernel factory, its keyword knobs) for the tuning knobs of sparse_mla_prefill."""
    knobs = dict(knobs)
    schedule = knobs.pop("schedule", "pipelined")
    if schedule not in PREFILL_SCHEDULES:
        raise TuningError(f"sparse_mla_prefill schedule '{schedule}' is unknown; known: {', '.join(PREFILL_SCHEDULES)}")
    return PREFILL_SCHEDULES[schedule], knobs


def check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, out, lse, empty=fresh_buffer):
    """The prefill and decode plans' checks; returns the out [T, H, V] and lse [T, H] buffers to write (the caller's,
    checked, or from `empty`: the graph state's arena under CUDA graphs)."""
    check_tensor("q", q, 3, FLOAT_DTYPES)
    num_tokens, _, qk_dim = q.shape
    check_tensor("kv_cache", kv_cache, 2, (q.dtype,), q.device)
    check_size("kv_cache", kv_cache.shape[1], qk_dim, "head dim")
    check_tensor("topk", topk, 2, (torch.int32,), q.device)
    check_size("topk", topk.shape[0], num_tokens, "number of query tokens")
    check_batch(page_table, q_seq, None, num_tokens, q.device)
    if not 0 < v_dim < qk_dim:
        raise ValueError(f"v_dim must be in [1, {qk_dim}) (the rest of the head dim is the rope key), got {v_dim}")
    if not sm_scale > 0:
        raise ValueError(f"sm_scale must be > 0, got {sm_scale}")
    num_heads = q.shape[1]
    out = out_buffer(out, "sparse_mla.out", (num_tokens, num_heads, v_dim), q.dtype, q.device, empty)
    lse = out_buffer(lse, "sparse_mla.lse", (num_tokens, num_heads), torch.float32, q.device, empty)
    require_gpu(q)
    return out, lse


def dense_operands(q, kv_cache, page_table, q_seq, topk):
    """The tensors as the kernels declare them: dense, page_table rows keeping their stride."""
    return dense(q), dense(kv_cache), dense_rows(page_table), dense(q_seq), dense(topk)


def kernel_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, phase):
    """Static arguments of the kernel factories for these tensors, with the device's tuning for `phase`."""
    return dict(
        heads=q.shape[1], v_dim=v_dim, rope_dim=q.shape[2] - v_dim, topk=topk.shape[1], sm_scale=float(sm_scale),
        dtype=TL_DTYPE[q.dtype], index_dtype=TL_DTYPE[page_table.dtype], seq_dtype=TL_DTYPE[q_seq.dtype],
        **tuning(f"sparse_mla_{phase}", q.device),
    )  # fmt: skip


def plan_sparse_mla_prefill(
    q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False, *, out=None, lse=None, empty=fresh_buffer
):  # fmt: skip
    """What sparse_mla_prefill does before its launch, done once per shape under CUDA graphs (graph_plan.py): the
    checks, the tuning lookup (schedule and knobs), the outputs from `empty` and the JIT-compiled kernel looked up.
    -> sparse_mla_prefill's keyword arguments for its launch-only path (checked=True)."""
    out, lse = check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, out, lse, empty)
    kernel = None
    if q.shape[0]:
        factory, knobs = prefill_factory(kernel_args(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, "prefill"))
        kernel = factory(**knobs)
    return {"out": out, "lse": lse, "kernel": kernel, "checked": True}


def sparse_mla_prefill(
    q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False, *, out=None, lse=None, kernel=None,
    checked=False,
):  # fmt: skip
    """Sparse MLA for prefill, same contract as dsa_reference.sparse_mla_prefill; `out` / `lse` written if given.

    q [T, H, Dqk] fp16/bf16, kv_cache [S, Dqk] (latent | rope key), topk [T, K] int32 positions (-1 = none)
    -> out [T, H, v_dim] in q.dtype (and lse [T, H] fp32, natural log). One program per (token, head tile), in
    the device's schedule (PREFILL_SCHEDULES; the warp-specialized one splits the steps over warpgroups):
    1. q rows of the tile to shared, split latent | rope                          # [BH, V], [BH, R]
    2. per block of BN top-k columns: slots = page_table[q_seq[t], pos]; rows gathered to shared, zero where
       pos = -1                                                                     # [BN, V], [BN, R]
    3. s = q . kv (two gemms), -inf where pos = -1; online softmax in exp2 units  # [BH, BN]
    4. acc += p @ kv_latent                                                         # [BH, V]
    5. out = acc / sum (0 for an all -1 row), lse = log(sum) + max * sm_scale (-inf for an all -1 row)
    Heads are tiled by 16/32/64 (8 heads run as a 16-row tile), not padded to 64. Index values are trusted.
    checked=True: plan_sparse_mla_prefill ran for these shapes (under CUDA graphs, once) and passes out, lse and the
    kernel; only the launch runs here. Otherwise it runs per call.
    """
    if not checked:
        planned = plan_sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, out=out, lse=lse)
        out, lse, kernel = planned["out"], planned["lse"], planned["kernel"]
    if kernel is not None:  # None: no tokens
        kernel(*dense_operands(q, kv_cache, page_table, q_seq, topk), out, lse)
    return (out, lse) if return_lse else out
