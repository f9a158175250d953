"""Top-k positions per query token: ascending positions, ties to the lower position, -1 padding.

One coarse pass, candidates compacted into shared memory and refined there, rows split across CTAs when few.
"""

import tilelang
import tilelang.language as T
import torch
from sglang_glm5.dsa.tilelang.common import (
    INDEX_DTYPES,
    TL_DTYPE,
    check_out,
    check_size,
    check_tensor,
    dense,
    fresh_buffer,
    require_gpu,
)
from sglang_glm5.devices import multiprocessor_count
from sglang_glm5.dsa.tilelang.tuning import tuning

PAD = -1
KEY_BITS = 32  # uint32 order keys
COARSE_BITS = 12  # coarse bin = the key's top 12 bits: sign, 8 exponent, 3 mantissa bits (8 bins per binade)
NUM_COARSE = 1 << COARSE_BITS
FINE_BITS = 10  # two refinement passes decide the other 20 bits over the compacted candidates: 12 + 10 + 10 = 32
NUM_FINE = 1 << FINE_BITS
FINE_PASSES = (KEY_BITS - COARSE_BITS) // FINE_BITS
COUNT_BITS = 16  # the write scan packs two counts (ties << 16 | greater) into one int32
SIGN = 0x80000000
EXP_MASK = 0x7F800000  # fp32 inf: larger magnitudes are NaN
MIN_CHUNK = 4096  # split rows: keys per CTA at least
# graph-arena slots of the split workspace that stay zeroed between launches (workspace): this op's own names
PERSISTENT_SLOTS = ("tilelang.topk_positions.hist", "tilelang.topk_positions.arrived")
# every barrier is placed by hand: the threshold search writes its result from one thread, where an inserted
# barrier would hang
PASS_CONFIGS = {tilelang.PassConfigKey.TL_DISABLE_THREAD_STORAGE_SYNC: True}
HIST, COMPACT = 0, 1  # `phase` argument: split rows' histogram launch, then the launch that does the rest


def order_key(bits):
    """fp32 bits (uint32, -0.0 already made +0.0 by positive_zero) -> uint32 whose order is the float order; NaN
    above +inf as torch.sort has it. Integer ops only: TVM's simplifier folds float `x != x` to false and mis-folds
    selects around a reinterpret. `bits` is a variable: the selects below read it, not a copy of its expression."""
    # negative floats order backwards in their bit pattern: flip them all; positives go above with the sign bit
    key = T.if_then_else(bits >= T.uint32(SIGN), ~bits, bits | T.uint32(SIGN))
    return T.if_then_else((bits & T.uint32(SIGN - 1)) > T.uint32(EXP_MASK), T.uint32(0xFFFFFFFF), key)


def fine_digit(key, shift):
    return T.cast((key >> shift) & T.uint32(NUM_FINE - 1), "int32")


def taken_flag(key, threshold):
    """1 for a key above the threshold (taken), 1 << COUNT_BITS for one equal to it (a tie), else 0."""
    return T.if_then_else(key > threshold, 1, T.if_then_else(key == threshold, 1 << COUNT_BITS, 0))


def positive_zero(bits):
    return T.if_then_else(bits == T.uint32(SIGN), T.uint32(0), bits)  # -0.0 -> +0.0


