"""`configs/memory-layout.json`: bytes per weight, FP8 block scale, KV-cache and indexer-key layouts, TP sharding."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sglang_glm5.config import Glm5Config
from sglang_glm5.presets.catalog import freeze
from sglang_glm5.presets.files import PresetError, field, read_json

LAYOUT_FILE = "memory-layout.json"
SPLITS = ("tp", "attention_tp", "moe_tp", "replicated")


@dataclass(frozen=True)
class CacheLayout:
    value_bytes: int  # the latent (MLA) or key (indexer) element
    rope_bytes: int
    scale_group: int | None
    scale_bytes: int

    def bytes_per_token(self, values: int, rope_values: int = 0) -> int:
        scales = math.ceil(values / self.scale_group) * self.scale_bytes if self.scale_group else 0
        return values * self.value_bytes + scales + rope_values * self.rope_bytes


@dataclass(frozen=True)
class ShardRule:
    pattern: re.Pattern
    split: str
    label: str


@dataclass(frozen=True)
class MemoryLayout:
    weight_bytes: Mapping[str, int]
    fp8_block_scale_bytes: int
    kv_cache: Mapping[str, CacheLayout]
    indexer_key_dtype_bytes: Mapping[str, int]  # the model-dtype index-K store's element, by model dtype
    sglang_index_k_pool: CacheLayout  # SGLang's DSA pool FP8 index-K buffer (the pool-fp8 store's keys)
    indexer_logits_budget_mib: float
    default_chunked_prefill_size: int
    sharding: tuple[ShardRule, ...]

    def rule_for(self, tensor: str) -> ShardRule:
        return next(rule for rule in self.sharding if rule.pattern.search(tensor))

    def kv_bytes_per_token_layer(self, cfg: Glm5Config, kv_cache_dtype: str) -> int:
        return self.kv_layout(kv_cache_dtype).bytes_per_token(cfg.kv_lora_rank, cfg.qk_rope_head_dim)

    def indexer_key_bytes_per_token_layer(self, cfg: Glm5Config, model_dtype: str) -> int:
        if model_dtype not in self.indexer_key_dtype_bytes:
            raise PresetError(
                f"model dtype '{model_dtype}' has no indexer_key_cache.dtype_bytes in {LAYOUT_FILE}:"
                f" use one of {list(self.indexer_key_dtype_bytes)}"
            )
        return cfg.index_head_dim * self.indexer_key_dtype_bytes[model_dtype]

    def sglang_index_k_bytes_per_token_layer(self, cfg: Glm5Config) -> int:
        return self.sglang_index_k_pool.bytes_per_token(cfg.index_head_dim)

    def kv_layout(self, kv_cache_dtype: str) -> CacheLayout:
        if kv_cache_dtype not in self.kv_cache:
            raise PresetError(f"kv-cache dtype '{kv_cache_dtype}' has no layout in {LAYOUT_FILE}: use one of {list(self.kv_cache)}")
        return self.kv_cache[kv_cache_dtype]


def load_layout(root: Path) -> MemoryLayout:
    path = root / LAYOUT_FILE
    d = read_json(path)
    where = str(path)
    kv = field(d, "kv_cache", dict, where)
    kv_layouts = {name: _cache(v, f"{where}: kv_cache.{name}", "latent_bytes") for name, v in kv.items() if name != "about"}
    rules = []
    for i, rule in enumerate(field(field(d, "sharding", dict, where), "rules", list, f"{where}: sharding")):
        at = f"{where}: sharding.rules[{i}]"
        split = field(rule, "split", str, at)
        if split not in SPLITS:
            raise PresetError(f"{at}: split '{split}' is not one of {SPLITS}")
        try:
            pattern = re.compile(field(rule, "pattern", str, at))
        except re.error as e:
            raise PresetError(f"{at}: bad pattern: {e}") from None
        rules.append(ShardRule(pattern, split, field(rule, "label", str, at)))
    workspace = field(d, "indexer_workspace", dict, where)
    if field(workspace, "logits_budget_mib", (int, float), f"{where}: indexer_workspace") <= 0:
        raise PresetError(f"{where}: indexer_workspace.logits_budget_mib must be > 0, got {workspace['logits_budget_mib']}")
    if not rules or rules[-1].pattern.pattern:
        raise PresetError(f"{where}: sharding.rules must end with a catch-all rule (pattern \"\")")
    return MemoryLayout(
        freeze(field(d, "weight_bytes", dict, where)),
        field(d, "fp8_block_scale_bytes", int, where),
        freeze(kv_layouts),
        freeze(field(field(d, "indexer_key_cache", dict, where), "dtype_bytes", dict, f"{where}: indexer_key_cache")),
        _cache(field(d, "sglang_index_k_pool", dict, where), f"{where}: sglang_index_k_pool", "key_bytes"),
        field(workspace, "logits_budget_mib", (int, float), f"{where}: indexer_workspace"),
        field(workspace, "default_chunked_prefill_size", int, f"{where}: indexer_workspace"),
        tuple(rules),
    )


def _cache(d: Mapping, where: str, value_field: str) -> CacheLayout:
    return CacheLayout(
        field(d, value_field, int, where),
        d.get("rope_bytes", 0),
        field(d, "scale_group", (int, type(None)), where),
        field(d, "scale_bytes", int, where),
    )
