"""Every patch of `hooks/table.py` resolves in the installed SGLang (in a CPU process, where SGLang defines its CPU-only
targets); a target SGLang lacks stops the plugin naming it and the SGLang version (optional: a warning naming what is
lost), also through SGLang's own `load_plugins`, which swallows ordinary exceptions."""

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from sglang.srt.plugins.hook_registry import HookRegistry

import sglang_glm5
from sglang_glm5 import plugin
from sglang_glm5.hooks import registry
from sglang_glm5.hooks.model_choice import MODEL_ENV, OURS, UPSTREAM, ModelChoiceError, model_choice
from sglang_glm5.hooks.registry import HookTargetError, Kind, Patch, When
from sglang_glm5.hooks.table import PATCHES
from sglang_glm5.serving.cpu import cpu_environment

PROBE_TIMEOUT_S = 400
CHEAP_CLASS = "sglang.srt.plugins.hook_registry.HookRegistry"  # resolving it imports nothing heavy
FAKE_REQUIRED = Patch(f"{CHEAP_CLASS}.no_such_method", "sglang_glm5.hooks.model:resolve_model_cls", Kind.AROUND, "a test")
FAKE_OPTIONAL = Patch(
    "sglang.srt.plugins.no_such_module.f", "sglang_glm5.hooks.model:resolve_model_cls", Kind.AROUND, "a test",
    required=False, lost="the test's feature",
)

CHECK_ALL = """
import json
from sglang_glm5.hooks import registry
from sglang_glm5.hooks.table import PATCHES
warnings = []
registry.check(PATCHES, warn=warnings.append)
hooks = sorted({p.hook for p in PATCHES})
for ref in hooks:
    assert callable(registry.load_hook(ref)), ref
print("CHECKED " + json.dumps({"warnings": warnings, "patches": len(PATCHES), "hooks": len(hooks)}))
"""


@pytest.mark.slow
def test_every_target_resolves_in_the_installed_sglang():
    """All patches, CPU-only and both SGLANG_GLM5_MODEL choices, in a CPU process (as `sglang-glm5 serve` makes it)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_ALL], env=cpu_environment(dict(__import__("os").environ)), capture_output=True,
        text=True, timeout=PROBE_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("CHECKED "))
    result = json.loads(line.removeprefix("CHECKED "))
    assert result == {"warnings": [], "patches": len(PATCHES), "hooks": len({p.hook for p in PATCHES})}


def test_a_missing_required_target_is_an_error_naming_it_and_the_sglang_version():
    with pytest.raises(HookTargetError) as err:
        registry.check([FAKE_REQUIRED])
    message = str(err.value)
    assert FAKE_REQUIRED.target in message and "needed for: a test" in message
    assert f"installed SGLang {registry.sglang_version()}" in message
    assert f"sglang=={registry.BUILT_FOR_SGLANG}" in message


def test_a_missing_optional_target_is_a_warning_naming_what_is_lost():
    warnings = []
    registry.check([FAKE_OPTIONAL], warn=warnings.append)
    (warning,) = warnings
    assert FAKE_OPTIONAL.target in warning and "lost: the test's feature" in warning
    assert f"SGLang {registry.sglang_version()}" in warning


def test_a_target_of_the_wrong_kind_is_an_error():
    entry_on_a_method = Patch(f"{CHEAP_CLASS}.register", "sglang_glm5.hooks.model:resolve_model_cls", Kind.ENTRY, "t", key="k")
    with pytest.raises(HookTargetError, match="not the dict of entries"):
        registry.check([entry_on_a_method])


def test_plugin_load_stops_sglang_start_up_on_a_missing_required_target(monkeypatch):
    """SGLang's load_plugins logs and ignores a plugin's Exception; ours must end the process, naming the target."""
    import sglang.srt.plugins as sglang_plugins

    monkeypatch.setattr(plugin, "PATCHES", (FAKE_REQUIRED,))
    monkeypatch.setattr(sglang_plugins, "_plugins_loaded", False)
    monkeypatch.setenv("SGLANG_PLUGINS", "glm5")
    monkeypatch.setattr(HookRegistry, "_hooks", defaultdict(list))
    with pytest.raises(SystemExit) as stop:
        sglang_plugins.load_plugins()
    assert FAKE_REQUIRED.target in str(stop.value.code)
    assert not HookRegistry._hooks, "nothing is registered when a required target is missing"


def test_upstream_choice_keeps_checks_and_drops_our_model():
    ours = {(p.target, p.hook) for p in plugin.selected_patches({}, cpu=False)}
    upstream = {(p.target, p.hook) for p in plugin.selected_patches({MODEL_ENV: UPSTREAM}, cpu=False)}
    hooks_of = lambda pairs: {hook.split(":")[0] for _, hook in pairs}  # noqa: E731
    assert {"sglang_glm5.hooks.model", "sglang_glm5.hooks.draft", "sglang_glm5.hooks.startup"} <= hooks_of(ours)
    assert not {"sglang_glm5.hooks.model", "sglang_glm5.hooks.draft", "sglang_glm5.hooks.startup"} & hooks_of(upstream)
    kept = {"sglang_glm5.hooks.request_checks", "sglang_glm5.parsers.reasoning", "sglang_glm5.parsers.tool_call",
            "sglang_glm5.hooks.override_args", "sglang_glm5.hooks.upstream"}  # fmt: skip
    assert kept <= hooks_of(upstream)


def test_cpu_patches_only_on_cpu_and_the_start_up_check_wraps_them():
    gpu = plugin.selected_patches({}, cpu=False)
    cpu = plugin.selected_patches({}, cpu=True)
    assert all(p.when is When.ALWAYS for p in gpu)
    assert {p for p in cpu if p.when is When.CPU}
    kv_pass = [p.hook for p in cpu if p.target.endswith("._dsa_kv_cache_dtype_default")]
    assert kv_pass == ["sglang_glm5.hooks.cpu:declare_nothing", "sglang_glm5.hooks.startup:kv_cache_dtype_pass"]


def test_every_patch_is_declared_with_its_reason():
    for patch in PATCHES:
        assert patch.why and patch.since and ":" in patch.hook, patch
        assert patch.required or patch.lost, f"optional {patch.target} must say what is lost"
        assert (patch.kind in (Kind.ENTRY, Kind.RESOLUTION)) == (patch.key is not None), patch


@pytest.mark.parametrize("value,expected", [("", OURS), ("glm5", OURS), ("UPSTREAM", UPSTREAM)])
def test_model_choice(value, expected):
    assert model_choice({MODEL_ENV: value}) == expected


def test_model_choice_refuses_an_unknown_value_naming_the_variable():
    with pytest.raises(ModelChoiceError, match=f"{MODEL_ENV}='sglang'.*glm5, upstream"):
        model_choice({MODEL_ENV: "sglang"})


def test_no_module_imports_the_plugin():
    """The plugin imports the hooks table; nothing of the package imports the plugin back (no import circle)."""
    root = Path(sglang_glm5.__file__).parent
    importers = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if "sglang_glm5.plugin" in names:
                importers.append(str(path.relative_to(root)))
    assert importers == []
