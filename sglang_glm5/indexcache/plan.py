"""The per-layer IndexCache plan: resolved from the override args and config.json, validated before any weight loads.

"F" layers run their own indexer; "S" layers reuse the top-k of the nearest preceding F layer (arXiv 2603.12201).
The MTP layer (index num_hidden_layers) is never part of a pattern: it always runs its own indexer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FULL, SHARED = "F", "S"
PATTERN_KEY = "index_topk_pattern"
TYPES_KEY = "indexer_types"
FREQ_KEY = "index_topk_freq"
OFFSET_KEY = "index_skip_topk_offset"
PLAN_KEYS = (PATTERN_KEY, TYPES_KEY, FREQ_KEY, OFFSET_KEY)
HF_TYPES = {"full": FULL, "shared": SHARED}  # transformers' `indexer_types` names
DEFAULT_FREQ = 1  # transformers' GlmMoeDsaConfig defaults: every layer runs its indexer
DEFAULT_OFFSET = 2


class IndexCachePlanError(ValueError):
    pass


@dataclass(frozen=True)
class IndexerPlan:
    pattern: str  # one "F"/"S" per decoder layer
    source: str  # where it came from, for the start-up log

    def __post_init__(self):
        check_pattern(self.pattern, len(self.pattern), self.source)

    @classmethod
    def all_full(cls, num_layers: int, source: str = "default: every layer runs its indexer") -> IndexerPlan:
        return cls(FULL * num_layers, source)

    @property
    def num_layers(self) -> int:
        return len(self.pattern)

    @property
    def num_full(self) -> int:
        return self.pattern.count(FULL)

    @property
    def num_shared(self) -> int:
        return self.pattern.count(SHARED)

    @property
    def indexer_types(self) -> list[str]:
        names = {v: k for k, v in HF_TYPES.items()}
        return [names[c] for c in self.pattern]

    def runs_indexer(self, layer: int) -> bool:
        if layer < 0:
            raise IndexError(f"layer {layer} is negative")
        return layer >= self.num_layers or self.pattern[layer] == FULL  # >= num_layers: the MTP layer

    def source_layer(self, layer: int) -> int:
        """The layer whose indexer produces the top-k that `layer` attends with."""
        if layer >= self.num_layers:
            return layer
        return self.pattern.rindex(FULL, 0, layer + 1)

    def indexer_flops_saved(self) -> float:
        """Fraction of the decoder layers' indexer work removed (every indexer costs the same per token)."""
        return self.num_shared / self.num_layers

    def summary(self) -> str:
        return (
            f"IndexCache: {self.num_full} F / {self.num_shared} S, indexer FLOPs -{self.indexer_flops_saved():.0%}"
            f" (from {self.source}): {self.pattern}"
        )


def check_pattern(pattern: Any, num_layers: int, where: str) -> str:
    if isinstance(pattern, (list, tuple)) and all(isinstance(c, str) for c in pattern):
        pattern = "".join(pattern)
    if not isinstance(pattern, str):
        raise IndexCachePlanError(f"{where}: {PATTERN_KEY} must be a string of F/S, got {pattern!r}")
    for i, c in enumerate(pattern):
        if c not in (FULL, SHARED):
            raise IndexCachePlanError(
                f"{where}: {PATTERN_KEY} position {i} is {c!r}: only 'F' (run the indexer) or 'S' (reuse the"
                " previous F layer's top-k) are allowed"
            )
    if len(pattern) != num_layers:
        raise IndexCachePlanError(
            f"{where}: {PATTERN_KEY} has {len(pattern)} characters but the model has {num_layers} decoder layers"
            " (one per layer; the MTP layer always runs its own indexer and is not part of the pattern)"
        )
    if pattern.startswith(SHARED):
        raise IndexCachePlanError(
            f"{where}: {PATTERN_KEY} position 0 is 'S', but layer 0 has no earlier layer whose top-k it could reuse"
        )
    return pattern


def pattern_from_types(types: Any, num_layers: int, where: str) -> str:
    if not isinstance(types, (list, tuple)):
        raise IndexCachePlanError(f"{where}: {TYPES_KEY} must be a list of 'full'/'shared', got {types!r}")
    chars = []
    for i, t in enumerate(types):
        if t not in HF_TYPES:
            raise IndexCachePlanError(f"{where}: {TYPES_KEY} position {i} is {t!r}: only 'full' or 'shared'")
        chars.append(HF_TYPES[t])
    return check_pattern("".join(chars), num_layers, f"{where} ({TYPES_KEY})")


def pattern_from_schedule(freq: Any, offset: Any, num_layers: int, where: str) -> str:
    """transformers' / SGLang's schedule: layer i runs its indexer when max(i - offset + 1, 0) % freq == 0."""
    for key, value in ((FREQ_KEY, freq), (OFFSET_KEY, offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise IndexCachePlanError(
                f"{where}: {key} must be an int >= 1, got {value!r}"
                + (" (offset <= 0 would make layer 0 reuse a top-k nobody computed)" if key == OFFSET_KEY else "")
            )
    return "".join(FULL if max(i - offset + 1, 0) % freq == 0 else SHARED for i in range(num_layers))


def _plan_of(src: Mapping[str, Any], num_layers: int, where: str) -> IndexerPlan:
    """One source's plan; the pattern, indexer_types and freq/offset it gives must all agree."""
    candidates: list[tuple[str, str]] = []
    if src.get(PATTERN_KEY) is not None:
        candidates.append((PATTERN_KEY, check_pattern(src[PATTERN_KEY], num_layers, where)))
    if src.get(TYPES_KEY) is not None:
        candidates.append((TYPES_KEY, pattern_from_types(src[TYPES_KEY], num_layers, where)))
    if src.get(FREQ_KEY) is not None or src.get(OFFSET_KEY) is not None:
        freq, offset = src.get(FREQ_KEY, DEFAULT_FREQ), src.get(OFFSET_KEY, DEFAULT_OFFSET)
        candidates.append(
            (f"{FREQ_KEY}={freq} / {OFFSET_KEY}={offset}", pattern_from_schedule(freq, offset, num_layers, where))
        )
    first_name, first = candidates[0]
    for name, other in candidates[1:]:
        if other != first:
            pos = next(i for i, (a, b) in enumerate(zip(first, other)) if a != b)
            raise IndexCachePlanError(
                f"{where}: {first_name} conflicts with {name} at position {pos} (layer {pos}):"
                f" {first[pos]!r} vs {other[pos]!r}; give one of them"
            )
    return IndexerPlan(first, f"{where} {first_name}")


def resolve_plan(
    config: Mapping[str, Any],
    overrides: Mapping[str, Any],
    num_layers: int,
    config_source: str = "config.json",
    overrides_source: str = "--json-model-override-args",
) -> IndexerPlan:
    """The first source that says anything about the plan decides it: the override args, then config.json.

    Within a source the precedence is index_topk_pattern, indexer_types, then the freq/offset schedule, and any
    two of them given together must agree position by position.
    """
    for src, where in ((overrides, overrides_source), (config, config_source)):
        if any(src.get(k) is not None for k in PLAN_KEYS):
            return _plan_of(src, num_layers, where)
    return IndexerPlan.all_full(num_layers)
