"""The tiny GLM-5 served end to end by SGLang's own launch_server on CPU, through `sglang-glm5 serve`.

One server for the module, in float32 with chunked prefill of one page, so long prompts are prefilled in chunks.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess
from tests.oracle import hf_greedy, tokenizer

CHUNK_TOKENS = 64  # one DSA page: a 130-token prompt is prefilled in 3 chunks
GREEDY_TOKENS = 24
CONCURRENT = 8
REQUEST_TIMEOUT_S = 300
PROMPTS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n" * 2,
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Sparse attention selects a few keys per query.",
    "import torch\nx = torch.zeros(3)\n",
    "Once upon a time, " * 9,
    "GLM-5 has 78 layers and one MTP layer.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3,
    "print('hello world')",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="module")
def server(checkpoint, server_log_dir):
    flags = ["--dtype", "float32", "--chunked-prefill-size", str(CHUNK_TOKENS)]
    with ServerProcess(checkpoint, server_log_dir / "e2e.log", flags) as server:
        yield server


def generate(url: str, text: str, max_new_tokens: int = GREEDY_TOKENS) -> list[int]:
    response = requests.post(
        f"{url}/generate",
        json={"text": text, "sampling_params": load_client.greedy(max_new_tokens)},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()["output_ids"]


def chat(url: str, content: str, **extra) -> dict:
    response = requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": content}], "max_tokens": 8,
              "temperature": 0, **extra},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()


def test_server_runs_our_model_and_backend(server):
    log = server.log_path.read_text()
    assert "GLM-5 model: sglang_glm5.models.glm5.GlmMoeDsaForCausalLM" in log
    assert "GLM-5 DSA backend: prefill=reference decode=reference" in log


@pytest.mark.parametrize("prompt", [PROMPTS[0], PROMPTS[2]], ids=["chunked-prefill", "one-chunk"])
def test_generate_greedy_ids_equal_hf(server, checkpoint, prompt):
    ids = tokenizer(checkpoint)(prompt)["input_ids"]
    assert generate(server.url, prompt) == hf_greedy(checkpoint, ids, GREEDY_TOKENS)


@pytest.mark.parametrize("enable_thinking", [True, False], ids=["thinking", "no-thinking"])
def test_chat_completion_renders_glm5_template(server, checkpoint, enable_thinking):
    content = "Say hello."
    body = chat(server.url, content, chat_template_kwargs={"enable_thinking": enable_thinking})
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str) and message["content"]
    assert body["usage"]["completion_tokens"] == 8
    rendered = tokenizer(checkpoint).apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True,
        enable_thinking=enable_thinking,
    )
    assert rendered.endswith("<think>") if enable_thinking else rendered.endswith("</think>")
    assert body["usage"]["prompt_tokens"] == len(tokenizer(checkpoint)(rendered, add_special_tokens=False)["input_ids"])


def test_concurrent_requests_equal_sequential(server):
    sequential = [generate(server.url, p) for p in PROMPTS[:CONCURRENT]]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        concurrent = list(pool.map(lambda p: generate(server.url, p), PROMPTS[:CONCURRENT]))
    assert concurrent == sequential


def test_server_stops_cleanly(server):
    assert server.stop() == 0
    assert not server.group_alive(), "launch_server left processes running"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=5)
