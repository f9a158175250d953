"""The GPU this process runs on, named one way for every reader (the start-up check's capability table and the
TileLang tuning table): (device name, base architecture), `sm_XY` on CUDA, the `gcnArchName` base on ROCm. A leaf
module: torch only, imported lazily so CPU-only paths (and `sglang-glm5 serve` before its exec) never load it."""

from __future__ import annotations

from functools import lru_cache


def gpu_arch(device=0) -> tuple[str, str]:
    """(name, arch) of CUDA/ROCm device `device` (an index or a torch.device)."""
    import torch

    props = torch.cuda.get_device_properties(device)
    if getattr(torch.version, "hip", None):
        return props.name, props.gcnArchName.split(":")[0]  # "gfx942:sramecc+:xnack-" -> gfx942
    return props.name, f"sm_{props.major}{props.minor}"


@lru_cache(maxsize=None)
def multiprocessor_count(device) -> int | None:
    """SMs (CUs) of a GPU device, None for the CPU: grids that split work to fill the GPU size themselves by it."""
    if device.type != "cuda":
        return None
    import torch

    return torch.cuda.get_device_properties(device).multi_processor_count
