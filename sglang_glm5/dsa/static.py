"""Graph-safe torch implementation of the DSA ops: the reference's math with static shapes and no host reads.

CUDA graph capture (and `torch.compile(fullgraph=True)`) record tensor ops only: a `.item()`, a `bool(tensor)`, a
`.tolist()` or a shape that depends on tensor values either fails in capture or freezes the capture batch's value
into every replay. The reference (dsa_reference.py) has all three on purpose (per-request key sets sized to the
request, a top-k shortcut, value checks). These ops have the same signatures and semantics with:
- every shape from the arguments' shapes (the page table is the static width of the graph state, `L`);
- the indexer (model-dtype and FP8 keys) over every column of the page table, key chunks of `KEY_CHUNK` columns
  (a static Python loop), causal mask applied as the reference does (positions past q_pos -> -inf, never read:
  their slots are redirected to column 0's slot, which every request has);
- the top-k's canonical selection without the data-dependent shortcut (same ties rule, same -1 padding);
- sparse MLA's body without value checks (shapes and dtypes are still checked: they are host metadata).
"""

import torch

from sglang_glm5.dsa.reference import (
    KEY_CHUNK,
    _check,
    _check_dim,
    _check_fp8_inputs,
    _check_sparse_mla_shapes,
    _check_topk_shapes,
    _into,
    _sparse_mla,
    _topk_positions,
)


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos):
    """dsa_reference.indexer_logits over every page-table column: q [T, H, D], weights [T, H], k_cache [S, D],
    page_table [B, L], q_seq [T], q_pos [T] -> [T, L] fp32, -inf past q_pos[t].

    Per chunk of C columns (static): keys k[t, p] = k_cache[page_table[q_seq[t], p]], p <= q_pos[t] (else column 0)
    1. s[t, h, p] = relu(q[t, h] . k[t, p] * D**-0.5)                      # [T, H, C]
    2. logits[t, p] = sum_h weights[t, h] * s[t, h, p]                      # [T, C]
    """
    _check("q", q, 3, floating=True)
    _check("k_cache", k_cache, 2, floating=True)
    _check_indexer_args(q, weights, "k_cache", k_cache, page_table, q_seq, q_pos)
    return _indexer(q.float(), weights, k_cache, None, page_table, q_seq, q_pos)


def indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos):
    """dsa_reference.indexer_logits_fp8 over every page-table column (see indexer_logits): q_fp8 [T, H, D] e4m3 with
    q_scale [T, H], k_fp8 [S, D] e4m3 with k_scale [S] -> [T, L] fp32; keys dequantized per gathered chunk in fp32
    (k_fp8[slot] * k_scale[slot]), as the reference does. Dtype and shape checks only (host metadata)."""
    _check_fp8_inputs(q_fp8, q_scale, k_fp8, k_scale)
    _check_indexer_args(q_fp8, weights, "k_fp8", k_fp8, page_table, q_seq, q_pos)
    q = q_fp8.float() * q_scale.float()[..., None]  # [T, H, D]
    return _indexer(q, weights, k_fp8, k_scale, page_table, q_seq, q_pos)


def _check_indexer_args(q, weights, key_name, keys, page_table, q_seq, q_pos):
    _check("weights", weights, 2, floating=True)
    _check("page_table", page_table, 2, floating=False)
    _check("q_seq", q_seq, 1, floating=False)
    _check("q_pos", q_pos, 1, floating=False)
    num_tokens, num_heads, head_dim = q.shape
    _check_dim("weights", tuple(weights.shape), (num_tokens, num_heads), "shape")
    _check_dim(key_name, keys.shape[1], head_dim, "head dim")
    _check_dim("q_seq", q_seq.shape[0], num_tokens, "number of query tokens")
    _check_dim("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")


def _indexer(q32, weights, k_cache, k_scale, page_table, q_seq, q_pos):
    """The indexer over fp32 queries q32 [T, H, D] and keys k_cache [S, D] (times k_scale [S] per row if given)."""
    num_tokens, _, head_dim = q32.shape
    length = page_table.shape[1]
    w = weights.float()[:, None, :]  # [T, 1, H]
    rows = page_table[q_seq.long()]  # [T, L] slots of each token's request
    causal = torch.arange(length, device=q32.device)[None, :] <= q_pos[:, None].long()  # [T, L]
    # slots past q_pos may be stale or garbage (freed, never written): read column 0's slot there instead
    slots = torch.where(causal, rows, rows[:, :1]).long()  # [T, L]
    logits = q32.new_empty(num_tokens, length)  # [T, L]
    for start in range(0, length, KEY_CHUNK):
        part = slots[:, start : start + KEY_CHUNK].flatten()  # [T * C]
        keys = k_cache.index_select(0, part).float()  # [T * C, D]
        if k_scale is not None:
            keys.mul_(k_scale.index_select(0, part).float()[:, None])  # dequantized as the reference does
        keys = keys.view(num_tokens, -1, head_dim)  # [T, C, D]
        scores = torch.bmm(q32, keys.transpose(1, 2)).mul_(head_dim**-0.5).relu_()  # [T, H, C]
        logits[:, start : start + keys.shape[1]] = torch.bmm(w, scores)[:, 0]  # [T, C]
    return logits.masked_fill_(~causal, float("-inf"))


def topk_positions(logits, q_pos, k, *, out=None):
    """dsa_reference.topk_positions (same selection, ties and -1 padding) without its host-side shortcut; written
    into `out` if given (under CUDA graphs the graph state's buffer of the layer)."""
    _check_topk_shapes(logits, q_pos, k)
    return _into(out, _topk_positions(logits, q_pos, k, shortcut=False))


def sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """dsa_reference.sparse_mla with shape checks only."""
    _check_sparse_mla_shapes(q, kv_cache, page_table, q_seq, topk, v_dim)
    return _sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse)


def sparse_mla_decode(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """One query token per request (not checked: that would read q_seq on the host): see sparse_mla_prefill."""
    return sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse)
