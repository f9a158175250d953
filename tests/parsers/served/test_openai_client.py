"""The official `openai` Python client against the tiny GLM-5 on launch_server (`--reasoning-parser glm5
--tool-call-parser glm5`): what a chat UI or an agent framework sees.

The tiny model's text is random and greedy; what is checked is that a client gets one message whichever way it asks:
the streamed deltas assemble to exactly the non-streamed message (content, reasoning_content, tool calls with typed
arguments, finish_reason), reasoning arrives while it is generated, forced tool choices come back as typed calls,
and bad requests are client errors that leave the server serving.
"""

import json
from dataclasses import dataclass, field

import openai
import pytest

pytestmark = pytest.mark.slow

MAX_TOKENS = 24
FORCED_MAX_TOKENS = 64
COMPLETION_LOGPROBS = 3
QUESTION = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]
NOW = {"type": "function", "function": {"name": "now", "description": "the time", "parameters": {
    "type": "object", "properties": {}}}}
TOGGLE = {"type": "function", "function": {"name": "toggle", "parameters": {
    "type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}
ARGUMENT_TYPES = {"now": {}, "toggle": {"on": bool}}  # what the forced calls' grammar makes the model write
THINKING = [pytest.param(True, id="thinking"), pytest.param(False, id="no-thinking")]


@dataclass
class Message:
    """A chat completion's one choice, as a client assembles it."""

    content: str = ""
    reasoning: str = ""
    calls: list[tuple[str, dict]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Stream:
    message: Message
    events: list[str]  # in arrival order: "reasoning", "content", "tool_call", "finish"
    call_ids: list[str]


def chat_args(thinking: bool, **extra) -> dict:
    extra_body = {"chat_template_kwargs": {"enable_thinking": thinking}, **extra.pop("extra_body", {})}
    return {"model": "default", "messages": QUESTION, "max_tokens": MAX_TOKENS, "temperature": 0,
            "extra_body": extra_body, **extra}


def typed_calls(tool_calls) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in tool_calls or []]


def non_streamed(client, **args) -> Message:
    response = client.chat.completions.create(**args)
    [choice] = response.choices
    assert choice.message.role == "assistant"
    return Message(choice.message.content or "", getattr(choice.message, "reasoning_content", None) or "",
                   typed_calls(choice.message.tool_calls), choice.finish_reason)


def streamed(client, **args) -> Stream:
    message, events, ids, names, arguments = Message(), [], {}, {}, {}
    for chunk in client.chat.completions.create(stream=True, **args):
        for choice in chunk.choices:
            delta = choice.delta
            reasoning = getattr(delta, "reasoning_content", None)
            if reasoning:
                message.reasoning += reasoning
                events.append("reasoning")
            if delta.content:
                message.content += delta.content
                events.append("content")
            for call in delta.tool_calls or []:
                events.append("tool_call")
                if call.id:
                    ids[call.index] = call.id
                if call.function and call.function.name:
                    names[call.index] = call.function.name
                arguments[call.index] = arguments.get(call.index, "") + ((call.function and call.function.arguments)
                                                                          or "")
            if choice.finish_reason:
                message.finish_reason = choice.finish_reason
                events.append("finish")
    message.calls = [(names[i], json.loads(arguments[i])) for i in sorted(names)]
    return Stream(message, events, [ids[i] for i in sorted(ids)])


@pytest.mark.parametrize("thinking", THINKING)
@pytest.mark.parametrize("tools", [pytest.param(None, id="no-tools"), pytest.param([WEATHER, NOW], id="tools-auto")])
def test_streamed_deltas_assemble_to_the_non_streamed_message(client, thinking, tools):
    args = chat_args(thinking, **({"tools": tools, "tool_choice": "auto"} if tools else {}))
    expected = non_streamed(client, **args)
    assert expected.finish_reason in ("stop", "length", "tool_calls")
    assert streamed(client, **args).message == expected


def test_reasoning_streams_before_the_generation_ends(client):
    """Thinking on: the tiny model never closes `</think>` within max_tokens, so its whole output is reasoning cut
    short (finish_reason length, no content), and it arrives in deltas while the generation runs, the first before
    the one that carries finish_reason."""
    args = chat_args(True)
    stream = streamed(client, **args)
    assert stream.message == non_streamed(client, **args)
    assert stream.message.reasoning and not stream.message.content and stream.message.finish_reason == "length"
    reasoning_at = [i for i, event in enumerate(stream.events) if event == "reasoning"]
    assert reasoning_at[0] < stream.events.index("finish")
    assert len(reasoning_at) > 1, stream.events


def test_stream_reasoning_off_sends_the_reasoning_in_one_delta(client):
    args = chat_args(True, extra_body={"stream_reasoning": False})
    stream = streamed(client, **args)
    assert stream.message == non_streamed(client, **args)
    assert stream.events.count("reasoning") == 1 and stream.message.reasoning


def test_separate_reasoning_off_returns_the_reasoning_as_content(client):
    args = chat_args(True, extra_body={"separate_reasoning": False})
    stream = streamed(client, **args)
    assert stream.message == non_streamed(client, **args)
    assert "reasoning" not in stream.events and stream.message.content


@pytest.mark.parametrize("name", ["now", "toggle"])
def test_named_tool_choice(client, name):
    """Thinking off: the call grammar applies from the first token (with thinking on it waits for `</think>`,
    which the random model never writes)."""
    args = chat_args(False, tools=[WEATHER, NOW, TOGGLE], max_tokens=FORCED_MAX_TOKENS,
                     tool_choice={"type": "function", "function": {"name": name}})
    expected = non_streamed(client, **args)
    stream = streamed(client, **args)
    assert stream.message == expected
    [(called, arguments)] = expected.calls
    assert called == name and {k: type(v) for k, v in arguments.items()} == ARGUMENT_TYPES[name]
    assert len(stream.call_ids) == 1 and stream.call_ids[0]


def test_required_tool_choice(client):
    args = chat_args(False, tools=[NOW, TOGGLE], tool_choice="required", max_tokens=FORCED_MAX_TOKENS)
    expected = non_streamed(client, **args)
    assert streamed(client, **args).message == expected
    assert expected.calls
    for called, arguments in expected.calls:
        assert {k: type(v) for k, v in arguments.items()} == ARGUMENT_TYPES[called]


def test_completions_with_logprobs(client):
    args = {"model": "default", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0,
            "logprobs": COMPLETION_LOGPROBS}
    response = client.completions.create(**args)
    [choice] = response.choices
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
    assert len(logprobs.tokens) == response.usage.completion_tokens
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) <= COMPLETION_LOGPROBS and max(top.values()) == pytest.approx(logprob)  # greedy: the top one
    text = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices)
    assert text == choice.text


BAD_REQUESTS = [
    {"tools": [{"type": "function", "function": {"parameters": {}}}]},  # a function without a name
    {"extra_body": {"chat_template_kwargs": {"enable_thinking": "no"}}},  # not a boolean
    {"max_tokens": -1},
]


def test_bad_requests_raise_bad_request_error_and_the_server_keeps_serving(client):
    for bad in BAD_REQUESTS:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(**{**chat_args(True), **bad})
    assert non_streamed(client, **chat_args(False)).finish_reason in ("stop", "length")
