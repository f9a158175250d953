"""The machinery behind `hooks/table.py`: a `Patch` declares one change to SGLang; `check` resolves every selected
target in the installed SGLang before anything is registered, `apply` registers them in table order.

SGLang's `HookRegistry.apply_hooks` only logs "Failed to apply hooks" for a target that no longer exists, and its
`load_plugins` only logs an exception raised by a plugin: after an SGLang upgrade a request check or the start-up
check could vanish without a word. So a required target that does not resolve is a `HookTargetError` naming the
target and the installed SGLang version (the plugin turns it into SystemExit, which SGLang does not swallow), and an
optional one is a warning naming what is lost.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import PackageNotFoundError, version

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_glm5.hooks.model_choice import OURS, UPSTREAM

logger = logging.getLogger(__name__)

BUILT_FOR_SGLANG = "0.5.23"  # the SGLang every target below was read in (pyproject pins it)


class Kind(Enum):
    """How a patch is made. The first four are SGLang's `HookType`s, registered through its `HookRegistry`."""

    AROUND = "around"
    REPLACE = "replace"
    BEFORE = "before"
    AFTER = "after"
    # Not expressible as a HookRegistry hook, so declared (and checked) here, applied as said:
    ENTRY = "entry"  # `hook` is put into the dict `target` under `key` (SGLang's parser registries are such dicts)
    CALL = "call"  # `hook(target)` is called once at load (e.g. swap a module's Triton kernels for interpreted ones)
    SCOPED = "scoped"  # `target` is swapped by the hook `by` for the duration of one call only; nothing at load
    # `hook` wraps SGLang's server-args resolution step `key` through `target` (its `register_resolution_hook`)
    RESOLUTION = "resolution"


class When(Enum):
    ALWAYS = "always"
    CPU = "CPU only"


@dataclass(frozen=True)
class Patch:
    target: str  # dotted path of what is patched (in SGLang, or torch for a SCOPED swap)
    hook: str  # "module:attribute" of ours (for SCOPED: the hook that makes the swap)
    kind: Kind
    why: str
    since: str = BUILT_FOR_SGLANG  # first SGLang version this target was read in
    required: bool = True  # False: a missing target is a warning naming `lost`
    lost: str = ""  # what stops working without it (optional patches)
    when: When = When.ALWAYS
    models: tuple[str, ...] = (OURS, UPSTREAM)  # under which SGLANG_GLM5_MODEL this patch applies
    key: str | None = None  # ENTRY: the dict key; RESOLUTION: the resolution step's name

    def applies(self, *, cpu: bool, model: str) -> bool:
        return (self.when is When.ALWAYS or cpu) and model in self.models


class HookTargetError(RuntimeError):
    pass


def sglang_version() -> str:
    try:
        return version("sglang")
    except PackageNotFoundError:
        return "unknown (no sglang distribution)"


def resolve(path: str):
    """What a dotted path names (module, class, function, attribute), as SGLang's HookRegistry resolves it."""
    return pkgutil.resolve_name(path)


def load_hook(ref: str) -> Callable:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _problem(patch: Patch) -> str | None:
    try:
        obj = resolve(patch.target)
    except (ImportError, AttributeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    if patch.kind is Kind.ENTRY and not isinstance(obj, dict):
        return f"it is a {type(obj).__name__}, not the dict of entries it was in SGLang {patch.since}"
    if patch.kind not in (Kind.ENTRY, Kind.CALL) and not callable(obj):
        return f"it is a {type(obj).__name__}, not something callable"
    if patch.kind is Kind.RESOLUTION and patch.key not in _overridable_resolution_steps():
        return f"{patch.key!r} is not one of its overridable resolution steps"
    return None


def _overridable_resolution_steps() -> frozenset[str]:
    from sglang.srt.arg_groups.resolution_hooks import _OVERRIDABLE_HOOKS

    return _OVERRIDABLE_HOOKS


def _register_resolution_step(register: Callable, step: str, hook: Callable) -> None:
    from sglang.srt.arg_groups.resolution_hooks import _HOOKS

    if hook not in _HOOKS.get(step, ()):  # SGLang may load plugins twice in one process: register once
        register(step)(hook)


def check(patches: Iterable[Patch], warn: Callable[[str], None] = logger.warning) -> None:
    """Resolve every target; HookTargetError listing every missing required one, `warn` for each optional one."""
    installed = sglang_version()
    missing = []
    for patch in patches:
        problem = _problem(patch)
        if problem is None:
            continue
        line = f"`{patch.target}` ({problem}); needed for: {patch.why}"
        if patch.required:
            missing.append(line)
        else:
            warn(
                f"sglang-glm5: SGLang {installed} lacks `{patch.target}` ({problem}), so this is lost: {patch.lost} "
                f"(read in SGLang {patch.since})"
            )
    if missing:
        raise HookTargetError(
            f"sglang-glm5 cannot patch the installed SGLang {installed} (it was built for SGLang {BUILT_FOR_SGLANG}): "
            + "; ".join(missing)
            + f". Install sglang=={BUILT_FOR_SGLANG}, or an sglang-glm5 release made for SGLang {installed}."
        )


def apply(patches: Iterable[Patch]) -> None:
    """Register or make each patch, in order (a later AROUND hook on the same target wraps an earlier one)."""
    for patch in patches:
        if patch.kind is Kind.SCOPED or _problem(patch) is not None:  # SCOPED: made by its hook; missing: warned
            continue
        hook = load_hook(patch.hook)
        if patch.kind is Kind.ENTRY:
            resolve(patch.target)[patch.key] = hook
        elif patch.kind is Kind.CALL:
            hook(patch.target)
        elif patch.kind is Kind.RESOLUTION:
            _register_resolution_step(resolve(patch.target), patch.key, hook)
        else:
            HookRegistry.register(patch.target, hook, HookType(patch.kind.value))
