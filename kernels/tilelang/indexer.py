"""Lightning-indexer logits over SGLang's slot-indexed cache, causal and per-request ragged (spec: dsa_reference).

Two kernels share the gather and the store: bf16/fp16 keys, and FP8 (e4m3) keys with per-row scales. Both compute
k @ q^T, keys as the gemm's M (block_l rows: a 64-row warpgroup MMA on Hopper) and heads as its N (16 to 64), then
sum over heads along the accumulator's rows, as DeepGEMM's fp8_mqa_logits does; heads as M would leave 8-32 head
tiles below wgmma's 64 rows.
"""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.kernels.tilelang.common import (
    FLOAT_DTYPES,
    TL_DTYPE,
    check_batch,
    check_size,
    check_tensor,
    dense,
    dense_rows,
    fresh_buffer,
    head_tile,
    out_buffer,
    require_gpu,
)
from sglang_glm5.kernels.tilelang.tuning import tuning

PASS_CONFIGS = {tilelang.PassConfigKey.TL_DISABLE_TMA_LOWER: True}  # key rows are gathered, not a TMA box
# the two e4m3 variants: the fp8 mma of sm_90a / gfx950 reads OCP e4m3fn, gfx942's reads fnuz (TileLang's HIP fp8
# type is fnuz there whatever the declared dtype), so each arch's tuning names the one its kernels take
TL_FP8 = {torch.float8_e4m3fn: "float8_e4m3fn", torch.float8_e4m3fnuz: "float8_e4m3fnuz"}
GEMM_K_STEP = {"float16": 16, "bfloat16": 16, **dict.fromkeys(TL_FP8.values(), 32)}  # k per mma: 16-bit 16, 8-bit 32
ACCUM = "float"
SCALE_DTYPES = FLOAT_DTYPES + (torch.float32,)


def _block_macros(*, heads, head_dim, block_h, block_l, gemm_dtype):
    """T.macros of one (token, BL positions) block: load q and the gathered key rows as gemm operands; store logits."""

    @T.macro
    def load_operands(Q, K, PageTable, token, request, p0, q_pos, q_s, k_s, slots):
        for h, d in T.Parallel(block_h, head_dim):  # [BH, D], padding heads are zero rows
            q_s[h, d] = T.if_then_else(h < heads, T.cast(Q[token, h, d], gemm_dtype), T.cast(0, gemm_dtype))
        for n in T.Parallel(block_l):  # [BL], positions past q_pos clamp to it: never an unreferenced entry
            slots[n] = PageTable[request, T.min(p0 + n, q_pos)]
        for n, d in T.Parallel(block_l, head_dim):  # [BL, D], zeros past q_pos
            k_s[n, d] = T.if_then_else(p0 + n <= q_pos, T.cast(K[slots[n], d], gemm_dtype), T.cast(0, gemm_dtype))

    @T.macro
    def store(Out, token, p0, q_pos, length, logits):
        for n in T.Parallel(block_l):
            if p0 + n < length:
                Out[token, p0 + n] = T.if_then_else(p0 + n <= q_pos, logits[n], -T.infinity(ACCUM))

    @T.macro
    def store_masked(Out, token, p0, length):
        for n in T.Parallel(block_l):
            if p0 + n < length:
                Out[token, p0 + n] = -T.infinity(ACCUM)

    return load_operands, store, store_masked


def _check_tiles(head_dim, block_l, gemm_dtype):
    step = GEMM_K_STEP[gemm_dtype]
    assert head_dim % step == 0, f"head_dim {head_dim}: {gemm_dtype} gemm k-steps are {step} wide"
    assert block_l % 16 == 0, f"block_l {block_l}: it is a gemm tile dimension, a multiple of 16"


