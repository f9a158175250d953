"""Round trip through the tiny checkpoint's GLM-5 chat template: calls written the way the template writes past calls
(the format the model learns) parse back to the same name and arguments, streamed at every split point and not."""

import random

import pytest
from sglang.srt.entrypoints.openai.protocol import Tool
from transformers.utils.chat_template_utils import render_jinja_template

from sglang_glm5.checkpoint.tokenizer import chat_template
from sglang_glm5.parsers.arguments import json_type
from tests.parsers.streaming import (
    ToolResult,
    every_split,
    tools_non_streamed,
    tools_streamed,
)

CASES_N = 24
MAX_CALLS = 3
MAX_ARGUMENTS = 4
ASSISTANT_OPENING = "<|assistant|></think>"
KEYS = ["city", "id", "n", "payload", "名字", "x-y", "flag", "items"]
VALUES = [
    "Paris", "00123", "123", "1.5", "true", "null", '{"a": 1}', "北京 🌧️ Zürich", "line1\nline2", "a < b > c & d",
    " padded ", "", 0, -7, 42, 10**12, 1.5, -0.25, 1e-3, 1e20, True, False, None,
    {"k": [1, "x", None]}, ["a", {"b": 2}], {}, [], {"深": {"更深": [True, 0.5]}},
]


def random_calls(rng: random.Random) -> list[tuple[str, dict]]:
    calls = []
    for i in range(rng.randint(1, MAX_CALLS)):
        keys = rng.sample(KEYS, rng.randint(0, MAX_ARGUMENTS))
        calls.append((f"tool_{i}", {k: rng.choice(VALUES) for k in keys}))
    return calls


def tools_for(calls: list[tuple[str, dict]]) -> list[Tool]:
    return [
        Tool(type="function", function={"name": name, "parameters": {
            "type": "object", "properties": {k: {"type": json_type(v)} for k, v in arguments.items()}}})
        for name, arguments in calls
    ]


def rendered(calls: list[tuple[str, dict]]) -> str:
    messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": arguments}} for name, arguments in calls]}]
    [prompt], _ = render_jinja_template([messages], chat_template=chat_template())
    return prompt.split(ASSISTANT_OPENING, 1)[1]


CASES = [random_calls(random.Random(seed)) for seed in range(CASES_N)]
IDS = [f"seed{seed}-" + "+".join(f"{len(args)}args" for _, args in calls) for seed, calls in enumerate(CASES)]


@pytest.mark.parametrize("calls", CASES, ids=IDS)
def test_template_written_calls_parse_back(calls):
    text, tools = rendered(calls), tools_for(calls)
    expected = ToolResult("", calls)
    assert tools_non_streamed(text, tools) == expected, text
    for chunks in every_split(text):
        assert tools_streamed(chunks, tools) == expected, chunks
