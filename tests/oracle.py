"""HF transformers' `GlmMoeDsaForCausalLM` as the independent oracle, in float32 on CPU."""

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
