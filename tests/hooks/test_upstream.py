"""`SGLANG_GLM5_MODEL=upstream`: SGLang's own GLM-5 class and DSA backend, our parsers, request checks and start-up
KV check still on. On CPU SGLang's class cannot run (its DSA indexer builds a RoPE that SGLang's CPU path refuses:
`get_rope_cpu` asserts on GLM-5's rope config, see ../shared/notes), so a CPU server shows how far it gets: SGLang's
class named in the log and constructed until that point; what a request would meet is checked in the patched SGLang
of a plugin-loaded process instead of over HTTP."""

import json
import os
import sys

import pytest

from sglang_glm5.hooks.model_choice import MODEL_ENV, UPSTREAM
from sglang_glm5.serving.cpu import EXTERNAL_MODEL_PACKAGE, cpu_environment
from sglang_glm5.serving.process import ServerProcess, ServerStartError
from tests.started_together import Started, commands_started_together, servers_started_together

PROBE_TIMEOUT_S = 400
SGLANG_CLASS = "sglang.srt.models.glm4_moe.GlmMoeDsaForCausalLM"
OUR_CLASS = "sglang_glm5.models.glm5.GlmMoeDsaForCausalLM"
PROBE = """
import json
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.managers.tokenizer_manager import TokenizerManager
from sglang.srt.models.registry import ModelRegistry
from sglang.srt.parser.reasoning_parser import ReasoningParser
from sglang.srt.plugins.hook_registry import HookRegistry
cls, _ = ModelRegistry.resolve_model_cls(["GlmMoeDsaForCausalLM"])
print("PROBE " + json.dumps({
    "model": f"{cls.__module__}.{cls.__qualname__}",
    "patched": sorted(HookRegistry._patched),
    "request_check": TokenizerManager._validate_one_request.__module__ if hasattr(TokenizerManager._validate_one_request, "__wrapped__") else None,
    "parsers": [ReasoningParser.DetectorMap["glm5"].__module__, FunctionCallParser.ToolCallParserEnum["glm5"].__module__],
}))
"""


def upstream_env(**extra) -> dict[str, str]:
    return {**os.environ, MODEL_ENV: UPSTREAM, **extra}


def test_cpu_environment_leaves_sglangs_model_registry_alone_under_upstream():
    assert cpu_environment({})[EXTERNAL_MODEL_PACKAGE] == "sglang_glm5.models"
    assert EXTERNAL_MODEL_PACKAGE not in cpu_environment({MODEL_ENV: UPSTREAM})


@pytest.fixture(scope="module")
def started(tiny_checkpoint, server_log_dir):
    """This module's processes (the probe and three launch_servers that stop at start-up), started at once
    (tests/started_together.py); each test waits for its own."""
    probe = Started(
        [sys.executable, "-c", PROBE], server_log_dir / "upstream-probe.log",
        env=cpu_environment({**os.environ, MODEL_ENV: UPSTREAM}),
    )
    servers = {
        "fp8-kv": ServerProcess(
            tiny_checkpoint("fp8"), server_log_dir / "upstream-fp8-kv.log", ["--kv-cache-dtype", "fp8_e4m3"],
            env=upstream_env(SGLANG_GLM5_STRICT="1"),
        ),
        "indexcache": ServerProcess(
            tiny_checkpoint("bf16"), server_log_dir / "upstream-indexcache.log",
            ["--json-model-override-args", json.dumps({"index_topk_pattern": "FSX"})], env=upstream_env(),
        ),
        "upstream": ServerProcess(
            tiny_checkpoint("bf16"), server_log_dir / "upstream.log",
            ["--reasoning-parser", "glm5", "--tool-call-parser", "glm5"], env=upstream_env(),
        ),
    }
    with commands_started_together({"probe": probe}), servers_started_together(servers):
        yield {"probe": probe, **servers}


@pytest.mark.slow
def test_plugin_under_upstream_resolves_sglangs_class_and_keeps_our_checks(started):
    code, output = started["probe"].result(PROBE_TIMEOUT_S)
    assert code == 0, output[-3000:]
    found = json.loads(next(l for l in output.splitlines() if l.startswith("PROBE ")).removeprefix("PROBE "))
    assert found["model"] == SGLANG_CLASS
    assert found["request_check"] is not None  # SGLang's method is wrapped by ours
    assert "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request" in found["patched"]
    assert "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat._validate_request" in found["patched"]
    assert found["parsers"] == ["sglang_glm5.parsers.reasoning", "sglang_glm5.parsers.tool_call"]
    assert not any("attention_backend_setup" in t or "DraftBackendFactory" in t for t in found["patched"])


@pytest.mark.slow
def test_upstream_start_up_kv_scale_check_refuses_fp8_kv_without_scales(started):
    """Our start-up check stays on: SGLang's pass keeps fp8_e4m3, ours refuses it (strict) for lack of k/v scales."""
    with pytest.raises(ServerStartError) as err:
        started["fp8-kv"].wait_ready()
    assert "--kv-cache-dtype fp8_e4m3: the checkpoint has no calibrated k/v scales" in str(err.value)
    assert "refused: --strict / SGLANG_GLM5_STRICT=1" in str(err.value)


@pytest.mark.slow
def test_upstream_start_up_refuses_a_bad_indexcache_pattern(started):
    """IndexCache validation stays on: a pattern of the wrong length is refused before SGLang builds its model."""
    server = started["indexcache"]
    with pytest.raises(ServerStartError) as err:
        server.wait_ready()
    assert "--json-model-override-args: index_topk_pattern position 2 is 'X'" in str(err.value)
    assert SGLANG_CLASS not in server.log_path.read_text()  # refused before any model class was resolved


@pytest.mark.slow
def test_upstream_on_cpu_builds_sglangs_class_until_its_dsa_indexer(started):
    server = started["upstream"]
    with pytest.raises(ServerStartError):
        server.wait_ready()
    log = server.log_path.read_text()
    assert f"GLM-5 model: {SGLANG_CLASS} (SGLang's own: {MODEL_ENV}={UPSTREAM})" in log
    assert OUR_CLASS not in log
    assert "layers/attention/dsa/dsa_indexer.py" in log and "get_rope_cpu" in log  # SGLang's known CPU gap
