"""Lightning-indexer logits over SGLang's slot-indexed cache, causal and per-request ragged (spec: dsa_reference)."""

import torch
import triton
import triton.language as tl

from sglang_glm5.dsa.triton.common import (
    FLOAT_DTYPES,
    FP8_DTYPE,
    block_size,
    check_batch,
    check_out,
    check_size,
    check_tensor,
    mma,
    multiprocessor_count,
    tile_max,
    tile_sum,
)

BLOCK_L = 64  # cached positions per step (the dot's M: Hopper's wgmma takes 64 rows)
QUERY_COLUMNS = 128  # (query token, head) columns per program: 4 tokens x 32 heads share each key block
NUM_WARPS = 8  # two warpgroups: a [64, 128] fp32 score tile plus the FP8 q tile without spills (sm_90a: 167 regs)
# key blocks in flight in the key loop's software pipeline: NVIDIA gathers the next block with cp.async while the
# current one is multiplied; on CDNA the pipelined loop spills scalar registers (gfx942: 105), so one stage there
NUM_STAGES = {"cuda": 2, "hip": 1}
PROGRAMS_PER_SM = 2  # key chunks: enough (token block, key chunk) programs for two per SM
CPU_BLOCKS_PER_CHUNK = 4  # no SM count (the interpreter): chunks of 4 key blocks, so 500-key tests cross chunk ends


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
    num_tokens, length, chunk_len,
    stride_qt, stride_qh, stride_qst, stride_wt, stride_k, stride_pt, stride_ot,
    score_scale,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_L: tl.constexpr, HAS_SCALES: tl.constexpr, NUM_STAGES: tl.constexpr,
):  # fmt: skip
    """One program per (block of BLOCK_Q query tokens, chunk of cached positions); see indexer_logits."""
    first_token = tl.program_id(0) * BLOCK_Q
    chunk_lo = tl.program_id(1) * chunk_len
    chunk_hi = tl.minimum(chunk_lo + chunk_len, length)
    tokens = first_token + tl.arange(0, BLOCK_Q)  # [BQ]
    token_ok = tokens < num_tokens
    seqs = tl.load(q_seq_ptr + tokens, mask=token_ok, other=-1)  # [BQ]
    q_pos = tl.load(q_pos_ptr + tokens, mask=token_ok, other=-1).to(tl.int32)  # [BQ]
    # the program's (token, head) pairs as one column tile of the dot: column c = token c // BH, head c % BH
    cols = tl.arange(0, BLOCK_Q * BLOCK_H)
    col_token = first_token + cols // BLOCK_H
    col_head = cols % BLOCK_H
    col_ok = (col_token < num_tokens) & (col_head < HEADS)  # [BQH]
    dims = tl.arange(0, HEAD_DIM)
    q_offs = col_token.to(tl.int64)[:, None] * stride_qt + col_head[:, None] * stride_qh + dims[None, :]
    # q and k enter the tensor cores in their own dtype (e4m3 x e4m3 or bf16 x bf16), fp32 accumulation
    q = tl.load(q_ptr + q_offs, mask=col_ok[:, None], other=0.0)  # [BQH, D]
    weights = tl.load(weights_ptr + col_token.to(tl.int64) * stride_wt + col_head, mask=col_ok, other=0.0)
    weights = weights.to(tl.float32)  # [BQH]
    if HAS_SCALES:
        q_scale = tl.load(q_scale_ptr + col_token.to(tl.int64) * stride_qst + col_head, mask=col_ok, other=0.0)
        q_scale = q_scale.to(tl.float32)  # [BQH]
    offs = tl.arange(0, BLOCK_L)
    token_index = tl.arange(0, BLOCK_Q)
    # tokens of one request share its keys; a block holding several requests takes them one after another
    for i in range(0, BLOCK_Q):
        request = tile_max(tl.where(token_index == i, seqs, -1), 0)
        first_of_request = tile_sum(((seqs == request) & (token_index < i)).to(tl.int32), 0) == 0
        if (request >= 0) & first_of_request:
            in_request = (seqs == request) & token_ok  # [BQ]
            last_pos = tile_max(tl.where(in_request, q_pos, -1), 0)  # keys past it are not read nor computed
            compute_hi = tl.minimum(chunk_hi, last_pos + 1)
            table_row = page_table_ptr + request.to(tl.int64) * stride_pt
            store_rows = out_ptr + tokens.to(tl.int64)[None, :] * stride_ot  # [1, BQ]
            for start in tl.range(chunk_lo, compute_hi, BLOCK_L, num_stages=NUM_STAGES):
                pos = start + offs  # [BL]
                key_ok = pos < compute_hi
                slots = tl.load(table_row + pos, mask=key_ok, other=0).to(tl.int64)  # [BL]
                k = tl.load(k_ptr + slots[:, None] * stride_k + dims[None, :], mask=key_ok[:, None], other=0.0)
                # keys as rows (M = BLOCK_L = 64, what Hopper's wgmma and its e4m3 form take), (token, head) as
                # columns: each key block is read once for the program's BLOCK_Q tokens
                scores = mma(k.to(q.dtype), tl.trans(q), tl.full([BLOCK_L, BLOCK_Q * BLOCK_H], 0, tl.float32))
                if HAS_SCALES:
                    k_scale = tl.load(k_scale_ptr + slots, mask=key_ok, other=0.0).to(tl.float32)
                    scores = scores * k_scale[:, None] * q_scale[None, :]
                scores = tl.maximum(scores * score_scale, 0.0) * weights[None, :]  # [BL, BQH]
                logits = tile_sum(tl.reshape(scores, [BLOCK_L, BLOCK_Q, BLOCK_H]), 2)  # [BL, BQ]
                logits = tl.where(pos[:, None] <= q_pos[None, :], logits, float("-inf"))
                tl.store(store_rows + pos[:, None], logits, mask=in_request[None, :] & (pos < chunk_hi)[:, None])
            # the rest of the chunk lies past every position of the request's tokens here: -inf, nothing read
            inf_lo = chunk_lo + tl.maximum(compute_hi - chunk_lo + BLOCK_L - 1, 0) // BLOCK_L * BLOCK_L
            for start in range(inf_lo, chunk_hi, BLOCK_L):
                pos = start + offs
                tl.store(store_rows + pos[:, None], tl.full([BLOCK_L, BLOCK_Q], float("-inf"), tl.float32),
                         mask=in_request[None, :] & (pos < chunk_hi)[:, None])  # fmt: skip


