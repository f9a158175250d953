"""HTTP client for load and fault runs against a launch_server (tests/serving/test_load_*.py, bench/faults.py).

Greedy `/generate` calls on token ids, a stream that is cut off after a few chunks, the scheduler's live KV usage
(`/v1/loads`: `num_used_tokens` = pool size - free - evictable, i.e. tokens held by running or queued requests),
and the table of bad requests, each with the fragment its HTTP 4xx message must contain.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import requests

REQUEST_TIMEOUT_S = 600
IDLE_POLL_S = 0.2


def generate(url: str, ids: list[int] | list[list[int]], max_new_tokens: int, rid: str | None = None,
             timeout_s: float = REQUEST_TIMEOUT_S) -> dict | list[dict]:  # fmt: skip
    """Greedy, ignore_eos: the `/generate` response (`output_ids`, `meta_info`); for a batch of id lists, a list."""
    body = {"input_ids": ids, "sampling_params": greedy(max_new_tokens)}
    if rid is not None:
        body["rid"] = rid
    response = requests.post(f"{url}/generate", json=body, timeout=timeout_s)
    response.raise_for_status()
    return response.json()


def greedy(max_new_tokens: int) -> dict:
    return {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True}


def stream_generate(url: str, ids: list[int], max_new_tokens: int) -> tuple[list[int], int]:
    """A streaming greedy request read to the end: (output ids of the last event, number of events)."""
    body = {"input_ids": ids, "sampling_params": greedy(max_new_tokens), "stream": True}
    last, events = None, 0
    with requests.post(f"{url}/generate", json=body, stream=True, timeout=REQUEST_TIMEOUT_S) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                event = json.loads(line[len(b"data: "):])
                if "error" in event:
                    raise RuntimeError(f"stream failed: {event['error']}")
                last, events = event, events + 1
    if last is None:
        raise RuntimeError("stream ended without an event")
    return last["output_ids"], events  # not incremental: each event carries all output ids so far


def stream_then_disconnect(url: str, ids: list[int], max_new_tokens: int, chunks: int) -> int:
    """Start a streaming greedy request, read `chunks` SSE events, then drop the connection. Returns events read."""
    body = {"input_ids": ids, "sampling_params": greedy(max_new_tokens), "stream": True}
    read = 0
    with requests.post(f"{url}/generate", json=body, stream=True, timeout=REQUEST_TIMEOUT_S) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                read += 1
                if read == chunks:
                    break
    return read


def loads(url: str) -> dict:
    """The scheduler's live load (`/v1/loads`, DP rank 0): num_used_tokens, num_running_reqs, num_waiting_reqs..."""
    response = requests.get(f"{url}/v1/loads", timeout=30)
    response.raise_for_status()
    return response.json()["loads"][0]


def is_idle(load: dict) -> bool:
    return load["num_used_tokens"] == 0 and load["num_running_reqs"] == 0 and load["num_waiting_reqs"] == 0


def wait_idle(url: str, timeout_s: float) -> dict:
    """Poll `/v1/loads` until no request holds KV pages; TimeoutError with the last load otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        load = loads(url)
        if is_idle(load):
            return load
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not idle after {timeout_s}s: {load}")
        time.sleep(IDLE_POLL_S)


def metric(url: str, name: str) -> float:
    """Sum of a Prometheus metric's samples at `/metrics` (needs --enable-metrics); 0 if it has none yet."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def mixed_prompts(
    stream: list[int], lengths: list[int], shared_prefix: int, share_every: int
) -> tuple[list[list[int]], list[int]]:
    """Prompts of exactly `lengths` tokens cut from `stream` at different offsets, and the indices of those that
    start with the same `shared_prefix` tokens (every `share_every`-th prompt longer than the prefix), so the radix
    cache has something to hit."""
    assert len(stream) >= 2 * max(lengths), "token stream too short for these prompt lengths"
    step = max(1, (len(stream) - max(lengths)) // len(lengths))
    long_ones = [i for i, n in enumerate(lengths) if n > shared_prefix]
    sharing = long_ones[::share_every]
    prompts = [stream[i * step : i * step + n] for i, n in enumerate(lengths)]
    for i in sharing:
        prompts[i] = stream[:shared_prefix] + prompts[i][shared_prefix:]
    return prompts, sharing


def geometric_lengths(n: int, lo: int, hi: int) -> list[int]:
    return [round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)]


def token_stream(tokenizer, min_tokens: int) -> list[int]:
    """The tiny tokenizer's corpus as token ids, repeated to at least `min_tokens`."""
    from sglang_glm5.checkpoint.tokenizer import CORPUS

    stream = tokenizer("\n".join(CORPUS), add_special_tokens=False)["input_ids"]
    while len(stream) < min_tokens:
        stream = stream + stream
    return stream