@tilelang.jit(pass_configs=PASS_CONFIGS)
def indexer_logits_kernel(
    *, heads, head_dim=128, dtype="bfloat16", weights_dtype="float32", index_dtype="int32", seq_dtype="int64",
    pos_dtype="int64", block_l=64, threads=128,
):  # fmt: skip
    _check_tiles(head_dim, block_l, dtype)
    block_h = head_tile(heads, max(64, head_tile(heads)))  # every head in one tile: logits sum over heads
    score_scale = head_dim**-0.5
    load_operands, store, store_masked = _block_macros(heads=heads, head_dim=head_dim, block_h=block_h,
                                                       block_l=block_l, gemm_dtype=dtype)  # fmt: skip
    num_tokens, num_slots = T.dynamic("num_tokens"), T.dynamic("num_slots")
    batch, length, pt_stride = T.dynamic("batch"), T.dynamic("length"), T.dynamic("pt_stride")

    @T.prim_func
    def main(
        Q: T.Tensor((num_tokens, heads, head_dim), dtype),  # [T, H, D]
        Weights: T.Tensor((num_tokens, heads), weights_dtype),  # [T, H]
        K: T.Tensor((num_slots, head_dim), dtype),  # [S, D]
        PageTable: T.StridedTensor((batch, length), (pt_stride, 1), index_dtype),  # [B, L]
        QSeq: T.Tensor((num_tokens,), seq_dtype),  # [T]
        QPos: T.Tensor((num_tokens,), pos_dtype),  # [T]
        Out: T.Tensor((num_tokens, length), ACCUM),  # [T, L]
    ):
        with T.Kernel(T.ceildiv(length, block_l), num_tokens, threads=threads) as (block_id, token):
            q_s = T.alloc_shared([block_h, head_dim], dtype)
            k_s = T.alloc_shared([block_l, head_dim], dtype)
            w_s = T.alloc_shared([block_h], ACCUM)
            slots = T.alloc_shared([block_l], index_dtype)
            scores = T.alloc_fragment([block_l, block_h], ACCUM)
            logits = T.alloc_fragment([block_l], ACCUM)
            p0 = block_id * block_l
            q_pos = QPos[token]
            if p0 <= q_pos:
                load_operands(Q, K, PageTable, token, QSeq[token], p0, q_pos, q_s, k_s, slots)
                for h in T.Parallel(block_h):  # [BH], zero weight on padding heads
                    w_s[h] = T.if_then_else(h < heads, T.cast(Weights[token, T.min(h, heads - 1)], ACCUM), 0)
                T.gemm(k_s, q_s, scores, transpose_B=True, clear_accum=True)  # [BL, BH]
                for n, h in T.Parallel(block_l, block_h):
                    scores[n, h] = T.max(scores[n, h] * score_scale, 0) * w_s[h]
                T.reduce_sum(scores, logits, dim=1)  # [BL]
                store(Out, token, p0, q_pos, length, logits)
            else:
                store_masked(Out, token, p0, length)

    return main


@tilelang.jit(pass_configs=PASS_CONFIGS)
def indexer_logits_fp8_kernel(
    *, heads, head_dim=128, fp8_dtype="float8_e4m3fn", weights_dtype="float32", q_scale_dtype="float32",
    k_scale_dtype="float32", index_dtype="int32", seq_dtype="int64", pos_dtype="int64", block_l=64, threads=128,
):  # fmt: skip
    assert fp8_dtype in TL_FP8.values(), f"fp8_dtype {fp8_dtype}: one of {list(TL_FP8.values())}"
    _check_tiles(head_dim, block_l, fp8_dtype)
    block_h = head_tile(heads, max(64, head_tile(heads)))
    score_scale = head_dim**-0.5
    load_operands, store, store_masked = _block_macros(heads=heads, head_dim=head_dim, block_h=block_h,
                                                       block_l=block_l, gemm_dtype=fp8_dtype)  # fmt: skip
    num_tokens, num_slots = T.dynamic("num_tokens"), T.dynamic("num_slots")
    batch, length, pt_stride = T.dynamic("batch"), T.dynamic("length"), T.dynamic("pt_stride")

    @T.prim_func
    def main(
        Q: T.Tensor((num_tokens, heads, head_dim), fp8_dtype),  # [T, H, D]
        QScale: T.Tensor((num_tokens, heads), q_scale_dtype),  # [T, H]
        Weights: T.Tensor((num_tokens, heads), weights_dtype),  # [T, H]
        K: T.Tensor((num_slots, head_dim), fp8_dtype),  # [S, D]
        KScale: T.Tensor((num_slots,), k_scale_dtype),  # [S]
        PageTable: T.StridedTensor((batch, length), (pt_stride, 1), index_dtype),  # [B, L]
        QSeq: T.Tensor((num_tokens,), seq_dtype),  # [T]
        QPos: T.Tensor((num_tokens,), pos_dtype),  # [T]
        Out: T.Tensor((num_tokens, length), ACCUM),  # [T, L]
    ):
        with T.Kernel(T.ceildiv(length, block_l), num_tokens, threads=threads) as (block_id, token):
            q_s = T.alloc_shared([block_h, head_dim], fp8_dtype)
            k_s = T.alloc_shared([block_l, head_dim], fp8_dtype)
            w_s = T.alloc_shared([block_h], ACCUM)
            qs_s = T.alloc_shared([block_h], ACCUM)
            ks_s = T.alloc_shared([block_l], ACCUM)
            slots = T.alloc_shared([block_l], index_dtype)
            scores = T.alloc_fragment([block_l, block_h], ACCUM)
            logits = T.alloc_fragment([block_l], ACCUM)
            p0 = block_id * block_l
            q_pos = QPos[token]
            if p0 <= q_pos:
                load_operands(Q, K, PageTable, token, QSeq[token], p0, q_pos, q_s, k_s, slots)
                for h in T.Parallel(block_h):  # [BH]: zero weight on padding heads; D**-0.5 folded into q's scale
                    w_s[h] = T.if_then_else(h < heads, T.cast(Weights[token, T.min(h, heads - 1)], ACCUM), 0)
                    qs_s[h] = T.cast(QScale[token, T.min(h, heads - 1)], ACCUM) * score_scale
                for n in T.Parallel(block_l):  # [BL], slots already clamped to referenced entries
                    ks_s[n] = T.cast(KScale[slots[n]], ACCUM)
                T.gemm(k_s, q_s, scores, transpose_B=True, clear_accum=True)  # [BL, BH]
                # scales before the relu, as the reference dequantizes: any scale sign gives its result
                for n, h in T.Parallel(block_l, block_h):
                    scores[n, h] = T.max(scores[n, h] * qs_s[h] * ks_s[n], 0) * w_s[h]
                T.reduce_sum(scores, logits, dim=1)  # [BL]
                store(Out, token, p0, q_pos, length, logits)
            else:
                store_masked(Out, token, p0, length)

    return main


