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
        from sglang_glm5.ops.dsa_reference import quantize_fp8_rows

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


@torch.no_grad()
def hf_chunked(
    checkpoint: Path, ids: list[int], max_new_tokens: int, chunk: int, logprob_from: int
) -> tuple[torch.Tensor, list[int]]:
    """Long prompts: HF's prefill fed `chunk` tokens at a time through its KV (and indexer-key) cache, so its dense
    [S, T] index scores fit in memory; the same per-row math as one forward. Returns the [len(ids) - logprob_from,
    vocab] next-token log-probabilities from position `logprob_from` on, and the greedy continuation (argmax loop)."""
    model = hf_model(checkpoint)
    past, rows = None, []
    for start in range(0, len(ids), chunk):
        out = model(torch.tensor([ids[start : start + chunk]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        first = max(logprob_from - start, 0)
        if first < out.logits.shape[1]:
            rows.append(torch.log_softmax(out.logits[0, first:].float(), dim=-1))
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        new.append(token)
        out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(rows), new
