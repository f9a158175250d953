from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from sglang_glm5.indexcache.plan import PLAN_KEYS, IndexCachePlanError, IndexerPlan, resolve_plan
from sglang_glm5.datafiles import read_json_object

CONFIG_FILE = "config.json"
SUPPORTED_FP8_FORMATS = ("e4m3",)
SUPPORTED_ACTIVATION_SCHEMES = ("dynamic",)
SUPPORTED_HIDDEN_ACTS = ("silu",)
SUPPORTED_SCORING_FUNCS = ("sigmoid",)
SUPPORTED_TOPK_METHODS = ("noaux_tc",)
DEFAULT_ROPE_TYPE = "default"


OVERRIDE_FLAG = "--json-model-override-args"


class OverrideArgsError(ValueError):
    pass


def parse_override_args(value: str) -> dict:
    """`--json-model-override-args` as the JSON object of config fields it must be; an error naming the flag otherwise
    (SGLang's bare json.loads ends start-up in a JSONDecodeError that never names it)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise OverrideArgsError(
            f"{OVERRIDE_FLAG} is not valid JSON: {err.msg} at character {err.pos} of {value!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise OverrideArgsError(
            f"{OVERRIDE_FLAG} must be a JSON object of config fields, got {type(parsed).__name__}: {value!r}"
        )
    return parsed


class Glm5ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Fp8BlockQuant:
    block_n: int
    block_k: int
    fmt: str = "e4m3"

    @property
    def block(self) -> tuple[int, int]:
        return (self.block_n, self.block_k)


@dataclass(frozen=True)
class _Field:
    kind: type
    group: str
    minimum: int | None = None
    positive: bool = False


# Field table: type, the part of the model it belongs to (named in errors), lower bound.
_REQUIRED: Mapping[str, _Field] = MappingProxyType(
    {
        "vocab_size": _Field(int, "embedding", minimum=1),
        "hidden_size": _Field(int, "model", minimum=1),
        "intermediate_size": _Field(int, "dense MLP", minimum=1),
        "moe_intermediate_size": _Field(int, "MoE", minimum=1),
        "num_hidden_layers": _Field(int, "model", minimum=1),
        "num_attention_heads": _Field(int, "MLA attention", minimum=1),
        "q_lora_rank": _Field(int, "MLA attention", minimum=1),
        "kv_lora_rank": _Field(int, "MLA attention", minimum=1),
        "qk_nope_head_dim": _Field(int, "MLA attention", minimum=1),
        "qk_rope_head_dim": _Field(int, "MLA attention", minimum=2),
        "v_head_dim": _Field(int, "MLA attention", minimum=1),
        "n_routed_experts": _Field(int, "MoE", minimum=1),
        "num_experts_per_tok": _Field(int, "MoE", minimum=1),
        "n_shared_experts": _Field(int, "MoE", minimum=0),
        "n_group": _Field(int, "MoE router", minimum=1),
        "topk_group": _Field(int, "MoE router", minimum=1),
        "norm_topk_prob": _Field(bool, "MoE router"),
        "routed_scaling_factor": _Field(float, "MoE router", positive=True),
        "first_k_dense_replace": _Field(int, "dense MLP", minimum=0),
        "rms_norm_eps": _Field(float, "norms", positive=True),
        "max_position_embeddings": _Field(int, "RoPE", minimum=1),
        "index_topk": _Field(int, "DSA indexer", minimum=1),
        "index_head_dim": _Field(int, "DSA indexer", minimum=1),
        "index_n_heads": _Field(int, "DSA indexer", minimum=1),
        # SGLang defaults a missing flag to NeoX halves, GLM-5 is interleaved: never guess it.
        "indexer_rope_interleave": _Field(bool, "DSA indexer"),
    }
)

# Optional fields and the GLM-5 value used when config.json omits them.
_OPTIONAL: Mapping[str, tuple[_Field, Any]] = MappingProxyType(
    {
        "rope_interleave": (_Field(bool, "RoPE"), True),
        "num_nextn_predict_layers": (_Field(int, "MTP", minimum=0), 0),
        "tie_word_embeddings": (_Field(bool, "embedding"), False),
        "hidden_act": (_Field(str, "MLP"), "silu"),
    }
)


@dataclass(frozen=True)
class Glm5Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    first_k_dense_replace: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    index_topk: int
    index_head_dim: int
    index_n_heads: int
    indexer_rope_interleave: bool
    rope_interleave: bool
    num_nextn_predict_layers: int
    tie_word_embeddings: bool
    hidden_act: str
    indexer_plan: IndexerPlan
    eos_token_ids: tuple[int, ...] = ()
    quant: Fp8BlockQuant | None = None

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        return self.qk_head_dim**-0.5

    @property
    def index_softmax_scale(self) -> float:
        return self.index_head_dim**-0.5

    @property
    def num_dense_layers(self) -> int:
        return self.first_k_dense_replace

    @property
    def mtp_layer_index(self) -> int:
        return self.num_hidden_layers

    @property
    def has_mtp(self) -> bool:
        return self.num_nextn_predict_layers > 0

    @property
    def num_layers_with_mtp(self) -> int:
        return self.num_hidden_layers + self.num_nextn_predict_layers

    def is_dense_layer(self, layer: int) -> bool:
        if not 0 <= layer < self.num_layers_with_mtp:
            raise ValueError(
                f"layer {layer} out of range: {self.num_hidden_layers} decoder layers"
                f" + {self.num_nextn_predict_layers} MTP"
            )
        return layer < self.first_k_dense_replace

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], source: str = CONFIG_FILE, overrides: Mapping[str, Any] | None = None
    ) -> Glm5Config:
        return _Parser(source).parse(d, overrides or {})

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> Glm5Config:
        path = Path(model_dir) / CONFIG_FILE
        return cls.from_dict(read_json_object(path, Glm5ConfigError), source=str(path), overrides=overrides)


_OVERRIDABLE = (
    frozenset(_REQUIRED)
    | frozenset(_OPTIONAL)
    | {
        "rope_theta",
        "rope_parameters",
        "rope_scaling",
        "eos_token_id",
        "quantization_config",
        "num_key_value_heads",
        "scoring_func",
        "topk_method",
        *PLAN_KEYS,
    }
)


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def error(self, msg: str) -> Glm5ConfigError:
        return Glm5ConfigError(f"{self.source}: {msg}")

    def parse(self, d: Mapping[str, Any], overrides: Mapping[str, Any]) -> Glm5Config:
        unknown = sorted(k for k in overrides if k not in _OVERRIDABLE)
        if unknown:
            raise self.error(f"unknown override field(s) {unknown}")
        written = d
        d = {**d, **overrides}
        if "rope_theta" in overrides and isinstance(d.get("rope_parameters"), Mapping):
            d["rope_parameters"] = {k: v for k, v in d["rope_parameters"].items() if k != "rope_theta"}
        values: dict[str, Any] = {}
        for name, spec in _REQUIRED.items():
            if name not in d or d[name] is None:
                raise self.error(f"missing field '{name}' ({spec.group})")
            values[name] = self.check(name, d[name], spec)
        for name, (spec, default) in _OPTIONAL.items():
            values[name] = default if d.get(name) is None else self.check(name, d[name], spec)
        values["rope_theta"] = self.rope_theta(d)
        values["eos_token_ids"] = self.eos_token_ids(d.get("eos_token_id"))
        values["quant"] = self.quant(d.get("quantization_config"))
        self.check_choices(d, values)
        self.check_consistency(d, values)
        values["indexer_plan"] = self.indexer_plan(written, overrides, values["num_hidden_layers"])
        return Glm5Config(**values)

    def indexer_plan(self, written: Mapping[str, Any], overrides: Mapping[str, Any], num_layers: int) -> IndexerPlan:
        try:
            return resolve_plan(written, overrides, num_layers, config_source=self.source)
        except IndexCachePlanError as err:
            raise Glm5ConfigError(str(err)) from err

    def check(self, name: str, value: Any, spec: _Field) -> Any:
        where = f"field '{name}' ({spec.group})"
        if spec.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif spec.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, spec.kind)
        if not ok:
            raise self.error(f"{where} must be {spec.kind.__name__}, got {value!r}")
        if spec.minimum is not None and value < spec.minimum:
            raise self.error(f"{where} must be >= {spec.minimum}, got {value}")
        if spec.positive and value <= 0:
            raise self.error(f"{where} must be > 0, got {value}")
        return float(value) if spec.kind is float else value

    def rope_theta(self, d: Mapping[str, Any]) -> float:
        params = d.get("rope_parameters") or {}
        if not isinstance(params, Mapping):
            raise self.error(f"field 'rope_parameters' (RoPE) must be an object, got {params!r}")
        scaling = d.get("rope_scaling")
        rope_type = params.get("rope_type", DEFAULT_ROPE_TYPE)
        if scaling or rope_type != DEFAULT_ROPE_TYPE:
            raise self.error(
                f"field 'rope_parameters' (RoPE): only rope_type '{DEFAULT_ROPE_TYPE}' without scaling"
                f" is supported, got rope_type={rope_type!r} rope_scaling={scaling!r}"
            )
        top, nested = d.get("rope_theta"), params.get("rope_theta")
        if top is None and nested is None:
            raise self.error("missing field 'rope_theta' (RoPE; top level or in rope_parameters)")
        if top is not None and nested is not None and float(top) != float(nested):
            raise self.error(f"field 'rope_theta' (RoPE) is {top} but rope_parameters.rope_theta is {nested}")
        return self.check("rope_theta", top if top is not None else nested, _Field(float, "RoPE", positive=True))

    def eos_token_ids(self, eos: Any) -> tuple[int, ...]:
        ids = [] if eos is None else [eos] if isinstance(eos, int) else eos
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise self.error(f"field 'eos_token_id' (generation) must be an id or a list of ids, got {eos!r}")
        return tuple(ids)

    def quant(self, qc: Any) -> Fp8BlockQuant | None:
        if qc is None:
            return None
        where = "field 'quantization_config'"
        if not isinstance(qc, Mapping):
            raise self.error(f"{where} must be an object, got {qc!r}")
        method = qc.get("quant_method")
        if method != "fp8":
            raise self.error(f"{where}: quant_method {method!r} is not supported (only 'fp8')")
        fmt = qc.get("fmt", SUPPORTED_FP8_FORMATS[0])
        if fmt not in SUPPORTED_FP8_FORMATS:
            raise self.error(f"{where}: fmt {fmt!r} is not supported (only {SUPPORTED_FP8_FORMATS})")
        scheme = qc.get("activation_scheme", SUPPORTED_ACTIVATION_SCHEMES[0])
        if scheme not in SUPPORTED_ACTIVATION_SCHEMES:
            raise self.error(
                f"{where}: activation_scheme {scheme!r} is not supported (only {SUPPORTED_ACTIVATION_SCHEMES})"
            )
        block = qc.get("weight_block_size")
        if (
            not isinstance(block, (list, tuple))
            or len(block) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
        ):
            raise self.error(f"{where}: weight_block_size must be two positive ints, got {block!r}")
        return Fp8BlockQuant(block_n=block[0], block_k=block[1], fmt=fmt)

    def check_choices(self, d: Mapping[str, Any], v: Mapping[str, Any]) -> None:
        choices = {
            "hidden_act": (v["hidden_act"], SUPPORTED_HIDDEN_ACTS),
            "scoring_func": (d.get("scoring_func", SUPPORTED_SCORING_FUNCS[0]), SUPPORTED_SCORING_FUNCS),
            "topk_method": (d.get("topk_method", SUPPORTED_TOPK_METHODS[0]), SUPPORTED_TOPK_METHODS),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise self.error(f"field '{name}' must be one of {allowed}, got {value!r}")

    def check_consistency(self, d: Mapping[str, Any], v: Mapping[str, Any]) -> None:
        kv_heads = d.get("num_key_value_heads")
        rules = [
            (
                v["qk_rope_head_dim"] % 2 == 0,
                f"field 'qk_rope_head_dim' (RoPE) must be even, got {v['qk_rope_head_dim']}",
            ),
            (
                v["index_head_dim"] >= v["qk_rope_head_dim"],
                f"field 'index_head_dim' ({v['index_head_dim']}) must be >= qk_rope_head_dim"
                f" ({v['qk_rope_head_dim']}): the indexer ropes its first qk_rope_head_dim dims",
            ),
            (
                v["first_k_dense_replace"] <= v["num_hidden_layers"],
                f"field 'first_k_dense_replace' ({v['first_k_dense_replace']}) must be <= num_hidden_layers"
                f" ({v['num_hidden_layers']})",
            ),
            (
                v["n_routed_experts"] % v["n_group"] == 0,
                f"field 'n_routed_experts' ({v['n_routed_experts']}) must be divisible by n_group ({v['n_group']})",
            ),
            (
                v["topk_group"] <= v["n_group"],
                f"field 'topk_group' ({v['topk_group']}) must be <= n_group ({v['n_group']})",
            ),
            (
                v["num_experts_per_tok"] <= v["topk_group"] * (v["n_routed_experts"] // v["n_group"]),
                f"field 'num_experts_per_tok' ({v['num_experts_per_tok']}) exceeds the experts in topk_group"
                f" groups ({v['topk_group']} x {v['n_routed_experts'] // v['n_group']})",
            ),
            (
                kv_heads is None or kv_heads == v["num_attention_heads"],
                f"field 'num_key_value_heads' ({kv_heads}) must equal num_attention_heads"
                f" ({v['num_attention_heads']}) for MLA",
            ),
        ]
        for ok, msg in rules:
            if not ok:
                raise self.error(msg)
