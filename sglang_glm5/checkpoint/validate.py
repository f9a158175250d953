"""Load-time checkpoint validation from safetensors headers only: every GLM-5 tensor present, of the shape the config
implies, FP8 weights with their block scales. Each error names the file and the tensor; nothing is loaded yet.

The MTP layer (EAGLE's draft) may be absent as a whole: HF transformers' `save_pretrained` writes none while
config.json keeps `num_nextn_predict_layers: 1` (how community fine-tunes are published). The target model then
serves without it (`missing_mtp_tensors` names what is missing); EAGLE needs it (`require_mtp`). A partial MTP layer
is a broken checkpoint either way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from sglang_glm5.checkpoint.schema import INDEX_FILE, SCALE_SUFFIX, mtp_tensor_specs, tensor_specs
from sglang_glm5.config import Glm5Config
from sglang_glm5.quant import scale_grid_shape

FP8_HEADER_DTYPE = "F8_E4M3"
SHARD_GLOB = "*.safetensors"
SHOWN_MISSING = 4  # missing MTP tensors named in a message (the rest counted)


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


def missing_mtp_tensors(headers: dict[str, _Header], cfg: Glm5Config) -> tuple[str, ...]:
    """The MTP layer's tensor names that no shard holds (empty: complete, or the config has no MTP layer)."""
    return tuple(spec.name for spec in mtp_tensor_specs(cfg) if spec.name not in headers)


def describe_missing_mtp(model_dir: str | Path, missing: tuple[str, ...], cfg: Glm5Config) -> str:
    shown = ", ".join(f"'{name}'" for name in missing[:SHOWN_MISSING])
    if len(missing) > SHOWN_MISSING:
        shown += f" and {len(missing) - SHOWN_MISSING} more"
    return (
        f"{model_dir}: config.json says num_nextn_predict_layers = {cfg.num_nextn_predict_layers} but the checkpoint's"
        f" MTP layer {cfg.mtp_layer_index} misses {len(missing)} of {len(mtp_tensor_specs(cfg))} tensors ({shown})"
    )


def validate_checkpoint(model_dir: str | Path, cfg: Glm5Config, require_mtp: bool = True) -> dict[str, _Header]:
    """Raises CheckpointError on the first problem; returns the headers (tensor name -> shape, dtype, file).

    `require_mtp=False` (the target model) accepts a checkpoint whose MTP layer is absent as a whole."""
    model_dir = Path(model_dir)
    headers = read_headers(model_dir)
    specs = tensor_specs(cfg)
    missing = missing_mtp_tensors(headers, cfg)
    if missing and require_mtp:
        raise CheckpointError(describe_missing_mtp(model_dir, missing, cfg) + "; EAGLE drafts with that layer")
    if missing and len(missing) == len(mtp_tensor_specs(cfg)):
        specs = [spec for spec in specs if spec.name not in set(missing)]
    for spec in specs:
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


SPECULATIVE_MTP_ALGORITHMS = ("EAGLE", "NEXTN")  # SGLang's algorithms whose draft is the checkpoint's MTP layer


def check_mtp_for_speculative(algorithm: str | None, draft_dir: str | Path, cfg: Glm5Config) -> None:
    """Start-up refusal: `--speculative-algorithm EAGLE|NEXTN` on a checkpoint without its MTP layer, naming the
    missing tensors and what works instead. Not a local directory: checked as the draft's weights load."""
    draft_dir = Path(draft_dir)
    if (algorithm or "").upper() not in SPECULATIVE_MTP_ALGORITHMS or not draft_dir.is_dir():
        return
    if not cfg.has_mtp:
        raise CheckpointError(
            f"--speculative-algorithm {algorithm}: {draft_dir}/config.json has num_nextn_predict_layers = 0, no MTP"
            " layer to draft with; serve without --speculative-algorithm"
        )
    missing = missing_mtp_tensors(read_headers(draft_dir), cfg)
    if missing:
        raise CheckpointError(
            f"--speculative-algorithm {algorithm}: {describe_missing_mtp(draft_dir, missing, cfg)}; the MTP layer is"
            " EAGLE's draft: serve without --speculative-algorithm, or use a checkpoint that has it"
        )
