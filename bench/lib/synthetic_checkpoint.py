"""A GLM-5 checkpoint with the real per-tensor shapes but few layers and few routed experts, for load timing.

Tensor list from `sglang_glm5.checkpoint.tiny.tensor_specs` on a `Glm5Config` with GLM-5's real dimensions;
FP8 weights quantized by `quantize_fp8_blocks` with GLM-5-FP8's 128x128 blocks. Values are random (loading does
not look at them). Built once per spec into a cache dir and reused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from bench.lib.glm5 import glm5, glm5_json
from sglang_glm5.checkpoint.tiny import SAFETENSORS_METADATA, SCALE_SUFFIX, TensorSpec, tensor_specs, tiny_config_dict
from sglang_glm5.checkpoint.tokenizer import build_tokenizer, write_tokenizer
from sglang_glm5.config import Glm5Config
from sglang_glm5.quant import quantize_fp8_blocks

# GLM-5's real per-tensor dimensions, from configs/glm5-config.json (bench/lib/glm5.py).
_GLM5 = glm5()
_DIM_FIELDS = (
    "hidden_size", "intermediate_size", "moe_intermediate_size", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim", "n_shared_experts",
    "n_group", "topk_group", "routed_scaling_factor",
)
GLM5_DIMS = MappingProxyType(
    {"num_key_value_heads": glm5_json()["num_key_value_heads"], **{k: getattr(_GLM5, k) for k in _DIM_FIELDS}}
)
GLM5_VOCAB = _GLM5.vocab_size
GLM5_INDEX_TOPK = _GLM5.index_topk
GLM5_EXPERTS_PER_TOK = _GLM5.num_experts_per_tok
GLM5_FP8_BLOCK = _GLM5.quant.block
GLM5_LAYERS = _GLM5.num_hidden_layers
GLM5_DENSE_LAYERS = _GLM5.first_k_dense_replace
GLM5_ROUTED_EXPERTS = _GLM5.n_routed_experts
MAX_POSITIONS = 4096  # not a tensor shape; keeps SGLang's RoPE cache and context defaults small

BYTES = {torch.bfloat16: 2, torch.float32: 4, torch.float8_e4m3fn: 1}
COMPLETE_MARKER = ".complete.json"
INDEX_FILE = "model.safetensors.index.json"
NORM_NOISE = 0.1
SEED_BYTES = 8


@dataclass(frozen=True)
class SyntheticSpec:
    dtype: str = "bf16"  # "bf16" | "fp8"
    num_layers: int = 2
    dense_layers: int = 1
    experts: int = 8
    vocab: int = GLM5_VOCAB
    shards: int = 8
    seed: int = 0
    dims: tuple[tuple[str, int | float], ...] = ()  # overrides of GLM5_DIMS (tests: tiny widths); () = real shapes

    @property
    def name(self) -> str:
        custom = f"-dims{hashlib.sha256(repr(self.dims).encode()).hexdigest()[:8]}" if self.dims else ""
        return (
            f"glm5-{'custom' if self.dims else 'real'}-shapes-{self.dtype}-L{self.num_layers}d{self.dense_layers}"
            f"-E{self.experts}-V{self.vocab}-S{self.shards}-seed{self.seed}{custom}"
        )


def config_dict(spec: SyntheticSpec) -> dict:
    config = tiny_config_dict(build_tokenizer(), spec.num_layers, GLM5_INDEX_TOPK, "bf16")
    config.update(GLM5_DIMS)
    config.update(dict(spec.dims))
    config.update(
        {
            "vocab_size": spec.vocab,
            "n_routed_experts": spec.experts,
            "num_experts_per_tok": min(GLM5_EXPERTS_PER_TOK, spec.experts),
            "first_k_dense_replace": spec.dense_layers,
            "num_nextn_predict_layers": 0,  # the MTP layer is the draft model's, skipped by the target's loader
            "max_position_embeddings": MAX_POSITIONS,
        }
    )
    config["head_dim"] = config["qk_rope_head_dim"]
    config["qk_head_dim"] = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
    if spec.dtype == "fp8":
        config["quantization_config"] = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": list(GLM5_FP8_BLOCK),
        }
    return dict(sorted(config.items()))


def glm5_config(spec: SyntheticSpec) -> Glm5Config:
    return Glm5Config.from_dict(config_dict(spec), source=f"<synthetic {spec.name}>")


def stored_tensors(t: TensorSpec, dtype: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of what the checkpoint stores for one TensorSpec."""
    if dtype == "fp8" and t.fp8:
        grid = tuple(-(-d // b) for d, b in zip(t.shape, GLM5_FP8_BLOCK))
        return {t.name: (t.shape, torch.float8_e4m3fn), t.name + SCALE_SUFFIX: (grid, torch.float32)}
    return {t.name: (t.shape, torch.float32 if t.kind == "correction_bias" else torch.bfloat16)}


def expected_tensors(spec: SyntheticSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for t in tensor_specs(glm5_config(spec)):
        out.update(stored_tensors(t, spec.dtype))
    return out


def unit_bytes(t: TensorSpec, dtype: str) -> int:
    return sum(math.prod(shape) * BYTES[dt] for shape, dt in stored_tensors(t, dtype).values())


def plan_shards(sizes: list[int], shards: int) -> list[int]:
    """Shard index per unit, in order: a unit opens a new shard when it would overfill the current one by more than
    half its size (units are never split, so a unit bigger than total/shards gets a shard of its own)."""
    target = sum(sizes) / shards
    out, current, filled = [], 0, 0
    for size in sizes:
        if filled > 0 and filled + size / 2 > target and current < shards - 1:
            current, filled = current + 1, 0
        out.append(current)
        filled += size
    return out


def _generator(seed: int, name: str) -> torch.Generator:
    # Per-tensor seeds: a tensor's values depend only on (seed, name), never on shard layout.
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:SEED_BYTES], "little"))


