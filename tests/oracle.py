"""HF transformers' `GlmMoeDsaForCausalLM` as the independent oracle, in float32 on CPU."""

import contextlib
import functools
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, GlmMoeDsaForCausalLM


@functools.lru_cache(maxsize=4)
def hf_model(checkpoint: Path, indexer_types: tuple[str, ...] | None = None) -> GlmMoeDsaForCausalLM:
    """`indexer_types` ("full"/"shared" per layer) replaces the IndexCache plan transformers derives from config.json."""
    extra = {} if indexer_types is None else {"indexer_types": list(indexer_types)}
    return GlmMoeDsaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, **extra).eval()


@functools.lru_cache(maxsize=4)
def tokenizer(checkpoint: Path):
    return AutoTokenizer.from_pretrained(checkpoint)


@torch.no_grad()
def hf_logprobs(checkpoint: Path, ids: list[int], indexer_types: tuple[str, ...] | None = None) -> torch.Tensor:
    """[len(ids), vocab] log-softmax of the next-token logits at every prompt position."""
    logits = hf_model(checkpoint, indexer_types)(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def hf_greedy(
    checkpoint: Path, ids: list[int], max_new_tokens: int, indexer_types: tuple[str, ...] | None = None
) -> list[int]:
    """Plain argmax loop with HF's KV cache (no generation-config rules: EOS does not stop it, like ignore_eos)."""
    model = hf_model(checkpoint, indexer_types)
    out = model(torch.tensor([ids]), use_cache=True)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        new.append(token)
        out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return new


def dequantize_block_loop(w: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """[N, K] fp8 weight times its per-block scale, by a plain slice loop (fp32)."""
    block_n, block_k = block
    out = w.to(torch.float32)
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            out[i * block_n : (i + 1) * block_n, j * block_k : (j + 1) * block_k] *= scale[i, j]
    return out


def dequantized_copy(src: Path, dst: Path, dtype: torch.dtype = torch.float32) -> Path:
    """An FP8 block checkpoint rewritten unquantized in `dtype`, by `dequantize_block_loop` (independent of
    sglang_glm5.quant; HF's own FP8 loader needs `accelerate` and mis-scales ragged blocks)."""
    shutil.copytree(src, dst)
    config = json.loads((src / "config.json").read_text())
    block = tuple(config.pop("quantization_config")["weight_block_size"])
    (dst / "config.json").write_text(json.dumps(config))
    for shard in src.glob("*.safetensors"):
        tensors = load_file(shard)
        out = {}
        for name, tensor in tensors.items():
            if name.endswith("_scale_inv"):
                continue
            scale = tensors.get(name + "_scale_inv")
            out[name] = tensor if scale is None else dequantize_block_loop(tensor, scale, block).to(dtype)
        save_file(out, dst / shard.name)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.endswith("_scale_inv")}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    return dst


class _FP8IndexerTorch:
    """`torch` as HF's GLM-5 module sees it inside GlmMoeDsaIndexer.forward, except that the first matmul there (the
    q . k scores) multiplies q and k as the FP8 index-K store does: both Hadamard-rotated and quantized to e4m3 per
    row (q per token and head, k per token), then dequantized. The rotation is orthogonal, so only the rounding
    differs from HF's unquantized indexer."""

    def __init__(self, rotation: torch.Tensor):
        self._rotation = rotation
        self._calls = 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def matmul(self, a, b):
        self._calls += 1
        if self._calls != 1:  # the head-weighted sum
            return torch.matmul(a, b)
        from sglang_glm5.attention.index_k_store import FP8_DTYPE
        from sglang_glm5.dsa.reference import quantize_fp8_rows

        def fake_quant(x):  # [..., D]
            x_fp8, scale = quantize_fp8_rows(x @ self._rotation, FP8_DTYPE)
            return x_fp8.float() * scale[..., None]

        return torch.matmul(fake_quant(a), fake_quant(b.transpose(-1, -2)).transpose(-1, -2))


@contextlib.contextmanager
def fp8_indexer():
    """Inside: HF's GLM-5 indexers compute q . k as the FP8 index-K store does (_FP8IndexerTorch)."""
    from transformers.models.glm_moe_dsa import modeling_glm_moe_dsa as hf

    from sglang_glm5.attention.index_k_store import hadamard_matrix

    original = hf.GlmMoeDsaIndexer.forward

    def forward(self, *args, **kwargs):
        hf.torch = _FP8IndexerTorch(hadamard_matrix(self.head_dim))
        try:
            return original(self, *args, **kwargs)
        finally:
            hf.torch = torch

    hf.GlmMoeDsaIndexer.forward = forward
    try:
        yield
    finally:
        hf.GlmMoeDsaIndexer.forward = original


@torch.no_grad()
def hf_logprobs_fp8_indexer(checkpoint: Path, ids: list[int]) -> torch.Tensor:
    """hf_logprobs with the indexer's q . k computed on FP8 (e4m3, per-row scale, Hadamard-rotated) q and k: what the
    pool-fp8 index-K store computes, done inside HF's own model."""
    with fp8_indexer():
        logits = hf_model(checkpoint)(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


FP32_EPS = torch.finfo(torch.float32).eps
TIE_GAP = 1.0  # boundary gap, in float32 roundings of its largest terms, under which a top-k pick is a tie (_topk_gaps)
GAP_ROWS = 256  # query rows per gap computation (bounds the [H, rows, T] scores)


def _topk_gaps(
    indexer, hidden, q_resid, position_embeddings, past_len: int, first_row: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """([S] gap between the k-th and (k+1)-th index score of each new query row in float32 roundings (eps x the
    magnitude of the terms summed into those scores, _score_magnitude; inf: row has <= k keys), [S, 2] the k-th and
    (k+1)-th keys), recomputed the way HF's `GlmMoeDsaIndexer.forward` scores (fp32), keys from HF's indexer cache +
    these rows. A gap relative to the score itself misses ties: the score is a weighted sum of ReLU'd dot products
    with weights of both signs, so it can be far smaller than the terms whose rounding decides it. Rows before
    `first_row` (of these S) only add their keys: gap inf, boundary -1 (the [rows, H, T] scores are the cost)."""
    import torch.nn.functional as F
    from transformers.models.glm_moe_dsa.modeling_glm_moe_dsa import apply_rotary_pos_emb_interleave

    b, s, _ = hidden.shape
    cos, sin = position_embeddings
    q = indexer.wq_b(q_resid).view(b, s, indexer.n_heads, indexer.head_dim)
    rope, rest = indexer.qk_rope_head_dim, indexer.head_dim - indexer.qk_rope_head_dim
    q_rot, q_pass = torch.split(q, [rope, rest], dim=-1)
    k = indexer.k_norm(indexer.wk(hidden)).unsqueeze(2)
    k_rot, k_pass = torch.split(k, [rope, rest], dim=-1)
    q_rot, k_rot = apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin, unsqueeze_dim=2)
    q = torch.cat([q_rot, q_pass], dim=-1)[0].float()  # [S, H, D]
    k_new = torch.cat([k_rot, k_pass], dim=-1)[0, :, 0].float()  # [S, D]
    keys = torch.cat([indexer._gap_keys, k_new]) if past_len else k_new  # [past + S, D]
    indexer._gap_keys = keys
    weights = indexer.weights_proj(hidden.to(indexer.weights_proj.weight.dtype))[0].float() * indexer.n_heads**-0.5
    gaps = torch.full((s,), float("inf"))
    boundary = torch.full((s, 2), -1, dtype=torch.long)
    for r0 in range(min(first_row, s), s, GAP_ROWS):
        rows = slice(r0, r0 + GAP_ROWS)
        scores = F.relu(torch.einsum("shd,td->sht", q[rows], keys) * indexer.softmax_scale)  # [r, H, T]
        index = torch.einsum("sh,sht->st", weights[rows], scores)  # [r, T]
        pos = past_len + torch.arange(r0, r0 + index.shape[0])
        index = index.masked_fill(torch.arange(keys.shape[0]) > pos[:, None], float("-inf"))
        top, top_keys = index.topk(min(indexer.index_topk + 1, keys.shape[0]), dim=-1)
        if top.shape[1] > indexer.index_topk:
            kth, next_ = top[:, -2], top[:, -1]
            boundary[rows] = top_keys[:, -2:]
            valid = pos >= indexer.index_topk  # more keys than k
            magnitude = _score_magnitude(q[rows], keys, weights[rows], top_keys[:, -2:]) * indexer.softmax_scale
            gap = (kth - next_) / (FP32_EPS * magnitude)
            gaps[rows] = torch.where(valid, gap, torch.full_like(gap, float("inf")))
    return gaps, boundary


def _score_magnitude(q: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
    """[r] the larger, over the row's two boundary keys `pair` [r, 2], of sum_h |w_h| sum_d |q_hd k_d| (unscaled): the
    size of the terms whose float32 rounding decides an index score (a difference of large terms may be small)."""
    k = keys[pair]  # [r, 2, D]
    terms = torch.einsum("rhd,rjd->rjh", q.abs(), k.abs())  # [r, 2, H]
    return (terms * weights.abs()[:, None]).sum(-1).amax(-1)


def _swap_boundary(indices: torch.Tensor, boundary: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[S, k] selected keys with, in each of `rows`, whichever of its two boundary keys (the k-th and (k+1)-th by
    score) is selected replaced by the other: the other way to break that row's tie."""
    out = indices.clone()
    for r in rows.tolist():
        a, b = boundary[r].tolist()
        has_a, has_b = out[r] == a, out[r] == b
        if has_a.any() != has_b.any():
            out[r] = torch.where(has_a, b, torch.where(has_b, a, out[r]))
    return out


@torch.no_grad()
def hf_chunked(
    checkpoint: Path, ids: list[int], max_new_tokens: int, chunk: int, logprob_from: int, swap_ties: bool = False
) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """Long prompts: HF's prefill fed `chunk` tokens at a time through its KV (and indexer-key) cache, so its dense
    [S, T] index scores fit in memory; the same per-row math as one forward. Returns the [len(ids) - logprob_from,
    vocab] next-token log-probabilities from position `logprob_from` on, the greedy continuation (argmax loop), and
    a [len(ids) - logprob_from] bool mask of the rows whose top-k boundary is a float32 tie (gap between the k-th
    and (k+1)-th index score < TIE_GAP roundings, _topk_gaps) in some layer: there the selected key set is not
    determined by the math, so no implementation can be held to HF's choice (gaps are computed for those rows only:
    at 16k the other rows' [rows, H, T] scores would double HF's indexer work). `swap_ties`: in every tied row of
    every layer (gaps of every row), HF's selection with the other boundary key (the tie broken the other way); other
    rows select as HF does."""
    model = hf_model(checkpoint)
    gaps: dict[int, list[torch.Tensor]] = {}
    handles = []
    for layer in model.model.layers:
        indexer = layer.self_attn.indexer

        def hook(module, args, kwargs, out):
            hidden, q_resid, position_embeddings = args[:3]
            past = getattr(module, "_gap_len", 0)
            first = 0 if swap_ties else max(logprob_from - past, 0)  # a swap pass swaps every layer's every tie
            gap, boundary = _topk_gaps(module, hidden, q_resid, position_embeddings, past, first)
            gaps.setdefault(module.layer_idx, []).append(gap)
            module._gap_len = past + hidden.shape[1]
            if swap_ties:  # [1, S, k]
                return _swap_boundary(out[0].long(), boundary, (gap < TIE_GAP).nonzero().flatten())[None].to(out.dtype)
            return None

        indexer._gap_len = 0
        handles.append(indexer.register_forward_hook(hook, with_kwargs=True))
    try:
        past, rows = None, []
        for start in range(0, len(ids), chunk):
            out = model(torch.tensor([ids[start : start + chunk]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            first = max(logprob_from - start, 0)
            if first < out.logits.shape[1]:
                rows.append(torch.log_softmax(out.logits[0, first:].float(), dim=-1))
    finally:
        for handle in handles:
            handle.remove()
        for layer in model.model.layers:
            layer.self_attn.indexer.__dict__.pop("_gap_keys", None)
    ties = torch.stack([torch.cat(g) for g in gaps.values()]).amin(0) < TIE_GAP  # [len(ids)]
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        new.append(token)
        out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(rows), new, ties[logprob_from:]
