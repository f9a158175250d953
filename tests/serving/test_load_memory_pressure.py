"""More concurrent requests than the KV pool holds: SGLang queues or retracts them, and every one still finishes with
the greedy output it gets alone (one server for the module, with a pool of a few pages).

Each request fits in one 64-token page at admission and needs a second one while decoding; the pool holds far
fewer pages than the requests need together, and admission is made optimistic (low schedule conservativeness) so
running requests may run out of pages mid-decode and be retracted. On SGLang 0.5.23 with this pool the scheduler
queues them (at most 3 run at once, retractions 0 in our runs); either way every output must be right.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.lib import load_client as client
from sglang_glm5.serving.process import ServerProcess
from tests.oracle import tokenizer

PAGE_TOKENS = 64
POOL_PAGES = 6
REQUESTS = 12
PROMPT_TOKENS = 40
NEW_TOKENS = 40  # 80 tokens: 2 pages per request at the end, 24 pages asked of a 6-page pool
CONTEXT_LEN = 256
IDLE_TIMEOUT_S = 60

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_checkpoint, server_log_dir):
    flags = ["--dtype", "float32", "--context-length", str(CONTEXT_LEN),
             "--max-total-tokens", str(POOL_PAGES * PAGE_TOKENS), "--schedule-conservativeness", "0.05"]
    with ServerProcess(tiny_checkpoint("bf16"), server_log_dir / "memory-pressure.log", flags) as server:
        yield server


@pytest.fixture(scope="module")
def prompts(tiny_checkpoint):
    stream = client.token_stream(tokenizer(tiny_checkpoint("bf16")), 4 * PROMPT_TOKENS * REQUESTS)
    return [stream[i * 3 * PROMPT_TOKENS : i * 3 * PROMPT_TOKENS + PROMPT_TOKENS] for i in range(REQUESTS)]


def watch_loads(url: str, stop: threading.Event, seen: list[dict]) -> None:
    while not stop.is_set():
        seen.append(client.loads(url))
        stop.wait(client.IDLE_POLL_S)


def test_requests_beyond_the_pool_are_queued_or_retracted_and_all_correct(server, prompts):
    alone = []
    for p in prompts:
        alone.append(client.generate(server.url, p, NEW_TOKENS)["output_ids"])
        client.flush_cache(server.url)  # each one starts from an empty pool, as the concurrent run does
    seen: list[dict] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_loads, args=(server.url, stop, seen))
    watcher.start()
    try:
        with ThreadPoolExecutor(REQUESTS) as pool:
            results = list(pool.map(lambda p: client.generate(server.url, p, NEW_TOKENS), prompts))
    finally:
        stop.set()
        watcher.join()
    wrong = [i for i, (r, a) in enumerate(zip(results, alone)) if r["output_ids"] != a]
    assert not wrong, f"requests {wrong} changed under memory pressure"
    retractions = sum(r["meta_info"]["num_retractions"] for r in results)
    most_waiting = max(load["num_waiting_reqs"] for load in seen)
    most_running = max(load["num_running_reqs"] for load in seen)
    assert most_running < REQUESTS, "the pool held every request at once: no pressure"
    assert retractions > 0 or most_waiting > 0, "no request was queued nor retracted: no pressure"
    assert max(load["num_used_tokens"] for load in seen) <= POOL_PAGES * PAGE_TOKENS
    assert client.is_idle(client.wait_idle(server.url, IDLE_TIMEOUT_S))
