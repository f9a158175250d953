"""Our GLM-5 model class and DSA attention backend in place of SGLang's (off with `SGLANG_GLM5_MODEL=upstream`)."""

import importlib

from sglang_glm5.architectures import DRAFT, MAIN, is_glm5

# architecture in config.json -> "module:class" of ours
MODEL_CLASSES = {
    MAIN: "sglang_glm5.models.glm5:GlmMoeDsaForCausalLM",
    DRAFT: "sglang_glm5.models.mtp:GlmMoeDsaForCausalLMNextN",  # EAGLE draft (MTP layer)
}
DSA_BACKEND_NAMES = ("dsa", "nsa")


def _import(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_model_cls(original, registry, architectures):
    first = architectures if isinstance(architectures, str) else (architectures or [None])[0]
    if first in MODEL_CLASSES:
        return _import(MODEL_CLASSES[first]), first
    return original(registry, architectures)


def build_attention_backend(original, *, model_runner, backend_str, init_new_workspace):
    if backend_str in DSA_BACKEND_NAMES and is_glm5(model_runner.model_config):
        from sglang_glm5.attention.backend import Glm5DSABackend

        model_runner.init_new_workspace = init_new_workspace
        return Glm5DSABackend(model_runner)
    return original(model_runner=model_runner, backend_str=backend_str, init_new_workspace=init_new_workspace)
