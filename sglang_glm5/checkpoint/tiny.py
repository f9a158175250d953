from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from sglang_glm5.checkpoint.tokenizer import TinyTokenizer, build_tokenizer, write_tokenizer
from sglang_glm5.config import Glm5Config
from sglang_glm5.quant import quantize_fp8_blocks

DTYPES = ("bf16", "fp8")
VOCAB_MULTIPLE = 64
MIN_LAYERS = 2  # SGLang reads the MTP layer from index 0 when num_hidden_layers == 1
FP8_BLOCK = (32, 32)
SCALE_SUFFIX = "_scale_inv"
SAFETENSORS_METADATA = MappingProxyType({"format": "pt"})
INDEX_FILE = "model.safetensors.index.json"
SHARD_GLOB = "model-*-of-*.safetensors"
FILE_MODE = 0o644  # safetensors creates shards 0600; match the other files

# Init scales, chosen so the residual stream stays O(1) over a few layers and greedy logits are well separated.
EMBED_STD = 1.0
IN_PROJ_GAIN = 1.0  # projections reading normalized activations: unit-variance outputs
OUT_PROJ_GAIN = 0.5  # projections writing into the residual stream
LM_HEAD_GAIN = 4.0  # logit std ~4: top-1 vs top-2 gaps ~1 over a 1k vocab
NORM_NOISE = 0.1
NORM_BIAS_NOISE = 0.1
CORRECTION_BIAS_NOISE = 0.01
SEED_BYTES = 8

TINY_ARCH = MappingProxyType(
    {
        "hidden_size": 128,
        "intermediate_size": 256,
        "moe_intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 96,
        "kv_lora_rank": 64,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16,
        "v_head_dim": 32,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 1,
        "index_head_dim": 128,  # SGLang's DSA index-K pool asserts 128
        "index_n_heads": 16,  # many heads so exact ReLU-zero ties in index scores are improbable
        "indexer_rope_interleave": True,
        "rope_interleave": True,
        "max_position_embeddings": 4096,
        "num_nextn_predict_layers": 1,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    }
)
TINY_ROPE_THETA = 1e6
FP8_BLOCK_NOTE = (
    "weight_block_size is 32x32 because the tiny dims are small; GLM-5-FP8 uses 128x128."
    " kv_a_proj_with_mqa (kv_lora_rank + qk_rope_head_dim = 80 rows) has a ragged last block, as 576 rows do at 128."
)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "embed" | "linear" | "norm" | "norm_bias" | "correction_bias"
    gain: float = IN_PROJ_GAIN
    fp8: bool = False


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def tiny_config_dict(tok: TinyTokenizer, num_layers: int, index_topk: int, dtype: str) -> dict:
    a = TINY_ARCH
    config = {
        "architectures": ["GlmMoeDsaForCausalLM"],
        "model_type": "glm_moe_dsa",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "eos_token_id": tok.eos_token_ids,
        "pad_token_id": tok.pad_token_id,
        "head_dim": a["qk_rope_head_dim"],
        "hidden_act": "silu",
        "index_topk": index_topk,
        "initializer_range": 0.02,
        "moe_layer_freq": 1,
        "num_hidden_layers": num_layers,
        "qk_head_dim": a["qk_nope_head_dim"] + a["qk_rope_head_dim"],
        "rope_parameters": {"rope_theta": TINY_ROPE_THETA, "rope_type": "default"},
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": _round_up(len(tok), VOCAB_MULTIPLE),
        **a,
    }
    if dtype == "fp8":
        config["quantization_config"] = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": list(FP8_BLOCK),
            "note": FP8_BLOCK_NOTE,
        }
    return dict(sorted(config.items()))


def _linear(name: str, out_dim: int, in_dim: int, gain: float = IN_PROJ_GAIN, fp8: bool = True) -> TensorSpec:
    return TensorSpec(f"{name}.weight", (out_dim, in_dim), "linear", gain, fp8)


def _norm(name: str, dim: int) -> TensorSpec:
    return TensorSpec(f"{name}.weight", (dim,), "norm")


def _mlp(prefix: str, hidden: int, inter: int, out_gain: float = OUT_PROJ_GAIN) -> list[TensorSpec]:
    return [
        _linear(f"{prefix}.gate_proj", inter, hidden),
        _linear(f"{prefix}.up_proj", inter, hidden),
        _linear(f"{prefix}.down_proj", hidden, inter, out_gain),
    ]


