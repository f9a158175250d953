"""The client through a faulty network: transient faults are retried, persistent ones counted, 4xx not retried."""

import pytest

from sglang_glm5.eval.api import Sampling
from sglang_glm5.eval.client import OpenAIClient, api_root
from sglang_glm5.eval.errors import EvalError
from sglang_glm5.eval.runner import run_prompts
from sglang_glm5.serving.process import free_port
from tests.eval.canned_server import MODEL, CannedServer
from tests.eval.faulty_network import FaultyNetwork

PROMPTS = [f"prompt-{name} " + "x" * i for i, name in enumerate(["ok", "503", "drop", "stall", "garbage", "dead", "bad"])]
FAULTS = {
    "prompt-503": ["503", "503"],
    "prompt-drop": ["drop"],
    "prompt-stall": ["stall"],
    "prompt-garbage": ["garbage"],
    "prompt-dead": ["500"] * 10,
    "prompt-bad": ["400"],
}
RETRIES = 2
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def network():
    with CannedServer() as upstream, FaultyNetwork(upstream.url, FAULTS, stall_s=3 * TIMEOUT_S) as network:
        yield network


def test_faults_retried_then_counted(network):
    client = OpenAIClient(network.url, timeout_s=TIMEOUT_S, retries=RETRIES, backoff_s=0.01)
    assert client.model_name() == MODEL
    run = run_prompts(client, "completions", MODEL, PROMPTS, [len(p) for p in PROMPTS], int,
                      Sampling(max_tokens=4), parallel=4, desc="faulty")
    by_name = dict(zip(["ok", "503", "drop", "stall", "garbage", "dead", "bad"], run.records))
    for name in ("ok", "503", "drop", "stall", "garbage"):
        assert by_name[name].correct and by_name[name].error is None, (name, by_name[name])
    assert [by_name[n].attempts for n in ("ok", "503", "drop", "stall", "garbage")] == [1, 3, 2, 2, 2]
    dead = by_name["dead"]
    assert dead.pred is None and dead.attempts == RETRIES + 1
    assert "gave up after 3 attempts: HTTP 500" in dead.error
    bad = by_name["bad"]
    assert bad.pred is None and bad.attempts == 1 and "HTTP 400" in bad.error
    assert run.failed == 2 and run.retried == 5
    assert run.accuracy == pytest.approx(5 / 7) and run.invalid == pytest.approx(2 / 7)
    assert run.output_tokens == 2 * 5


def test_unreachable_server_is_named():
    url = f"http://127.0.0.1:{free_port()}"
    client = OpenAIClient(url, retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(EvalError, match=rf"cannot reach the server at {url}: GET /v1/models: gave up after 2 attempts"):
        client.model_name()


@pytest.mark.parametrize("url,root", [("http://h:1", "http://h:1"), ("http://h:1/", "http://h:1"),
                                      ("http://h:1/v1", "http://h:1"), ("http://h:1/v1/", "http://h:1")],
                         ids=["bare", "slash", "v1", "v1-slash"])
def test_api_root(url, root):
    assert api_root(url) == root


def test_api_root_needs_scheme():
    with pytest.raises(EvalError, match="--base-url 'localhost:30000': expected http://HOST:PORT"):
        api_root("localhost:30000")
