"""Plain-torch reference for DeepSeek Sparse Attention (GLM-5): the oracle every DSA kernel is tested against.

Cache model (SGLang's token-slot pool): `page_table[b, p]` is the pool slot of position p of request b.
Query tokens are flattened over a ragged batch: token t belongs to request `q_seq[t]` at position `q_pos[t]`
and may attend to positions 0..q_pos[t]. Top-k lists hold positions (not slots); -1 means "no entry".
All math runs in fp32; nothing here reads a page_table entry or cache slot that no valid position refers to,
so stale/garbage slots (NaN, out-of-range ids past a request's length) cannot leak into results.
Cost: the indexer and dense MLA read each request's keys once for all of its query tokens (a matmul over key
chunks), sparse MLA gathers per token; fp32 copies are made per chunk of gathered rows, never of a whole cache.
"""

import torch

from sglang_glm5.dsa.fp8_latent import dequantize_latent, fp8_latent_width, is_fp8_latent

PAD = -1
KEY_CHUNK = 4096  # keys per step: fp32 row copies and score tiles stay cache-sized and are reused by the allocator
CHUNK_ELEMENTS = 1 << 22  # fp32 scratch per token chunk (16 MiB): bounds memory for long prefills and big batches


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
    # index_select, not cache[slots]: several times faster on CPU for row gathers
    rows = cache.index_select(0, slots.flatten()).float().view(*slots.shape, cache.shape[1])  # [T, K, D]
    # a fill, not a multiply: 0 * NaN would still be NaN
    return rows.masked_fill_(~valid[..., None], 0.0)


def gather_latent(kv_cache, page_table, q_seq, positions, qk_dim, v_dim):
    """gather_kv for sparse MLA's cache: [S, qk_dim] float, or the FP8 pool's [S, 656] rows (dsa/fp8_latent.py),
    dequantized after the gather (code * its tile's scale, bf16 rope) -> [T, K, qk_dim] fp32, zeros at -1."""
    if not is_fp8_latent(kv_cache, qk_dim, v_dim):
        return gather_kv(kv_cache, page_table, q_seq, positions)
    valid = positions >= 0  # [T, K]
    safe_pos = torch.where(valid, positions, 0).long()  # [T, K]
    slots = page_table[q_seq.long()[:, None], safe_pos].long()  # [T, K]
    packed = kv_cache.view(torch.uint8).index_select(0, slots.flatten())  # [T*K, 656]
    rows = dequantize_latent(packed, v_dim, qk_dim - v_dim).view(*slots.shape, qk_dim)  # [T, K, Dqk]
    return rows.masked_fill_(~valid[..., None], 0.0)


def _check_latent_cache(kv_cache, qk_dim, v_dim):
    """kv_cache: [S, qk_dim] float, or packed FP8 rows [S, 656] (uint8 or float8_e4m3fn-typed)."""
    _check("kv_cache", kv_cache, 2)
    if is_fp8_latent(kv_cache, qk_dim, v_dim):
        return
    if not kv_cache.is_floating_point():
        raise TypeError(f"kv_cache must be floating [S, {qk_dim}] or the FP8 latent's [S, "
                        f"{fp8_latent_width(v_dim, qk_dim - v_dim)}] uint8 rows, got {kv_cache.dtype}")  # fmt: skip
    _check_dim("kv_cache", kv_cache.shape[1], qk_dim, "head dim")


def _requests(q_seq):
    """(request b, indices of its query tokens) for each request present in q_seq."""
    q_seq = q_seq.long()
    return [(b, (q_seq == b).nonzero()[:, 0]) for b in torch.unique(q_seq).tolist()]


def _token_chunks(tokens, elements_per_token):
    """Slices of `tokens` whose fp32 scratch (elements_per_token each) fits CHUNK_ELEMENTS."""
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_token))
    return [tokens[i : i + step] for i in range(0, tokens.shape[0], step)]


