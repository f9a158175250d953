"""One tiny GLM-5 server with `--reasoning-parser glm5 --tool-call-parser glm5` for every module of this package
(our parsers' split end to end, and the official OpenAI client), started once and stopped after the package."""

import openai
import pytest

REQUEST_TIMEOUT_S = 300


@pytest.fixture(scope="package")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="package")
def server(tiny_server):
    flags = ["--dtype", "float32", "--reasoning-parser", "glm5", "--tool-call-parser", "glm5"]
    with tiny_server("parsers-e2e.log", *flags) as server:
        yield server


@pytest.fixture(scope="package")
def client(server):
    """The official OpenAI client on the server (no retries: a failure shows at once)."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)