@tilelang.jit(pass_configs=PASS_CONFIGS)
def topk_kernel(*, k, in_dtype="float32", pos_dtype="int64", threads=512, capacity=8192, warp_size=32):
    """One kernel, two launches for split rows (phase HIST then COMPACT over a (row, chunk) grid), one launch
    (phase COMPACT, one chunk per row) otherwise. `capacity`: shared candidate list entries (positions + keys)."""
    assert threads % warp_size == 0 and NUM_FINE % threads == 0 and threads < 1 << COUNT_BITS, (
        f"threads {threads}: whole warps of {warp_size}, dividing the {NUM_FINE} fine bins"
    )
    num_warps = threads // warp_size
    scan_steps = warp_size.bit_length() - 1
    num_tokens, length = T.dynamic("num_tokens"), T.dynamic("length")
    ws_rows, num_chunks = T.dynamic("ws_rows"), T.dynamic("num_chunks")
    low_mask = (1 << COUNT_BITS) - 1

    @T.macro
    def block_scan(value, res, wsum, lane, warp):
        """res[0] = exclusive prefix sum of `value` over the block's threads, res[1] = the block's total."""
        res[0] = value
        for s in T.unroll(scan_steps):  # warp inclusive scan by shuffles, no barrier
            up = T.shfl_up(res[0], 1 << s, width=warp_size)  # HIP: all 64 lanes
            if lane >= (1 << s):
                res[0] += up
        if lane == warp_size - 1:
            wsum[warp] = res[0]
        T.sync_threads()
        res[1] = 0
        for w in T.serial(num_warps):
            if w < warp:
                res[0] += wsum[w]
            res[1] += wsum[w]
        res[0] -= value
        T.sync_threads()  # wsum is rewritten by the next scan

    @T.macro
    def find_digit(hist, num_bins, want, res, wsum, lane, warp, tx, s_int):
        """The largest bin d holding the want-th largest entry -> s_int[0] = d, s_int[1] = entries still wanted
        inside d, s_int[2] = entries in bins >= d. Thread tx owns bins_per_thread bins from the top down."""
        per = num_bins // threads
        res[2] = 0
        for j in T.serial(per):
            res[2] += hist[num_bins - 1 - tx * per - j]
        block_scan(res[2], res, wsum, lane, warp)
        if res[0] < want and res[0] + res[2] >= want:  # one thread: its bins hold the want-th largest
            res[3] = res[0]
            for j in T.serial(per):
                if res[3] < want and res[3] + hist[num_bins - 1 - tx * per - j] >= want:
                    s_int[0] = num_bins - 1 - tx * per - j
                    s_int[1] = want - res[3]
                    s_int[2] = res[3] + hist[num_bins - 1 - tx * per - j]
                res[3] += hist[num_bins - 1 - tx * per - j]
        T.sync_threads()

    @T.prim_func
    def main(
        Logits: T.Tensor((num_tokens, length), in_dtype),  # [T, L]
        QPos: T.Tensor((num_tokens,), pos_dtype),  # [T]
        Out: T.Tensor((num_tokens, k), "int32"),  # [T, k]
        Hist: T.Tensor((ws_rows, NUM_COARSE), "int32"),  # [T, 4096] split rows' coarse histogram, zeros between calls
        Arrived: T.Tensor((ws_rows,), "int32"),  # [T] split rows' CTAs done, zeros between calls
        Counts: T.Tensor((ws_rows, num_chunks), "int32"),  # [T, C] candidates per chunk
        ListPos: T.Tensor((ws_rows, num_chunks, capacity), "int32"),  # [T, C, cap] each chunk's candidates
        ListKey: T.Tensor((ws_rows, num_chunks, capacity), "uint32"),
        phase: T.int32,
    ):
        with T.Kernel(num_tokens, num_chunks, threads=threads) as (row, chunk):
            tx = T.get_thread_binding()
            hist = T.alloc_shared([NUM_COARSE], "int32")
            lpos = T.alloc_shared([capacity], "int32")  # the shared candidate list, in position order
            lkey = T.alloc_shared([capacity], "uint32")
            wsum = T.alloc_shared([num_warps], "int32")
            s_int = T.alloc_shared([4], "int32")
            res = T.alloc_local([4], "int32")
            num_valid = T.alloc_var("int32")
            chunk_len = T.alloc_var("int32")
            lo = T.alloc_var("int32")
            hi = T.alloc_var("int32")
            coarse = T.alloc_var("int32")  # threshold bin
            remaining = T.alloc_var("int32")
            n_list = T.alloc_var("int32")
            written = T.alloc_var("int32")
            ties_seen = T.alloc_var("int32")
            owner = T.alloc_var("int32")
            prefix = T.alloc_var("uint32")  # threshold key bits found so far
            key = T.alloc_var("uint32")
            bits = T.alloc_var("uint32")  # the logit's fp32 bits
            keep = T.alloc_var("int32")
            pos = T.alloc_var("int32")
            value = T.alloc_var("float32")  # the logit, materialised so its bits are read from a register
            lane = tx % warp_size
            warp = tx // warp_size

            num_valid = T.cast(QPos[row], "int32") + 1
            chunk_len = T.ceildiv(T.ceildiv(num_valid, num_chunks), threads) * threads
            lo = T.min(chunk * chunk_len, num_valid)
            hi = T.min(lo + chunk_len, num_valid)
            if num_valid > k:  # uniform over the block (and over the row's CTAs): every barrier is reached
                # ---- the one coarse pass: NUM_COARSE-bin histogram of this CTA's keys (shared atomics)
                if phase == HIST or num_chunks == 1:
                    for j in T.serial(NUM_COARSE // threads):
                        hist[j * threads + tx] = 0
                    T.sync_threads()
                    for i in T.serial(T.ceildiv(hi - lo, threads)):
                        pos = lo + i * threads + tx
                        if pos < hi:
                            value = T.cast(Logits[row, pos], "float32")
                            bits = T.reinterpret("uint32", value)
                            bits = positive_zero(bits)
                            key = order_key(bits)
                            T.atomic_add(hist[T.cast(key >> (KEY_BITS - COARSE_BITS), "int32")], 1)
                    T.sync_threads()
                if phase == HIST:  # split rows: into the row's global histogram (global atomics, non-zero bins)
                    for j in T.serial(NUM_COARSE // threads):
                        if hist[j * threads + tx] != 0:
                            T.atomic_add(Hist[row, j * threads + tx], hist[j * threads + tx])
                else:
                    if num_chunks > 1:
                        for j in T.serial(NUM_COARSE // threads):
                            hist[j * threads + tx] = Hist[row, j * threads + tx]
                        T.sync_threads()
                    find_digit(hist, NUM_COARSE, k, res, wsum, lane, warp, tx, s_int)
                    coarse = s_int[0]
                    remaining = s_int[1]
                    n_list = s_int[2]  # entries in bins >= coarse: the taken ones and the candidates
                    # ---- compaction: this CTA's keys in bins >= coarse, in position order (block scan)
                    written = 0
                    if n_list <= capacity:
                        for i in T.serial(T.ceildiv(hi - lo, threads)):
                            pos = lo + i * threads + tx
                            keep = 0
                            key = T.uint32(0)
                            if pos < hi:
                                value = T.cast(Logits[row, pos], "float32")
                                bits = T.reinterpret("uint32", value)
                                bits = positive_zero(bits)
                                key = order_key(bits)
                                if T.cast(key >> (KEY_BITS - COARSE_BITS), "int32") >= coarse:
                                    keep = 1
                            block_scan(keep, res, wsum, lane, warp)
                            if keep == 1:
                                if num_chunks == 1:
                                    lpos[written + res[0]] = pos
                                    lkey[written + res[0]] = key
                                else:
                                    ListPos[row, chunk, written + res[0]] = pos
                                    ListKey[row, chunk, written + res[0]] = key
                            written += res[1]
                    owner = 1
                    if num_chunks > 1:  # the row's last CTA to finish gathers the chunks' lists and goes on
                        if tx == 0:
                            Counts[row, chunk] = written
                        T.sync_threads()
                        if tx == 0:
                            T.call_extern("handle", "__threadfence")  # lists and counts visible before the ticket
                            s_int[3] = T.atomic_add(Arrived[row], 1, return_prev=True)
                        T.sync_threads()
                        owner = T.if_then_else(s_int[3] == num_chunks - 1, 1, 0)
                        if owner == 1:
                            T.call_extern("handle", "__threadfence")  # ordered after the ticket: others' writes
                            if n_list <= capacity:
                                written = 0
                                for c in T.serial(num_chunks):  # chunks in row order: the list stays ascending
                                    for i in T.serial(T.ceildiv(Counts[row, c], threads)):
                                        if i * threads + tx < Counts[row, c]:
                                            lpos[written + i * threads + tx] = ListPos[row, c, i * threads + tx]
                                            lkey[written + i * threads + tx] = ListKey[row, c, i * threads + tx]
                                    written += Counts[row, c]
                            for j in T.serial(NUM_COARSE // threads):  # every CTA has read it: zeros for next call
                                Hist[row, j * threads + tx] = 0
                            if tx == 0:
                                Arrived[row] = 0
                    T.sync_threads()
                    if owner == 1:
                        # ---- refinement: FINE_PASSES radix passes over the candidates (coarse bin == coarse);
                        # over the shared list, or over the row when the list did not fit (same result, slower)
                        prefix = T.cast(coarse, "uint32") << (KEY_BITS - COARSE_BITS)
                        for fine in T.serial(FINE_PASSES):
                            shift = KEY_BITS - COARSE_BITS - FINE_BITS * (fine + 1)
                            for j in T.serial(NUM_FINE // threads):
                                hist[j * threads + tx] = 0
                            T.sync_threads()
                            if n_list <= capacity:
                                for i in T.serial(T.ceildiv(n_list, threads)):
                                    if i * threads + tx < n_list:
                                        key = lkey[i * threads + tx]
                                        if (key >> (shift + FINE_BITS)) == (prefix >> (shift + FINE_BITS)):
                                            T.atomic_add(hist[fine_digit(key, shift)], 1)
                            else:
                                for i in T.serial(T.ceildiv(num_valid, threads)):
                                    pos = i * threads + tx
                                    if pos < num_valid:
                                        value = T.cast(Logits[row, pos], "float32")
                                        bits = T.reinterpret("uint32", value)
                                        bits = positive_zero(bits)
                                        key = order_key(bits)
                                        if (key >> (shift + FINE_BITS)) == (prefix >> (shift + FINE_BITS)):
                                            T.atomic_add(hist[fine_digit(key, shift)], 1)
                            T.sync_threads()
                            find_digit(hist, NUM_FINE, remaining, res, wsum, lane, warp, tx, s_int)
                            prefix = prefix | (T.cast(s_int[0], "uint32") << shift)
                            remaining = s_int[1]
                        # ---- the write: entries in position order, keys > prefix and the first `remaining` equal
                        # to it, each at the count taken before it -> ascending, no further pass over the row
                        written = 0
                        ties_seen = 0
                        for i in T.serial(T.ceildiv(T.if_then_else(n_list <= capacity, n_list, num_valid), threads)):
                            keep = 0
                            pos = i * threads + tx
                            if n_list <= capacity:
                                if pos < n_list:
                                    key = lkey[pos]
                                    pos = lpos[pos]
                                    keep = taken_flag(key, prefix)
                            elif pos < num_valid:
                                value = T.cast(Logits[row, pos], "float32")
                                bits = T.reinterpret("uint32", value)
                                bits = positive_zero(bits)
                                key = order_key(bits)
                                keep = taken_flag(key, prefix)
                            block_scan(keep, res, wsum, lane, warp)
                            ties_left = T.max(remaining - ties_seen, 0)
                            if keep == 1 or (keep != 0 and (res[0] >> COUNT_BITS) < ties_left):
                                Out[row, written + (res[0] & low_mask) + T.min(res[0] >> COUNT_BITS, ties_left)] = pos
                            written += (res[1] & low_mask) + T.min(res[1] >> COUNT_BITS, ties_left)
                            ties_seen += res[1] >> COUNT_BITS
            elif phase != HIST and chunk == 0:  # <= k valid: all of them, ascending, then -1
                for i in T.serial(T.ceildiv(k, threads)):
                    if i * threads + tx < k:
                        Out[row, i * threads + tx] = T.if_then_else(i * threads + tx < num_valid, i * threads + tx, PAD)

    return main


def default_num_chunks(num_tokens: int, length: int, num_sms: int) -> int:
    """CTAs per row so that few rows still fill the GPU (batch 1 over 64k keys on 132 SMs: 16 chunks of 4096);
    one, in a single launch, from as many rows as SMs up."""
    if num_tokens >= num_sms:
        return 1
    return max(1, min(-(-num_sms // max(num_tokens, 1)), -(-length // MIN_CHUNK)))


def workspace(num_tokens: int, num_chunks: int, capacity: int, device, empty=fresh_buffer) -> tuple[torch.Tensor, ...]:
    """(Hist [T, 4096], Arrived [T], Counts [T, C], ListPos / ListKey [T, C, capacity]) of a split launch, Hist and
    Arrived zeroed here (the kernel leaves them zeroed again, so a planned workspace stays ready for the next
    launch); one-row stand-ins, never read, with one chunk per row. `empty`: fresh_buffer, or the graph arena's.
    Hist and Arrived carry that zero state from one launch to the next, so their arena slots are named for this op
    alone (PERSISTENT_SLOTS): a slot another op shares would be left dirty by it."""
    rows = num_tokens if num_chunks > 1 else 1
    hist_slot, arrived_slot = PERSISTENT_SLOTS
    return (empty(hist_slot, (rows, NUM_COARSE), torch.int32, device).zero_(),
            empty(arrived_slot, (rows,), torch.int32, device).zero_(),
            empty("topk_positions.counts", (rows, num_chunks), torch.int32, device),
            empty("topk_positions.list_pos", (rows, num_chunks, capacity), torch.int32, device),
            empty("topk_positions.list_key", (rows, num_chunks, capacity), torch.uint32, device))  # fmt: skip


def plan_topk_positions(logits, q_pos, k, *, out=None, num_chunks=None, capacity=None, empty=fresh_buffer):
    """topk_positions' checks, tuning lookup, split choice, JIT kernel and split workspace; once per shape under CUDA
    graphs (graph_plan.py) -> its keyword arguments for the launch-only path (checked=True). The output is not
    planned: IndexCache layers read it after later ops ran, so it is the caller's (the graph state's, one per top-k
    layer) or fresh."""
    check_tensor("logits", logits, 2, (torch.float32, torch.float16, torch.bfloat16))
    check_tensor("q_pos", q_pos, 1, INDEX_DTYPES, logits.device)
    num_tokens, length = logits.shape
    check_size("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if out is not None:
        check_out(out, (num_tokens, k), torch.int32, logits.device)
    for name, knob in (("num_chunks", num_chunks), ("capacity", capacity)):
        if knob is not None and (not isinstance(knob, int) or knob < 1):
            raise ValueError(f"{name} must be an int >= 1, got {knob!r}")
    require_gpu(logits, "logits")
    if not (num_tokens and length):
        return {"kernel": None, "checked": True, "num_chunks": 1, "scratch": ()}
    knobs = tuning("topk_positions", logits.device)
    if capacity is not None:
        knobs["capacity"] = capacity
    if num_chunks is None:
        num_chunks = default_num_chunks(num_tokens, length, multiprocessor_count(logits.device))
    kernel = topk_kernel(k=k, in_dtype=TL_DTYPE[logits.dtype], pos_dtype=TL_DTYPE[q_pos.dtype], **knobs)
    scratch = workspace(num_tokens, num_chunks, knobs["capacity"], logits.device, empty)
    return {"kernel": kernel, "checked": True, "num_chunks": num_chunks, "scratch": scratch}


def topk_positions(logits, q_pos, k, *, out=None, num_chunks=None, capacity=None, kernel=None, scratch=None,
                   checked=False):  # fmt: skip
    """Top-k positions, same contract as dsa_reference.topk_positions; `out` [T, k] int32 is written if given.

    logits [T, L], q_pos [T] -> [T, k] int32: the min(k, q_pos[t] + 1) best of positions 0..q_pos[t], ascending,
    then -1. Equal scores go to the lower position; -0.0 equals +0.0; NaN ranks above +inf (torch.sort's order).
    Per query token t, reading only positions 0..q_pos[t] (split into num_chunks CTAs, default_num_chunks):
    1. coarse pass: key = the logit's fp32 bits as an order-preserving uint32; a 4096-bin shared histogram of its
       top 12 bits (atomics; split rows add theirs into the row's global histogram in a first launch); the
       threshold bin b = the largest holding the k-th best, by a block scan over the bins               # [4096]
    2. compaction: keys in bins >= b, in position order (block scan), into the shared candidate list (`capacity`
       entries, 64 KB at 8192); split rows: each CTA's into global scratch, and the row's last CTA to finish
       gathers them in chunk order into its shared list
    3. refinement over the shared list only: 2 radix passes of 10 bits give the threshold key and how many keys
       equal to it are taken (the lowest positions); one pass over the list writes the taken entries at their
       running count, so the output is ascending without another pass over the row                     # [k]
       A row whose list would not fit runs step 3 over the row in global memory instead (same result).
    4. a row with <= k valid positions: all of them, then -1
    q_pos values are trusted (< L), not checked: that would sync the device; the reference checks them.
    num_chunks / capacity: default_num_chunks and the tuning's capacity unless given (tests force the split path
    and the overflow fallback with them). checked=True: plan_topk_positions ran for these shapes and passes the
    kernel, split count and workspace; only the launches run here (and the allocation of `out` when none is given).
    """
    if not checked:
        planned = plan_topk_positions(logits, q_pos, k, out=out, num_chunks=num_chunks, capacity=capacity)
        kernel, num_chunks, scratch = planned["kernel"], planned["num_chunks"], planned["scratch"]
    if out is None:
        out = torch.empty((logits.shape[0], k), dtype=torch.int32, device=logits.device)
    if kernel is None:  # no tokens or no keys
        return out
    logits, q_pos = dense(logits), dense(q_pos)
    if num_chunks > 1:  # the histogram launch, then the rest: queued back to back, no host round trip
        kernel(logits, q_pos, out, *scratch, HIST)
    kernel(logits, q_pos, out, *scratch, COMPACT)
    return out