def _key_chunks(cache, slots, scale=None):
    """(start, fp32 rows [C, D]) for consecutive KEY_CHUNK slices of one request's position-ordered slots [n].

    Rows are cache[slots] (times scale[slots] per row if given), in fp32. The yielded tensor is a buffer reused by
    the next step: consume it before advancing (fresh large allocations cost page faults on every chunk).
    """
    size = min(KEY_CHUNK, slots.shape[0])
    rows = torch.empty(size, cache.shape[1], dtype=torch.float32, device=cache.device)  # [C, D]
    raw = rows if cache.dtype == torch.float32 else cache.new_empty(size, cache.shape[1])  # [C, D] cache dtype
    for start in range(0, slots.shape[0], KEY_CHUNK):
        index = slots[start : start + KEY_CHUNK]  # [c]
        count = index.shape[0]
        # index_select, not cache[index]: several times faster on CPU for row gathers
        torch.index_select(cache, 0, index, out=raw[:count])
        if raw is not rows:
            rows[:count].copy_(raw[:count])
        if scale is not None:
            rows[:count].mul_(scale.index_select(0, index).float()[:, None])
        yield start, rows[:count]


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos):
    """Lightning-indexer scores (HF GlmMoeDsaIndexer math), causal-masked.

    q [T, H, D] (after RoPE), weights [T, H] (already * H**-0.5), k_cache [S, D] -> logits [T, L] fp32.
    Per request, its query tokens share one key set, read once in KEY_CHUNK slices (k[p] = k_cache[page_table[b, p]],
    in slot order when longer than one slice):
    1. s[t, h, p] = relu(q[t, h] . k[p] * D**-0.5)                         # [T_b, H, C]
    2. logits[t, p] = sum_h weights[t, h] * s[t, h, p]; -inf for p > q_pos[t]
    """
    _check("q", q, 3, floating=True)
    _check("weights", weights, 2, floating=True)
    _check("k_cache", k_cache, 2, floating=True)
    _check_indexer_shapes(q, weights, "k_cache", k_cache.shape[1], page_table, q_seq, q_pos)
    return _indexer(q.float(), weights, k_cache, None, page_table, q_seq, q_pos)


def _check_indexer_shapes(q, weights, key_name, key_dim, page_table, q_seq, q_pos):
    num_tokens, num_heads, head_dim = q.shape
    _check_dim("weights", tuple(weights.shape), (num_tokens, num_heads), "shape")
    _check_dim(key_name, key_dim, head_dim, "head dim")
    _check_batch(page_table, q_seq, q_pos, num_tokens)


def _indexer(q, weights, k_cache, k_scale, page_table, q_seq, q_pos):
    """indexer_logits over fp32 q [T, H, D] and keys k_cache [S, D] (times k_scale [S] per row if given)."""
    num_tokens, num_heads, head_dim = q.shape
    logits = q.new_full((num_tokens, page_table.shape[1]), float("-inf"))  # [T, L]
    for b, tokens in _requests(q_seq):
        length = int(q_pos[tokens].max()) + 1
        slots, order = page_table[b, :length], None  # [n], all valid for the request's last token
        if length > KEY_CHUNK:
            # keys read in slot order, logits put back by position: a gather in random order over a large cache
            # costs more than the sort (a single chunk is cheaper unsorted)
            slots, order = slots.sort()  # [n], [n]
        slots = slots.long()
        for chunk in _token_chunks(tokens, num_heads * KEY_CHUNK):
            q_c, w_c = q[chunk], weights[chunk].float()[:, None, :]  # [t, H, D], [t, 1, H]
            row = q.new_empty(chunk.shape[0], 1, length)  # [t, 1, n], in the order of `slots`
            for start, keys in _key_chunks(k_cache, slots, k_scale):  # [C, D]
                scores = torch.matmul(q_c, keys.T).mul_(head_dim**-0.5).relu_()  # [t, H, C]
                torch.bmm(w_c, scores, out=row[..., start : start + keys.shape[0]])  # [t, 1, C]
            row = row[:, 0]  # [t, n]
            logits[chunk, :length] = row if order is None else torch.empty_like(row).index_copy_(1, order, row)
    positions = torch.arange(page_table.shape[1], device=q.device)  # [L]
    return logits.masked_fill_(positions > q_pos[:, None], float("-inf"))


FP8_E4M3_MAX = 448.0  # largest finite float8_e4m3fn
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e4m3fnuz)  # OCP e4m3 (CUDA, gfx950) and fnuz (gfx942's fp8 mfma)