def flush_cache(url: str) -> None:
    """Empty the radix cache (SGLang refuses while requests run: wait for idle first)."""
    requests.post(f"{url}/flush_cache", timeout=60).raise_for_status()


@dataclass(frozen=True)
class BadRequest:
    name: str
    path: str
    body: dict | bytes  # bytes: sent as is, with a JSON content type
    fragment: str  # must appear in the error message


def send(url: str, bad: BadRequest) -> requests.Response:
    if isinstance(bad.body, bytes):
        return requests.post(url + bad.path, data=bad.body, headers={"Content-Type": "application/json"},
                             timeout=REQUEST_TIMEOUT_S)
    return requests.post(url + bad.path, json=bad.body, timeout=REQUEST_TIMEOUT_S)


def error_message(response: requests.Response) -> str:
    """The message of SGLang's error bodies: `{"error": {"message"}}` (/generate) or `{"message"}` (OpenAI routes)."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        return response.text
    if isinstance(body.get("error"), dict):
        return body["error"].get("message", "")
    return body.get("message", response.text)


def bad_requests(context_len: int, vocab_size: int) -> list[BadRequest]:
    """Every bad input the fault runs send; a server must answer each with a 4xx naming the problem."""
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    over = context_len + 8
    return [
        BadRequest("generate-prompt-over-context", "/generate",
                   {"input_ids": [5] * over, "sampling_params": greedy(4)},
                   f"is longer than the model's context length ({context_len} tokens)"),
        BadRequest("chat-prompt-over-context", "/v1/chat/completions",
                   {**chat, "messages": [{"role": "user", "content": "hello " * over}]},
                   f"context length ({context_len} tokens)"),
        BadRequest("generate-max-tokens-past-context", "/generate",
                   {"input_ids": [5, 6, 7], "sampling_params": greedy(context_len)},
                   f"exceeds the model's maximum context length of {context_len} tokens"),
        BadRequest("completions-max-tokens-past-context", "/v1/completions",
                   {"model": "default", "prompt": "hello", "max_tokens": context_len + 1},
                   f"maximum context length of {context_len} tokens"),
        BadRequest("chat-max-tokens-past-context", "/v1/chat/completions", {**chat, "max_tokens": context_len + 1},
                   f"at most {context_len} completion tokens"),
        BadRequest("generate-empty-text", "/generate", {"text": "", "sampling_params": greedy(4)},
                   "The input is empty (0 tokens)"),
        BadRequest("generate-empty-ids", "/generate", {"input_ids": [], "sampling_params": greedy(4)},
                   "input_ids cannot be empty"),
        BadRequest("completions-empty-prompt", "/v1/completions", {"model": "default", "prompt": "", "max_tokens": 4},
                   "Prompt cannot be empty"),
        BadRequest("chat-no-messages", "/v1/chat/completions", {**chat, "messages": []}, "Messages cannot be empty"),
        BadRequest("generate-id-past-vocab", "/generate", {"input_ids": [5, vocab_size], "sampling_params": greedy(4)},
                   f"Invalid token id {vocab_size} at position 1: token ids must be in [0, {vocab_size})"),
        BadRequest("generate-negative-id", "/generate", {"input_ids": [-1, 5], "sampling_params": greedy(4)},
                   "Invalid token id -1 at position 0"),
        BadRequest("completions-id-past-vocab", "/v1/completions",
                   {"model": "default", "prompt": [5, 10**6], "max_tokens": 4}, "Invalid token id 1000000 at position 1"),
        BadRequest("chat-template-kwargs-not-an-object", "/v1/chat/completions", {**chat, "chat_template_kwargs": "yes"},
                   "chat_template_kwargs"),
        BadRequest("chat-template-kwargs-sets-tools", "/v1/chat/completions",
                   {**chat, "chat_template_kwargs": {"tools": 5}}, "chat_template_kwargs must not set 'tools'"),
        BadRequest("chat-template-kwargs-thinking-not-bool", "/v1/chat/completions",
                   {**chat, "chat_template_kwargs": {"enable_thinking": "false"}},
                   "chat_template_kwargs['enable_thinking'] must be true or false, got 'false'"),
        BadRequest("generate-malformed-json", "/generate", b'{"text": "hi", ', "JSON decode error"),
        BadRequest("chat-malformed-json", "/v1/chat/completions", b'{"model": "default", "messages": [',
                   "JSON decode error"),
        BadRequest("completions-not-json", "/v1/completions", b"not json", "JSON decode error"),
        BadRequest("generate-negative-max-tokens", "/generate",
                   {"text": "hi", "sampling_params": {"max_new_tokens": -1}}, "max_new_tokens must be at least 0"),
    ]
