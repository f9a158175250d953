"""DSA indexer logits through DeepGEMM (SM90), with the reference op's signature.

`k_cache` is SGLang's paged FP8 index-K pool of the layer ([pages, 64 * 132] uint8, layout.py); the result equals
dsa_reference.indexer_logits_fp8 on quantize_fp8_rows(q) and the pool's keys and scales. Prefill scores each
request's keys laid out contiguously (fp8_mqa_logits); decode reads the pool in place (fp8_paged_mqa_logits).
A model-dtype key store ([S, 128] float, one row per slot: the backend's own store until the pool holds the keys)
is read through the contiguous path in both phases, its gathered rows quantized per row like SGLang's keys.
"""

import importlib

import torch

from sglang_glm5.dsa.flashmla.layout import (
    BLOCK,
    INDEX_K_DTYPE,
    block_table,
    causal_logits,
    check_index_k_pool,
    check_paged,
    gather_index_k,
    index_k_blocks,
    indexer_q_and_weights,
    ragged_keys,
    ragged_logits_to_positions,
    request_lengths,
)
from sglang_glm5.dsa.reference import quantize_fp8_rows

DEEPGEMM_MODULE = "deep_gemm"


def deep_gemm():
    return importlib.import_module(DEEPGEMM_MODULE)


def _check(q, weights, k_cache, q_seq, q_pos):
    if not isinstance(q, torch.Tensor) or q.dim() != 3 or not q.is_floating_point():
        raise ValueError(f"q must be a floating [tokens, heads, head_dim] tensor, got {q!r:.80}")
    if weights.shape != q.shape[:2]:
        raise ValueError(f"weights must be {tuple(q.shape[:2])} (tokens, heads), got {tuple(weights.shape)}")
    if q_seq.shape != (q.shape[0],) or q_pos.shape != (q.shape[0],):
        raise ValueError(f"q_seq and q_pos must be [{q.shape[0]}], got {tuple(q_seq.shape)} and {tuple(q_pos.shape)}")
    if not is_float_store(k_cache):
        check_index_k_pool(k_cache, BLOCK, q.shape[2])
    elif k_cache.dim() != 2 or k_cache.shape[1] != q.shape[2]:
        raise ValueError(f"k_cache: a model-dtype key store is [slots, {q.shape[2]}], got {tuple(k_cache.shape)}")


def is_float_store(k_cache) -> bool:
    """A model-dtype key store (one row per slot) rather than SGLang's paged FP8 pool."""
    return k_cache.is_floating_point()


def _ragged_keys_fp8(k_cache, slots, head_dim):
    """(k [N, D] e4m3, scale [N] fp32) of `slots`: the pool's own bytes, or the float store's rows quantized."""
    if is_float_store(k_cache):
        return quantize_fp8_rows(k_cache.index_select(0, slots), INDEX_K_DTYPE)
    return gather_index_k(k_cache, slots, BLOCK, head_dim)


def _check_device(q, phase):
    if q.device.type != "cuda":
        raise RuntimeError(f"the flashmla DSA {phase} indexer runs DeepGEMM on an SM90 GPU; got tensors on {q.device}")


def mqa_logits_kwargs(q, weights, k_cache, page_table, q_seq, q_pos):
    """fp8_mqa_logits' keyword arguments for a prefill batch -> (kwargs, ragged keys for ragged_logits_to_positions).

    1. q_fp8, weights' = q quantized per (token, head) row, scales and D**-0.5 folded into weights (padded heads)
    2. each request's keys for positions 0..its last query position, end to end (ragged_keys)   # [N]
    3. kv = (k [N, 128] e4m3, scale [N]) gathered from the paged pool; ks/ke = the token's own request span
    """
    _check(q, weights, k_cache, q_seq, q_pos)
    ragged = ragged_keys(page_table, q_seq, q_pos)
    q_fp8, folded = indexer_q_and_weights(q, weights)
    kwargs = {
        "q": q_fp8,  # [T, H', 128] e4m3
        "kv": _ragged_keys_fp8(k_cache, ragged.slots, q.shape[2]),  # ([N, 128] e4m3, [N] fp32)
        "weights": folded,  # [T, H'] fp32
        "ks": ragged.ks,  # [T] int32
        "ke": ragged.ke,  # [T] int32
        "clean_logits": False,  # we mask by position ourselves (causal_logits), as SGLang does
    }
    return kwargs, ragged


