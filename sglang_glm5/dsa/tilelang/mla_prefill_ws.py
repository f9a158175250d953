"""Sparse MLA prefill for Hopper (sm_90a): one producer warpgroup, two consumer warpgroups, per (token, head tile).

Same contract as mla_prefill.sparse_mla_prefill_kernel (and dsa_reference.sparse_mla_prefill); that kernel stays
the path of targets without cp.async + mbarrier + setmaxnreg (the tuning file's `schedule` picks one per arch).
Warpgroups of one CTA (3 x 128 threads):
- producer: per step, the block_n top-k rows of the step gathered through the page table with cp.async (16-byte
  chunks, zero-filled where the position is -1 or past topk) into one of two stage buffers; the completion of
  its copies arrives on that stage's `ready` mbarrier (cp.async.mbarrier.arrive.noinc), it waits on `free`.
- consumer 0: scores q . kv (latent + rope) of the stage, online softmax, P and the step's rescale factor to
  shared, out[:, :V/2] += P @ kv[:, :V/2].
- consumer 1: waits for P, rescales, out[:, V/2:] += P @ kv[:, V/2:]; both consumers release the stage.
The producer gathers step s + 1 while the consumers work on step s; registers are moved from the producer to the
consumers with setmaxnreg (the accumulators [BH, V/2] are 128 fp32 per thread at 64 heads).
"""

import tilelang
import tilelang.language as T
from sglang_glm5.dsa.tilelang.common import (
    LN2,
    LOG2E,
    NEG_BIG,
    head_tile,
    online_softmax_macro,
    sparse_mla_operands,
)

PASS_CONFIGS = {
    # rows are gathered through the page table (no TMA box); the warpgroups are specialized by hand below
    tilelang.PassConfigKey.TL_DISABLE_TMA_LOWER: True,
    tilelang.PassConfigKey.TL_DISABLE_WARP_SPECIALIZED: True,
}
WARPGROUP = 128  # threads per warpgroup: the unit of wgmma and of setmaxnreg
REGISTER_FILE = 65_536  # 32-bit registers per SM on sm_90a
NUM_STAGES = 2  # stage buffers: the producer fills one while the consumers read the other
CHUNK = 8  # 16-bit elements per cp.async: 16 bytes, its widest copy
THREADS_PER_ROW = 8  # producer threads per gathered row
ROWS_PER_PASS = WARPGROUP // THREADS_PER_ROW  # 16 rows per pass of the producer warpgroup
SPAN = CHUNK * THREADS_PER_ROW  # columns of a row one pass covers (64)


