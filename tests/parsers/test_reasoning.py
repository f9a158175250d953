"""The `glm5` reasoning parser: the reasoning_content / content split, non-streamed and at every split point, alone
and feeding the `glm5` tool-call parser as serving does."""

import pytest
from sglang.srt.parser.reasoning_parser import ReasoningParser

from sglang_glm5.parsers.reasoning import Glm5ReasoningDetector
from tests.parsers.fixtures import REASONING_CASES, TOOLS, WEATHER, ReasoningCase
from tests.parsers.streaming import (
    ReasoningResult,
    every_split,
    reasoning_non_streamed,
    reasoning_streamed,
    tools_non_streamed,
    tools_streamed,
)

CASES = [pytest.param(case, id=case.id) for case in REASONING_CASES]
STREAM_CHUNK_CHARS = 3


@pytest.mark.parametrize("case", CASES)
def test_non_streamed(case: ReasoningCase):
    assert reasoning_non_streamed(case.text, case.thinking) == ReasoningResult(case.reasoning, case.content)


@pytest.mark.parametrize("case", CASES)
def test_streamed_at_every_split_equals_non_streamed(case: ReasoningCase):
    expected = reasoning_non_streamed(case.text, case.thinking)
    for chunks in every_split(case.text):
        assert reasoning_streamed(chunks, case.thinking) == expected, chunks


def test_sglang_glm45_returns_a_skipped_thinking_answer_as_reasoning():
    assert ReasoningParser("glm45", force_reasoning=True).parse_non_stream("The answer is 4.") == ("The answer is 4.", "")


PIPELINE = [
    pytest.param("I need the weather.</think>Checking." + WEATHER, True, id="thinking-then-call"),
    pytest.param("Checking." + WEATHER, True, id="thinking-skipped-then-call"),
    pytest.param("Checking." + WEATHER, False, id="thinking-off-then-call"),
    pytest.param("I need the weather" + WEATHER + "\n", True, id="call-without-think-end"),
    pytest.param("天气🌧️</think>" + WEATHER.replace("Paris", "北京"), True, id="unicode"),
]


def pipeline_non_streamed(text: str, thinking: bool):
    split = reasoning_non_streamed(text, thinking)
    return split.reasoning, tools_non_streamed(split.content, TOOLS)


def pipeline_streamed(chunks: list[str], thinking: bool):
    reasoning_parser = ReasoningParser("glm5", force_reasoning=thinking)
    steps = [reasoning_parser.parse_stream_chunk(c) for c in chunks] + [reasoning_parser.parse_stream_end()]
    reasoning = "".join(r or "" for r, _ in steps)
    return reasoning, tools_streamed([c or "" for _, c in steps], TOOLS)


@pytest.mark.parametrize("text,thinking", PIPELINE)
def test_reasoning_then_tools_streamed_equals_non_streamed(text, thinking):
    expected = pipeline_non_streamed(text, thinking)
    assert expected[1].calls and expected[1].calls[0][0] == "get_weather"
    for chunks in every_split(text):
        assert pipeline_streamed(chunks, thinking) == expected, chunks


@pytest.mark.parametrize(
    "previous,output,expected",
    [
        pytest.param("<think>Let me", " see.</think>Four.", ReasoningResult(" see.", "Four."), id="inside-thinking"),
        pytest.param("<think>ok</think>The", " answer.", ReasoningResult("", " answer."), id="after-thinking"),
    ],
)
def test_continue_final_message(previous, output, expected):
    detector = Glm5ReasoningDetector(force_reasoning=True, continue_final_message=True, previous_content=previous)
    result = detector.detect_and_parse(output)
    assert ReasoningResult(result.reasoning_text, result.normal_text) == expected


def test_long_reasoning_streamed_in_small_chunks():
    thought = "step " * 20000
    text = thought + "</think>done"
    chunks = [text[i:i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
    assert reasoning_streamed(chunks, True) == ReasoningResult(thought, "done")