def _check_indexer(names, q, weights, k, page_table, q_seq, q_pos, dtypes):
    q_name, k_name = names
    check_tensor(q_name, q, 3, dtypes)
    num_tokens, num_heads, head_dim = q.shape
    check_tensor("weights", weights, 2, SCALE_DTYPES, q.device)
    check_size("weights", tuple(weights.shape), (num_tokens, num_heads), "shape")
    check_tensor(k_name, k, 2, (q.dtype,), q.device)
    check_size(k_name, k.shape[1], head_dim, "head dim")
    check_batch(page_table, q_seq, q_pos, num_tokens, q.device)


def fp8_dtype_for(device: torch.device) -> torch.dtype:
    """The e4m3 variant indexer_logits_fp8 takes on `device`: the one its fp8 mma reads (tuning `fp8_dtype`)."""
    return getattr(torch, tuning("indexer_logits_fp8", device)["fp8_dtype"])


def check_fp8_variant(dtype, fp8_dtype, device):
    """The e4m3 variant of the inputs must be the one the device's fp8 mma reads (the same bits mean other values)."""
    if TL_FP8[dtype] != fp8_dtype:
        raise TypeError(f"q_fp8 / k_fp8 are {dtype}, but the fp8 mma of {device} reads {fp8_dtype} "
                        f"(quantize_fp8_rows(x, torch.{fp8_dtype}); configs/tilelang-tuning.json)")  # fmt: skip


def _index_dtypes(page_table, q_seq, q_pos):
    return dict(index_dtype=TL_DTYPE[page_table.dtype], seq_dtype=TL_DTYPE[q_seq.dtype],
                pos_dtype=TL_DTYPE[q_pos.dtype])  # fmt: skip


def plan_indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos, *, out=None, empty=fresh_buffer):
    """indexer_logits' checks, tuning lookup, output (the caller's or from `empty`) and JIT kernel; once per shape
    under CUDA graphs (graph_plan.py) -> its keyword arguments for the launch-only path (checked=True)."""
    _check_indexer(("q", "k_cache"), q, weights, k_cache, page_table, q_seq, q_pos, FLOAT_DTYPES)
    num_tokens, num_heads, head_dim = q.shape
    out = out_buffer(out, "indexer_logits.out", (num_tokens, page_table.shape[1]), torch.float32, q.device, empty)
    require_gpu(q)
    kernel = None
    if num_tokens and page_table.shape[1]:
        kernel = indexer_logits_kernel(
            heads=num_heads, head_dim=head_dim, dtype=TL_DTYPE[q.dtype], weights_dtype=TL_DTYPE[weights.dtype],
            **_index_dtypes(page_table, q_seq, q_pos), **tuning("indexer_logits", q.device),
        )  # fmt: skip
    return {"out": out, "kernel": kernel, "checked": True}


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos, *, out=None, kernel=None, checked=False):
    """Indexer logits, same contract as dsa_reference.indexer_logits; `out` [T, L] fp32 is written if given.

    q [T, H, D] fp16/bf16 (RoPE applied), weights [T, H] (already * H**-0.5), k_cache [S, D] -> logits [T, L] fp32.
    One program per (block of BL positions p, query token t):
    1. blocks with every p > q_pos[t] store -inf and stop
    2. slots = page_table[q_seq[t], min(p, q_pos[t])] (never an entry past the request's length)    # [BL]
    3. k rows gathered to shared (zero past q_pos); s = k @ q[t]^T * D**-0.5                          # [BL, H]
    4. logits = sum_h weights[t, h] * relu(s[:, h]); -inf where p > q_pos[t]                           # [BL]
    All heads share one tile, the gemm's N (16/32/64 columns: 8 heads run as 16, never padded to 64 below 64).
    Index values (q_seq, q_pos) are trusted, not checked: that would sync the device; the reference checks them.
    checked=True: plan_indexer_logits ran for these shapes and passes out and the kernel; only the launch runs here.
    """
    if not checked:
        planned = plan_indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos, out=out)
        out, kernel = planned["out"], planned["kernel"]
    if kernel is not None:  # None: no tokens or no columns
        q, weights, k_cache, q_seq, q_pos = map(dense, (q, weights, k_cache, q_seq, q_pos))
        kernel(q, weights, k_cache, dense_rows(page_table), q_seq, q_pos, out)
    return out


