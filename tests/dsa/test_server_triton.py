"""The tiny GLM-5 served on CPU with `--dsa-prefill-backend triton --dsa-decode-backend triton` (Triton interpreter)
generates the same greedy tokens as with the reference backend."""

import os

import pytest
import requests

from sglang_glm5.dsa.impls import resolve_impl
from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess

GREEDY_TOKENS = 8
REQUEST_TIMEOUT_S = 600
TRITON_FLAGS = ["--dsa-prefill-backend", "triton", "--dsa-decode-backend", "triton"]
# the tiny checkpoint selects index_topk = 16 keys: the last two prompts are longer, so DSA really selects
PROMPTS = {
    "short": "Sparse attention selects keys.",
    "medium": "The quick brown fox jumps over the lazy dog. " * 4,
    "long": "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n" * 2,
}


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_triton_entry_resolves_to_the_kernels(phase):
    impl = resolve_impl("triton", phase, "cuda")
    assert impl.name == "triton"
    assert impl.indexer_logits.__module__ == "sglang_glm5.dsa.triton.indexer"
    assert impl.topk_positions.__module__ == "sglang_glm5.dsa.triton.topk"
    assert impl.sparse_mla.__module__ == f"sglang_glm5.dsa.triton.mla_{phase}"
    assert impl.sparse_mla.__name__ == f"sparse_mla_{phase}"


def generate(url, text):
    response = requests.post(
        f"{url}/generate",
        json={"text": text, "sampling_params": load_client.greedy(GREEDY_TOKENS)},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    body = response.json()
    return body["meta_info"]["prompt_tokens"], body["output_ids"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="module")
def reference_tokens(checkpoint, server_log_dir):
    with ServerProcess(checkpoint, server_log_dir / "dsa-reference.log", ["--dtype", "float32"]) as server:
        return {name: generate(server.url, text) for name, text in PROMPTS.items()}


@pytest.fixture(scope="module")
def triton_server(checkpoint, server_log_dir, reference_tokens):
    env = dict(os.environ, TRITON_INTERPRET="1")  # CPU tensors: the kernels run in Triton's interpreter
    flags = ["--dtype", "float32", *TRITON_FLAGS]
    with ServerProcess(checkpoint, server_log_dir / "dsa-triton.log", flags, env=env) as server:
        yield server


@pytest.mark.slow
def test_server_uses_triton_for_both_phases(triton_server):
    assert "GLM-5 DSA backend: prefill=triton decode=triton" in triton_server.log_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROMPTS))
def test_greedy_tokens_equal_reference_backend(triton_server, reference_tokens, name):
    prompt_tokens, reference = reference_tokens[name]
    if name != "short":
        assert prompt_tokens > 16, "prompt must be longer than index_topk"
    assert generate(triton_server.url, PROMPTS[name]) == (prompt_tokens, reference)
