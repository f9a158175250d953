"""The `sglang.srt.plugins` entry point alone (no SGLANG_EXTERNAL_MODEL_PACKAGE) makes SGLang resolve GLM-5 to our
class and leaves other architectures to SGLang: checked in a fresh process, as SGLang's own processes load it."""

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from sglang_glm5.serving.cpu import cpu_environment

PROBE = """
import json
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.models.registry import ModelRegistry
out = {}
for arch in ("GlmMoeDsaForCausalLM", "DeepseekV3ForCausalLM"):
    cls, _ = ModelRegistry.resolve_model_cls([arch])
    out[arch] = f"{cls.__module__}.{cls.__qualname__}"
print("RESOLVED " + json.dumps(out))
"""
PROBE_TIMEOUT_S = 300


def test_entry_point_is_installed():
    plugins = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert plugins.get("glm5") == "sglang_glm5.plugin:load"


@pytest.mark.slow
def test_plugin_alone_registers_our_model():
    env = cpu_environment({})
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE")
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESOLVED "))
    resolved = json.loads(line.removeprefix("RESOLVED "))
    assert resolved["GlmMoeDsaForCausalLM"] == "sglang_glm5.models.glm5.GlmMoeDsaForCausalLM"
    assert resolved["DeepseekV3ForCausalLM"].startswith("sglang.srt.models.")
