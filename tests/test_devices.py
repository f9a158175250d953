"""One source for the GPU's architecture: the capability table's device and the TileLang tuning's arch both come from
sglang_glm5.devices.gpu_arch (CUDA sm_XY, Hopper's sm_90a target added by tuning only; ROCm's gcnArchName base)."""

from types import SimpleNamespace

import pytest
import torch

from sglang_glm5.attention.capabilities import Device, detect_device
from sglang_glm5.devices import gpu_arch
from sglang_glm5.dsa.tilelang.tuning import device_arch

GPUS = {
    "h200": (None, SimpleNamespace(name="NVIDIA H200", major=9, minor=0, gcnArchName=""), "sm_90", "sm_90a"),
    "b200": (None, SimpleNamespace(name="NVIDIA B200", major=10, minor=0, gcnArchName=""), "sm_100", "sm_100"),
    "mi300x": ("6.2", SimpleNamespace(name="AMD Instinct MI300X", major=9, minor=4, gcnArchName="gfx942:sramecc+:xnack-"),
               "gfx942", "gfx942"),
}


@pytest.mark.parametrize("gpu", list(GPUS))
def test_capabilities_and_tuning_read_one_arch(gpu, monkeypatch):
    hip, props, arch, tuning_arch = GPUS[gpu]
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=0: props)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_arch(0) == (props.name, arch)
    assert detect_device(None, env={}) == Device(arch, props.name)
    assert device_arch(torch.device("cuda", 0)) == (props.name, tuning_arch)
