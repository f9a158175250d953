"""Plain-torch reference for DeepSeek Sparse Attention (GLM-5): the oracle every DSA kernel is tested against.

Cache model (SGLang's token-slot pool): `page_table[b, p]` is the pool slot of position p of request b.
Query tokens are flattened over a ragged batch: token t belongs to request `q_seq[t]` at position `q_pos[t]`
and may attend to positions 0..q_pos[t]. Top-k lists hold positions (not slots); -1 means "no entry".
All math runs in fp32; nothing here reads a page_table entry or cache slot that no valid position refers to,
so stale/garbage slots (NaN, out-of-range ids past a request's length) cannot leak into results.
Gathers are materialised per query token ([T, L, D] for the indexer): meant for test sizes, not serving.
"""

import torch

PAD = -1


def _check(name, x, ndim, floating=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")


def _check_dim(name, size, expected, what):
    if size != expected:
        raise ValueError(f"{name}: {what} is {size}, expected {expected}")


def _check_batch(page_table, q_seq, q_pos, num_tokens):
    """Validate page_table [B, L], q_seq [T] and (optionally) q_pos [T] against each other."""
    _check("page_table", page_table, 2, floating=False)
    _check("q_seq", q_seq, 1, floating=False)
    _check_dim("q_seq", q_seq.shape[0], num_tokens, "number of query tokens")
    if num_tokens and (q_seq.min() < 0 or q_seq.max() >= page_table.shape[0]):
        raise ValueError(f"q_seq values must be in [0, {page_table.shape[0]}) (rows of page_table)")
    if q_pos is not None:
        _check("q_pos", q_pos, 1, floating=False)
        _check_dim("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")
        if num_tokens and (q_pos.min() < 0 or q_pos.max() >= page_table.shape[1]):
            raise ValueError(f"q_pos values must be in [0, {page_table.shape[1]}) (columns of page_table)")


def causal_positions(q_pos, length):
    """All positions a query may see, as a top-k style list: [T, L] int64, p if p <= q_pos[t] else -1."""
    pos = torch.arange(length, device=q_pos.device).expand(q_pos.shape[0], length)  # [T, L]
    return torch.where(pos <= q_pos[:, None].long(), pos, PAD)


def gather_kv(cache, page_table, q_seq, positions):
    """Rows of a slot-indexed cache for per-token position lists.

    cache [S, D], page_table [B, L], q_seq [T], positions [T, K] (-1 = none) -> [T, K, D] fp32, zeros at -1.
    1. -1 entries are redirected to position 0 (always valid) so no unreferenced page_table entry is read.
    2. slots = page_table[q_seq[t], position]                              # [T, K]
    3. rows = cache[slots] in fp32, then zeroed where position == -1      # [T, K, D]
    """
    valid = positions >= 0  # [T, K]
    safe_pos = torch.where(valid, positions, 0).long()  # [T, K]
    slots = page_table[q_seq.long()[:, None], safe_pos].long()  # [T, K]
    rows = cache[slots].float()  # [T, K, D]
    # where, not multiply: 0 * NaN would still be NaN
    return torch.where(valid[..., None], rows, 0.0)


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos):
    """Lightning-indexer scores (HF GlmMoeDsaIndexer math), causal-masked.

    q [T, H, D] (after RoPE), weights [T, H] (already * H**-0.5), k_cache [S, D] -> logits [T, L] fp32.
    1. k = gather_kv(k_cache) over positions 0..q_pos[t]                  # [T, L, D]
    2. s[t, h, p] = relu(q[t, h] . k[t, p] * D**-0.5)                     # [T, H, L]
    3. logits[t, p] = sum_h weights[t, h] * s[t, h, p]; -inf for p > q_pos[t]
    """
    _check("q", q, 3, floating=True)
    _check("weights", weights, 2, floating=True)
    _check("k_cache", k_cache, 2, floating=True)
    num_tokens, num_heads, head_dim = q.shape
    _check_dim("weights", tuple(weights.shape), (num_tokens, num_heads), "shape")
    _check_dim("k_cache", k_cache.shape[1], head_dim, "head dim")
    _check_batch(page_table, q_seq, q_pos, num_tokens)

    positions = causal_positions(q_pos, page_table.shape[1])  # [T, L]
    k = gather_kv(k_cache, page_table, q_seq, positions)  # [T, L, D]
    scores = torch.einsum("thd,tld->thl", q.float(), k) * head_dim**-0.5  # [T, H, L]
    logits = torch.einsum("th,thl->tl", weights.float(), scores.relu())  # [T, L]
    return logits.masked_fill(positions < 0, float("-inf"))


