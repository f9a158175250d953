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


def topk_positions(logits, q_pos, k, *, out=None):
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
    q_pos values are trusted (< L), not checked: that would sync the device; the reference checks them.
    """
    check_tensor("logits", logits, 2, FLOAT_DTYPES)
    check_tensor("q_pos", q_pos, 1, INDEX_DTYPES, logits.device)
    num_tokens, length = logits.shape
    check_size("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    out = check_out(out, (num_tokens, k), torch.int32, logits.device)
    if num_tokens:
        _topk_kernel[(num_tokens,)](
            logits, q_pos, out, k, logits.stride(0), out.stride(0),
            BLOCK_L=BLOCK_L, BLOCK_K=BLOCK_K, RADIX_BITS=RADIX_BITS, NUM_BINS=1 << RADIX_BITS, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out