def plan_indexer_logits_fp8(
    q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos, *, out=None, empty=fresh_buffer
):  # fmt: skip
    """indexer_logits_fp8's checks (the e4m3 variant too), tuning lookup, output and JIT kernel; once per shape under
    CUDA graphs (graph_plan.py) -> its keyword arguments for the launch-only path (checked=True)."""
    _check_indexer(("q_fp8", "k_fp8"), q_fp8, weights, k_fp8, page_table, q_seq, q_pos, tuple(TL_FP8))
    num_tokens, num_heads, head_dim = q_fp8.shape
    check_tensor("q_scale", q_scale, 2, SCALE_DTYPES, q_fp8.device)
    check_size("q_scale", tuple(q_scale.shape), (num_tokens, num_heads), "shape")
    check_tensor("k_scale", k_scale, 1, SCALE_DTYPES, q_fp8.device)
    check_size("k_scale", k_scale.shape[0], k_fp8.shape[0], "number of cache slots")
    out = out_buffer(out, "indexer_logits.out", (num_tokens, page_table.shape[1]), torch.float32, q_fp8.device, empty)
    require_gpu(q_fp8, "q_fp8")
    knobs = tuning("indexer_logits_fp8", q_fp8.device)
    check_fp8_variant(q_fp8.dtype, knobs["fp8_dtype"], q_fp8.device)
    kernel = None
    if num_tokens and page_table.shape[1]:
        kernel = indexer_logits_fp8_kernel(
            heads=num_heads, head_dim=head_dim, weights_dtype=TL_DTYPE[weights.dtype],
            q_scale_dtype=TL_DTYPE[q_scale.dtype], k_scale_dtype=TL_DTYPE[k_scale.dtype],
            **_index_dtypes(page_table, q_seq, q_pos), **knobs,
        )  # fmt: skip
    return {"out": out, "kernel": kernel, "checked": True}


def indexer_logits_fp8(
    q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos, *, out=None, kernel=None, checked=False
):  # fmt: skip
    """FP8 indexer logits, same contract as dsa_reference.indexer_logits_fp8; `out` [T, L] fp32 is written if given.

    q_fp8 [T, H, D] + q_scale [T, H], k_fp8 [S, D] + k_scale [S], weights [T, H] -> logits [T, L] fp32, in the e4m3
    variant the device's fp8 mma reads (tuning `fp8_dtype`: e4m3fn on sm_90a / gfx950, e4m3fnuz on gfx942).
    Dataflow of indexer_logits, with the e4m3 tiles as the gemm's operands and step 3 as
    s = relu((k_fp8 @ q_fp8[t]^T) * k_scale[slot] * (q_scale[t, h] * D**-0.5))                        # [BL, H]
    k_scale is read through the same clamped slots as the key rows.
    checked=True: plan_indexer_logits_fp8 ran for these shapes and passes out and the kernel; only the launch runs.
    """
    if not checked:
        planned = plan_indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos, out=out)
        out, kernel = planned["out"], planned["kernel"]
    if kernel is not None:  # None: no tokens or no columns
        q_fp8, q_scale, weights, k_fp8, k_scale, q_seq, q_pos = map(
            dense, (q_fp8, q_scale, weights, k_fp8, k_scale, q_seq, q_pos)
        )
        kernel(q_fp8, q_scale, weights, k_fp8, k_scale, dense_rows(page_table), q_seq, q_pos, out)
    return out
