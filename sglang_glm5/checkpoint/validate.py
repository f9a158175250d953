"""Load-time checkpoint validation from safetensors headers only: every GLM-5 tensor present, of the shape the config
implies, FP8 weights with their block scales. Each error names the file and the tensor; nothing is loaded yet."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from sglang_glm5.checkpoint.schema import INDEX_FILE, SCALE_SUFFIX, tensor_specs
from sglang_glm5.config import Glm5Config
from sglang_glm5.quant import scale_grid_shape

FP8_HEADER_DTYPE = "F8_E4M3"
SHARD_GLOB = "*.safetensors"


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: str
    file: Path


def read_headers(model_dir: Path) -> dict[str, _Header]:
    """tensor name -> (shape, dtype, file), from the index (every shard it lists must exist) or the shards present."""
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        by_file: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            by_file.setdefault(file, []).append(name)
        for file, names in sorted(by_file.items()):
            if not (model_dir / file).is_file():
                raise CheckpointError(
                    f"{model_dir / file}: missing shard, listed in {INDEX_FILE} for {len(names)} tensors"
                    f" (e.g. '{names[0]}')"
                )
        files = [model_dir / f for f in sorted(by_file)]
    else:
        files = sorted(model_dir.glob(SHARD_GLOB))
        weight_map = {}
    headers: dict[str, _Header] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_slice(name)
                headers[name] = _Header(tuple(tensor.get_shape()), tensor.get_dtype(), path)
    for name, file in weight_map.items():
        if name not in headers:
            raise CheckpointError(f"{model_dir / file}: tensor '{name}' is listed in {INDEX_FILE} but not in the file")
    return headers


def validate_checkpoint(model_dir: str | Path, cfg: Glm5Config) -> dict[str, _Header]:
    """Raises CheckpointError on the first problem; returns the headers (tensor name -> shape, dtype, file)."""
    model_dir = Path(model_dir)
    headers = read_headers(model_dir)
    for spec in tensor_specs(cfg):
        header = headers.get(spec.name)
        if header is None:
            raise CheckpointError(f"{model_dir}: missing tensor '{spec.name}' (shape {spec.shape}) in every shard")
        if header.shape != spec.shape:
            raise CheckpointError(
                f"{header.file}: tensor '{spec.name}' has shape {header.shape}, config.json implies {spec.shape}"
            )
        scale = headers.get(spec.name + SCALE_SUFFIX)
        if header.dtype == FP8_HEADER_DTYPE:
            _check_fp8(spec.name, header, scale, cfg)
        elif scale is not None:
            raise CheckpointError(f"{scale.file}: '{spec.name}{SCALE_SUFFIX}' scales a weight that is {header.dtype}, not FP8")
    return headers


def _check_fp8(name: str, header: _Header, scale: _Header | None, cfg: Glm5Config) -> None:
    if cfg.quant is None:
        raise CheckpointError(f"{header.file}: tensor '{name}' is FP8 but config.json has no quantization_config")
    if scale is None:
        raise CheckpointError(f"{header.file}: FP8 weight '{name}' has no '{name}{SCALE_SUFFIX}'")
    expected = scale_grid_shape(header.shape, cfg.quant.block)
    if scale.shape != tuple(expected):
        raise CheckpointError(
            f"{scale.file}: '{name}{SCALE_SUFFIX}' has shape {scale.shape}, block {cfg.quant.block} implies {tuple(expected)}"
        )
