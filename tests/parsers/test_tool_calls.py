"""The `glm5` tool-call parser on fixture outputs: non-streamed, and streamed at every split point."""

import logging

import pytest
from sglang.srt.function_call.function_call_parser import FunctionCallParser

from sglang_glm5.parsers import PARSER_NAME
from tests.parsers.fixtures import TOOL_CASES, TOOLS, WEATHER, ToolCase, call
from tests.parsers.streaming import (
    ToolResult,
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
    indices = [item.tool_index for c in (text[:40], text[40:90], text[90:]) for item in parser.parse_stream_chunk(c)[1]]
    assert indices == [0, 1, 2]
    assert parser.detector.streamed_args_for_tool[0] == '{"city": "Paris", "days": 3}'


def test_without_tools_the_text_is_content():
    assert tools_non_streamed(TOOL_CASES[1].text, []) == ToolResult(TOOL_CASES[1].text, [])


def test_long_argument_streamed_in_small_chunks():
    body = "line of a long file\n" * 5000
    text = call("lookup", ("id", body))
    chunks = [text[i:i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
    assert tools_streamed(chunks, TOOLS) == ToolResult("", [("lookup", {"id": body})])
