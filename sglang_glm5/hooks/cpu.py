"""Start-up fixes that SGLang 0.5.23 needs to serve a DSA model on CPU (`SGLANG_USE_CPU_ENGINE=1`).

SGLang's DSA argument adjustments query the CUDA device (`torch.cuda.get_device_capability`) and pick GPU
kernels (FlashMLA, DeepGEMM) by its compute capability. On CPU there is no such device: the capability query is
answered with (0, 0) inside that adjustment only, and the two DSA passes that choose GPU backends and a GPU KV
dtype declare nothing, so `--dsa-*-backend` stays as the user gave it (default: our reference implementation).
"""

import contextlib

import torch

NO_CUDA_CAPABILITY = (0, 0)


@contextlib.contextmanager
def _no_cuda_capability():
    query = torch.cuda.get_device_capability
    torch.cuda.get_device_capability = lambda *args, **kwargs: NO_CUDA_CAPABILITY
    try:
        yield
    finally:
        torch.cuda.get_device_capability = query


def model_adjustments_without_cuda(original, *args, **kwargs):
    with _no_cuda_capability():
        return original(*args, **kwargs)


def declare_nothing(original, *args, **kwargs):
    return {}


def no_fp8_layers_for_glm5(original, model_config, load_config):
    from sglang_glm5.architectures import is_glm5

    if is_glm5(model_config) and model_config.quantization == "fp8":
        return None
    return original(model_config, load_config)


def parallel_group_without_pynccl(original, *args, **kwargs):
    """At tp > 1 SGLang builds every parallel group with a PyNccl communicator unless told not to, which raises
    "Expected a cuda device, but got: cpu": on CPU every group is built without it, and gloo carries the collectives."""
    return original(*args, **dict(kwargs, use_pynccl=False))


class _NotCpuPlatform:
    """SGLang's platform object with `is_cpu()` answering False; every other attribute is the real platform's."""

    def __init__(self, platform):
        self._platform = platform

    def is_cpu(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._platform, name)


def fp8_latent_pool_on_cpu(original, configurator, *args, **kwargs):
    """`KVCacheConfigurator.configure` refuses an FP8 KV cache on CPU for MLA models ("only supported for MHA": its
    CPU kernels are the intel_amx MHA ones). GLM-5's DSA backend writes and reads the FP8 latent itself (SGLang's
    656 B rows, attention/latent_cache.py), so for GLM-5 those CPU-only checks are skipped inside this call: the
    module's `current_platform` answers is_cpu() False (its only is_cpu() reads in that module are those checks)."""
    from sglang.srt.mem_cache import kv_cache_configurator as module

    from sglang_glm5.architectures import is_glm5

    if configurator.kv_cache_dtype != torch.float8_e4m3fn or not is_glm5(configurator.model_config):
        return original(configurator, *args, **kwargs)
    platform = module.current_platform
    module.current_platform = _NotCpuPlatform(platform)
    try:
        return original(configurator, *args, **kwargs)
    finally:
        module.current_platform = platform
