"""The preset catalog: every file under `configs/` read once into frozen, validated objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sglang_glm5.config import Glm5Config, Glm5ConfigError
from sglang_glm5.datafiles import configs_dir
from sglang_glm5.indexcache.plan import IndexCachePlanError, check_pattern
from sglang_glm5.presets.files import (
    PRESETS_DIR,
    PresetError,
    field,
    read_json,
)

GPUS_FILE = "gpus.json"
FEATURES_FILE = "features.json"
OPTIONS_FILE = "sglang-options.json"
DEFAULTS_FILE = "preset-defaults.json"
MODEL_CONFIG_FILE = "glm5-config.json"
PRESET_FIELDS = frozenset({"description", "hardware", "dtype", "tp", "model_path", "options", "notes"})
REQUIREMENT_KEYS = ("vendor", "dtype")
PRESET_DERIVED = frozenset({"tp"})  # preset values a feature may copy into an option


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Hardware:
    name: str
    title: str
    vendor: str
    memory_mib: int | None
    gpus_per_node: int
    device: str


@dataclass(frozen=True)
class Feature:
    name: str
    help: str
    options: Mapping[str, Any]
    options_from_preset: Mapping[str, str]
    requires: Mapping[str, tuple[str, ...]]
    refusals: Mapping[str, str]
    note: str | None


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    description: str
    hardware: Hardware
    dtype: str
    tp: int
    model_path: str | None
    options: Mapping[str, Any]
    notes: tuple[str, ...]

    def refusal_of(self, feature: Feature) -> str | None:
        """Why `feature` is refused on this preset (the first unmet requirement's message), or None."""
        have = {"vendor": self.hardware.vendor, "dtype": self.dtype}
        for key, allowed in feature.requires.items():
            if have[key] not in allowed:
                return feature.refusals[key]
        return None


@dataclass(frozen=True)
class Catalog:
    root: Path
    model: Glm5Config
    hardware: Mapping[str, Hardware]
    vendor_dtypes: Mapping[str, tuple[str, ...]]
    vendor_why_not: Mapping[str, Mapping[str, str]]
    features: Mapping[str, Feature]
    options: Mapping[str, tuple[Mapping[str, Any], ...]]
    presets: Mapping[str, Preset]

    def preset(self, name: str) -> Preset:
        if name in self.presets:
            return self.presets[name]
        hw, _, dtype = name.rpartition("-")
        why = self.vendor_why_not.get(self.hardware[hw].vendor, {}).get(dtype) if hw in self.hardware else None
        offered = [p for p, preset in self.presets.items() if preset.hardware.name == hw]
        if why and offered:
            raise PresetError(f"no preset '{name}': {why}: use {' or '.join(offered)} instead")
        raise PresetError(f"unknown preset '{name}': use one of {', '.join(self.presets)} instead")

    def offering(self, feature: Feature) -> list[str]:
        return [name for name, preset in self.presets.items() if preset.refusal_of(feature) is None]

    def allowed_features(self, preset: Preset) -> list[str]:
        return [name for name, feature in self.features.items() if preset.refusal_of(feature) is None]


def load_catalog(root: Path | None = None) -> Catalog:
    root = Path(root) if root is not None else configs_dir()
    model = _model_config(root / MODEL_CONFIG_FILE)
    gpus_path = root / GPUS_FILE
    gpus = read_json(gpus_path)
    hardware = {k: _hardware(k, v, f"{gpus_path}: hardware.{k}") for k, v in field(gpus, "hardware", dict, str(gpus_path)).items()}
    vendors = field(gpus, "vendors", dict, str(gpus_path))
    missing = sorted({h.vendor for h in hardware.values()} - set(vendors))
    if missing:
        raise PresetError(f"{gpus_path}: vendors: missing {missing}")
    dtypes = {v: tuple(field(d, "dtypes", list, f"{gpus_path}: vendors.{v}")) for v, d in vendors.items()}
    why_not = {v: field(d, "why_not", dict, f"{gpus_path}: vendors.{v}") for v, d in vendors.items()}
    options_path = root / OPTIONS_FILE
    options = _options(options_path)
    features_path = root / FEATURES_FILE
    features = {
        k: _feature(k, v, f"{features_path}: features.{k}", options, model)
        for k, v in field(read_json(features_path), "features", dict, str(features_path)).items()
    }
    defaults_path = root / DEFAULTS_FILE
    defaults = field(read_json(defaults_path), "options", dict, str(defaults_path))
    _check_options(defaults, options, f"{defaults_path}: field 'options'")
    presets = {}
    for path in sorted((root / PRESETS_DIR).glob("*.json")):
        presets[path.stem] = _preset(path, hardware, dtypes, options, model, defaults)
    if not presets:
        raise PresetError(f"{root / PRESETS_DIR}: no preset files (*.json)")
    return Catalog(root, model, freeze(hardware), freeze(dtypes), freeze(why_not), freeze(features), freeze(options), freeze(presets))


def _model_config(path: Path) -> Glm5Config:
    try:
        return Glm5Config.from_dict(read_json(path), source=str(path))
    except Glm5ConfigError as e:
        raise PresetError(str(e)) from None


def _hardware(name: str, d: Mapping[str, Any], where: str) -> Hardware:
    memory = field(d, "memory_mib", (int, type(None)), where)
    return Hardware(
        name, field(d, "name", str, where), field(d, "vendor", str, where), memory,
        _positive(field(d, "gpus_per_node", int, where), "gpus_per_node", where), field(d, "device", str, where),
    )


def _options(path: Path) -> dict[str, tuple]:
    table = field(read_json(path), "options", dict, str(path))
    for name, candidates in table.items():
        where = f"{path}: options.{name}"
        if not isinstance(candidates, list) or not candidates:
            raise PresetError(f"{where}: expected a non-empty list of candidates")
        for i, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                raise PresetError(f"{where}[{i}]: expected an object, got {candidate!r}")
            field(candidate, "dest", str, f"{where}[{i}]")
    return {k: tuple(v) for k, v in table.items()}


def _check_options(options: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
    for name in options:
        if name not in known:
            raise PresetError(f"{where}: unknown option '{name}' (options are the names in {OPTIONS_FILE})")


def _feature(name: str, d: Mapping[str, Any], where: str, known: Mapping[str, Any], model: Glm5Config) -> Feature:
    options = field(d, "options", dict, where)
    from_preset = d.get("options_from_preset", {})
    requires = field(d, "requires", dict, where)
    refusals = field(d, "refusals", dict, where)
    _check_options({**options, **from_preset}, known, where)
    for option, source in from_preset.items():
        if source not in PRESET_DERIVED:
            raise PresetError(f"{where}: options_from_preset.{option}: '{source}' is not one of {sorted(PRESET_DERIVED)}")
    for key in requires:
        if key not in REQUIREMENT_KEYS:
            raise PresetError(f"{where}: requires.{key}: unknown requirement (one of {REQUIREMENT_KEYS})")
        field(requires, key, list, f"{where}: requires")
        if not isinstance(refusals.get(key), str):
            raise PresetError(f"{where}: refusals.{key}: missing the message for requirement '{key}'")
    pattern = options.get("model_override_args", {}).get("index_topk_pattern")
    if pattern is not None:
        _check_indexcache_pattern(pattern, model, f"{where}: options.model_override_args.index_topk_pattern")
    return Feature(
        name, field(d, "help", str, where), freeze(options), freeze(from_preset),
        freeze({k: list(v) for k, v in requires.items()}), freeze(refusals),
        field(d, "note", str, where) if "note" in d else None,
    )


def _check_indexcache_pattern(pattern: Any, model: Glm5Config, where: str) -> None:
    try:
        check_pattern(pattern, model.num_hidden_layers, where)
    except IndexCachePlanError as e:
        raise PresetError(str(e)) from None


def _preset(path: Path, hardware, dtypes, known_options, model: Glm5Config, defaults: Mapping[str, Any]) -> Preset:
    d = read_json(path)
    where = str(path)
    unknown = sorted(set(d) - PRESET_FIELDS)
    if unknown:
        raise PresetError(f"{where}: unknown field(s) {unknown} (fields: {sorted(PRESET_FIELDS)})")
    hw = field(d, "hardware", str, where)
    if hw not in hardware:
        raise PresetError(f"{where}: field 'hardware': unknown '{hw}' (one of {sorted(hardware)} in {GPUS_FILE})")
    dtype = field(d, "dtype", str, where)
    if dtype not in dtypes[hardware[hw].vendor]:
        raise PresetError(f"{where}: field 'dtype': '{dtype}' is not offered on {hw} ({list(dtypes[hardware[hw].vendor])})")
    tp = _positive(field(d, "tp", int, where), "tp", where)
    if model.num_attention_heads % tp:
        raise PresetError(f"{where}: field 'tp': {tp} does not divide GLM-5's {model.num_attention_heads} attention heads")
    options = field(d, "options", dict, where)
    _check_options(options, known_options, f"{where}: field 'options'")
    notes = field(d, "notes", list, where)
    return Preset(
        path.stem, path, field(d, "description", str, where), hardware[hw], dtype, tp,
        field(d, "model_path", (str, type(None)), where), freeze({**defaults, **options}), tuple(notes),
    )


def _positive(value: int, name: str, where: str) -> int:
    if value < 1:
        raise PresetError(f"{where}: field '{name}' must be >= 1, got {value}")
    return value
