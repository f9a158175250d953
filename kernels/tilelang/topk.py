"""Top-k positions per query token by radix select: ascending positions, ties to the lower position, -1 padding."""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.kernels.tilelang.common import (
    INDEX_DTYPES,
    TL_DTYPE,
    check_out,
    check_size,
    check_tensor,
    dense,
    fresh_buffer,
    require_gpu,
)
from sglang_glm5.kernels.tilelang.tuning import tuning

PAD = -1
RADIX_BITS = 8  # threshold bits decided per pass: 32 / 8 = 4 histogram passes over the row
NUM_BINS = 1 << RADIX_BITS
KEY_BITS = 32  # uint32 order keys
COUNT_BITS = 16  # the block scan packs two counts (ties << 16 | greater) into one int32
SIGN = 0x80000000
EXP_MASK = 0x7F800000  # fp32 inf: larger magnitudes are NaN
# every barrier is placed by hand: the histogram's bin search runs on one thread, where an inserted barrier would hang
PASS_CONFIGS = {tilelang.PassConfigKey.TL_DISABLE_THREAD_STORAGE_SYNC: True}


def order_key(bits):
    """fp32 bits (uint32) -> uint32 whose order is the float order; -0.0 == +0.0, NaN above +inf as torch.sort has it.

    Integer ops only: TVM's simplifier folds float `x != x` to false and mis-folds selects around a reinterpret.
    """
    bits = T.if_then_else(bits == T.uint32(SIGN), T.uint32(0), bits)  # -0.0 -> +0.0
    # negative floats order backwards in their bit pattern: flip them all; positives go above with the sign bit
    key = T.if_then_else(bits >= T.uint32(SIGN), ~bits, bits | T.uint32(SIGN))
    return T.if_then_else((bits & T.uint32(SIGN - 1)) > T.uint32(EXP_MASK), T.uint32(0xFFFFFFFF), key)


