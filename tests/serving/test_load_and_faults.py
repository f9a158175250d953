"""The tiny GLM-5 behind launch_server under load, bad input and dropped streams (one server for the module).

Greedy outputs are compared with the same requests served one at a time on the same server: any reuse or overrun
of KV pages, of our indexer key cache (indexed by KV slot) or of the top-k buffers changes them. Tests run in file
order: the probe is answered first on a fresh server and again after every other request has come and gone.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.lib import load_client as client
from sglang_glm5.serving.process import ServerProcess
from tests.oracle import tokenizer

CONTEXT_LEN = 512
POOL_TOKENS = 8192  # 32 mixed requests fit without eviction; memory pressure has its own module
PAGE_TOKENS = 64  # SGLang's DSA page: the radix cache matches whole pages
NEW_TOKENS = 8
CONCURRENT = 32
SHARED_PREFIX = PAGE_TOKENS + 5
LENGTHS = client.geometric_lengths(CONCURRENT, 5, 300)  # most longer than index_topk 16
IDLE_TIMEOUT_S = 60
ABORTED_NEW_TOKENS = CONTEXT_LEN - 64  # far more decode steps than the test waits for
CHUNKS_BEFORE_DISCONNECT = 3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="module")
def server(checkpoint, server_log_dir):
    flags = ["--dtype", "float32", "--context-length", str(CONTEXT_LEN), "--max-total-tokens", str(POOL_TOKENS),
             "--enable-metrics"]
    with ServerProcess(checkpoint, server_log_dir / "load-and-faults.log", flags) as server:
        yield server


@pytest.fixture(scope="module")
def mixed(checkpoint):
    stream = client.token_stream(tokenizer(checkpoint), 4 * max(LENGTHS) * CONCURRENT // 8)
    return client.mixed_prompts(stream, LENGTHS, SHARED_PREFIX, share_every=2)


@pytest.fixture(scope="module")
def prompts(mixed):
    return mixed[0]


@pytest.fixture(scope="module")
def probe(server, prompts):
    """A 150-token prompt (no shared prefix) and its greedy output on the fresh server, before any other request."""
    ids = prompts[-1][:150]
    return ids, client.generate(server.url, ids, NEW_TOKENS)["output_ids"]


@pytest.fixture(scope="module")
def one_at_a_time(server, prompts, probe):
    results = [client.generate(server.url, p, NEW_TOKENS) for p in prompts]
    return [r["output_ids"] for r in results], [r["meta_info"]["cached_tokens"] for r in results]


def test_shared_prefixes_hit_the_radix_cache(one_at_a_time, mixed):
    _, cached = one_at_a_time
    _, sharing = mixed
    assert len(sharing) >= 5
    assert cached[sharing[0]] == 0
    hits = [cached[i] for i in sharing[1:]]
    assert all(h >= SHARED_PREFIX // PAGE_TOKENS * PAGE_TOKENS for h in hits), hits


def test_32_concurrent_mixed_lengths_equal_one_at_a_time(server, prompts, one_at_a_time):
    expected, _ = one_at_a_time
    client.flush_cache(server.url)  # the concurrent run prefills from scratch, sharing prefixes among itself
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(lambda p: client.generate(server.url, p, NEW_TOKENS), prompts))
    wrong = [i for i, (r, e) in enumerate(zip(results, expected)) if r["output_ids"] != e]
    assert not wrong, f"prompts {wrong} (lengths {[len(prompts[i]) for i in wrong]}) changed under load"
    client.wait_idle(server.url, IDLE_TIMEOUT_S)


def test_prefix_hit_equals_miss(server, prompts):
    a = prompts[-5]
    b = a[:SHARED_PREFIX] + prompts[-1][SHARED_PREFIX : len(a)]  # the same first page, another tail
    client.wait_idle(server.url, IDLE_TIMEOUT_S)
    client.flush_cache(server.url)
    miss_a = client.generate(server.url, a, NEW_TOKENS)
    hit_a = client.generate(server.url, a, NEW_TOKENS)
    hit_b = client.generate(server.url, b, NEW_TOKENS)
    client.flush_cache(server.url)
    miss_b = client.generate(server.url, b, NEW_TOKENS)
    assert miss_a["meta_info"]["cached_tokens"] == 0 and miss_b["meta_info"]["cached_tokens"] == 0
    assert hit_a["meta_info"]["cached_tokens"] >= len(a) // PAGE_TOKENS * PAGE_TOKENS - PAGE_TOKENS
    assert hit_b["meta_info"]["cached_tokens"] >= SHARED_PREFIX // PAGE_TOKENS * PAGE_TOKENS
    assert hit_a["output_ids"] == miss_a["output_ids"]
    assert hit_b["output_ids"] == miss_b["output_ids"]


@pytest.fixture(scope="module")
def bad_requests(checkpoint):
    vocab_size = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
    return {bad.name: bad for bad in client.bad_requests(CONTEXT_LEN, vocab_size)}


@pytest.mark.parametrize("name", [bad.name for bad in client.bad_requests(CONTEXT_LEN, vocab_size=1)])
def test_bad_request_gets_4xx_and_the_next_is_served(server, bad_requests, probe, name):
    bad = bad_requests[name]
    response = client.send(server.url, bad)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert bad.fragment in client.error_message(response), response.text[:500]
    ids, expected = probe
    assert client.generate(server.url, ids, NEW_TOKENS)["output_ids"] == expected


def test_stream_disconnect_frees_pages_and_spares_others(server, prompts, one_at_a_time):
    expected, _ = one_at_a_time
    others = [1, 20, 31]
    assert client.is_idle(client.wait_idle(server.url, IDLE_TIMEOUT_S))
    aborted_before = client.metric(server.url, "sglang:num_aborted_requests_total")
    with ThreadPoolExecutor(len(others) + 1) as pool:
        cut = pool.submit(client.stream_then_disconnect, server.url, prompts[10], ABORTED_NEW_TOKENS,
                          CHUNKS_BEFORE_DISCONNECT)
        futures = [pool.submit(client.generate, server.url, prompts[i], NEW_TOKENS) for i in others]
        assert cut.result() == CHUNKS_BEFORE_DISCONNECT
        outputs = [f.result()["output_ids"] for f in futures]
    assert outputs == [expected[i] for i in others]
    idle = client.wait_idle(server.url, IDLE_TIMEOUT_S)
    assert idle["num_used_tokens"] == 0
    assert client.metric(server.url, "sglang:num_aborted_requests_total") == aborted_before + 1


def test_probe_unchanged_after_pages_were_reused(server, probe):
    ids, expected = probe
    client.wait_idle(server.url, IDLE_TIMEOUT_S)
    client.flush_cache(server.url)
    assert client.generate(server.url, ids, NEW_TOKENS)["output_ids"] == expected
    hit = client.generate(server.url, ids, NEW_TOKENS)
    assert hit["meta_info"]["cached_tokens"] > 0 and hit["output_ids"] == expected


def test_server_still_healthy(server):
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200
    assert server.proc.poll() is None
