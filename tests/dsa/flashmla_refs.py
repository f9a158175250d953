"""Torch references for what FlashMLA's sparse kernels and DeepGEMM's FP8 indexer compute, written from the
libraries' documented semantics (the installed wrappers' docstrings; FlashMLA's tests/ref.py and tests/quant.py,
DeepGEMM's tests/test_attention.py). Each takes the vendor call's keyword arguments, so our converted arguments
feed it unchanged. SGLang 0.5.23's own torch fallbacks of the DeepGEMM calls are a second reference in the tests.
"""

import torch

V32_NOPE, V32_TILE, V32_ROPE = 512, 128, 64  # FlashMLA's V32 FP8 layout: 512 e4m3 + 4 fp32 + 64 bf16 = 656 B


def _attend(q, rows, invalid, scale, d_v):
    """q [t, h, d], rows [t, k, d] fp32, invalid [t, k] -> out [t, h, d_v] fp32, lse [t, h] (+inf where no row)."""
    rows = rows.masked_fill(invalid[..., None], 0.0)  # skipped rows are never read: garbage there must not leak
    scores = (q.float() @ rows.transpose(1, 2)) * scale  # [t, h, k]
    scores.masked_fill_(invalid[:, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [t, h]
    lonely = lse == float("-inf")
    probs = torch.exp(scores - torch.where(lonely, float("inf"), lse)[..., None])  # 0 where lonely
    out = probs @ rows[..., :d_v]
    return out, torch.where(lonely, float("inf"), lse)  # FlashMLA: a query with no valid index -> out 0, lse +inf


def flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None, use_legacy=False,
                         return_log2_lse=None):  # fmt: skip
    """q [s_q, h_q, d_qk] bf16, kv [s_kv, 1, d_qk] bf16, indices [s_q, 1, topk]: -1 or >= s_kv = skip.
    -> (out [s_q, h_q, d_v] bf16, max_logits [s_q, h_q], lse [s_q, h_q] natural log unless return_log2_lse)."""
    assert attn_sink is None and topk_length is None and return_log2_lse is not True
    assert q.dtype == kv.dtype == torch.bfloat16 and q.shape[1] in (64, 128) and indices.dtype == torch.int32
    assert indices.shape[-1] % 64 == 0, "FlashMLA reads indices in blocks of 64 (h_q 64) / 128 (h_q 128)"
    index = indices[:, 0].long()  # [s_q, topk]
    invalid = (index < 0) | (index >= kv.shape[0])
    rows = kv[:, 0].index_select(0, index.masked_fill(invalid, 0).flatten()).view(*index.shape, -1).float()
    out, lse = _attend(q, rows, invalid, sm_scale, d_v)
    return out.to(torch.bfloat16), None, lse


def dequantize_v32(k_cache):
    """FlashMLA V32 FP8 blocks [n, block, 1, 656] -> [n * block, 576] fp32: nope = e4m3 * its tile's fp32 scale."""
    tokens = k_cache.reshape(-1, k_cache.shape[-1])  # [S, 656] bytes
    nope = tokens[:, :V32_NOPE].contiguous().view(torch.float8_e4m3fn).float()  # [S, 512]
    scales = tokens[:, V32_NOPE : V32_NOPE + 4 * (V32_NOPE // V32_TILE)].contiguous().view(torch.float32)  # [S, 4]
    rope = tokens[:, V32_NOPE + 4 * (V32_NOPE // V32_TILE) :].contiguous().view(torch.bfloat16).float()  # [S, 64]
    nope = (nope.view(-1, V32_NOPE // V32_TILE, V32_TILE) * scales[..., None]).view(-1, V32_NOPE)
    return torch.cat([nope, rope], dim=1)


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                           num_splits=None, softmax_scale=None, causal=False, is_fp8_kvcache=None, indices=None,
                           use_legacy=False, kv_format=None, **unused):  # fmt: skip
    """Sparse decode: q [b, s_q, h_q, 576] bf16 (h_q 64 or 128), k_cache [blocks, 64, 1, 656] V32 FP8,
    indices [b, s_q, topk] = block * block_size + offset, exactly -1 = skip.
    -> (out [b, s_q, h_q, head_dim_v] bf16, lse [b, h_q, s_q])."""
    assert indices is not None and is_fp8_kvcache and not causal and kv_format == "V32" and num_splits is None
    assert not any(v is not None for v in unused.values()), unused
    assert q.dtype == torch.bfloat16 and q.shape[2] in (64, 128) and k_cache.dtype == torch.uint8
    assert isinstance(block_table, torch.Tensor), "SGLang notes: None as block_table fails"
    b, s_q, h_q, d = q.shape
    flat = dequantize_v32(k_cache)  # [blocks * 64, 576]
    index = indices.long().view(b * s_q, -1)
    invalid = index == -1
    rows = flat.index_select(0, index.masked_fill(invalid, 0).flatten()).view(b * s_q, -1, d)
    scale = softmax_scale if softmax_scale is not None else d**-0.5
    out, lse = _attend(q.view(b * s_q, h_q, d), rows, invalid, scale, head_dim_v)
    return out.view(b, s_q, h_q, head_dim_v).to(torch.bfloat16), lse.view(b, s_q, h_q).transpose(1, 2)


def fp8_mqa_logits(q, kv, weights, ks, ke, clean_logits=True, max_seqlen_k=0):
    """DeepGEMM: q [T, H, D] e4m3, kv = (k [N, D] e4m3, scale [N] fp32), weights [T, H] fp32, ks/ke [T] int32 ->
    logits [T, N] fp32 = sum_h weights * relu(q . k * scale) on [ks, ke), -inf elsewhere (clean) / unspecified."""
    assert max_seqlen_k == 0 and q.dtype == torch.float8_e4m3fn and q.shape[1] in (32, 64)
    assert weights.dtype == torch.float32 and ks.dtype == ke.dtype == torch.int32
    keys, scale = kv
    k = keys.float() * scale.float()[:, None]  # [N, D]
    scores = torch.einsum("thd,nd->htn", q.float(), k).relu()  # [H, T, N]
    logits = (scores * weights.t()[..., None]).sum(0)  # [T, N]
    n = torch.arange(k.shape[0])
    inside = (n >= ks[:, None]) & (n < ke[:, None])
    return logits.masked_fill(~inside, float("-inf") if clean_logits else float("nan"))  # NaN: "unspecified"


def fp8_paged_mqa_logits(q, kv_cache, weights, context_lens, block_table, schedule_meta, max_context_len,
                         clean_logits=False, indices=None):  # fmt: skip
    """DeepGEMM: q [B, next_n, H, D] e4m3, kv_cache [blocks, block, 1, D + 4] uint8 (per block: block x D e4m3,
    then block fp32 scales), context_lens [B, next_n] int32: row (b, j) scores positions p < context_lens[b, j] of
    pages block_table[b]. -> [B * next_n, max_context_len] fp32, unspecified (NaN here) past the context."""
    assert indices is None and not clean_logits and context_lens.dim() == 2 and q.dtype == torch.float8_e4m3fn
    batch, next_n, heads, dim = q.shape
    blocks, block, _, width = kv_cache.shape
    assert width == dim + 4 and kv_cache.dtype == torch.uint8 and heads in (32, 64)
    raw = kv_cache.reshape(blocks, block * width)
    values = raw[:, : block * dim].contiguous().view(torch.float8_e4m3fn).float().view(blocks, block, dim)
    scales = raw[:, block * dim :].contiguous().view(torch.float32).view(blocks, block)
    logits = torch.full((batch * next_n, max_context_len), float("nan"))
    for b in range(batch):
        for j in range(next_n):
            ctx = int(context_lens[b, j])
            pages = block_table[b, : -(-ctx // block)].long()
            k = (values[pages] * scales[pages][..., None]).reshape(-1, dim)[:ctx]  # [ctx, D]
            s = (q[b, j].float() @ k.t()).relu() * weights[b * next_n + j][:, None]  # [H, ctx]
            logits[b * next_n + j, :ctx] = s.sum(0)
    return logits
