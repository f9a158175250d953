"""SGLang plugin (entry point group `sglang.srt.plugins`), loaded by SGLang in every one of its processes.

Registers, through SGLang's own `HookRegistry` (so each hook is logged and a failure is visible):
- our `GlmMoeDsaForCausalLM` in place of SGLang's built-in class of that name;
- our DSA attention backend for GLM-5 under SGLang's `--attention-backend dsa` (and its `nsa` alias), also for
  the EAGLE draft (`attention.draft`);
- on CPU only, the start-up fixes in `serving.cpu_hooks`;
- the GLM-5 start-up check (KV dtype policy, DSA backends x device) in SGLang's DSA server-args passes
  (`serving.startup_check`);
- our `glm5` reasoning and tool-call parsers in SGLang's parser registries (`parsers/`);
- request checks SGLang lacks (empty prompt, token ids outside the vocabulary: `serving.request_checks`).
"""

import importlib
import logging

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_glm5.parsers import register_parsers
from sglang_glm5.serving.override_args import register_override_args_check
from sglang_glm5.serving.request_checks import register_request_checks

logger = logging.getLogger(__name__)

# architecture in config.json -> "module:class" of ours
MODEL_CLASSES = {
    "GlmMoeDsaForCausalLM": "sglang_glm5.models.glm5:GlmMoeDsaForCausalLM",
    "GlmMoeDsaForCausalLMNextN": "sglang_glm5.models.mtp:GlmMoeDsaForCausalLMNextN",  # EAGLE draft (MTP layer)
}
DSA_BACKEND_NAMES = ("dsa", "nsa")

_RESOLVE_MODEL = "sglang.srt.models.registry._ModelRegistry.resolve_model_cls"
_BUILD_BACKEND = (
    "sglang.srt.model_executor.model_runner_components.attention_backend_setup._build_full_attention_backend_from_str"
)


def _import(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_model_cls(original, registry, architectures):
    first = architectures if isinstance(architectures, str) else (architectures or [None])[0]
    if first in MODEL_CLASSES:
        return _import(MODEL_CLASSES[first]), first
    return original(registry, architectures)


def is_glm5(model_config) -> bool:
    return model_config.hf_config.architectures[0] in MODEL_CLASSES


def build_attention_backend(original, *, model_runner, backend_str, init_new_workspace):
    if backend_str in DSA_BACKEND_NAMES and is_glm5(model_runner.model_config):
        from sglang_glm5.attention.backend import Glm5DSABackend

        model_runner.init_new_workspace = init_new_workspace
        return Glm5DSABackend(model_runner)
    return original(model_runner=model_runner, backend_str=backend_str, init_new_workspace=init_new_workspace)


def load() -> None:
    HookRegistry.register(_RESOLVE_MODEL, resolve_model_cls, HookType.AROUND)
    HookRegistry.register(_BUILD_BACKEND, build_attention_backend, HookType.AROUND)
    register_override_args_check()
    from sglang_glm5.attention.draft import register_draft_hooks

    register_draft_hooks()
    register_parsers()
    register_request_checks()
    from sglang.srt.utils import is_cpu

    if is_cpu():
        from sglang_glm5.serving.cpu_hooks import register_cpu_hooks

        register_cpu_hooks()
        from sglang_glm5.serving.cpu_spec_hooks import register_cpu_spec_hooks

        register_cpu_spec_hooks()
    from sglang_glm5.serving.startup_check import register_startup_hooks

    register_startup_hooks()  # after the CPU hooks, so it wraps them (GLM-5 decided there, other models fall through)