def quantize_fp8_rows(x, dtype=torch.float8_e4m3fn):
    """Per-row e4m3 quantization, the DeepSeek indexer's (q per head-token, k per token): x ~= x_fp8 * scale.

    x [..., D] -> x_fp8 [..., D] `dtype`, scale [...] fp32 = amax(|row|) / finfo(dtype).max (1 for an all-zero row):
    448 for float8_e4m3fn, 240 for float8_e4m3fnuz.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        raise TypeError(f"x must be a floating tensor with at least 1 dim, got {x!r:.80}")
    if dtype not in FP8_DTYPES:
        raise TypeError(f"dtype must be one of {[str(d) for d in FP8_DTYPES]}, got {dtype}")
    amax = x.float().abs().amax(-1)  # [...]
    scale = torch.where(amax > 0, amax / torch.finfo(dtype).max, 1.0)
    return (x.float() / scale[..., None]).to(dtype), scale


def _check_fp8_inputs(q_fp8, q_scale, k_fp8, k_scale):
    """indexer_logits_fp8's own arguments (both e4m3 tensors of one variant, their per-row scales); shared with
    dsa/static.py."""
    for name, x, ndim in (("q_fp8", q_fp8, 3), ("k_fp8", k_fp8, 2)):
        _check(name, x, ndim)
        if x.dtype not in FP8_DTYPES:
            raise TypeError(f"{name} must have dtype in {[str(d) for d in FP8_DTYPES]}, got {x.dtype}")
    if k_fp8.dtype != q_fp8.dtype:
        raise TypeError(f"k_fp8 is {k_fp8.dtype} but q_fp8 is {q_fp8.dtype}: both must use one e4m3 variant")
    _check("q_scale", q_scale, 2, floating=True)
    _check("k_scale", k_scale, 1, floating=True)
    _check_dim("q_scale", tuple(q_scale.shape), tuple(q_fp8.shape[:2]), "shape")
    _check_dim("k_scale", k_scale.shape[0], k_fp8.shape[0], "number of cache slots")


def indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos):
    """indexer_logits of FP8 inputs with per-row scales, dequantized in fp32.

    q_fp8 [T, H, D] e4m3 with q_scale [T, H], k_fp8 [S, D] e4m3 with k_scale [S] -> logits [T, L] fp32
    (e4m3fn or e4m3fnuz, the same for q and k)
    = indexer_logits(q_fp8 * q_scale, weights, k_fp8 * k_scale, ...). A Hadamard rotation applied to both q and k
    before quantization (DeepSeek/SGLang) leaves every q . k unchanged, so it stays with the caller.
    """
    _check_fp8_inputs(q_fp8, q_scale, k_fp8, k_scale)
    _check("weights", weights, 2, floating=True)
    _check_indexer_shapes(q_fp8, weights, "k_fp8", k_fp8.shape[1], page_table, q_seq, q_pos)
    q = q_fp8.float() * q_scale.float()[..., None]  # [T, H, D]
    return _indexer(q, weights, k_fp8, k_scale, page_table, q_seq, q_pos)  # keys dequantized per gathered chunk


def topk_positions(logits, q_pos, k, *, out=None):
    """Positions of the k largest valid logits, in canonical form; written into `out` [T, k] int32 if given.

    logits [T, L], q_pos [T] -> [T, k] int32: selected positions ascending, then -1 padding
    (rows with fewer than k valid positions 0..q_pos[t] return all of them; k may exceed L).
    Ties are broken towards the lower position, so the result is deterministic; NaN ranks above +inf (torch's order).
    1. invalid positions -> -inf; kth = the min(k, L)-th largest score per row (torch.topk)           # [T, 1]
    2. chosen = scores above kth, plus the lowest-position scores equal to kth that still fit; valid only
    3. chosen positions packed ascending into k columns, -1 after                                       # [T, k]
    """
    _check_topk_shapes(logits, q_pos, k)
    num_tokens, length = logits.shape
    if num_tokens and (q_pos.min() < 0 or q_pos.max() >= length):
        raise ValueError(f"q_pos values must be in [0, {length}) (columns of logits)")
    return _into(out, _topk_positions(logits, q_pos, k, shortcut=True))


def _into(out, result):
    """`result` copied into the caller's `out` (same shape and dtype, checked), or itself."""
    if out is None:
        return result
    _check_dim("out", tuple(out.shape), tuple(result.shape), "shape")
    if out.dtype != result.dtype:
        raise TypeError(f"out must have dtype {result.dtype}, got {out.dtype}")
    return out.copy_(result)


def _check_topk_shapes(logits, q_pos, k):
    _check("logits", logits, 2, floating=True)
    _check("q_pos", q_pos, 1, floating=False)
    _check_dim("q_pos", q_pos.shape[0], logits.shape[0], "number of query tokens")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _topk_positions(logits, q_pos, k, shortcut):
    """topk_positions without argument checks; shortcut=False never reads a value on the host (graph-safe)."""
    num_tokens, length = logits.shape
    positions = torch.arange(length, device=logits.device)  # [L]
    valid = positions <= q_pos[:, None].long()  # [T, L]
    masked = logits.float().masked_fill(~valid, float("-inf"))  # [T, L]
    kept = min(k, length)
    values, index = torch.topk(masked, kept, dim=-1, sorted=False)  # [T, kept], NaN ranks highest
    # the kept-th largest, NaN highest: the smallest non-NaN kept value, NaN if every kept value is NaN
    values_nan = values.isnan()
    smallest = values.masked_fill(values_nan, float("inf")).amin(-1, keepdim=True)  # [T, 1]
    kth = torch.where(values_nan.all(-1, keepdim=True), float("nan"), smallest)  # [T, 1]
    # shortcut, same result: if kth is a valid score and every score equal to it was kept, torch.topk's set is the
    # canonical one (no tie to break) and needs no pass beyond one count over L
    if shortcut and bool(((kth > float("-inf")) & _all_ties_kept(masked, values, kth)).all()):
        out = torch.full((num_tokens, k), PAD, dtype=torch.int32, device=logits.device)
        out[:, :kept] = index.sort(-1).values
        return out
    # comparisons with NaN are false: spell out NaN as the largest value, equal to itself
    nan, kth_nan = masked.isnan(), kth.isnan()
    above = (masked > kth) | (nan & ~kth_nan)  # [T, L]
    tied = (masked == kth) | (nan & kth_nan)  # [T, L]
    room = kept - above.sum(-1, keepdim=True)  # [T, 1]
    # valid positions come first, so among -inf ties they are taken before invalid ones
    chosen = (above | (tied & (tied.cumsum(-1) <= room))) & valid  # [T, L]
    column = torch.where(chosen, chosen.cumsum(-1) - 1, k)  # [T, L], unchosen -> spill column k
    out = torch.full((num_tokens, k + 1), PAD, dtype=torch.int64, device=logits.device)
    out.scatter_(1, column, positions.expand(num_tokens, length))
    out[:, k] = PAD
    return out[:, :k].to(torch.int32)


def _all_ties_kept(masked, values, kth):
    """[T, 1]: every score equal to the kept-th largest is among the kept ones."""
    return (masked == kth).sum(-1, keepdim=True) == (values == kth).sum(-1, keepdim=True)


def sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Sparse MLA in the absorbed latent space over per-token top-k positions.

    q [T, H, Dqk], kv_cache [S, Dqk] (latent | rope key) or the FP8 latent pool [S, 656] uint8 (dsa/fp8_latent.py,
    dequantized on read), topk [T, K] positions (-1 = skip)
    -> out [T, H, v_dim] in q.dtype (and lse [T, H] fp32, natural log of the scaled scores, if return_lse).
    Entries of a topk row are assumed distinct. A row whose topk is all -1 gets out = 0 and lse = -inf.
    Per chunk of query tokens:
    1. kv = gather_kv(kv_cache, topk)                                      # [t, K, Dqk]
    2. s = q . kv * sm_scale, -inf at -1 entries                          # [t, H, K]
    3. lse = logsumexp(s); p = exp(s - lse)                               # [t, H], [t, H, K]
    4. out = p @ kv[..., :v_dim]                                          # [t, H, v_dim]
    """
    _check("q", q, 3, floating=True)
    _check("topk", topk, 2, floating=False)
    num_tokens, num_heads, qk_dim = q.shape
    if not 0 < v_dim <= qk_dim:
        raise ValueError(f"v_dim must be in [1, {qk_dim}], got {v_dim}")
    _check_latent_cache(kv_cache, qk_dim, v_dim)
    _check_dim("topk", topk.shape[0], num_tokens, "number of query tokens")
    _check_batch(page_table, q_seq, None, num_tokens)
    if topk.numel() and (topk.min() < PAD or topk.max() >= page_table.shape[1]):
        raise ValueError(f"topk values must be -1 or in [0, {page_table.shape[1]}) (columns of page_table)")
    return _sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse)


def _check_sparse_mla_shapes(q, kv_cache, page_table, q_seq, topk, v_dim):
    """The checks of sparse_mla that read no tensor value (shapes, dtypes)."""
    _check("q", q, 3, floating=True)
    _check("topk", topk, 2, floating=False)
    _check("page_table", page_table, 2, floating=False)
    _check("q_seq", q_seq, 1, floating=False)
    num_tokens, _, qk_dim = q.shape
    if not 0 < v_dim <= qk_dim:
        raise ValueError(f"v_dim must be in [1, {qk_dim}], got {v_dim}")
    _check_latent_cache(kv_cache, qk_dim, v_dim)
    _check_dim("topk", topk.shape[0], num_tokens, "number of query tokens")
    _check_dim("q_seq", q_seq.shape[0], num_tokens, "number of query tokens")


def _sparse_mla(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse):
    """sparse_mla without argument checks: shapes only, no value read on the host."""
    num_tokens, num_heads, qk_dim = q.shape
    out = q.new_empty(num_tokens, num_heads, v_dim, dtype=torch.float32)  # [T, H, v_dim]
    lse = q.new_empty(num_tokens, num_heads, dtype=torch.float32)  # [T, H]
    tokens = torch.arange(num_tokens, device=q.device)
    for chunk in _token_chunks(tokens, topk.shape[1] * (qk_dim + num_heads)):
        valid = topk[chunk] >= 0  # [t, K]
        kv = gather_latent(kv_cache, page_table, q_seq[chunk], topk[chunk], qk_dim, v_dim)  # [t, K, Dqk]
        scores = torch.bmm(q[chunk].float(), kv.transpose(1, 2)).mul_(sm_scale)  # [t, H, K]
        scores.masked_fill_(~valid[:, None, :], float("-inf"))
        out[chunk], lse[chunk] = _softmax_values(scores, kv[..., :v_dim])
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out


def _softmax_values(scores, values):
    """softmax(scores) @ values and logsumexp(scores): scores [t, H, K] (consumed), values [t, K, v] or [K, v]."""
    lse = torch.logsumexp(scores, dim=-1)  # [t, H]
    # an all -inf row has lse = -inf; subtracting 0 instead keeps exp(-inf) = 0 rather than NaN
    probs = scores.sub_(torch.where(torch.isinf(lse), 0.0, lse)[..., None]).exp_()  # [t, H, K]
    return torch.matmul(probs, values), lse  # [t, H, v], [t, H]


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
    Per request, its query tokens share one key set (kv[p] = kv_cache[page_table[b, p]]), read in KEY_CHUNK slices:
    1. s[t, h, p] = q[t, h] . kv[p] * sm_scale, -inf for p > q_pos[t]     # [t, H, n]
    2. lse = logsumexp(s); p = exp(s - lse)
    3. out = sum over key chunks of p[..., chunk] @ kv[chunk, :v_dim]      # [t, H, v_dim]
    """
    _check("q", q, 3, floating=True)
    _check("kv_cache", kv_cache, 2, floating=True)
    num_tokens, num_heads, qk_dim = q.shape
    _check_dim("kv_cache", kv_cache.shape[1], qk_dim, "head dim")
    _check_batch(page_table, q_seq, q_pos, num_tokens)
    if not 0 < v_dim <= qk_dim:
        raise ValueError(f"v_dim must be in [1, {qk_dim}], got {v_dim}")

    out = q.new_zeros(num_tokens, num_heads, v_dim, dtype=torch.float32)  # [T, H, v_dim]
    lse = q.new_empty(num_tokens, num_heads, dtype=torch.float32)  # [T, H]
    for b, tokens in _requests(q_seq):
        length = int(q_pos[tokens].max()) + 1
        slots = page_table[b, :length].long()  # [n], all valid for the request's last token
        for chunk in _token_chunks(tokens, num_heads * length):
            q_c = q[chunk].float()  # [t, H, Dqk]
            scores = q_c.new_empty(chunk.shape[0], num_heads, length)  # [t, H, n]
            for start, kv in _key_chunks(kv_cache, slots):  # [C, Dqk]
                torch.matmul(q_c, kv.T, out=scores[..., start : start + kv.shape[0]])
            future = torch.arange(length, device=q.device) > q_pos[chunk, None]  # [t, n]
            scores.mul_(sm_scale).masked_fill_(future[:, None, :], float("-inf"))
            lse[chunk] = torch.logsumexp(scores, dim=-1)  # [t, H], finite: position 0 is always visible
            probs = scores.sub_(lse[chunk, :, None]).exp_()  # [t, H, n]
            for start, kv in _key_chunks(kv_cache, slots):
                out[chunk] += torch.matmul(probs[..., start : start + kv.shape[0]], kv[:, :v_dim])
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out