def _decoder_layer(cfg: Glm5Config, i: int) -> list[TensorSpec]:
    p = f"model.layers.{i}"
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    specs = [
        _norm(f"{p}.input_layernorm", h),
        _norm(f"{p}.post_attention_layernorm", h),
        _linear(f"{p}.self_attn.q_a_proj", cfg.q_lora_rank, h),
        _norm(f"{p}.self_attn.q_a_layernorm", cfg.q_lora_rank),
        _linear(f"{p}.self_attn.q_b_proj", heads * cfg.qk_head_dim, cfg.q_lora_rank),
        _linear(f"{p}.self_attn.kv_a_proj_with_mqa", cfg.kv_lora_rank + cfg.qk_rope_head_dim, h),
        _norm(f"{p}.self_attn.kv_a_layernorm", cfg.kv_lora_rank),
        _linear(f"{p}.self_attn.kv_b_proj", heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank),
        _linear(f"{p}.self_attn.o_proj", h, heads * cfg.v_head_dim, OUT_PROJ_GAIN),
        _linear(f"{p}.self_attn.indexer.wq_b", cfg.index_n_heads * cfg.index_head_dim, cfg.q_lora_rank),
        _linear(f"{p}.self_attn.indexer.wk", cfg.index_head_dim, h),
        TensorSpec(f"{p}.self_attn.indexer.k_norm.weight", (cfg.index_head_dim,), "norm"),
        TensorSpec(f"{p}.self_attn.indexer.k_norm.bias", (cfg.index_head_dim,), "norm_bias"),
        _linear(f"{p}.self_attn.indexer.weights_proj", cfg.index_n_heads, h, fp8=False),
    ]
    if cfg.is_dense_layer(i):
        return specs + _mlp(f"{p}.mlp", h, cfg.intermediate_size)
    specs += [
        _linear(f"{p}.mlp.gate", cfg.n_routed_experts, h, fp8=False),
        TensorSpec(f"{p}.mlp.gate.e_score_correction_bias", (cfg.n_routed_experts,), "correction_bias"),
    ]
    # Undo routed_scaling_factor so a routing flip moves the residual no more than any other write.
    expert_gain = OUT_PROJ_GAIN / cfg.routed_scaling_factor
    for e in range(cfg.n_routed_experts):
        specs += _mlp(f"{p}.mlp.experts.{e}", h, cfg.moe_intermediate_size, expert_gain)
    return specs + _mlp(f"{p}.mlp.shared_experts", h, cfg.moe_intermediate_size * cfg.n_shared_experts)


def _mtp_layer(cfg: Glm5Config) -> list[TensorSpec]:
    i, h = cfg.mtp_layer_index, cfg.hidden_size
    p = f"model.layers.{i}"
    return [
        _norm(f"{p}.enorm", h),
        _norm(f"{p}.hnorm", h),
        _linear(f"{p}.eh_proj", h, 2 * h),
        _norm(f"{p}.shared_head.norm", h),
        *_decoder_layer(cfg, i),
    ]


def tensor_specs(cfg: Glm5Config) -> list[TensorSpec]:
    specs = [TensorSpec("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size), "embed")]
    for i in range(cfg.num_hidden_layers):
        specs += _decoder_layer(cfg, i)
    if cfg.has_mtp:
        specs += _mtp_layer(cfg)
    specs += [
        _norm("model.norm", cfg.hidden_size),
        _linear("lm_head", cfg.vocab_size, cfg.hidden_size, LM_HEAD_GAIN, fp8=False),
    ]
    return specs


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


def _materialize(spec: TensorSpec, seed: int, dtype: str) -> dict[str, torch.Tensor]:
    w = init_tensor(spec, seed)
    if dtype == "fp8" and spec.fp8:
        w_fp8, scale_inv = quantize_fp8_blocks(w, FP8_BLOCK)
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
    out_dir: str | Path, dtype: str = "bf16", seed: int = 0, num_layers: int = 4, index_topk: int = 16, shards: int = 3
) -> Path:
    _check_args(dtype, seed, num_layers, index_topk, shards)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(SHARD_GLOB):
        stale.unlink()
    tok = build_tokenizer()
    config = tiny_config_dict(tok, num_layers, index_topk, dtype)
    cfg = Glm5Config.from_dict(config, source=str(out / "config.json"))

    specs = tensor_specs(cfg)
    if shards > len(specs):
        raise ValueError(f"shards ({shards}) exceeds the number of weights ({len(specs)})")
    units = [_materialize(s, seed, dtype) for s in tqdm(specs, desc=f"tiny GLM-5 {dtype} init", unit="tensor")]
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
