"""The demo's streaming printer (`serving/demo.stream_answer`) on the shared server: what it prints is what the
server streamed, reasoning and answer under their own headings, and what it returns is the non-streamed message."""

import io

import pytest

from sglang_glm5.serving.demo import stream_answer
from tests.parsers.served.test_openai_client import chat_args, non_streamed

pytestmark = pytest.mark.slow

MAX_TOKENS = 24


def test_stream_answer_prints_reasoning_apart_and_returns_the_message(server, client):
    out = io.StringIO()
    result = stream_answer(server.url, "What is the weather in Paris for 3 days?", MAX_TOKENS, out=out)
    expected = non_streamed(client, **{**chat_args(True), "max_tokens": MAX_TOKENS})
    assert (result["reasoning"], result["content"], result["finish_reason"]) == (
        expected.reasoning, expected.content, expected.finish_reason)
    printed = out.getvalue()
    assert printed.startswith("\n--- reasoning (streamed as generated) ---\n" + expected.reasoning)
    assert result["usage"]["completion_tokens"] == MAX_TOKENS
