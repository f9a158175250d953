"""Preset + features + overrides -> the options of one launch (our option names), or a refusal saying what to use."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglang_glm5.config import CONFIG_FILE
from sglang_glm5.datafiles import DataFileError, config_path, field, read_json_object
from sglang_glm5.presets.catalog import FEATURES_FILE, Catalog, Preset, freeze
from sglang_glm5.presets.files import PresetError


DP_ATTENTION = "dp-attention"


class Refusal(PresetError):
    pass


@dataclass(frozen=True)
class LaunchSpec:
    preset: Preset
    features: tuple[str, ...]
    tp: int
    nnodes: int
    options: Mapping[str, Any]  # ordered: model, device, parallelism, preset options, feature options


def parse_features(text: str | None) -> tuple[str, ...]:
    return tuple(f.strip() for f in (text or "").split(",") if f.strip())


def feature_names() -> str:
    """The feature names of configs/features.json for --with's help (a broken file is reported when a command loads
    the catalog, not while the help is built)."""
    try:
        return ",".join(field(read_json_object(config_path(FEATURES_FILE)), "features", dict, FEATURES_FILE))
    except DataFileError:
        return f"see {FEATURES_FILE}"


def add_preset_command(subparsers, name: str, help: str, description: str):
    """A `sglang-glm5 NAME` subcommand with the flags every preset command takes (`launch`, `plan`): the preset, its
    features (`--with`, read by parse_features) and the tensor parallel size. Returns the parser for its own flags."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("--preset", required=True, help="a preset name from `sglang-glm5 presets`")
    parser.add_argument("--with", dest="features", metavar="FEATURES", help=f"comma-separated: {feature_names()}")
    parser.add_argument("--tp", type=int, help="tensor parallel size (default: the preset's)")
    return parser


def tp_choices(catalog: Catalog) -> list[int]:
    heads = catalog.model.num_attention_heads
    return [n for n in range(1, heads + 1) if heads % n == 0]


def check_tp(catalog: Catalog, tp: int) -> None:
    choices = tp_choices(catalog)
    if tp not in choices:
        near = sorted(choices, key=lambda n: (abs(n - tp), n))[:2]
        raise Refusal(
            f"tp {tp} does not divide GLM-5's {catalog.model.num_attention_heads} attention heads:"
            f" use tp {' or '.join(map(str, sorted(near)))} instead"
        )


def compose(
    catalog: Catalog,
    preset_name: str,
    features: Iterable[str] = (),
    tp: int | None = None,
    model_path: str | None = None,
    nnodes: int | None = None,
) -> LaunchSpec:
    preset = catalog.preset(preset_name)
    features = tuple(dict.fromkeys(features))
    tp = preset.tp if tp is None else tp
    check_tp(catalog, tp)
    if model_path is not None and preset.model_path is not None:
        check_checkpoint_dtype(catalog, preset, model_path)
    model_path = model_path or preset.model_path
    if model_path is None:
        raise Refusal(f"preset {preset.name} needs --model-path: build a tiny checkpoint with `sglang-glm5 tiny-checkpoint DIR`")
    nnodes = node_count(preset, tp, nnodes)
    options: dict[str, Any] = {"model_path": model_path, "device": preset.hardware.device, "tp": tp}
    if nnodes > 1:
        options["nnodes"] = nnodes
    options.update(preset.options)
    derived = {"tp": tp}
    for name in features:
        feature = allowed_feature(catalog, preset, name)
        if name == DP_ATTENTION and tp == 1:
            raise Refusal(f"preset {preset.name} cannot use {name} at tp 1: it splits the tp ranks into attention-DP groups; use --tp 2 or more")
        options.update(feature.options)
        options.update({option: derived[source] for option, source in feature.options_from_preset.items()})
    return LaunchSpec(preset, features, tp, nnodes, freeze(options))


def node_count(preset: Preset, tp: int, nnodes: int | None = None) -> int:
    """Nodes that serve `tp` ranks: as many as the preset's GPUs per node need, or `nnodes` when given (each node
    runs tp / nnodes ranks, so it must divide tp and leave no node more ranks than it has GPUs)."""
    per_node = preset.hardware.gpus_per_node
    needed = math.ceil(tp / per_node)
    if nnodes is None:
        return needed
    if nnodes < 1 or tp % nnodes:
        divisors = [n for n in range(needed, tp + 1) if tp % n == 0]
        raise Refusal(f"--nnodes {nnodes} does not divide tp {tp} into equal nodes: use --nnodes {' or '.join(map(str, divisors[:3]))} instead")
    if nnodes < needed:
        raise Refusal(f"--nnodes {nnodes} puts {tp // nnodes} ranks on a node of {per_node} GPUs ({preset.hardware.title}): use --nnodes {needed} or more")
    return nnodes


def allowed_feature(catalog: Catalog, preset: Preset, name: str):
    if name not in catalog.features:
        raise Refusal(f"unknown feature '{name}': use one of {', '.join(catalog.features)} instead")
    feature = catalog.features[name]
    why = preset.refusal_of(feature)
    if why is not None:
        others = catalog.offering(feature)
        raise Refusal(f"preset {preset.name} cannot use {name}: {why}, or use {' / '.join(others)} instead")
    return feature


def checkpoint_dtype(catalog: Catalog, model_path: str) -> str | None:
    """fp8 / bf16 from a local config.json's quantization_config, else from the presets' own model paths; None if unknown."""
    config = Path(model_path) / CONFIG_FILE
    if config.is_file():
        try:
            quant = json.loads(config.read_text()).get("quantization_config") or {}
        except (json.JSONDecodeError, AttributeError):
            return None
        return "fp8" if quant.get("quant_method") == "fp8" else "bf16"
    return next((p.dtype for p in catalog.presets.values() if p.model_path == model_path), None)


def check_checkpoint_dtype(catalog: Catalog, preset: Preset, model_path: str) -> None:
    """A preset that names a checkpoint serves that dtype: another dtype's checkpoint needs another preset."""
    dtype = checkpoint_dtype(catalog, model_path)
    if dtype is None or dtype == preset.dtype:
        return
    what = f"{model_path} holds {dtype.upper()} weights but preset {preset.name} serves {preset.dtype.upper()}"
    same_hardware = [n for n, p in catalog.presets.items() if p.hardware == preset.hardware and p.dtype == dtype]
    if same_hardware:
        raise Refusal(f"{what}: use {' or '.join(same_hardware)} instead")
    why = catalog.vendor_why_not.get(preset.hardware.vendor, {}).get(dtype, f"no {preset.hardware.name} preset serves {dtype}")
    raise Refusal(f"{what}: {why}: use {preset.model_path} instead")