def paged_mqa_logits_kwargs(q, weights, k_cache, page_table, q_seq, q_pos, schedule_meta):
    """fp8_paged_mqa_logits' keyword arguments for one query token per row (decode): the pool read in place.

    context_lens [T, 1] = q_pos + 1 (DeepGEMM takes 2-D lengths); block_table [T, pages] = the token's request's
    page ids, 0 past its context (page_table entries there may be stale: no kernel may follow one); max_context_len
    = L (columns of page_table); the logits come back [T, L] by position.
    """
    _check(q, weights, k_cache, q_seq, q_pos)
    if is_float_store(k_cache):
        raise ValueError("k_cache: the paged kernel reads SGLang's FP8 index-K pool, not a model-dtype store")
    q_fp8, folded = indexer_q_and_weights(q, weights)
    pages = block_table(page_table)[q_seq.long()]  # [T, ceil(L / 64)]
    needed = torch.div(q_pos.long() + BLOCK, BLOCK, rounding_mode="floor")  # [T] pages holding positions 0..q_pos
    pages = torch.where(torch.arange(pages.shape[1], device=pages.device) < needed[:, None], pages, 0)
    return {
        "q": q_fp8.unsqueeze(1),  # [T, 1, H', 128] e4m3 (next_n = 1)
        "kv_cache": index_k_blocks(k_cache, BLOCK, q.shape[2]),  # [pages, 64, 1, 132] uint8, a view of the pool
        "weights": folded,  # [T, H'] fp32
        "context_lens": (q_pos + 1).to(torch.int32).view(-1, 1).contiguous(),  # [T, 1]
        "block_table": pages.to(torch.int32).contiguous(),  # [T, ceil(L / 64)] int32
        "schedule_meta": schedule_meta,
        "max_context_len": page_table.shape[1],
        "clean_logits": False,
    }


def request_groups(q_seq, q_pos, num_requests: int, budget: int):
    """Requests grouped (in order) so that each group's fp8_mqa_logits output, its query rows x the sum of its
    requests' spans, stays within `budget` elements; a single request always fits (its span <= L, its rows <= T).
    -> [[request, ...], ...] (one host sync)."""
    rows = torch.bincount(q_seq.long(), minlength=num_requests).tolist()
    spans = request_lengths(num_requests, q_seq, q_pos).tolist()
    groups, group, group_rows, group_keys = [], [], 0, 0
    for b in (b for b in range(num_requests) if rows[b]):
        if group and (group_rows + rows[b]) * (group_keys + spans[b]) > budget:
            groups.append(group)
            group, group_rows, group_keys = [], 0, 0
        group.append(b)
        group_rows, group_keys = group_rows + rows[b], group_keys + spans[b]
    return groups + ([group] if group else [])


def prefill_logits(q, weights, k_cache, page_table, q_seq, q_pos, mqa_logits):
    """indexer_logits_prefill with the kernel given: `mqa_logits(**mqa_logits_kwargs(...))` per group of requests.

    One call over the whole batch would score every query row against every request's keys ([T, sum of spans]):
    many requests make that far larger than the [T, L] the caller budgeted (indexer_workspace). Groups keep each
    call's output within T x L elements; rows of other groups never meet each other's keys, so nothing changes.
    """
    length = page_table.shape[1]
    out = q.new_empty(q.shape[0], length, dtype=torch.float32)  # [T, L]
    for group in request_groups(q_seq, q_pos, page_table.shape[0], q.shape[0] * length):
        rows = torch.isin(q_seq, torch.tensor(group, device=q_seq.device)).nonzero()[:, 0]  # [t]
        kwargs, ragged = mqa_logits_kwargs(q[rows], weights[rows], k_cache, page_table, q_seq[rows], q_pos[rows])
        out[rows] = ragged_logits_to_positions(mqa_logits(**kwargs), ragged, q_pos[rows], length)
    return out


def indexer_logits_prefill(q, weights, k_cache, page_table, q_seq, q_pos):
    """Any number of query tokens per request: see dsa_reference.indexer_logits_fp8. -> [T, L] fp32."""
    _check_device(q, "prefill")
    _check(q, weights, k_cache, q_seq, q_pos)
    return prefill_logits(q, weights, k_cache, page_table, q_seq, q_pos, deep_gemm().fp8_mqa_logits)


def indexer_logits_decode(q, weights, k_cache, page_table, q_seq, q_pos):
    """One query token per request (DeepGEMM's paged kernel): see dsa_reference.indexer_logits_fp8. -> [T, L]."""
    _check_device(q, "decode")
    if is_float_store(k_cache):  # no paged FP8 pool to read in place: the contiguous path, as in prefill
        return indexer_logits_prefill(q, weights, k_cache, page_table, q_seq, q_pos)
    check_paged(page_table, q_seq, q_pos)
    dg = deep_gemm()
    context_lens = (q_pos + 1).to(torch.int32).view(-1, 1).contiguous()
    schedule = dg.get_paged_mqa_logits_metadata(context_lens, BLOCK, dg.get_num_sms())
    kwargs = paged_mqa_logits_kwargs(q, weights, k_cache, page_table, q_seq, q_pos, schedule)
    return causal_logits(dg.fp8_paged_mqa_logits(**kwargs), q_pos)  # [T, L]