def query_block(num_heads: int) -> int:
    """Query tokens per program: QUERY_COLUMNS (token, head) columns, heads padded to a power of two."""
    return max(1, QUERY_COLUMNS // block_size(num_heads))


def default_chunk_blocks(token_blocks: int, length: int, num_sms: int | None) -> int:
    """BLOCK_L-key blocks per chunk: all of them when the token blocks alone give PROGRAMS_PER_SM per SM (prefill),
    else the keys split so they do (batch-1 decode over 64k keys on 132 SMs: 256 chunks of 4 blocks)."""
    blocks = triton.cdiv(max(length, 1), BLOCK_L)
    if num_sms is None:
        return min(blocks, CPU_BLOCKS_PER_CHUNK)
    chunks = max(1, min(blocks, triton.cdiv(PROGRAMS_PER_SM * num_sms, max(token_blocks, 1))))
    return triton.cdiv(blocks, chunks)


def _launch(q, q_scale, weights, k_cache, k_scale, page_table, q_seq, q_pos, out, checked=False):
    num_tokens, num_heads, head_dim = q.shape
    length = page_table.shape[1]
    out = out if checked else check_out(out, (num_tokens, length), torch.float32, q.device)
    if num_tokens == 0 or length == 0:
        return out
    has_scales = q_scale is not None
    block_q = query_block(num_heads)
    token_blocks = triton.cdiv(num_tokens, block_q)
    chunk_len = default_chunk_blocks(token_blocks, length, multiprocessor_count(q.device)) * BLOCK_L
    grid = (token_blocks, triton.cdiv(length, chunk_len))
    _indexer_logits_kernel[grid](
        q, q_scale if has_scales else q, weights, k_cache, k_scale if has_scales else k_cache,
        page_table, q_seq, q_pos, out,
        num_tokens, length, chunk_len, q.stride(0), q.stride(1), q_scale.stride(0) if has_scales else 0,
        weights.stride(0), k_cache.stride(0), page_table.stride(0), out.stride(0), head_dim**-0.5,
        HEADS=num_heads, HEAD_DIM=head_dim, BLOCK_H=block_size(num_heads), BLOCK_Q=block_q, BLOCK_L=BLOCK_L,
        HAS_SCALES=has_scales, NUM_STAGES=NUM_STAGES["hip" if torch.version.hip else "cuda"], num_warps=NUM_WARPS,
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
    One program per (block of BQ = 128 / H query tokens, chunk of positions); per request r among its tokens
    (prefill: one; decode: each token its own), whose last position there is P = max q_pos[t] over them:
    1. q of the BQ tokens as one [BQ * H, D] column tile, loaded once              # [BQH, D]
    2. per BLOCK_L positions p <= P of the chunk (software-pipelined key loop):
       slots = page_table[r, p]; k = k_cache[slots]                                 # [BL], [BL, D]
       s = k @ q^T * D**-0.5 (operands in q's dtype, fp32 accumulation)            # [BL, BQH]
       logits[t, p] = sum_h weights[t, h] * relu(s[p, (t, h)]); -inf where p > q_pos[t]   # [BL, BQ]
    3. positions of the chunk past P: -inf stored, no key read, no dot
    Output contract (dsa_reference's): every [t, p] is written, -inf for p > q_pos[t]; top-k reads only
    p <= q_pos[t], so those -inf cost stores only. Key chunks: default_chunk_blocks (few tokens: the keys are
    split so the grid still fills the SMs). Heads are padded to a power of two >= 16, not to 64.
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
    an e4m3 x e4m3 tensor-core dot (wgmma with e4m3 operands on sm_90a, asserted in tests/dsa/test_resources.py)
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
