"""Top-k positions per query token by radix select: ascending positions, ties to the lower position, -1 padding."""

import torch
import triton
import triton.language as tl

from sglang_glm5.dsa.triton.common import (
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
RADIX_BITS = tl.constexpr(8)  # threshold bits decided per refinement pass: 32 / 8 = 4 passes over the candidates
NUM_BINS = 1 << RADIX_BITS.value  # coarse bins too: a 256-bin tl.histogram stays cheap in registers
NUM_WARPS = 4
SIGN_BIT = tl.constexpr(-(2**31))  # int32 with only the sign bit set
INT32_MAX = tl.constexpr(2**31 - 1)
HALF_SIGN = tl.constexpr(2**15)
HALF_MAX = tl.constexpr(2**15 - 1)
RADIX_PASSES = tl.constexpr(32 // RADIX_BITS.value)
# entries kept per row after the coarse pass (positions + fp32 values, 32 KB): GLM-5's k = 2048 over 64k-200k
# N(0, 1)-like logits leaves ~2048 + 1000-3000 at a quarter-binade bin; a row that does not fit is refined over
# the whole row instead (same result, more passes)
CAPACITY = 4096
MIN_CHUNK = 4096  # split rows: logits per chunk at least
PROGRAMS_PER_SM = 4  # one-program-per-row path: persistent programs, each with its own CAPACITY scratch
CPU_PROGRAMS = 4  # the interpreter has no SM count; fewer programs than rows still runs the persistent loop


@triton.jit
def _order_key(x):
    """fp32 -> int32 whose signed order is the float order; -0.0 == +0.0, and NaN above +inf as torch.sort has it."""
    x = tl.where(x == 0.0, 0.0, x)
    bits = x.to(tl.int32, bitcast=True)
    # negative floats order backwards in their bit pattern: flip all bits but the sign
    key = tl.where(bits < 0, bits ^ INT32_MAX, bits)
    return tl.where(x != x, INT32_MAX, key)


@triton.jit
def _coarse_bin(x):
    """fp32 -> bin in [0, 256), non-decreasing in the fp32 order of _order_key (equal keys share a bin): the top
    8 bits of the order key of x rounded to fp16 (sign, 5 exponent, 2 mantissa bits: 4 bins per binade between
    2**-14 and 65504). fp32's own top 8 bits span two binades per bin, which would leave most of a row as
    candidates; rounding to fp16 is monotone, so no key in a higher bin is below one in a lower bin."""
    x = tl.where(x == 0.0, 0.0, x)
    half = x.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32)  # sign-extended
    key = tl.where(half < 0, half ^ HALF_MAX, half)  # [-2**15, 2**15) in float order
    key = tl.where(x != x, HALF_MAX, key)
    return (key + HALF_SIGN) >> 8


@triton.jit
def _pick_digit(hist, remaining, NUM_BINS: tl.constexpr):
    """The largest bin d with >= `remaining` keys at or above it -> (d, keys still wanted inside d, keys >= d)."""
    bins = tl.arange(0, NUM_BINS)
    at_least = tile_sum(hist, 0) - tile_exclusive_cumsum(hist, 0)  # [R] keys with digit >= bin
    # at_least falls with the bin and bin 0 holds them all: the largest bin still holding `remaining`
    digit = tile_sum((at_least >= remaining).to(tl.int32), 0) - 1
    remaining -= tile_sum(tl.where(bins == digit, at_least - hist, 0), 0)  # those above digit are taken
    return digit, remaining, tile_sum(tl.where(bins == digit, at_least, 0), 0)


@triton.jit
def _load_entries(row, list_pos, list_val, start, n, BLOCK: tl.constexpr, FROM_LIST: tl.constexpr):
    """BLOCK entries from `start` of the row (positions start..) or of the compacted list -> (pos, fp32, inside)."""
    idx = start + tl.arange(0, BLOCK)
    inside = idx < n
    if FROM_LIST:
        pos = tl.load(list_pos + idx, mask=inside, other=0)
        x = tl.load(list_val + idx, mask=inside, other=0.0)
    else:
        pos = idx
        x = tl.load(row + idx, mask=inside, other=0.0).to(tl.float32)
    return pos, x, inside


@triton.jit
def _coarse_histogram(row, lo, hi, BLOCK: tl.constexpr, NUM_BINS: tl.constexpr):
    """The coarse-bin histogram of row positions [lo, hi): the one full pass that decides the threshold bin."""
    hist = tl.full([NUM_BINS], 0, tl.int32)
    for start in range(lo, hi, BLOCK):
        unused_pos, x, inside = _load_entries(row, row, row, start, hi, BLOCK, False)
        hist += tl.histogram(_coarse_bin(x), NUM_BINS, mask=inside)
    return hist


@triton.jit
def _compact(row, lo, hi, list_pos, list_val, offset, coarse_threshold, BLOCK: tl.constexpr):
    """Row positions [lo, hi) whose coarse bin is >= the threshold bin -> the list from `offset`, in position order
    (exclusive cumsum of the kept flags), with their fp32 values."""
    for start in range(lo, hi, BLOCK):
        pos, x, inside = _load_entries(row, row, row, start, hi, BLOCK, False)
        keep = inside & (_coarse_bin(x) >= coarse_threshold)
        keep_i = keep.to(tl.int32)
        dest = offset + tile_exclusive_cumsum(keep_i, 0)
        tl.store(list_pos + dest, pos, mask=keep)
        tl.store(list_val + dest, x, mask=keep)
        offset += tile_sum(keep_i, 0)


@triton.jit
def _radix_select(row, list_pos, list_val, n, coarse_threshold, remaining,
                  BLOCK: tl.constexpr, NUM_BINS: tl.constexpr, FROM_LIST: tl.constexpr):  # fmt: skip
    """Among entries in the threshold bin (the candidates), the `remaining`-th largest fp32 key, 8 bits per pass
    -> (threshold key, how many keys equal to it are taken)."""
    prefix = remaining * 0  # threshold bits found so far, in unsigned order (sign bit flipped)
    for radix_pass in tl.static_range(RADIX_PASSES):
        shift = KEY_BITS - RADIX_BITS * (radix_pass + 1)
        hist = tl.full([NUM_BINS], 0, tl.int32)  # [R] digits of the keys still in the running
        for start in range(0, n, BLOCK):
            unused_pos, x, inside = _load_entries(row, list_pos, list_val, start, n, BLOCK, FROM_LIST)
            bits = _order_key(x) ^ SIGN_BIT  # unsigned order; >> sign-extends, but both sides of == alike
            running = inside & (_coarse_bin(x) == coarse_threshold)
            if radix_pass > 0:
                running = running & ((bits >> (shift + RADIX_BITS)) == (prefix >> (shift + RADIX_BITS)))
            hist += tl.histogram((bits >> shift) & (NUM_BINS - 1), NUM_BINS, mask=running)
        digit, remaining, unused_count = _pick_digit(hist, remaining, NUM_BINS)
        prefix = prefix | (digit << shift)
    return prefix ^ SIGN_BIT, remaining


@triton.jit
def _write_ascending(row, list_pos, list_val, n, out_row, coarse_threshold, threshold, ties_wanted,
                     BLOCK: tl.constexpr, FROM_LIST: tl.constexpr):  # fmt: skip
    """The one write pass, over entries in position order: takes those above the threshold bin, the candidates
    above the threshold key and the first `ties_wanted` equal to it, each at the running count -> ascending."""
    written = ties_wanted * 0
    ties_seen = ties_wanted * 0
    for start in range(0, n, BLOCK):
        pos, x, inside = _load_entries(row, list_pos, list_val, start, n, BLOCK, FROM_LIST)
        key = _order_key(x)
        coarse = _coarse_bin(x)
        candidate = inside & (coarse == coarse_threshold)
        tie = (candidate & (key == threshold)).to(tl.int32)
        take = (inside & (coarse > coarse_threshold)) | (candidate & (key > threshold))
        take = take | ((tie != 0) & (ties_seen + tile_exclusive_cumsum(tie, 0) < ties_wanted))
        take_i = take.to(tl.int32)
        tl.store(out_row + written + tile_exclusive_cumsum(take_i, 0), pos, mask=take)
        written += tile_sum(take_i, 0)
        ties_seen += tile_sum(tie, 0)


@triton.jit
def _select_and_write(row, list_pos, list_val, out_row, num_valid, k, hist,
                      BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, NUM_BINS: tl.constexpr, CAPACITY: tl.constexpr):  # fmt: skip
    """After the coarse pass (hist) and, when it fits, the compaction: refine and write the row's output.
    A row with <= k valid positions takes them all (threshold bin -1: every bin is above it)."""
    num_sel = tl.minimum(num_valid, k)
    coarse_threshold = num_valid * 0 - 1
    threshold = num_valid * 0 + SIGN_BIT
    ties_wanted = num_valid * 0
    n_list = num_valid * 0
    if num_valid > k:
        coarse_threshold, remaining, n_list = _pick_digit(hist, num_sel, NUM_BINS)
        if n_list <= CAPACITY:
            threshold, ties_wanted = _radix_select(row, list_pos, list_val, n_list, coarse_threshold, remaining,
                                                   BLOCK, NUM_BINS, True)  # fmt: skip
        else:
            threshold, ties_wanted = _radix_select(row, list_pos, list_val, num_valid, coarse_threshold, remaining,
                                                   BLOCK, NUM_BINS, False)  # fmt: skip
    if (num_valid > k) & (n_list <= CAPACITY):
        _write_ascending(row, list_pos, list_val, n_list, out_row, coarse_threshold, threshold, ties_wanted,
                         BLOCK, True)  # fmt: skip
    else:
        _write_ascending(row, list_pos, list_val, num_valid, out_row, coarse_threshold, threshold, ties_wanted,
                         BLOCK, False)  # fmt: skip
    cols = tl.arange(0, BLOCK_K)
    for start in range(0, k, BLOCK_K):
        pad_cols = start + cols
        tl.store(out_row + pad_cols, tl.full([BLOCK_K], PAD, tl.int32), mask=(pad_cols >= num_sel) & (pad_cols < k))


@triton.jit
def _topk_kernel(
    logits_ptr,  # [T, L]
    q_pos_ptr,  # [T]
    out_ptr,  # [T, K] int32
    list_pos_ptr,  # [P, CAPACITY] int32 scratch, one row per program
    list_val_ptr,  # [P, CAPACITY] fp32 scratch
    num_tokens, k, stride_lt, stride_ot,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, NUM_BINS: tl.constexpr, CAPACITY: tl.constexpr,
):  # fmt: skip
    """Persistent programs, each taking rows program_id, + P, ...: coarse pass, compaction, refinement, write."""
    program = tl.program_id(0)
    list_pos = list_pos_ptr + program.to(tl.int64) * CAPACITY
    list_val = list_val_ptr + program.to(tl.int64) * CAPACITY
    programs = tl.num_programs(0)
    for token_index in range(program, num_tokens, programs):
        token = token_index + program * 0  # a tensor also in the interpreter (where a range value is an int)
        row = logits_ptr + token.to(tl.int64) * stride_lt
        num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
        hist = tl.full([NUM_BINS], 0, tl.int32)
        if num_valid > k:
            hist = _coarse_histogram(row, 0, num_valid, BLOCK_L, NUM_BINS)
            coarse_threshold, unused_remaining, n_list = _pick_digit(hist, tl.minimum(num_valid, k), NUM_BINS)
            if n_list <= CAPACITY:
                tl.debug_barrier()  # the previous row's list is read by every thread before it is overwritten
                _compact(row, 0, num_valid, list_pos, list_val, num_valid * 0, coarse_threshold, BLOCK_L)
                tl.debug_barrier()  # list entries written by one thread are read by another
        _select_and_write(row, list_pos, list_val, out_ptr + token.to(tl.int64) * stride_ot, num_valid, k, hist,
                          BLOCK_L, BLOCK_K, NUM_BINS, CAPACITY)  # fmt: skip


# ---- rows split across programs (few rows, long rows: batch-1 decode over 64k-200k keys) ----
# Three launches queued back to back (no host round trip, CUDA-graph capturable), each row read twice in all:
#   (row, chunk) programs: the chunk's coarse histogram                                     -> hist [T, C, 256]
#   (row, chunk) programs: threshold bin from the summed histograms; the chunk's entries >= it compacted
#                          at the count of the chunks before it (from their histograms)   -> list [T, CAPACITY]
#   one program per row:   refinement over the list and the ascending write, as _topk_kernel


@triton.jit
def _summed_histogram(hist_row, num_chunks, upto_chunk, coarse_threshold, NUM_BINS: tl.constexpr):
    """(sum of the row's chunk histograms [R], entries >= coarse_threshold in chunks before upto_chunk)."""
    bins = tl.arange(0, NUM_BINS)
    total = tl.full([NUM_BINS], 0, tl.int32)
    before = tile_sum(total, 0) * 0  # an int32 scalar whatever num_chunks is (1 is specialised to a constant)
    for chunk in range(0, num_chunks):
        hist = tl.load(hist_row + chunk * NUM_BINS + bins)
        total += hist
        before += tl.where(chunk < upto_chunk, tile_sum(tl.where(bins >= coarse_threshold, hist, 0), 0), 0)
    return total, before


@triton.jit
def _split_hist_kernel(
    logits_ptr, q_pos_ptr, hist_ptr,  # hist [T, C, NUM_BINS] int32
    k, chunk_len, stride_lt, num_chunks, BLOCK_L: tl.constexpr, NUM_BINS: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    chunk = tl.program_id(1)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    if num_valid > k:
        lo = chunk * chunk_len
        hist = _coarse_histogram(logits_ptr + token.to(tl.int64) * stride_lt, lo, tl.minimum(lo + chunk_len, num_valid),
                                 BLOCK_L, NUM_BINS)  # fmt: skip
        tl.store(hist_ptr + (token * num_chunks + chunk) * NUM_BINS + tl.arange(0, NUM_BINS), hist)


@triton.jit
def _split_compact_kernel(
    logits_ptr, q_pos_ptr, hist_ptr, list_pos_ptr, list_val_ptr,  # list [T, CAPACITY]
    k, chunk_len, stride_lt, num_chunks, BLOCK_L: tl.constexpr, NUM_BINS: tl.constexpr, CAPACITY: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    chunk = tl.program_id(1)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    if num_valid > k:
        hist_row = hist_ptr + token * num_chunks * NUM_BINS
        total, unused_before = _summed_histogram(hist_row, num_chunks, 0, 0, NUM_BINS)
        coarse_threshold, unused_remaining, n_list = _pick_digit(total, tl.minimum(num_valid, k), NUM_BINS)
        if n_list <= CAPACITY:
            unused_total, offset = _summed_histogram(hist_row, num_chunks, chunk, coarse_threshold, NUM_BINS)
            lo = chunk * chunk_len
            _compact(logits_ptr + token.to(tl.int64) * stride_lt, lo, tl.minimum(lo + chunk_len, num_valid),
                     list_pos_ptr + token.to(tl.int64) * CAPACITY, list_val_ptr + token.to(tl.int64) * CAPACITY,
                     offset, coarse_threshold, BLOCK_L)  # fmt: skip


@triton.jit
def _split_select_kernel(
    logits_ptr, q_pos_ptr, hist_ptr, list_pos_ptr, list_val_ptr, out_ptr,
    k, stride_lt, stride_ot, num_chunks,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, NUM_BINS: tl.constexpr, CAPACITY: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    num_valid = tl.load(q_pos_ptr + token).to(tl.int32) + 1
    hist = tl.full([NUM_BINS], 0, tl.int32)
    if num_valid > k:
        hist, unused_before = _summed_histogram(hist_ptr + token * num_chunks * NUM_BINS, num_chunks, 0, 0, NUM_BINS)
    _select_and_write(logits_ptr + token.to(tl.int64) * stride_lt, list_pos_ptr + token.to(tl.int64) * CAPACITY,
                      list_val_ptr + token.to(tl.int64) * CAPACITY, out_ptr + token.to(tl.int64) * stride_ot,
                      num_valid, k, hist, BLOCK_L, BLOCK_K, NUM_BINS, CAPACITY)  # fmt: skip


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


def default_num_programs(num_tokens: int, num_sms: int | None) -> int:
    """Persistent programs of the one-program-per-row path: PROGRAMS_PER_SM per SM (CPU_PROGRAMS without one),
    never more than rows; each owns one CAPACITY list, so the scratch does not grow with a prefill's rows."""
    per_device = CPU_PROGRAMS if num_sms is None else PROGRAMS_PER_SM * num_sms
    return max(1, min(num_tokens, per_device))


def split_layout(length: int, num_chunks: int) -> tuple[int, int, int]:
    """(step, chunk length, chunks) of a split row: chunks of whole steps; short rows (tests) get a smaller step so
    every chunk is used."""
    block = max(16, min(BLOCK_L, triton.next_power_of_2(triton.cdiv(length, num_chunks))))
    chunk_len = triton.cdiv(triton.cdiv(length, num_chunks), block) * block
    return block, chunk_len, triton.cdiv(length, chunk_len)


def workspace_shapes(num_tokens: int, length: int, num_chunks: int, num_sms: int | None) -> dict:
    """{name: (shape, dtype)} of topk_positions' scratch for these shapes. One program per row (num_chunks 1):
    list_pos / list_val [P, CAPACITY] (P = default_num_programs); split rows: hist [T, chunks, NUM_BINS] int32
    (chunks: split_layout's), then list_pos / list_val [T, CAPACITY]. The module's CAPACITY is read per call."""
    if num_chunks > 1:
        rows = num_tokens
        shapes = {"hist": ((num_tokens, split_layout(length, num_chunks)[2], NUM_BINS), torch.int32)}
    else:
        rows = default_num_programs(num_tokens, num_sms)
        shapes = {}
    return {**shapes, "list_pos": ((rows, CAPACITY), torch.int32), "list_val": ((rows, CAPACITY), torch.float32)}


def split_workspace(num_tokens: int, length: int, num_chunks: int, device) -> tuple[torch.Tensor, ...]:
    """workspace_shapes' buffers, allocated (the per-call default; plans.py allocates them once per shape)."""
    shapes = workspace_shapes(num_tokens, length, num_chunks, multiprocessor_count(device))
    return tuple(torch.empty(shape, dtype=dtype, device=device) for shape, dtype in shapes.values())


def _split_topk(logits, q_pos, k, out, num_chunks, workspace):
    num_tokens, length = logits.shape
    block, chunk_len, num_chunks = split_layout(length, num_chunks)
    hist, list_pos, list_val = workspace
    grid = (num_tokens, num_chunks)
    _split_hist_kernel[grid](logits, q_pos, hist, k, chunk_len, logits.stride(0), num_chunks, BLOCK_L=block,
                             NUM_BINS=NUM_BINS, num_warps=NUM_WARPS)  # fmt: skip
    _split_compact_kernel[grid](logits, q_pos, hist, list_pos, list_val, k, chunk_len, logits.stride(0), num_chunks,
                                BLOCK_L=block, NUM_BINS=NUM_BINS, CAPACITY=list_pos.shape[1],
                                num_warps=NUM_WARPS)  # fmt: skip
    _split_select_kernel[(num_tokens,)](
        logits, q_pos, hist, list_pos, list_val, out, k, logits.stride(0), out.stride(0), num_chunks,
        BLOCK_L=BLOCK_L, BLOCK_K=BLOCK_K, NUM_BINS=NUM_BINS, CAPACITY=list_pos.shape[1], num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


def topk_positions(logits, q_pos, k, *, out=None, num_chunks=None, workspace=None, checked=False):
    """Top-k positions, same contract as dsa_reference.topk_positions; `out` [T, k] int32 is written if given.

    logits [T, L], q_pos [T] -> [T, k] int32: the min(k, q_pos[t] + 1) best of positions 0..q_pos[t], ascending,
    then -1. Equal scores go to the lower position; -0.0 equals +0.0; NaN ranks above +inf (torch.sort's order).
    Per query token t, reading only positions 0..q_pos[t], the full row twice when it has more than k:
    1. coarse pass: a 256-bin histogram of _coarse_bin(logit) (fp16 order bits: 4 bins per binade); the
       threshold bin b = the largest holding the k-th best, r = how many of k still wanted inside b       # [256]
    2. compaction: positions with bin >= b (those above b are taken, those in b are the candidates) and their
       values, in position order, into a CAPACITY-entry list (scratch in L2, GLM-5: ~2048 + a few thousand)
    3. refinement over the list only: 4 radix passes of 8 bits find the r-th best candidate key t and how many
       keys == t are taken (the lowest positions), then one pass writes the taken entries at their running count
       (exclusive cumsum), so the output is ascending without another pass over the row            # [k]
       A row whose list would not fit runs steps 3 over the whole row instead (same result, 5 more reads).
    4. columns min(k, q_pos[t] + 1).. get -1; a row with <= k valid positions is written whole in one pass
    num_chunks: programs per row (default_num_chunks: few long rows are split to fill the SMs); above 1, steps 1-2
    run over (row, chunk) programs with the threshold bin and each chunk's list offset from the chunks'
    histograms (_split_topk), same result. With one, default_num_programs persistent programs take the rows.
    q_pos values are trusted (< L), not checked: that would sync the device; the reference checks them.
    workspace: split_workspace's buffers for these shapes (the persistent programs are as many as its lists), else
    allocated per call. checked=True: a plan for these shapes (plans.py) checked the arguments and passes
    num_chunks and the workspace; `out` is then allocated here unless given, nothing else is checked or looked up.
    """
    if checked:
        out = torch.empty((logits.shape[0], k), dtype=torch.int32, device=logits.device) if out is None else out
    else:
        out, num_chunks = check_topk_args(logits, q_pos, k, out, num_chunks)
    num_tokens, length = logits.shape
    if not (num_tokens and length):
        return out
    workspace = workspace or split_workspace(num_tokens, length, num_chunks, logits.device)
    if num_chunks > 1:
        return _split_topk(logits, q_pos, k, out, num_chunks, workspace)
    list_pos, list_val = workspace
    _topk_kernel[(list_pos.shape[0],)](
        logits, q_pos, out, list_pos, list_val, num_tokens, k, logits.stride(0), out.stride(0),
        BLOCK_L=BLOCK_L, BLOCK_K=BLOCK_K, NUM_BINS=NUM_BINS, CAPACITY=list_pos.shape[1], num_warps=NUM_WARPS,
    )  # fmt: skip
    return out
