"""The GPU this process runs on, named one way for every reader (the start-up check's capability table and the
TileLang tuning table): (device name, base architecture), `sm_XY` on CUDA, the `gcnArchName` base on ROCm. A leaf
module: torch only, imported lazily so CPU-only paths (and `sglang-glm5 serve` before its exec) never load it."""

from __future__ import annotations


def gpu_arch(device=0) -> tuple[str, str]:
    """(name, arch) of CUDA/ROCm device `device` (an index or a torch.device)."""
    import torch

    props = torch.cuda.get_device_properties(device)
    if getattr(torch.version, "hip", None):
        return props.name, props.gcnArchName.split(":")[0]  # "gfx942:sramecc+:xnack-" -> gfx942
    return props.name, f"sm_{props.major}{props.minor}"
