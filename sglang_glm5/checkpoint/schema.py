"""GLM-5's checkpoint layout as data: every tensor name, shape and kind for a `Glm5Config`.

The tiny checkpoint writer and the load-time validator both read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sglang_glm5.config import Glm5Config

INDEX_FILE = "model.safetensors.index.json"
SCALE_SUFFIX = "_scale_inv"  # FP8: `<module>.weight_scale_inv` beside `<module>.weight`

# Init gains of the tiny writer, kept with the layout because they are per-tensor-role.
IN_PROJ_GAIN = 1.0  # projections reading normalized activations: unit-variance outputs
OUT_PROJ_GAIN = 0.5  # projections writing into the residual stream
LM_HEAD_GAIN = 4.0  # logit std ~4: top-1 vs top-2 gaps ~1 over a 1k vocab


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "embed" | "linear" | "norm" | "norm_bias" | "correction_bias"
    gain: float = IN_PROJ_GAIN
    fp8: bool = False


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


def mtp_tensor_specs(cfg: Glm5Config) -> list[TensorSpec]:
    """The MTP layer's tensors (EAGLE's draft); none when config.json has num_nextn_predict_layers = 0."""
    return _mtp_layer(cfg) if cfg.has_mtp else []


def tensor_specs(cfg: Glm5Config) -> list[TensorSpec]:
    specs = [TensorSpec("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size), "embed")]
    for i in range(cfg.num_hidden_layers):
        specs += _decoder_layer(cfg, i)
    specs += mtp_tensor_specs(cfg)
    specs += [
        _norm("model.norm", cfg.hidden_size),
        _linear("lm_head", cfg.vocab_size, cfg.hidden_size, LM_HEAD_GAIN, fp8=False),
    ]
    return specs
