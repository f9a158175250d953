"""Top-k positions per query token by radix select: ascending positions, ties to the lower position, -1 padding."""

import torch
import triton
import triton.language as tl

from sglang_glm5.kernels.triton.common import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    check_out,
    check_size,
    check_tensor,
    multiprocessor_count,
    tile_exclusive_cumsum,
    tile_sum,
)

PAD = tl.constexpr(-1)
BLOCK_L = 1024  # logits scanned per step
BLOCK_K = 256  # output columns padded per step
KEY_BITS = tl.constexpr(32)  # int32 order keys
RADIX_BITS = 8  # threshold bits decided per pass: 32 / 8 = 4 histogram passes over the row
NUM_WARPS = 4
SIGN_BIT = tl.constexpr(-(2**31))  # int32 with only the sign bit set
INT32_MAX = tl.constexpr(2**31 - 1)
RADIX_PASSES = tl.constexpr(32 // RADIX_BITS)  # histogram passes per row
MIN_CHUNK = 4096  # split rows: logits per chunk at least, so a chunk's histogram outweighs its atomics


@triton.jit
def _order_key(x):
    """fp32 -> int32 whose signed order is the float order; -0.0 == +0.0, and NaN above +inf as torch.sort has it."""
    x = tl.where(x == 0.0, 0.0, x)
    bits = x.to(tl.int32, bitcast=True)
    # negative floats order backwards in their bit pattern: flip all bits but the sign
    key = tl.where(bits < 0, bits ^ INT32_MAX, bits)
    return tl.where(x != x, INT32_MAX, key)


@triton.jit
def _topk_kernel(
    logits_ptr,  # [T, L]
    q_pos_ptr,  # [T]
    out_ptr,  # [T, K] int32
    k,
    stride_lt,
    stride_ot,
    BLOCK_L: tl.constexpr,
    BLOCK_K: tl.constexpr,
    RADIX_BITS: tl.constexpr,
    NUM_BINS: tl.constexpr,
):
    token = tl.program_id(0)
    row = logits_ptr + token.to(tl.int64) * stride_lt
    out_row = out_ptr + token.to(tl.int64) * stride_ot
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    num_sel = tl.minimum(num_valid, k)
    offs = tl.arange(0, BLOCK_L)

    # threshold = the num_sel-th largest key, ties_wanted = how many keys equal to it are taken;
    # the whole row is taken when it has <= k valid positions
    threshold = num_valid * 0 + SIGN_BIT
    ties_wanted = num_valid * 0
    if num_valid > k:
        bins = tl.arange(0, NUM_BINS)  # [R]
        prefix = num_valid * 0  # threshold bits found so far, in unsigned order (sign bit flipped)
        remaining = num_sel  # keys still to take among those whose higher bits equal prefix
        for radix_pass in tl.static_range(KEY_BITS // RADIX_BITS):
            shift = KEY_BITS - RADIX_BITS * (radix_pass + 1)
            hist = tl.full([NUM_BINS], 0, tl.int32)  # [R] digits of the keys still in the running
            for start in range(0, num_valid, BLOCK_L):
                in_row = start + offs < num_valid
                key = _order_key(tl.load(row + start + offs, mask=in_row, other=0.0).to(tl.float32))  # [BL]
                bits = key ^ SIGN_BIT  # unsigned order; >> sign-extends, but both sides of == alike, & drops it
                in_running = in_row
                if radix_pass > 0:
                    in_running = in_row & ((bits >> (shift + RADIX_BITS)) == (prefix >> (shift + RADIX_BITS)))
                hist += tl.histogram((bits >> shift) & (NUM_BINS - 1), NUM_BINS, mask=in_running)
            at_least = tile_sum(hist, 0) - tile_exclusive_cumsum(hist, 0)  # [R] keys with digit >= bin
            # at_least falls with the bin and bin 0 holds all `remaining`: the largest bin still holding them
            digit = tile_sum((at_least >= remaining).to(tl.int32), 0) - 1
            remaining -= tile_sum(tl.where(bins == digit, at_least - hist, 0), 0)  # those above digit are taken
            prefix = prefix | (digit << shift)
        threshold = prefix ^ SIGN_BIT
        ties_wanted = remaining

    # one pass in position order: output slots come from a running count, so positions land ascending
    written = num_valid * 0
    ties_seen = num_valid * 0
    for start in range(0, num_valid, BLOCK_L):
        pos = start + offs
        in_row = pos < num_valid
        key = _order_key(tl.load(row + pos, mask=in_row, other=0.0).to(tl.float32))  # [BL]
        tie = ((key == threshold) & in_row).to(tl.int32)
        take = ((key > threshold) & in_row) | ((tie != 0) & (ties_seen + tile_exclusive_cumsum(tie, 0) < ties_wanted))
        take_i = take.to(tl.int32)
        tl.store(out_row + written + tile_exclusive_cumsum(take_i, 0), pos, mask=take)
        written += tile_sum(take_i, 0)
        ties_seen += tile_sum(tie, 0)

    cols = tl.arange(0, BLOCK_K)
    for start in range(0, k, BLOCK_K):
        pad_cols = start + cols
        tl.store(out_row + pad_cols, tl.full([BLOCK_K], PAD, tl.int32), mask=(pad_cols >= num_sel) & (pad_cols < k))


# ---- rows split across programs (few rows, long rows: batch-1 decode over 64k-200k keys) ----
# The same radix select and the same ascending write, with each row's positions cut into chunks, one program per
# (row, chunk) per step; the steps are launches queued back to back (no host round trip, CUDA-graph capturable):
#   4 x (histogram of the chunk, atomically added into the row's [256] -> one program per row picks the digit)
#   count of keys > threshold / == threshold per chunk -> ascending write at offsets summed over earlier chunks


@triton.jit
def _split_hist_kernel(
    logits_ptr,  # [T, L]
    q_pos_ptr,  # [T]
    state_ptr,  # [T, 2] int32: threshold prefix so far, keys still to take (written by _split_digit_kernel)
    hist_ptr,  # [T, RADIX_PASSES, NUM_BINS] int32, zeroed before
    k, chunk_len, stride_lt,
    RADIX_PASS: tl.constexpr, BLOCK_L: tl.constexpr, RADIX_BITS: tl.constexpr, NUM_BINS: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    if num_valid > k:
        lo = tl.program_id(1) * chunk_len
        hi = tl.minimum(lo + chunk_len, num_valid)
        row = logits_ptr + token.to(tl.int64) * stride_lt
        offs = tl.arange(0, BLOCK_L)
        shift = KEY_BITS - RADIX_BITS * (RADIX_PASS + 1)
        prefix = tl.load(state_ptr + token * 2)
        hist = tl.full([NUM_BINS], 0, tl.int32)
        for start in range(lo, hi, BLOCK_L):
            in_row = start + offs < hi
            bits = _order_key(tl.load(row + start + offs, mask=in_row, other=0.0).to(tl.float32)) ^ SIGN_BIT
            in_running = in_row
            if RADIX_PASS > 0:
                in_running = in_row & ((bits >> (shift + RADIX_BITS)) == (prefix >> (shift + RADIX_BITS)))
            hist += tl.histogram((bits >> shift) & (NUM_BINS - 1), NUM_BINS, mask=in_running)
        bins = tl.arange(0, NUM_BINS)
        tl.atomic_add(hist_ptr + (token * RADIX_PASSES + RADIX_PASS) * NUM_BINS + bins, hist)


@triton.jit
def _split_digit_kernel(
    q_pos_ptr, state_ptr, hist_ptr, k,
    RADIX_PASS: tl.constexpr, RADIX_BITS: tl.constexpr, NUM_BINS: tl.constexpr,
):  # fmt: skip
    """One program per row: the next threshold digit from the row's summed histogram (as _topk_kernel does)."""
    token = tl.program_id(0)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    if num_valid > k:
        shift = KEY_BITS - RADIX_BITS * (RADIX_PASS + 1)
        if RADIX_PASS == 0:
            prefix = num_valid * 0
            remaining = tl.minimum(num_valid, k)
        else:
            prefix = tl.load(state_ptr + token * 2)
            remaining = tl.load(state_ptr + token * 2 + 1)
        bins = tl.arange(0, NUM_BINS)
        hist = tl.load(hist_ptr + (token * RADIX_PASSES + RADIX_PASS) * NUM_BINS + bins)
        at_least = tile_sum(hist, 0) - tile_exclusive_cumsum(hist, 0)  # [R] keys with digit >= bin
        digit = tile_sum((at_least >= remaining).to(tl.int32), 0) - 1
        remaining -= tile_sum(tl.where(bins == digit, at_least - hist, 0), 0)
        tl.store(state_ptr + token * 2, prefix | (digit << shift))
        tl.store(state_ptr + token * 2 + 1, remaining)


@triton.jit
def _split_count_kernel(
    logits_ptr, q_pos_ptr, state_ptr, counts_ptr,  # counts [T, C, 2] int32: keys > / == threshold per chunk
    k, chunk_len, stride_lt, NUM_CHUNKS: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    chunk = tl.program_id(1)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    if num_valid > k:
        lo = chunk * chunk_len
        hi = tl.minimum(lo + chunk_len, num_valid)
        row = logits_ptr + token.to(tl.int64) * stride_lt
        offs = tl.arange(0, BLOCK_L)
        threshold = tl.load(state_ptr + token * 2) ^ SIGN_BIT
        greater = num_valid * 0
        ties = num_valid * 0
        for start in range(lo, hi, BLOCK_L):
            in_row = start + offs < hi
            key = _order_key(tl.load(row + start + offs, mask=in_row, other=0.0).to(tl.float32))
            greater += tile_sum(((key > threshold) & in_row).to(tl.int32), 0)
            ties += tile_sum(((key == threshold) & in_row).to(tl.int32), 0)
        tl.store(counts_ptr + (token * NUM_CHUNKS + chunk) * 2, greater)
        tl.store(counts_ptr + (token * NUM_CHUNKS + chunk) * 2 + 1, ties)


@triton.jit
def _split_write_kernel(
    logits_ptr, q_pos_ptr, state_ptr, counts_ptr, out_ptr,
    k, chunk_len, stride_lt, stride_ot,
    NUM_CHUNKS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Each chunk writes its taken positions in order at the count taken by the chunks before it; chunk 0 pads."""
    token = tl.program_id(0)
    chunk = tl.program_id(1)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    num_sel = tl.minimum(num_valid, k)
    lo = chunk * chunk_len
    hi = tl.minimum(lo + chunk_len, num_valid)
    row = logits_ptr + token.to(tl.int64) * stride_lt
    out_row = out_ptr + token.to(tl.int64) * stride_ot
    # a row with <= k valid positions takes them all: every position before the chunk is taken
    threshold = num_valid * 0 + SIGN_BIT
    ties_wanted = num_valid * 0
    written = lo
    ties_seen = num_valid * 0
    if num_valid > k:
        threshold = tl.load(state_ptr + token * 2) ^ SIGN_BIT
        ties_wanted = tl.load(state_ptr + token * 2 + 1)
        chunks = tl.arange(0, BLOCK_C)
        before = chunks < chunk
        counts = counts_ptr + (token * NUM_CHUNKS + chunks) * 2
        ties_seen = tile_sum(tl.load(counts + 1, mask=before, other=0), 0)
        written = tile_sum(tl.load(counts, mask=before, other=0), 0) + tl.minimum(ties_seen, ties_wanted)
    offs = tl.arange(0, BLOCK_L)
    for start in range(lo, hi, BLOCK_L):
        pos = start + offs
        in_row = pos < hi
        key = _order_key(tl.load(row + pos, mask=in_row, other=0.0).to(tl.float32))  # [BL]
        tie = ((key == threshold) & in_row).to(tl.int32)
        take = ((key > threshold) & in_row) | ((tie != 0) & (ties_seen + tile_exclusive_cumsum(tie, 0) < ties_wanted))
        take_i = take.to(tl.int32)
        tl.store(out_row + written + tile_exclusive_cumsum(take_i, 0), pos, mask=take)
        written += tile_sum(take_i, 0)
        ties_seen += tile_sum(tie, 0)
    if chunk == 0:
        cols = tl.arange(0, BLOCK_K)
        for start in range(0, k, BLOCK_K):
            pad_cols = start + cols
            tl.store(out_row + pad_cols, tl.full([BLOCK_K], PAD, tl.int32), mask=(pad_cols >= num_sel) & (pad_cols < k))


def check_topk_args(logits, q_pos, k, out, num_chunks):
    """-> (out, num_chunks): `out` checked or allocated, num_chunks checked or default_num_chunks' for the device."""
    check_tensor("logits", logits, 2, FLOAT_DTYPES)
    check_tensor("q_pos", q_pos, 1, INDEX_DTYPES, logits.device)
    num_tokens, length = logits.shape
    check_size("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    out = check_out(out, (num_tokens, k), torch.int32, logits.device)
    if num_chunks is None:
        num_chunks = default_num_chunks(num_tokens, length, multiprocessor_count(logits.device))
    if not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"num_chunks must be an int >= 1, got {num_chunks!r}")
    return out, num_chunks


def default_num_chunks(num_tokens: int, length: int, num_sms: int | None) -> int:
    """Chunks per row so that few rows still fill the GPU's SMs (batch 1 at 64k keys on 132 SMs: 16 chunks of 4096);
    one (the single-program kernel) from as many rows as SMs up, for short rows, and without an SM count (CPU)."""
    if num_sms is None or num_tokens >= num_sms:
        return 1
    return max(1, min(triton.cdiv(num_sms, max(num_tokens, 1)), triton.cdiv(length, MIN_CHUNK)))


def split_layout(length: int, num_chunks: int) -> tuple[int, int, int]:
    """(step, chunk length, chunks) of a split row: chunks of whole steps; short rows (tests) get a smaller step so
    every chunk is used."""
    block = max(16, min(BLOCK_L, triton.next_power_of_2(triton.cdiv(length, num_chunks))))
    chunk_len = triton.cdiv(triton.cdiv(length, num_chunks), block) * block
    return block, chunk_len, triton.cdiv(length, chunk_len)


def split_workspace(num_tokens: int, num_chunks: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(state [T, 2], hist [T, passes, bins], counts [T, chunks, 2]) int32 of _split_topk (chunks: split_layout's)."""
    return (
        torch.empty((num_tokens, 2), dtype=torch.int32, device=device),
        torch.empty((num_tokens, RADIX_PASSES.value, 1 << RADIX_BITS), dtype=torch.int32, device=device),
        torch.empty((num_tokens, num_chunks, 2), dtype=torch.int32, device=device),
    )


def _split_topk(logits, q_pos, k, out, num_chunks, workspace=None):
    num_tokens, length = logits.shape
    block, chunk_len, num_chunks = split_layout(length, num_chunks)
    state, hist, counts = workspace or split_workspace(num_tokens, num_chunks, logits.device)
    hist.zero_()  # histograms are summed atomically
    grid = (num_tokens, num_chunks)
    radix = dict(RADIX_BITS=RADIX_BITS, NUM_BINS=1 << RADIX_BITS)
    for radix_pass in range(RADIX_PASSES.value):
        _split_hist_kernel[grid](logits, q_pos, state, hist, k, chunk_len, logits.stride(0), RADIX_PASS=radix_pass,
                                 BLOCK_L=block, num_warps=NUM_WARPS, **radix)  # fmt: skip
        _split_digit_kernel[(num_tokens,)](q_pos, state, hist, k, RADIX_PASS=radix_pass, num_warps=1, **radix)
    _split_count_kernel[grid](logits, q_pos, state, counts, k, chunk_len, logits.stride(0), NUM_CHUNKS=num_chunks,
                              BLOCK_L=block, num_warps=NUM_WARPS)  # fmt: skip
    _split_write_kernel[grid](
        logits, q_pos, state, counts, out, k, chunk_len, logits.stride(0), out.stride(0), NUM_CHUNKS=num_chunks,
        BLOCK_C=triton.next_power_of_2(num_chunks), BLOCK_L=block, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


def topk_positions(logits, q_pos, k, *, out=None, num_chunks=None, workspace=None, checked=False):
    """Top-k positions, same contract as dsa_reference.topk_positions; `out` [T, k] int32 is written if given.

    logits [T, L], q_pos [T] -> [T, k] int32: the min(k, q_pos[t] + 1) best of positions 0..q_pos[t], ascending,
    then -1. Equal scores go to the lower position; -0.0 equals +0.0; NaN ranks above +inf (torch.sort's order).
    One program per query token t, reading only positions 0..q_pos[t]:
    1. key = the fp32 logit's bits mapped to an int32 with the same order                 # [L]
    2. if more than k valid: 4 passes decide the k-th largest key 8 bits at a time (radix select), each a
       256-bin histogram of the next digit over the keys whose higher bits equal the threshold's so far  # [256]
    3. one pass in position order takes keys > threshold and the first (k - #greater) keys == threshold,
       writing each at the running count (exclusive cumsum), so the output is ascending   # [k]
    4. columns min(k, q_pos[t] + 1).. get -1
    num_chunks: programs per row (default_num_chunks: few long rows are split to fill the SMs); above 1 the same
    steps run as launches over (row, chunk) programs (_split_topk), same result.
    q_pos values are trusted (< L), not checked: that would sync the device; the reference checks them.
    workspace: split_workspace's buffers for num_chunks > 1 (else allocated per call). checked=True: a plan for these
    shapes (plans.py) checked the arguments and passes num_chunks and the workspace; `out` is then allocated here
    unless given, nothing else is checked or looked up.
    """
    if checked:
        out = torch.empty((logits.shape[0], k), dtype=torch.int32, device=logits.device) if out is None else out
    else:
        out, num_chunks = check_topk_args(logits, q_pos, k, out, num_chunks)
    num_tokens, length = logits.shape
    if num_tokens and length and num_chunks > 1:
        return _split_topk(logits, q_pos, k, out, num_chunks, workspace)
    if num_tokens:
        _topk_kernel[(num_tokens,)](
            logits, q_pos, out, k, logits.stride(0), out.stride(0),
            BLOCK_L=BLOCK_L, BLOCK_K=BLOCK_K, RADIX_BITS=RADIX_BITS, NUM_BINS=1 << RADIX_BITS, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out
