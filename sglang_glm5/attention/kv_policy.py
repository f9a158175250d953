"""The KV-cache dtype for GLM-5: a default per device and checkpoint, and FP8 KV refused or warned about when the
checkpoint carries no calibrated k/v scales (FP8 KV then runs with scale 1.0: GLM-5-FP8 loses ~20 points on
AIME/GPQA that way)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sglang_glm5.attention.capabilities import DSACapabilityError

STRICT_ENV = "SGLANG_GLM5_STRICT"  # "1": refuse instead of warn (`sglang-glm5 serve/launch --strict` set it)
AUTO = "auto"
FP8_KV_DTYPES = ("fp8_e4m3", "fp8_e5m2")
KV_SCALE_SUFFIXES = (".k_scale", ".v_scale", ".kv_scale")  # what SGLang's loaders read as calibrated scales
ALIASES = {"bf16": "bfloat16"}


class KVDtypeError(DSACapabilityError):
    pass


@dataclass(frozen=True)
class KVScales:
    calibrated: bool | None  # None: no local checkpoint (or hub id not cached, weights not there yet): cannot tell
    where: str  # what was looked at


def strict_from_env(env: Mapping[str, str] = os.environ) -> bool:
    return env.get(STRICT_ENV, "") not in ("", "0")


def find_kv_scales(model_path: str | os.PathLike) -> KVScales:
    """Calibrated k/v scales: config.json's `quantization_config.kv_cache_scheme`, or *.k_scale / *.v_scale tensors.
    A hub id is read from its snapshot in the local HF cache."""
    from sglang_glm5.checkpoint.locate import CheckpointNotCached, checkpoint_dir

    try:
        model_dir = checkpoint_dir(model_path)
    except CheckpointNotCached as err:
        return KVScales(None, str(err))
    if not (model_dir / "config.json").is_file():
        return KVScales(None, f"{model_dir} (no config.json)")
    quant = json.loads((model_dir / "config.json").read_text()).get("quantization_config") or {}
    if quant.get("kv_cache_scheme"):
        return KVScales(True, f"{model_dir / 'config.json'}: quantization_config.kv_cache_scheme")
    from sglang_glm5.checkpoint.validate import (
        read_headers,  # torch-free callers (the CLIs) skip its imports
    )

    if not any(model_dir.glob("*.safetensors")) and not (model_dir / "model.safetensors.index.json").is_file():
        return KVScales(None, f"{model_dir} (no safetensors: weights not downloaded yet)")
    scales = [name for name in read_headers(model_dir) if name.endswith(KV_SCALE_SUFFIXES)]
    return KVScales(bool(scales), f"{model_dir}: {len(scales)} tensors named *{'/*'.join(KV_SCALE_SUFFIXES)}")


def normalize(kv_cache_dtype: str | None) -> str:
    return ALIASES.get(kv_cache_dtype or AUTO, kv_cache_dtype or AUTO)


def check_requested(kv_cache_dtype: str, scales: KVScales, strict: bool) -> str | None:
    """The warning for an FP8 KV cache without calibrated scales (raised as KVDtypeError when strict), else None."""
    if kv_cache_dtype not in FP8_KV_DTYPES or scales.calibrated:
        return None
    found = "has no calibrated k/v scales" if scales.calibrated is False else "could not be checked for k/v scales"
    message = (
        f"--kv-cache-dtype {kv_cache_dtype}: the checkpoint {found} ({scales.where}); FP8 KV then quantizes with "
        f"scale 1.0, which costs GLM-5 accuracy (about 20 points on AIME/GPQA): use --kv-cache-dtype bfloat16"
    )
    if strict:
        raise KVDtypeError(f"{message} (refused: --strict / {STRICT_ENV}=1)")
    return message


def default_kv_cache_dtype(candidates: tuple[str, ...], fits: Callable[[str], bool]) -> str:
    """The first candidate (CapabilityTable.kv_cache_dtype_candidates) the DSA implementations take; else the last,
    so that the capability check names what fails."""
    return next((kv for kv in candidates if fits(kv)), candidates[-1])
