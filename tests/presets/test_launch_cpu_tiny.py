"""`sglang-glm5 launch --preset cpu-tiny` serves a tiny GLM-5 checkpoint end to end through SGLang's launch_server."""

import sys

import pytest
import requests

from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.serving.process import ServerProcess

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT_S = 300
MAX_TOKENS = 8
SERVED_NAME = load_catalog().presets["cpu-tiny"].options["served_model_name"]


class LaunchedServer(ServerProcess):
    def __init__(self, model_path, log_path):
        super().__init__(model_path, log_path)
        self.command = [
            sys.executable, "-m", "sglang_glm5.cli", "launch", "--preset", "cpu-tiny", "--model-path", str(model_path),
            "--", "--host", "127.0.0.1", "--port", str(self.port),
        ]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, server_log_dir):
    with LaunchedServer(tiny_checkpoint("bf16"), server_log_dir / "launch-cpu-tiny.log") as server:
        yield server


def test_chat_request_is_answered(server):
    response = requests.post(
        f"{server.url}/v1/chat/completions",
        json={"model": SERVED_NAME, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": MAX_TOKENS,
              "temperature": 0},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    body = response.json()
    assert body["model"] == SERVED_NAME
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == MAX_TOKENS


def test_the_preset_command_ran_with_our_model_and_backend(server):
    log = server.log_path.read_text()
    launched = next(line for line in log.splitlines() if line.startswith("+ ") and "sglang.launch_server" in line)
    for flag in ("--device cpu", "--reasoning-parser glm5", "--tool-call-parser glm5", "--attention-backend dsa", "--disable-cuda-graph"):
        assert flag in launched
    assert "GLM-5 model: sglang_glm5.models.glm5.GlmMoeDsaForCausalLM" in log
    assert "GLM-5 DSA backend: prefill=reference decode=reference" in log


def test_server_stops_cleanly(server):
    assert server.stop() == 0
    assert not server.group_alive()
