"""The `glm5` tool-call parser on fixture outputs: non-streamed, and streamed at every split point."""

import json
import logging

import pytest
from sglang.srt.function_call.function_call_parser import FunctionCallParser

from sglang_glm5.parsers import PARSER_NAME
from tests.parsers.fixtures import TOOL_CASES, TOOLS, WEATHER, ToolCase, call
from tests.parsers.streaming import (
    ToolResult,
    chunks_at,
    every_split,
    tools_non_streamed,
    tools_streamed,
)

CASES = [pytest.param(case, id=case.id) for case in TOOL_CASES]
PARSER_LOGGER = "sglang_glm5.parsers"
STREAM_CHUNK_CHARS = 3


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(PARSER_LOGGER) and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("case", CASES)
def test_non_streamed(case: ToolCase, caplog):
    with caplog.at_level(logging.WARNING):
        result = tools_non_streamed(case.text, TOOLS)
    assert result == ToolResult(case.content, case.calls)
    warnings = warnings_of(caplog)
    assert all(any(w in message for message in warnings) for w in case.warnings), warnings
    assert bool(warnings) == bool(case.warnings), warnings


@pytest.mark.parametrize("case", CASES)
def test_streamed_at_every_split_equals_non_streamed(case: ToolCase, caplog):
    expected = tools_non_streamed(case.text, TOOLS)
    for chunks in every_split(case.text):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert tools_streamed(chunks, TOOLS) == expected, chunks
        warnings = warnings_of(caplog)
        assert all(any(w in message for message in warnings) for w in case.warnings), (chunks, warnings)


def test_calls_are_numbered_in_order_across_chunks():
    text = WEATHER + call("now") + call("lookup", ("id", "9"))
    parser = FunctionCallParser(TOOLS, PARSER_NAME)
    items = [item for c in (text[:40], text[40:90], text[90:]) for item in parser.parse_stream_chunk(c)[1]]
    assert [item.tool_index for item in items if item.name] == [0, 1, 2]
    assert sorted(item.tool_index for item in items) == [item.tool_index for item in items]
    assert parser.detector.streamed_args_for_tool[0] == '{"city": "Paris", "days": 3}'


def test_without_tools_the_text_is_content():
    assert tools_non_streamed(TOOL_CASES[1].text, []) == ToolResult(TOOL_CASES[1].text, [])


def test_long_argument_streamed_in_small_chunks():
    body = "line of a long file\n" * 5000
    text = call("lookup", ("id", body))
    chunks = [text[i:i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
    assert tools_streamed(chunks, TOOLS) == ToolResult("", [("lookup", {"id": body})])


def test_streamed_argument_by_argument():
    """Byte by byte: the name alone as soon as the first tag fixes it, then each argument as a JSON fragment when its
    value closes, and `}` at `</tool_call>`; every delta arrives with the chunk that decided it."""
    text = "Hm." + call("search", ("query", "北京 rain"), ("limit", "10"), ("exact", "true")) + "Done."
    parser = FunctionCallParser(TOOLS, PARSER_NAME)
    deltas = []  # (bytes fed so far, name, arguments fragment)
    fed = 0
    for chunk in chunks_at(text, list(range(1, len(text.encode())))):
        fed += len(chunk.encode())
        deltas += [(fed, item.name, item.parameters) for item in parser.parse_stream_chunk(chunk)[1]]
    assert [(name, fragment) for _, name, fragment in deltas] == [
        ("search", ""), (None, '{"query": "北京 rain"'), (None, ', "limit": 10'), (None, ', "exact": true'),
        (None, "}")]
    position = [len(text[:text.index(marker) + len(marker)].encode()) for marker in (
        "search<arg_key>", "rain</arg_value>", "10</arg_value>", "true</arg_value>", "</tool_call>")]
    assert [fed for fed, _, _ in deltas] == position
    detector = parser.detector  # what SGLang's serving compares at the end to send arguments not streamed yet
    arguments = detector.prev_tool_call_arr[0]["arguments"]
    assert detector.streamed_args_for_tool == [json.dumps(arguments, ensure_ascii=False)]


def test_long_argument_value_does_not_delay_the_name():
    text = call("lookup", ("id", "x" * 1000))
    parser = FunctionCallParser(TOOLS, PARSER_NAME)
    _, items = parser.parse_stream_chunk(text[:len("<tool_call>lookup<arg_key>id</arg_key><arg_value>") + 500])
    assert [(item.name, item.parameters) for item in items] == [("lookup", "")]
