"""The KV-cache dtype for GLM-5: a default per device and checkpoint, and the FP8 layouts' rules.

SGLang 0.5.23 stores an FP8 DSA latent in one of two layouts, chosen by the DSA picks (`fp8_layout`, mirroring its
`calculate_mla_kv_cache_dim`):
- SCALED (656 B per token: e4m3 latent with an fp32 scale per 128 values, bf16 rope; dsa/fp8_latent.py): every pick
  but `trtllm` or an all-TileLang / HIP one. The rows carry their own scales, so calibrated k/v scales play no part.
  Measured on the `real-attn` tiny checkpoint (GLM-5's attention dims) through launch_server against HF in fp32: max
  |logprob difference| 0.25, mean 0.03 (README: KV cache dtype), about a quarter of what GLM-5-FP8's own weight
  quantization moves on the same checkpoint, so it is the default where the picks read it (`auto`).
- RAW (576 e4m3 bytes at scale 1.0, as SGLang keeps it for `trtllm`): FP8 KV there is refused or warned about when
  the checkpoint carries no calibrated k/v scales (GLM-5-FP8 loses ~20 points on AIME/GPQA that way).
"""

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
SCALED = "scaled"  # SGLang's 656 B FP8 rows with per-128 scales
RAW = "raw"  # e4m3 at scale 1.0 in the [S, 576] rows
RAW_LAYOUT_IMPLS = ("trtllm",)  # a phase picking one makes SGLang allocate the raw layout
RAW_ON_HIP_IMPLS = ("tilelang", "triton", "aiter")  # HIP: SGLang's raw layout for these


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


def fp8_layout(backends: Mapping[str, str], hip: bool) -> str:
    """Which FP8 latent layout SGLang's pool gets for these DSA picks (phase -> name): its calculate_mla_kv_cache_dim."""
    names = set(backends.values())
    if names & set(RAW_LAYOUT_IMPLS) or names == {"tilelang"} or (hip and names & set(RAW_ON_HIP_IMPLS)):
        return RAW
    return SCALED


def check_fp8_latent_dims(kv_cache_dtype: str, kv_lora_rank: int, rope_dim: int) -> None:
    """The scaled layout quantizes the latent in tiles of 128 values and keeps a 64-d (or no) rope key: SGLang asserts
    both deep in its pool sizing; refused here instead, naming the flag."""
    from sglang_glm5.dsa.fp8_latent import TILE

    if kv_lora_rank % TILE or rope_dim not in (0, 64):
        raise KVDtypeError(
            f"--kv-cache-dtype {kv_cache_dtype}: SGLang's FP8 latent layout needs kv_lora_rank a multiple of {TILE} "
            f"and qk_rope_head_dim 64 (or 0); this checkpoint has {kv_lora_rank} and {rope_dim}: use --kv-cache-dtype "
            "bfloat16 (or auto)"
        )


def check_requested(kv_cache_dtype: str, scales: KVScales, strict: bool, layout: str = RAW) -> str | None:
    """The warning for an FP8 KV cache in the raw layout without calibrated scales (raised as KVDtypeError when
    strict), else None. The scaled layout carries its own scales."""
    if kv_cache_dtype not in FP8_KV_DTYPES or scales.calibrated or layout == SCALED:
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