FP8_E4M3_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_fp8_rows(x):
    """Per-row e4m3 quantization, the DeepSeek indexer's (q per head-token, k per token): x ~= x_fp8 * scale.

    x [..., D] -> x_fp8 [..., D] float8_e4m3fn, scale [...] fp32 = amax(|row|) / 448 (1 for an all-zero row).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        raise TypeError(f"x must be a floating tensor with at least 1 dim, got {x!r:.80}")
    amax = x.float().abs().amax(-1)  # [...]
    scale = torch.where(amax > 0, amax / FP8_E4M3_MAX, 1.0)
    return (x.float() / scale[..., None]).to(torch.float8_e4m3fn), scale


def indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos):
    """indexer_logits of FP8 inputs with per-row scales, dequantized in fp32.

    q_fp8 [T, H, D] e4m3 with q_scale [T, H], k_fp8 [S, D] e4m3 with k_scale [S] -> logits [T, L] fp32
    = indexer_logits(q_fp8 * q_scale, weights, k_fp8 * k_scale, ...). A Hadamard rotation applied to both q and k
    before quantization (DeepSeek/SGLang) leaves every q . k unchanged, so it stays with the caller.
    """
    for name, x, ndim in (("q_fp8", q_fp8, 3), ("k_fp8", k_fp8, 2)):
        _check(name, x, ndim)
        if x.dtype != torch.float8_e4m3fn:
            raise TypeError(f"{name} must be float8_e4m3fn, got {x.dtype}")
    _check("q_scale", q_scale, 2, floating=True)
    _check("k_scale", k_scale, 1, floating=True)
    _check_dim("q_scale", tuple(q_scale.shape), tuple(q_fp8.shape[:2]), "shape")
    _check_dim("k_scale", k_scale.shape[0], k_fp8.shape[0], "number of cache slots")
    q = q_fp8.float() * q_scale.float()[..., None]  # [T, H, D]
    k = k_fp8.float() * k_scale.float()[:, None]  # [S, D]
    return indexer_logits(q, weights, k, page_table, q_seq, q_pos)


def topk_positions(logits, q_pos, k):
    """Positions of the k largest valid logits, in canonical form.

    logits [T, L], q_pos [T] -> [T, k] int32: selected positions ascending, then -1 padding
    (rows with fewer than k valid positions 0..q_pos[t] return all of them; k may exceed L).
    Ties are broken towards the lower position (stable descending sort), so the result is deterministic.
    1. invalid positions -> -inf; stable sort descending; keep first min(k, L)   # [T, k']
    2. ranks >= number of valid positions -> -1
    3. sort ascending with -1 mapped past the end, pad to k columns with -1      # [T, k]
    """
    _check("logits", logits, 2, floating=True)
    _check("q_pos", q_pos, 1, floating=False)
    num_tokens, length = logits.shape
    _check_dim("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if num_tokens and (q_pos.min() < 0 or q_pos.max() >= length):
        raise ValueError(f"q_pos values must be in [0, {length}) (columns of logits)")

    positions = causal_positions(q_pos, length)  # [T, L]
    masked = logits.float().masked_fill(positions < 0, float("-inf"))  # [T, L]
    # valid positions are 0..q_pos, so among equal -inf scores the stable sort still ranks them before invalid ones
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[:, : min(k, length)]  # [T, k']
    num_valid = torch.clamp(q_pos.long() + 1, max=k)  # [T]
    rank = torch.arange(order.shape[1], device=logits.device)  # [k']
    order = torch.where(rank < num_valid[:, None], order, length)  # [T, k'], length = padding sentinel
    order = torch.sort(order, dim=-1).values
    order = torch.where(order < length, order, PAD)
    pad = order.new_full((num_tokens, k - order.shape[1]), PAD)
    return torch.cat([order, pad], dim=-1).to(torch.int32)


def sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Sparse MLA in the absorbed latent space over per-token top-k positions.

    q [T, H, Dqk], kv_cache [S, Dqk] (latent | rope key), topk [T, K] positions (-1 = skip)
    -> out [T, H, v_dim] in q.dtype (and lse [T, H] fp32, natural log of the scaled scores, if return_lse).
    Entries of a topk row are assumed distinct. A row whose topk is all -1 gets out = 0 and lse = -inf.
    1. kv = gather_kv(kv_cache, topk)                                      # [T, K, Dqk]
    2. s = q . kv * sm_scale, -inf at -1 entries                          # [T, H, K]
    3. lse = logsumexp(s); p = exp(s - lse)                               # [T, H], [T, H, K]
    4. out = p @ kv[..., :v_dim]                                          # [T, H, v_dim]
    """
    _check("q", q, 3, floating=True)
    _check("kv_cache", kv_cache, 2, floating=True)
    _check("topk", topk, 2, floating=False)
    num_tokens, _, qk_dim = q.shape
    _check_dim("kv_cache", kv_cache.shape[1], qk_dim, "head dim")
    _check_dim("topk", topk.shape[0], num_tokens, "number of query tokens")
    _check_batch(page_table, q_seq, None, num_tokens)
    if not 0 < v_dim <= qk_dim:
        raise ValueError(f"v_dim must be in [1, {qk_dim}], got {v_dim}")
    if topk.numel() and (topk.min() < PAD or topk.max() >= page_table.shape[1]):
        raise ValueError(f"topk values must be -1 or in [0, {page_table.shape[1]}) (columns of page_table)")

    valid = topk >= 0  # [T, K]
    kv = gather_kv(kv_cache, page_table, q_seq, topk)  # [T, K, Dqk]
    scores = torch.einsum("thd,tkd->thk", q.float(), kv) * sm_scale  # [T, H, K]
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [T, H]
    # an all -1 row has lse = -inf; subtracting 0 instead keeps exp(-inf) = 0 rather than NaN
    probs = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse)[..., None])  # [T, H, K]
    out = torch.einsum("thk,tkv->thv", probs, kv[..., :v_dim]).to(q.dtype)  # [T, H, v_dim]
    return (out, lse) if return_lse else out


def sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Prefill entry point (any number of query tokens per request): see sparse_mla."""
    return sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=return_lse)


def sparse_mla_decode(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Decode entry point (exactly one query token per request): see sparse_mla."""
    _check("q_seq", q_seq, 1, floating=False)
    if torch.unique(q_seq).numel() != q_seq.numel():
        raise ValueError("q_seq: decode takes one query token per request, but q_seq has repeated requests")
    return sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=return_lse)


def dense_mla(q, kv_cache, page_table, q_seq, q_pos, sm_scale, v_dim, return_lse=False):
    """Causal dense MLA over positions 0..q_pos[t]: sparse_mla with every causal position selected.

    q [T, H, Dqk], kv_cache [S, Dqk], q_pos [T] -> out [T, H, v_dim] (and lse [T, H] if return_lse).
    """
    _check("q", q, 3, floating=True)
    _check_batch(page_table, q_seq, q_pos, q.shape[0])
    positions = causal_positions(q_pos, page_table.shape[1])  # [T, L]
    return sparse_mla(q, kv_cache, page_table, q_seq, positions, sm_scale, v_dim, return_lse=return_lse)
