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
