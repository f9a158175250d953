"""Lightning-indexer logits over SGLang's slot-indexed cache, causal and per-request ragged (spec: dsa_reference).

Two kernels share the gather and the store: bf16/fp16 keys, and FP8 (e4m3) keys with per-row scales. Both compute
k @ q^T, keys as the gemm's M (block_l rows: a 64-row warpgroup MMA on Hopper) and heads as its N (16 to 64), then
sum over heads along the accumulator's rows, as DeepGEMM's fp8_mqa_logits does; heads as M would leave 8-32 head
tiles below wgmma's 64 rows.
"""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.dsa.tilelang.common import (
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
from sglang_glm5.dsa.tilelang.tuning import tuning

PASS_CONFIGS = {tilelang.PassConfigKey.TL_DISABLE_TMA_LOWER: True}  # key rows are gathered, not a TMA box
# the two e4m3 variants: the fp8 mma of sm_90a / gfx950 reads OCP e4m3fn, gfx942's reads fnuz (TileLang's HIP fp8
# type is fnuz there whatever the declared dtype), so each arch's tuning names the one its kernels take
TL_FP8 = {torch.float8_e4m3fn: "float8_e4m3fn", torch.float8_e4m3fnuz: "float8_e4m3fnuz"}
GEMM_K_STEP = {"float16": 16, "bfloat16": 16, **dict.fromkeys(TL_FP8.values(), 32)}  # k per mma: 16-bit 16, 8-bit 32
ACCUM = "float"
SCALE_DTYPES = FLOAT_DTYPES + (torch.float32,)


def _macros(*, heads, head_dim, block_q, block_l, gemm_dtype):
    """block_h (every head in one tile: logits sum over heads) and the T.macros of one program: block_q query
    tokens x key_blocks blocks of block_l positions, in passes per request.

    Pass `seg` (one per run of one request among the block's tokens) serves the tokens j >= seg of request
    QSeq[t0 + seg]: every key tile it gathers is multiplied with each of their q tiles (read once for all of them).
    A request seen twice in one block (not SGLang's layout) is served twice, with the same values.
    """
    _check_tiles(head_dim, block_l, gemm_dtype)
    block_h = head_tile(heads, max(64, head_tile(heads)))  # 8 heads run as 16 rows, 16/32/64 as themselves

    @T.macro
    def plan_pass(QSeq, QPos, t0, seg, num_tokens, active, last):
        """active[j]: token t0 + j belongs to this pass; last[0]: the largest q_pos among them (-1: no pass here)."""
        last[0] = -1
        t_seg = T.min(t0 + seg, num_tokens - 1)
        if (t0 + seg < num_tokens) & ((seg == 0) | (QSeq[t_seg] != QSeq[T.max(t_seg - 1, 0)])):
            for j in T.serial(block_q):
                t = T.min(t0 + j, num_tokens - 1)
                active[j] = (t0 + j < num_tokens) & (j >= seg) & (QSeq[t] == QSeq[t_seg])
                if active[j]:
                    last[0] = T.max(last[0], T.cast(QPos[t], "int64"))

    @T.macro
    def load_queries(Q, Weights, t0, num_tokens, q_s, w_s, active):
        for j, h, d in T.Parallel(block_q, block_h, head_dim):  # [BQ, BH, D], zero rows: padding heads, other tokens
            q_s[j, h, d] = T.if_then_else(active[j] & (h < heads), T.cast(Q[T.min(t0 + j, num_tokens - 1),
                                          T.min(h, heads - 1), d], gemm_dtype), T.cast(0, gemm_dtype))  # fmt: skip
        for c in T.Parallel(block_q * block_h):  # [BQ * BH], zero weight on padding heads and inactive tokens
            j, h = c // block_h, c % block_h
            w_s[c] = T.if_then_else(active[j] & (h < heads),
                                    T.cast(Weights[T.min(t0 + j, num_tokens - 1), T.min(h, heads - 1)], ACCUM), 0)

    @T.macro
    def gather_keys(K, PageTable, request, p0, last, slots, k_s):
        for n in T.Parallel(block_l):  # [BL], positions past the pass's last clamp to it: always a referenced entry
            # max(, 0) (slots are >= 0): not a bare copy, so not a cp.async, whose target the rows below would read
            # as addresses before its wait
            slots[n] = T.max(PageTable[request, T.min(p0 + n, last)], 0)
        for n, d in T.Parallel(block_l, head_dim):  # [BL, D], cp.async into the stage's buffer
            k_s[n, d] = K[slots[n], d]

    @T.macro
    def token_logits(Out, QPos, t0, p0, length, k_s, q_s, w_s, qk_scale, scores, logits, active, end):
        """Per token of the pass (a rolled loop): s = k @ q_j^T, logits = sum_h w[j, h] * relu(s * qk_scale), stored
        only for positions p <= q_pos: keys past a token's position are neither reduced nor written."""
        for j in T.serial(block_q):
            if active[j]:
                T.gemm(k_s, q_s[j, :, :], scores, transpose_B=True,
                       clear_accum=True)  # [BL, BH]  # fmt: skip
                # scales before the relu, as the reference dequantizes: any scale sign gives its result
                for n, h in T.Parallel(block_l, block_h):
                    scores[n, h] = T.max(scores[n, h] * qk_scale(n, j * block_h + h), 0) * w_s[j * block_h + h]
                T.reduce_sum(scores, logits, dim=1)  # [BL]
                # the token's first position past min(q_pos, L - 1), as a local: a bound read from global memory in
                # the parallel loop's condition made layout inference take ~20x longer
                end[0] = T.min(T.cast(QPos[t0 + j], "int64") + 1, length)  # active[j]: t0 + j < num_tokens
                for n in T.Parallel(block_l):
                    if p0 + n < end[0]:
                        Out[t0 + j, p0 + n] = logits[n]

    return block_h, (plan_pass, load_queries, gather_keys, token_logits)


def _symbols():
    """The dynamic dims of both kernels: num_tokens, num_slots, batch, length, pt_stride."""
    return tuple(map(T.dynamic, ("num_tokens", "num_slots", "batch", "length", "pt_stride")))


def _check_tiles(head_dim, block_l, gemm_dtype):
    step = GEMM_K_STEP[gemm_dtype]
    assert head_dim % step == 0, f"head_dim {head_dim}: {gemm_dtype} gemm k-steps are {step} wide"
    assert block_l % 16 == 0, f"block_l {block_l}: it is a gemm tile dimension, a multiple of 16"


def _schedule(copies, computes, num_stages):
    """T.Pipelined's manual schedule: the gather statements (slots, then the rows that read them; the planner alone
    puts the slots after the rows) in stage 0, the per-token gemms num_stages - 1 iterations behind them."""
    assert num_stages >= 1, f"num_stages {num_stages}: at least 1 (1 = no overlap)"
    return dict(order=list(range(copies + computes)), stage=[0] * copies + [num_stages - 1] * computes)


@tilelang.jit(pass_configs=PASS_CONFIGS)
def indexer_logits_kernel(
    *, heads, head_dim=128, dtype="bfloat16", weights_dtype="float32", index_dtype="int32", seq_dtype="int64",
    pos_dtype="int64", block_l=64, block_q=4, key_blocks=8, num_stages=2, threads=128,
):  # fmt: skip
    score_scale = head_dim**-0.5
    block_h, (plan_pass, load_queries, gather_keys, token_logits) = _macros(
        heads=heads, head_dim=head_dim, block_q=block_q, block_l=block_l, gemm_dtype=dtype
    )
    num_tokens, num_slots, batch, length, pt_stride = _symbols()

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
        with T.Kernel(T.ceildiv(num_tokens, block_q), T.ceildiv(length, block_l * key_blocks),
                      threads=threads) as (q_block, k_block):  # fmt: skip
            q_s = T.alloc_shared([block_q, block_h, head_dim], dtype)  # [BQ, BH, D]
            k_s = T.alloc_shared([block_l, head_dim], dtype)  # [BL, D], one buffer per pipeline stage
            w_s = T.alloc_shared([block_q * block_h], ACCUM)  # [BQ * BH]
            active = T.alloc_shared([block_q], "bool")
            slots = T.alloc_shared([block_l], index_dtype)
            scores = T.alloc_fragment([block_l, block_h], ACCUM)  # [BL, BH]
            logits = T.alloc_fragment([block_l], ACCUM)  # [BL]
            last, end = T.alloc_local([1], "int64"), T.alloc_local([1], "int64")
            t0, k0 = q_block * block_q, k_block * (block_l * key_blocks)
            for seg in T.serial(block_q):
                plan_pass(QSeq, QPos, t0, seg, num_tokens, active, last)
                if k0 <= last[0]:  # key blocks past every q_pos of the pass: skipped
                    request = QSeq[T.min(t0 + seg, num_tokens - 1)]
                    load_queries(Q, Weights, t0, num_tokens, q_s, w_s, active)
                    num_blocks = T.cast(T.min(key_blocks, T.ceildiv(last[0] + 1 - k0, block_l)), "int32")
                    for b in T.Pipelined(num_blocks, **_schedule(2, 1, num_stages)):
                        gather_keys(K, PageTable, request, k0 + b * block_l, last[0], slots, k_s)
                        token_logits(Out, QPos, t0, k0 + b * block_l, length, k_s, q_s, w_s,
                                     lambda n, c: score_scale, scores, logits, active, end)  # fmt: skip

    return main


@tilelang.jit(pass_configs=PASS_CONFIGS)
def indexer_logits_fp8_kernel(
    *, heads, head_dim=128, fp8_dtype="float8_e4m3fn", weights_dtype="float32", q_scale_dtype="float32",
    k_scale_dtype="float32", index_dtype="int32", seq_dtype="int64", pos_dtype="int64", block_l=64, block_q=4,
    key_blocks=8, num_stages=2, threads=128,
):  # fmt: skip
    assert fp8_dtype in TL_FP8.values(), f"fp8_dtype {fp8_dtype}: one of {list(TL_FP8.values())}"
    score_scale = head_dim**-0.5
    block_h, (plan_pass, load_queries, gather_keys, token_logits) = _macros(
        heads=heads, head_dim=head_dim, block_q=block_q, block_l=block_l, gemm_dtype=fp8_dtype
    )
    num_tokens, num_slots, batch, length, pt_stride = _symbols()

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
        with T.Kernel(T.ceildiv(num_tokens, block_q), T.ceildiv(length, block_l * key_blocks),
                      threads=threads) as (q_block, k_block):  # fmt: skip
            q_s = T.alloc_shared([block_q, block_h, head_dim], fp8_dtype)  # [BQ, BH, D]
            k_s = T.alloc_shared([block_l, head_dim], fp8_dtype)  # [BL, D], one buffer per pipeline stage
            w_s = T.alloc_shared([block_q * block_h], ACCUM)  # [BQ * BH]
            qs_s = T.alloc_shared([block_q * block_h], ACCUM)  # [BQ * BH], q_scale * D**-0.5
            ks_s = T.alloc_shared([block_l], ACCUM)  # [BL]
            active = T.alloc_shared([block_q], "bool")
            slots = T.alloc_shared([block_l], index_dtype)
            scores = T.alloc_fragment([block_l, block_h], ACCUM)  # [BL, BH]
            logits = T.alloc_fragment([block_l], ACCUM)  # [BL]
            last, end = T.alloc_local([1], "int64"), T.alloc_local([1], "int64")
            t0, k0 = q_block * block_q, k_block * (block_l * key_blocks)
            for seg in T.serial(block_q):
                plan_pass(QSeq, QPos, t0, seg, num_tokens, active, last)
                if k0 <= last[0]:
                    request = QSeq[T.min(t0 + seg, num_tokens - 1)]
                    load_queries(Q, Weights, t0, num_tokens, q_s, w_s, active)
                    for c in T.Parallel(block_q * block_h):  # [BQ * BH]: D**-0.5 folded into q's scale
                        qs_s[c] = T.cast(QScale[T.min(t0 + c // block_h, num_tokens - 1),
                                                T.min(c % block_h, heads - 1)], ACCUM) * score_scale  # fmt: skip
                    num_blocks = T.cast(T.min(key_blocks, T.ceildiv(last[0] + 1 - k0, block_l)), "int32")
                    for b in T.Pipelined(num_blocks, **_schedule(3, 1, num_stages)):
                        gather_keys(K, PageTable, request, k0 + b * block_l, last[0], slots, k_s)
                        for n in T.Parallel(block_l):  # [BL], through the same clamped slots
                            ks_s[n] = T.cast(KScale[slots[n]], ACCUM)
                        token_logits(Out, QPos, t0, k0 + b * block_l, length, k_s, q_s, w_s,
                                     lambda n, c: qs_s[c] * ks_s[n], scores, logits, active, end)  # fmt: skip

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
    """Indexer logits as dsa_reference.indexer_logits for positions p <= q_pos[t]; `out` [T, L] fp32 is written if
    given. Positions past q_pos[t] are neither computed nor written (the reference's -inf there is never read: every
    implementation's topk_positions reads only 0..q_pos[t]); a fresh `out` holds garbage there.

    q [T, H, D] fp16/bf16 (RoPE applied), weights [T, H] (already * H**-0.5), k_cache [S, D] -> logits [T, L] fp32.
    One program per (BQ query tokens, key_blocks x BL positions), in one pass per run of a request in its tokens:
    1. last = max q_pos of the pass's tokens; the program's key blocks past it are skipped (none: nothing to do)
    2. the pass's q rows to shared                                                                 # [BQ, BH, D]
    3. pipelined over its key blocks (cp.async into num_stages buffers on sm_90a):
       slots = page_table[request, min(p, last)] (never an entry past the request's length)       # [BL]
       k rows gathered to shared, then per token j (a rolled loop): s = k @ q[j]^T * D**-0.5      # [BL, BH]
       logits[t, p] = sum_h weights[t, h] * relu(s[p, h]), stored for p <= q_pos[t]                # [BL]
    Every key tile is read once for the BQ tokens. Heads pad to 16/32/64 rows (8 heads run as 16).
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
    """FP8 indexer logits as dsa_reference.indexer_logits_fp8 for p <= q_pos[t] (past it: not written, as
    indexer_logits); `out` [T, L] fp32 is written if given.

    q_fp8 [T, H, D] + q_scale [T, H], k_fp8 [S, D] + k_scale [S], weights [T, H] -> logits [T, L] fp32, in the e4m3
    variant the device's fp8 mma reads (tuning `fp8_dtype`: e4m3fn on sm_90a / gfx950, e4m3fnuz on gfx942).
    Dataflow of indexer_logits, with the e4m3 tiles as the gemm's operands and step 3 as
    s = relu((k_fp8 @ q_fp8[j]^T) * k_scale[slot] * (q_scale[t, h] * D**-0.5))                       # [BL, BH]
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