@tilelang.jit(pass_configs=PASS_CONFIGS)
def sparse_mla_prefill_ws_kernel(
    *, heads, v_dim=512, rope_dim=64, topk=2048, sm_scale, dtype="bfloat16", index_dtype="int32", seq_dtype="int64",
    max_block_h=64, block_n=64, gemm_policy="FullRow", score_regs=256, value_regs=168, producer_regs=80,
):  # fmt: skip
    half = v_dim // 2
    assert half % SPAN == 0 and rope_dim % SPAN == 0, f"v_dim {v_dim} / 2 and rope_dim {rope_dim}: multiples of {SPAN}"
    assert block_n % ROWS_PER_PASS == 0, f"block_n {block_n}: a multiple of {ROWS_PER_PASS}, the rows of one pass"
    assert dtype in ("bfloat16", "float16"), f"dtype {dtype}: cp.async chunks are {CHUNK} 16-bit elements"
    # setmaxnreg: multiples of 8 in [24, 256], and the three warpgroups within the 64 K register file
    regs = (score_regs, value_regs, producer_regs)
    assert all(r % 8 == 0 and 24 <= r <= 256 for r in regs), f"registers per thread {regs}: multiples of 8 in [24, 256]"
    # the CTA's pool is what launch_bounds(384, 1) gives each thread (65536 / 384 rounded down to 8: 168) x 3
    pool = 3 * (REGISTER_FILE // (3 * WARPGROUP) // 8 * 8)
    assert sum(regs) <= pool, f"registers per thread {regs}: the three warpgroups share {pool} (setmaxnreg pool)"
    block_h = head_tile(heads, max_block_h)
    head_tiles = T.ceildiv(heads, block_h)
    num_steps = T.ceildiv(topk, block_n)
    num_rounds = T.ceildiv(num_steps, NUM_STAGES)  # a round fills both stages once; an odd tail step is all padding
    accum = "float"
    scale_log2 = sm_scale * LOG2E  # exp2 of log2-unit scores is cheaper than exp
    policy = getattr(T.GemmWarpPolicy, gemm_policy)
    # a 64-row head tile fills a warpgroup MMA: the three score gemms are issued without waiting in between;
    # smaller tiles (8-32 heads) take the synchronous gemm, which picks the instruction that fits their rows
    async_scores = block_h % 64 == 0
    score_gemm = T.wgmma_gemm if async_scores else T.gemm
    ops = sparse_mla_operands(heads=heads, v_dim=v_dim, rope_dim=rope_dim, topk=topk, dtype=dtype,
                              index_dtype=index_dtype, seq_dtype=seq_dtype)  # fmt: skip
    num_tokens = ops.num_tokens

    @T.macro
    def gather(KV, PageTable, Topk, token, request, step, ptx, kv_lo, kv_hi, k_rope, valid):
        """Producer: the step's rows into one stage, 8 threads per row, one 16-byte cp.async per chunk, zero-filled
        (the predicate) where the position is -1 / padding: a stale or uninitialised row times P = 0 could be NaN.

        Issued by hand: a T.Parallel copy would end in cp.async.wait_group plus a named barrier, and TileLang numbers
        named barriers per sync pass, so the producer's could get a consumer warpgroup's id.
        """
        for r in T.serial(block_n // ROWS_PER_PASS):
            row = r * ROWS_PER_PASS + ptx // THREADS_PER_ROW
            c0 = (ptx % THREADS_PER_ROW) * CHUNK
            col = step * block_n + row
            pos = T.if_then_else(col < topk, Topk[token, T.min(col, topk - 1)], -1)
            slot = PageTable[request, T.max(pos, 0)]  # -1 reads position 0's slot: always in the request
            valid[row] = pos >= 0  # the row's 8 threads store the same flag
            for u in T.unroll(half // SPAN):
                T.ptx_cp_async(T.access_ptr(kv_lo[row, u * SPAN + c0], "w"),
                               T.access_ptr(KV[slot, u * SPAN + c0], "r"), CHUNK, pos >= 0)  # fmt: skip
                T.ptx_cp_async(T.access_ptr(kv_hi[row, u * SPAN + c0], "w"),
                               T.access_ptr(KV[slot, half + u * SPAN + c0], "r"), CHUNK, pos >= 0)  # fmt: skip
            for u in T.unroll(rope_dim // SPAN):
                T.ptx_cp_async(T.access_ptr(k_rope[row, u * SPAN + c0], "w"),
                               T.access_ptr(KV[slot, v_dim + u * SPAN + c0], "r"), CHUNK, pos >= 0)  # fmt: skip

    softmax_update = online_softmax_macro(block_h=block_h, block_n=block_n, width=half)

    @T.macro
    def score_step(valid, step, q_lo, q_hi, q_rope, kv_lo, kv_hi, k_rope, p_s, alpha_s,
                   acc_s, acc_o, sumexp, sumexp_i, m_i, m_prev, alpha, p_free, parity_free):  # fmt: skip
        """Consumer 0: scores of one stage, online softmax, P to shared for both consumers, its half of P @ V."""
        for h, n in T.Parallel(block_h, block_n):  # [BH, BN], -inf on -1 / padding columns
            acc_s[h, n] = T.if_then_else(valid[n], 0, -T.infinity(accum))
        score_gemm(q_lo, kv_lo, acc_s, transpose_B=True, policy=policy)  # [BH, BN], three issued back to back
        score_gemm(q_hi, kv_hi, acc_s, transpose_B=True, policy=policy)
        score_gemm(q_rope, k_rope, acc_s, transpose_B=True, policy=policy)
        if async_scores:
            T.wait_wgmma(0)
        if step > 0:  # consumer 1 is done with the previous P and rescale factor
            T.barrier_wait(p_free[0], parity_free)
        softmax_update(acc_s, acc_o, sumexp, sumexp_i, m_i, m_prev, alpha, scale_log2)  # acc_o: this half
        T.copy(alpha, alpha_s)
        T.copy(acc_s, p_s)
        T.gemm(p_s, kv_lo, acc_o, policy=policy)  # [BH, V/2]

    @T.macro
    def consume_scores(valid, rnd, stage, q_lo, q_hi, q_rope, kv_lo, kv_hi, k_rope, p_s, alpha_s, acc_s, acc_o,
                       sumexp, sumexp_i, m_i, m_prev, alpha, kv_ready, kv_free, p_ready, p_free):  # fmt: skip
        step = rnd * NUM_STAGES + stage
        T.barrier_wait(kv_ready[stage], rnd & 1)
        T.fence_proxy_async()  # the stage was written by cp.async (generic proxy), wgmma reads it (async proxy)
        score_step(valid, step, q_lo, q_hi, q_rope, kv_lo, kv_hi, k_rope, p_s, alpha_s, acc_s, acc_o, sumexp,
                   sumexp_i, m_i, m_prev, alpha, p_free, (step - 1) & 1)  # fmt: skip
        T.barrier_arrive(p_ready[0])
        T.barrier_arrive(kv_free[stage])

    @T.macro
    def consume_values(rnd, stage, p_s, alpha_s, kv_hi, acc_o, kv_free, p_ready, p_free):
        """Consumer 1: rescale by the step's factor, out[:, V/2:] += P @ kv[:, V/2:], release P and the stage."""
        T.barrier_wait(p_ready[0], (rnd * NUM_STAGES + stage) & 1)
        T.fence_proxy_async()
        for h, d in T.Parallel(block_h, half):
            acc_o[h, d] = acc_o[h, d] * alpha_s[h]
        T.gemm(p_s, kv_hi, acc_o, policy=policy)  # [BH, V/2]
        T.barrier_arrive(p_free[0])
        T.barrier_arrive(kv_free[stage])

    @T.macro
    def produce(KV, PageTable, Topk, token, request, rnd, stage, ptx, kv_lo, kv_hi, k_rope, valid, kv_ready, kv_free):
        # parity of the previous phase: the first wait on a fresh barrier passes
        T.barrier_wait(kv_free[stage], (rnd & 1) ^ 1)
        gather(KV, PageTable, Topk, token, request, rnd * NUM_STAGES + stage, ptx, kv_lo, kv_hi, k_rope, valid)
        T.barrier_arrive(kv_ready[stage])  # releases the valid flags (a plain mbarrier arrive orders prior stores)
        T.cp_async_barrier_noinc(kv_ready[stage])  # arrives when this thread's copies have landed

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
        with T.Kernel(num_tokens, head_tiles, threads=3 * WARPGROUP) as (token, head_tile_id):
            q_lo = T.alloc_shared([block_h, half], dtype)  # [BH, V/2]
            q_hi = T.alloc_shared([block_h, half], dtype)
            q_rope = T.alloc_shared([block_h, rope_dim], dtype)  # [BH, R]
            # the two stages spelled out: the builder turns any Python loop in a prim_func into a TIR loop
            kv_lo = (T.alloc_shared([block_n, half], dtype), T.alloc_shared([block_n, half], dtype))  # [BN, V/2]
            kv_hi = (T.alloc_shared([block_n, half], dtype), T.alloc_shared([block_n, half], dtype))
            k_rope = (T.alloc_shared([block_n, rope_dim], dtype), T.alloc_shared([block_n, rope_dim], dtype))  # [BN, R]
            p_s = T.alloc_shared([block_h, block_n], dtype)  # [BH, BN] softmax numerators of the step
            alpha_s = T.alloc_shared([block_h], accum)  # the step's rescale factor, for consumer 1
            sum_s = T.alloc_shared([block_h], accum)  # final softmax denominators, for consumer 1
            acc_o = T.alloc_fragment([block_h, half], accum)  # [BH, V/2]: each consumer's own half
            acc_s = T.alloc_fragment([block_h, block_n], accum)
            sumexp = T.alloc_fragment([block_h], accum)
            sumexp_i = T.alloc_fragment([block_h], accum)
            m_i = T.alloc_fragment([block_h], accum)
            m_prev = T.alloc_fragment([block_h], accum)
            alpha = T.alloc_fragment([block_h], accum)
            q_ready = T.alloc_barrier(3 * WARPGROUP)
            valid = (T.alloc_shared([block_n], "bool"), T.alloc_shared([block_n], "bool"))  # [BN] position >= 0
            # per stage: each producer thread arrives twice, after its flag stores and when its cp.asyncs land
            kv_ready = T.alloc_barrier([2 * WARPGROUP] * NUM_STAGES)
            kv_free = T.alloc_barrier([2 * WARPGROUP] * NUM_STAGES)  # per stage: both consumers done with it
            p_ready = T.alloc_barrier(WARPGROUP)  # consumer 0 wrote P and alpha
            p_free = T.alloc_barrier(WARPGROUP)  # consumer 1 read them
            sum_ready = T.alloc_barrier(WARPGROUP)  # consumer 0 wrote the final denominators

            tx = T.get_thread_binding()
            h0 = head_tile_id * block_h
            request = QSeq[token]
            for h, d in T.Parallel(block_h, half):  # [BH, V/2], heads past `heads` are zero rows
                q_lo[h, d] = T.if_then_else(h0 + h < heads, Q[token, h0 + h, d], T.cast(0, dtype))
                q_hi[h, d] = T.if_then_else(h0 + h < heads, Q[token, h0 + h, half + d], T.cast(0, dtype))
            for h, d in T.Parallel(block_h, rope_dim):  # [BH, R]
                q_rope[h, d] = T.if_then_else(h0 + h < heads, Q[token, h0 + h, v_dim + d], T.cast(0, dtype))
            T.barrier_arrive(q_ready[0])

            if tx < WARPGROUP:  # consumer 0: scores, softmax, out[:, :V/2]
                T.set_max_nreg(score_regs, 1)
                T.fill(acc_o, 0)
                T.fill(sumexp, 0)
                T.fill(m_i, NEG_BIG)
                T.barrier_wait(q_ready[0], 0)
                for rnd in T.serial(num_rounds):
                    consume_scores(valid[0], rnd, 0, q_lo, q_hi, q_rope, kv_lo[0], kv_hi[0], k_rope[0], p_s,
                                   alpha_s, acc_s, acc_o, sumexp, sumexp_i, m_i, m_prev, alpha, kv_ready, kv_free,
                                   p_ready, p_free)  # fmt: skip
                    consume_scores(valid[1], rnd, 1, q_lo, q_hi, q_rope, kv_lo[1], kv_hi[1], k_rope[1], p_s,
                                   alpha_s, acc_s, acc_o, sumexp, sumexp_i, m_i, m_prev, alpha, kv_ready, kv_free,
                                   p_ready, p_free)  # fmt: skip
                T.copy(sumexp, sum_s)
                T.barrier_arrive(sum_ready[0])
                for h, d in T.Parallel(block_h, half):
                    if h0 + h < heads:  # an all -1 row has sumexp 0 and writes 0
                        Out[token, h0 + h, d] = T.cast(
                            T.if_then_else(sumexp[h] > 0, acc_o[h, d] / sumexp[h], 0), dtype)  # fmt: skip
                for h in T.Parallel(block_h):
                    if h0 + h < heads:  # natural log: (log2(sum) + m * scale_log2) * ln 2
                        Lse[token, h0 + h] = T.if_then_else(
                            sumexp[h] > 0, (T.log2(sumexp[h]) + m_i[h] * scale_log2) * LN2, -T.infinity(accum))  # fmt: skip
            elif tx < 2 * WARPGROUP:  # consumer 1: out[:, V/2:] with consumer 0's P
                T.set_max_nreg(value_regs, 1)
                T.fill(acc_o, 0)
                for rnd in T.serial(num_rounds):
                    consume_values(rnd, 0, p_s, alpha_s, kv_hi[0], acc_o, kv_free, p_ready, p_free)
                    consume_values(rnd, 1, p_s, alpha_s, kv_hi[1], acc_o, kv_free, p_ready, p_free)
                T.barrier_wait(sum_ready[0], 0)
                for h, d in T.Parallel(block_h, half):
                    if h0 + h < heads:
                        Out[token, h0 + h, half + d] = T.cast(
                            T.if_then_else(sum_s[h] > 0, acc_o[h, d] / sum_s[h], 0), dtype)  # fmt: skip
            else:  # producer: gathers, one stage ahead of the consumers
                T.set_max_nreg(producer_regs, 0)
                ptx = tx - 2 * WARPGROUP
                for rnd in T.serial(num_rounds):
                    produce(KV, PageTable, Topk, token, request, rnd, 0, ptx, kv_lo[0], kv_hi[0], k_rope[0], valid[0],
                            kv_ready, kv_free)  # fmt: skip
                    produce(KV, PageTable, Topk, token, request, rnd, 1, ptx, kv_lo[1], kv_hi[1], k_rope[1], valid[1],
                            kv_ready, kv_free)  # fmt: skip

    return main
