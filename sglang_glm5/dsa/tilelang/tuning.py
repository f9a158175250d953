"""Per-architecture tuning knobs of the TileLang kernels: data in configs/tilelang-tuning.json, looked up per device."""

import functools
from pathlib import Path

import torch

from sglang_glm5.datafiles import DataFileError, configs_dir, field, read_json_object
from sglang_glm5.devices import gpu_arch

TUNING_NAME = "tilelang-tuning.json"  # in configs/ (SGLANG_GLM5_CONFIGS may point elsewhere)
OPS = ("indexer_logits", "indexer_logits_fp8", "topk_positions", "sparse_mla_prefill", "sparse_mla_decode")


class TuningError(DataFileError):
    pass


@functools.cache
def table(path: Path) -> dict:
    """The tuning file, checked: every architecture has knobs for every op, every device names a known arch."""
    data = read_json_object(path, TuningError)
    for key in ("devices", "arch"):
        field(data, key, dict, str(path), TuningError)
    for arch, ops in data["arch"].items():
        field(data["arch"], arch, dict, f"{path}: arch", TuningError)
        missing = [op for op in OPS if not isinstance(ops.get(op), dict)]
        if missing:
            raise TuningError(f"{path}: arch '{arch}' has no knobs for {', '.join(missing)}")
    for name, arch in data["devices"].items():
        if arch not in data["arch"]:
            raise TuningError(f"{path}: device '{name}' maps to arch '{arch}', which has no entry under 'arch'")
    return data


def device_arch(device: torch.device) -> tuple[str, str]:
    """(device name, architecture) of a CUDA/ROCm device: sm_90a style on CUDA, the gcnArchName base on ROCm."""
    name, arch = gpu_arch(device)
    suffix = "a" if arch.startswith("sm_9") else ""  # Hopper's wgmma / setmaxnreg need the arch-specific sm_90a target
    return name, arch + suffix


def knobs_for(op: str, name: str, arch: str, path: Path | None = None) -> dict:
    """The knobs of `op` for a device: by name first (substring match, spaces ignored), else by architecture."""
    assert op in OPS, op
    path = path or configs_dir() / TUNING_NAME
    data = table(path)
    compact = name.replace(" ", "")
    by_name = [a for n, a in data["devices"].items() if n in compact]
    chosen = by_name[0] if by_name else arch
    if chosen not in data["arch"]:
        raise TuningError(f"{path}: no tuning for device '{name}' (arch {arch}); known: {', '.join(data['arch'])}")
    return dict(data["arch"][chosen][op])


def tuning(op: str, device: torch.device) -> dict:
    return knobs_for(op, *device_arch(device))