def materialize(t: TensorSpec, seed: int, dtype: str) -> dict[str, torch.Tensor]:
    g = _generator(seed, t.name)
    if t.kind == "correction_bias":
        return {t.name: torch.zeros(t.shape, dtype=torch.float32).normal_(0, 0.01, generator=g)}
    w = torch.empty(t.shape, dtype=torch.bfloat16)
    if t.kind == "linear":
        w.normal_(0, t.gain / math.sqrt(t.shape[1]), generator=g)
    elif t.kind == "norm":
        w.normal_(1.0, NORM_NOISE, generator=g)
    else:
        w.normal_(0, 1.0 if t.kind == "embed" else NORM_NOISE, generator=g)
    if dtype == "fp8" and t.fp8:
        w_fp8, scale_inv = quantize_fp8_blocks(w, GLM5_FP8_BLOCK)
        return {t.name: w_fp8, t.name + SCALE_SUFFIX: scale_inv}
    return {t.name: w}


def shard_name(i: int, n: int) -> str:
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def write_checkpoint(spec: SyntheticSpec, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    for stale in out_dir.glob("model-*.safetensors"):
        stale.unlink()
    config = config_dict(spec)
    specs = tensor_specs(Glm5Config.from_dict(config, source=str(out_dir / "config.json")))
    sizes = [unit_bytes(t, spec.dtype) for t in specs]
    shard_of = plan_shards(sizes, spec.shards)
    n = shard_of[-1] + 1
    weight_map: dict[str, str] = {}
    with tqdm(total=sum(sizes), desc=f"writing {spec.name}", unit="B", unit_scale=True) as bar:
        for s in range(n):
            tensors: dict[str, torch.Tensor] = {}
            for t, size, si in zip(specs, sizes, shard_of):
                if si == s:
                    tensors.update(materialize(t, spec.seed, spec.dtype))
                    bar.update(size)
            save_file(tensors, str(out_dir / shard_name(s, n)), metadata=dict(SAFETENSORS_METADATA))
            weight_map.update(dict.fromkeys(tensors, shard_name(s, n)))
            del tensors
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok = build_tokenizer()
    write_tokenizer(out_dir, tok, MAX_POSITIONS)
    (out_dir / COMPLETE_MARKER).write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out_dir


def _as_json(spec: SyntheticSpec) -> dict:
    return json.loads(json.dumps(asdict(spec)))


def cached_checkpoint(spec: SyntheticSpec, cache_root: Path) -> Path:
    """The checkpoint for `spec` under `cache_root`, written only if no complete copy is there."""
    out = cache_root / spec.name
    marker = out / COMPLETE_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == _as_json(spec):
        return out
    return write_checkpoint(spec, out)


def checkpoint_files(ckpt: Path) -> list[Path]:
    return sorted(ckpt.glob("model-*.safetensors"))


def checkpoint_bytes(ckpt: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint_files(ckpt))


def full_glm5(spec: SyntheticSpec) -> SyntheticSpec:
    """The same dtype at GLM-5's full size (78 layers, 3 dense, 256 routed experts, real vocab)."""
    return replace(
        spec, num_layers=GLM5_LAYERS, dense_layers=GLM5_DENSE_LAYERS, experts=GLM5_ROUTED_EXPERTS, vocab=GLM5_VOCAB,
        dims=(),
    )


def real_model_bytes(spec: SyntheticSpec) -> int:
    return sum(unit_bytes(t, spec.dtype) for t in tensor_specs(glm5_config(full_glm5(spec))))


def fp8_byte_share(spec: SyntheticSpec, full: bool = False) -> float:
    """Share of checkpoint bytes in FP8-quantized weights (+ their scales): the part dequantized on CPU."""
    s = full_glm5(spec) if full else spec
    units = [(t, unit_bytes(t, s.dtype)) for t in tensor_specs(glm5_config(s))]
    quantized = sum(n for t, n in units if t.fp8) if s.dtype == "fp8" else 0
    return quantized / sum(n for _, n in units)
