from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from sglang_glm5.checkpoint.archs import DEFAULT_ARCH, TinyArch, get_arch
from sglang_glm5.checkpoint.schema import INDEX_FILE, SCALE_SUFFIX, TensorSpec, tensor_specs
from sglang_glm5.checkpoint.tokenizer import TinyTokenizer, build_tokenizer, write_tokenizer
from sglang_glm5.config import Glm5Config
from sglang_glm5.quant import quantize_fp8_blocks

DTYPES = ("bf16", "fp8")
VOCAB_MULTIPLE = 64
MIN_LAYERS = 2  # SGLang reads the MTP layer from index 0 when num_hidden_layers == 1
SAFETENSORS_METADATA = MappingProxyType({"format": "pt"})
SHARD_GLOB = "model-*-of-*.safetensors"
FILE_MODE = 0o644  # safetensors creates shards 0600; match the other files

# Init scales, chosen so the residual stream stays O(1) over a few layers and greedy logits are well separated.
EMBED_STD = 1.0
NORM_NOISE = 0.1
NORM_BIAS_NOISE = 0.1
CORRECTION_BIAS_NOISE = 0.01
SEED_BYTES = 8

def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def tiny_config_dict(
    tok: TinyTokenizer, num_layers: int, index_topk: int, dtype: str, arch: TinyArch | str = DEFAULT_ARCH
) -> dict:
    a = get_arch(arch) if isinstance(arch, str) else arch
    dims = {k: v for k, v in a.dims.items() if k not in ("index_topk", "rope_theta")}
    config = {
        "architectures": ["GlmMoeDsaForCausalLM"],
        "model_type": "glm_moe_dsa",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "eos_token_id": tok.eos_token_ids,
        "pad_token_id": tok.pad_token_id,
        "head_dim": dims["qk_rope_head_dim"],
        "hidden_act": "silu",
        "index_topk": index_topk,
        "initializer_range": 0.02,
        "moe_layer_freq": 1,
        "num_hidden_layers": num_layers,
        "qk_head_dim": dims["qk_nope_head_dim"] + dims["qk_rope_head_dim"],
        "rope_parameters": {"rope_theta": a.dims["rope_theta"], "rope_type": "default"},
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": _round_up(len(tok), VOCAB_MULTIPLE),
        **dims,
    }
    if dtype == "fp8":
        config["quantization_config"] = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": list(a.fp8_block),
            "note": a.fp8_block_note,
        }
    return dict(sorted(config.items()))


def _generator(seed: int, name: str) -> torch.Generator:
    # Per-tensor seeds: a tensor's values depend only on (seed, name), never on write order.
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:SEED_BYTES], "little"))


def init_tensor(spec: TensorSpec, seed: int) -> torch.Tensor:
    noise = torch.randn(spec.shape, generator=_generator(seed, spec.name), dtype=torch.float32)
    if spec.kind == "embed":
        return (noise * EMBED_STD).to(torch.bfloat16)
    if spec.kind == "linear":
        return (noise * (spec.gain / math.sqrt(spec.shape[1]))).to(torch.bfloat16)
    if spec.kind == "norm":
        return (1.0 + NORM_NOISE * noise).to(torch.bfloat16)
    if spec.kind == "norm_bias":
        return (NORM_BIAS_NOISE * noise).to(torch.bfloat16)
    if spec.kind == "correction_bias":
        return CORRECTION_BIAS_NOISE * noise  # fp32, like GLM-5
    raise ValueError(f"unknown init kind {spec.kind!r} for {spec.name}")


def _materialize(spec: TensorSpec, seed: int, dtype: str, block: tuple[int, int]) -> dict[str, torch.Tensor]:
    w = init_tensor(spec, seed)
    if dtype == "fp8" and spec.fp8:
        w_fp8, scale_inv = quantize_fp8_blocks(w, block)
        return {spec.name: w_fp8, spec.name + SCALE_SUFFIX: scale_inv}
    return {spec.name: w}


def _shard_of_units(unit_bytes: list[int], shards: int) -> list[int]:
    total, cum, out = sum(unit_bytes), 0, []
    for j, nbytes in enumerate(unit_bytes):
        ideal = cum * shards // total
        if out:
            # Never skip a shard, never go back, and leave one unit for every later shard.
            out.append(max(out[-1], min(out[-1] + 1, max(ideal, shards - (len(unit_bytes) - j)))))
        else:
            out.append(0)
        cum += nbytes
    return out


def _shard_name(i: int, shards: int) -> str:
    return f"model-{i + 1:05d}-of-{shards:05d}.safetensors"


def _check_args(dtype: str, seed: int, num_layers: int, index_topk: int, shards: int) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    for name, value, minimum in (
        ("seed", seed, 0),
        ("num_layers", num_layers, MIN_LAYERS),
        ("index_topk", index_topk, 1),
        ("shards", shards, 1),
    ):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def write_tiny_checkpoint(
    out_dir: str | Path,
    dtype: str = "bf16",
    seed: int = 0,
    num_layers: int | None = None,
    index_topk: int | None = None,
    shards: int = 3,
    arch: str = DEFAULT_ARCH,
) -> Path:
    """`num_layers` / `index_topk` None: the arch's (configs/tiny-archs.json)."""
    a = get_arch(arch)
    num_layers = a.num_layers if num_layers is None else num_layers
    index_topk = a.index_topk if index_topk is None else index_topk
    _check_args(dtype, seed, num_layers, index_topk, shards)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(SHARD_GLOB):
        stale.unlink()
    tok = build_tokenizer()
    config = tiny_config_dict(tok, num_layers, index_topk, dtype, a)
    cfg = Glm5Config.from_dict(config, source=str(out / "config.json"))

    specs = tensor_specs(cfg)
    if shards > len(specs):
        raise ValueError(f"shards ({shards}) exceeds the number of weights ({len(specs)})")
    units = [
        _materialize(s, seed, dtype, a.fp8_block)
        for s in tqdm(specs, desc=f"{a.name} GLM-5 {dtype} init", unit="tensor")
    ]
    unit_bytes = [sum(t.numel() * t.element_size() for t in u.values()) for u in units]
    shard_of = _shard_of_units(unit_bytes, shards)

    weight_map: dict[str, str] = {}
    for s in tqdm(range(shards), desc=f"writing {out.name}", unit="shard"):
        tensors = {k: v for u, si in zip(units, shard_of) if si == s for k, v in u.items()}
        path = out / _shard_name(s, shards)
        save_file(tensors, str(path), metadata=dict(SAFETENSORS_METADATA))
        path.chmod(FILE_MODE)
        weight_map.update(dict.fromkeys(tensors, _shard_name(s, shards)))
    index = {"metadata": {"total_size": sum(unit_bytes)}, "weight_map": dict(sorted(weight_map.items()))}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "do_sample": True,
        "eos_token_id": tok.eos_token_ids,
        "pad_token_id": tok.pad_token_id,
        "temperature": 1.0,
        "top_p": 0.95,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_tokenizer(out, tok, cfg.max_position_embeddings)
    return out
