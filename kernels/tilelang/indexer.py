"""Lightning-indexer logits over SGLang's slot-indexed cache, causal and per-request ragged (spec: dsa_reference)."""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.kernels.tilelang.common import (
    FLOAT_DTYPES,
    TL_DTYPE,
    check_batch,
    check_out,
    check_size,
    check_tensor,
    dense,
    dense_rows,
    head_tile,
    require_gpu,
)
from sglang_glm5.kernels.tilelang.tuning import tuning

PASS_CONFIGS = {tilelang.PassConfigKey.TL_DISABLE_TMA_LOWER: True}  # key rows are gathered, not a TMA box


@tilelang.jit(pass_configs=PASS_CONFIGS)
def indexer_logits_kernel(
    *, heads, head_dim=128, dtype="bfloat16", weights_dtype="float32", index_dtype="int32", seq_dtype="int64",
    pos_dtype="int64", block_l=64, threads=128,
):  # fmt: skip
    assert head_dim % 16 == 0, f"head_dim {head_dim}: gemm k-steps are 16 wide"
    assert block_l % 16 == 0, f"block_l {block_l}: it is a gemm tile dimension, a multiple of 16"
    block_h = head_tile(heads, max(64, head_tile(heads)))  # every head in one tile: logits sum over heads
    accum = "float"
    score_scale = head_dim**-0.5
    num_tokens, num_slots = T.dynamic("num_tokens"), T.dynamic("num_slots")
    batch, length, pt_stride = (
        T.dynamic("batch"),
        T.dynamic("length"),
        T.dynamic("pt_stride"),
    )

    @T.prim_func
    def main(
        Q: T.Tensor((num_tokens, heads, head_dim), dtype),  # [T, H, D]
        Weights: T.Tensor((num_tokens, heads), weights_dtype),  # [T, H]
        K: T.Tensor((num_slots, head_dim), dtype),  # [S, D]
        PageTable: T.StridedTensor((batch, length), (pt_stride, 1), index_dtype),  # [B, L]
        QSeq: T.Tensor((num_tokens,), seq_dtype),  # [T]
        QPos: T.Tensor((num_tokens,), pos_dtype),  # [T]
        Out: T.Tensor((num_tokens, length), accum),  # [T, L]
    ):
        with T.Kernel(T.ceildiv(length, block_l), num_tokens, threads=threads) as (
            block_id,
            token,
        ):
            q_s = T.alloc_shared([block_h, head_dim], dtype)
            k_s = T.alloc_shared([block_l, head_dim], dtype)
            w_s = T.alloc_shared([block_h], accum)
            slots = T.alloc_shared([block_l], index_dtype)
            scores = T.alloc_fragment([block_h, block_l], accum)
            logits = T.alloc_fragment([block_l], accum)
            p0 = block_id * block_l
            q_pos = QPos[token]
            request = QSeq[token]
            if p0 <= q_pos:
                for h, d in T.Parallel(block_h, head_dim):  # [BH, D], padding heads are zero rows
                    q_s[h, d] = T.if_then_else(h < heads, Q[token, h, d], T.cast(0, dtype))
                for h in T.Parallel(block_h):  # [BH], and zero weight
                    w_s[h] = T.if_then_else(h < heads, T.cast(Weights[token, T.min(h, heads - 1)], accum), 0)
                for n in T.Parallel(block_l):  # [BL], positions past q_pos clamp to it: never an unreferenced entry
                    slots[n] = PageTable[request, T.min(p0 + n, q_pos)]
                for n, d in T.Parallel(block_l, head_dim):  # [BL, D]
                    k_s[n, d] = T.if_then_else(p0 + n <= q_pos, K[slots[n], d], T.cast(0, dtype))
                T.gemm(q_s, k_s, scores, transpose_B=True, clear_accum=True)  # [BH, BL]
                for h, n in T.Parallel(block_h, block_l):
                    scores[h, n] = T.max(scores[h, n] * score_scale, 0) * w_s[h]
                T.reduce_sum(scores, logits, dim=0)  # [BL]
                for n in T.Parallel(block_l):
                    if p0 + n < length:
                        Out[token, p0 + n] = T.if_then_else(p0 + n <= q_pos, logits[n], -T.infinity(accum))
            else:
                for n in T.Parallel(block_l):
                    if p0 + n < length:
                        Out[token, p0 + n] = -T.infinity(accum)

    return main


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos, *, out=None):
    """Indexer logits, same contract as dsa_reference.indexer_logits; `out` [T, L] fp32 is written if given.

    q [T, H, D] fp16/bf16 (RoPE applied), weights [T, H] (already * H**-0.5), k_cache [S, D] -> logits [T, L] fp32.
    One program per (block of BL positions p, query token t):
    1. blocks with every p > q_pos[t] store -inf and stop
    2. slots = page_table[q_seq[t], min(p, q_pos[t])] (never an entry past the request's length)    # [BL]
    3. k rows gathered to shared (zero past q_pos); s = q[t] @ k^T * D**-0.5                          # [H, BL]
    4. logits = sum_h weights[t, h] * relu(s[h]); -inf where p > q_pos[t]                              # [BL]
    All heads share one tile (16/32/64 rows: 8 heads run as 16, never padded to 64 below 64).
    Index values (q_seq, q_pos) are trusted, not checked: that would sync the device; the reference checks them.
    """
    check_tensor("q", q, 3, FLOAT_DTYPES)
    num_tokens, num_heads, head_dim = q.shape
    check_tensor("weights", weights, 2, FLOAT_DTYPES + (torch.float32,), q.device)
    check_size("weights", tuple(weights.shape), (num_tokens, num_heads), "shape")
    check_tensor("k_cache", k_cache, 2, (q.dtype,), q.device)
    check_size("k_cache", k_cache.shape[1], head_dim, "head dim")
    check_batch(page_table, q_seq, q_pos, num_tokens, q.device)
    length = page_table.shape[1]
    out = check_out(out, (num_tokens, length), torch.float32, q.device)
    require_gpu(q)
    if num_tokens and length:
        q, weights, k_cache, q_seq, q_pos = (
            dense(q),
            dense(weights),
            dense(k_cache),
            dense(q_seq),
            dense(q_pos),
        )
        page_table = dense_rows(page_table)
        kernel = indexer_logits_kernel(
            heads=num_heads, head_dim=head_dim, dtype=TL_DTYPE[q.dtype], weights_dtype=TL_DTYPE[weights.dtype],
            index_dtype=TL_DTYPE[page_table.dtype], seq_dtype=TL_DTYPE[q_seq.dtype], pos_dtype=TL_DTYPE[q_pos.dtype],
            **tuning("indexer_logits", q.device),
        )  # fmt: skip
        kernel(q, weights, k_cache, page_table, q_seq, q_pos, out)
    return out
