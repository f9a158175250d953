"""SGLang plugin (entry point group `sglang.srt.plugins`), loaded by SGLang in every one of its processes.

`load()` selects the patches of `hooks/table.py` that apply here (CPU or not; `SGLANG_GLM5_MODEL`: our GLM-5 model
and DSA backend, or SGLang's own with our parsers, request checks and start-up checks), resolves every target in the
installed SGLang, then registers them through SGLang's `HookRegistry` (so each one is logged when applied).
"""

import logging
import os

from sglang_glm5.architectures import is_glm5  # noqa: F401  (re-exported: the GLM-5 test, for older importers)
from sglang_glm5.hooks import registry
from sglang_glm5.hooks.model_choice import ModelChoiceError, model_choice
from sglang_glm5.hooks.table import PATCHES

logger = logging.getLogger(__name__)


def selected_patches(env=os.environ, cpu: bool | None = None) -> list[registry.Patch]:
    if cpu is None:
        from sglang.srt.utils import is_cpu

        cpu = is_cpu()
    model = model_choice(env)
    return [patch for patch in PATCHES if patch.applies(cpu=cpu, model=model)]


def load() -> None:
    try:
        patches = selected_patches()
        registry.check(patches)
    except (registry.HookTargetError, ModelChoiceError) as err:
        # SGLang's load_plugins logs and ignores an Exception from a plugin; a lost required hook must stop start-up.
        raise SystemExit(str(err)) from err
    registry.apply(patches)
    logger.info("sglang-glm5: %d patches for SGLang %s (%s)", len(patches), registry.sglang_version(), model_choice(os.environ))