@tilelang.jit(pass_configs=PASS_CONFIGS)
def topk_kernel(*, k, in_dtype="float32", pos_dtype="int64", threads=1024):
    assert threads >= NUM_BINS and threads & (threads - 1) == 0, (
        f"threads {threads}: a power of two >= {NUM_BINS}, one thread per histogram bin, for the block scan"
    )
    assert threads < 1 << COUNT_BITS, f"threads {threads}: per-chunk counts must fit the scan's {COUNT_BITS}-bit halves"
    scan_steps = threads.bit_length() - 1
    num_tokens, length = T.dynamic("num_tokens"), T.dynamic("length")
    low_mask = (1 << COUNT_BITS) - 1

    @T.prim_func
    def main(
        Logits: T.Tensor((num_tokens, length), in_dtype),  # [T, L]
        QPos: T.Tensor((num_tokens,), pos_dtype),  # [T]
        Out: T.Tensor((num_tokens, k), "int32"),  # [T, k]
    ):
        with T.Kernel(num_tokens, threads=threads) as token:
            tx = T.get_thread_binding()
            hist = T.alloc_shared([NUM_BINS], "int32")
            scan = T.alloc_shared([threads], "int32")
            s_prefix = T.alloc_shared([1], "uint32")
            s_remaining = T.alloc_shared([1], "int32")
            num_valid = T.alloc_var("int32")
            prefix = T.alloc_var("uint32")  # threshold bits found so far
            remaining = T.alloc_var("int32")  # keys still to take among those whose higher bits equal prefix
            cum = T.alloc_var("int32")
            digit = T.alloc_var("int32")
            written = T.alloc_var("int32")
            ties_seen = T.alloc_var("int32")
            val = T.alloc_var("int32")
            mine = T.alloc_var("int32")
            key = T.alloc_var("uint32")
            value = T.alloc_var("float32")  # the logit, materialised so its bits are read from a register

            num_valid = T.cast(QPos[token], "int32") + 1
            prefix = T.uint32(0)
            remaining = T.min(num_valid, k)
            if num_valid > k:  # uniform over the block, so the barriers inside are reached by every thread
                for radix_pass in T.serial(KEY_BITS // RADIX_BITS):
                    shift = KEY_BITS - RADIX_BITS * (radix_pass + 1)
                    if tx < NUM_BINS:
                        hist[tx] = 0
                    T.sync_threads()
                    for chunk in T.serial(T.ceildiv(num_valid, threads)):
                        pos = chunk * threads + tx
                        if pos < num_valid:
                            value = T.cast(Logits[token, pos], "float32")
                            key = order_key(T.reinterpret("uint32", value))
                            # higher digits equal the prefix's (two shifts: one by 32 would be undefined)
                            if ((key ^ prefix) >> shift) >> RADIX_BITS == T.uint32(0):
                                T.atomic_add(
                                    hist[
                                        T.cast(
                                            (key >> shift) & T.uint32(NUM_BINS - 1),
                                            "int32",
                                        )
                                    ],
                                    1,
                                )
                    T.sync_threads()
                    if tx == 0:  # the largest digit whose bins from the top hold `remaining` keys
                        cum = 0
                        digit = -1
                        for b in T.serial(NUM_BINS):
                            if digit < 0:
                                cum += hist[NUM_BINS - 1 - b]
                                if cum >= remaining:
                                    digit = NUM_BINS - 1 - b
                                    remaining -= cum - hist[digit]  # those above digit are taken
                        s_prefix[0] = prefix | (T.cast(digit, "uint32") << shift)
                        s_remaining[0] = remaining
                    T.sync_threads()
                    prefix = s_prefix[0]
                    remaining = s_remaining[0]
                    T.sync_threads()

            # one pass in position order: take keys > prefix (all keys when the row has <= k) and the first
            # `remaining` keys == prefix; each lands at the count taken before it, so positions come out ascending
            written = 0
            ties_seen = 0
            for chunk in T.serial(T.ceildiv(num_valid, threads)):
                pos = chunk * threads + tx
                mine = 0
                if pos < num_valid:
                    value = T.cast(Logits[token, pos], "float32")
                    key = order_key(T.reinterpret("uint32", value))
                    if num_valid <= k or key > prefix:
                        mine = 1
                    elif key == prefix:
                        mine = 1 << COUNT_BITS
                scan[tx] = mine
                T.sync_threads()
                for step in T.serial(scan_steps):  # Hillis-Steele inclusive scan of the packed counts
                    val = scan[tx]
                    if tx >= (1 << step):
                        val += scan[tx - (1 << step)]
                    T.sync_threads()
                    scan[tx] = val
                    T.sync_threads()
                ties_left = T.max(remaining - ties_seen, 0)
                before = scan[tx] - mine  # exclusive: (ties << 16) | greater before this position in the chunk
                ties_before = before >> COUNT_BITS
                if (mine & low_mask) == 1 or (mine != 0 and ties_before < ties_left):
                    Out[
                        token,
                        written + (before & low_mask) + T.min(ties_before, ties_left),
                    ] = pos
                written += (scan[threads - 1] & low_mask) + T.min(scan[threads - 1] >> COUNT_BITS, ties_left)
                ties_seen += scan[threads - 1] >> COUNT_BITS
                T.sync_threads()
            for chunk in T.serial(T.ceildiv(k, threads)):
                col = chunk * threads + tx
                if col < k and col >= T.min(num_valid, k):
                    Out[token, col] = PAD

    return main


def plan_topk_positions(logits, q_pos, k, *, out=None, empty=fresh_buffer):
    """topk_positions' checks, tuning lookup and JIT kernel; once per shape under CUDA graphs (graph_plan.py) -> its
    keyword arguments for the launch-only path (checked=True). The output is not planned (`empty` unused): IndexCache
    layers read it after later ops ran, so it is the caller's (the graph state's, one per top-k layer) or fresh."""
    check_tensor("logits", logits, 2, (torch.float32, torch.float16, torch.bfloat16))
    check_tensor("q_pos", q_pos, 1, INDEX_DTYPES, logits.device)
    num_tokens, _ = logits.shape
    check_size("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if out is not None:
        check_out(out, (num_tokens, k), torch.int32, logits.device)
    require_gpu(logits, "logits")
    kernel = None
    if num_tokens:
        kernel = topk_kernel(k=k, in_dtype=TL_DTYPE[logits.dtype], pos_dtype=TL_DTYPE[q_pos.dtype],
                             **tuning("topk_positions", logits.device))  # fmt: skip
    return {"kernel": kernel, "checked": True}


def topk_positions(logits, q_pos, k, *, out=None, kernel=None, checked=False):
    """Top-k positions, same contract as dsa_reference.topk_positions; `out` [T, k] int32 is written if given.

    logits [T, L], q_pos [T] -> [T, k] int32: the min(k, q_pos[t] + 1) best of positions 0..q_pos[t], ascending,
    then -1. Equal scores go to the lower position; -0.0 equals +0.0; NaN ranks above +inf (torch.sort's order).
    One program (`threads` threads) per query token t, reading only positions 0..q_pos[t]:
    1. key = the logit's fp32 bits mapped to a uint32 with the same order                          # [L]
    2. if more than k valid: 4 passes decide the k-th largest key 8 bits at a time (radix select), each a
       256-bin shared-memory histogram (atomics) of the next digit over keys matching the prefix    # [256]
    3. one pass in position order, a chunk of `threads` positions at a time: a block scan counts the keys
       taken before each one (greater, and the first (k - #greater) equal), which is its output column  # [k]
    4. columns min(k, q_pos[t] + 1).. get -1
    q_pos values are trusted (< L), not checked: that would sync the device; the reference checks them.
    checked=True: plan_topk_positions ran for these shapes and passes the kernel; only the launch runs here (and
    the allocation of `out` when none is given).
    """
    if not checked:
        kernel = plan_topk_positions(logits, q_pos, k, out=out)["kernel"]
    if out is None:
        out = torch.empty((logits.shape[0], k), dtype=torch.int32, device=logits.device)
    if kernel is not None:  # None: no tokens
        kernel(dense(logits), dense(q_pos), out)
    return out
