"""The `glm5` reasoning parser: the reasoning_content / content split, non-streamed and at every split point, alone
and feeding the `glm5` tool-call parser as serving does."""

import pytest
from sglang.srt.parser.reasoning_parser import ReasoningParser

from sglang_glm5.parsers.markup import CALL_START
from sglang_glm5.parsers.reasoning import Glm5ReasoningDetector
from tests.parsers.fixtures import REASONING_CASES, TOOLS, WEATHER, ReasoningCase
from tests.parsers.streaming import (
    ReasoningResult,
    chunks_at,
    every_split,
    reasoning_non_streamed,
    reasoning_steps,
    reasoning_streamed,
    tools_non_streamed,
    tools_streamed,
)

CASES = [pytest.param(case, id=case.id) for case in REASONING_CASES]
THINKING_CASES = [pytest.param(case, id=case.id) for case in REASONING_CASES if case.reasoning]
STREAM_CHUNK_CHARS = 3
HELD_TAIL = len(CALL_START) - 1  # the longest tail that may still become `</think>` or `<tool_call>`
OPTIONS = [
    pytest.param({}, id="stream_reasoning"),
    pytest.param({"stream_reasoning": False}, id="stream_reasoning-off"),
    pytest.param({"force_nonempty_content": True}, id="force_nonempty_content"),
]


@pytest.mark.parametrize("case", CASES)
def test_non_streamed(case: ReasoningCase):
    assert reasoning_non_streamed(case.text, case.thinking) == ReasoningResult(case.reasoning, case.content)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("case", CASES)
def test_streamed_at_every_split_equals_non_streamed(case: ReasoningCase, options):
    expected = reasoning_non_streamed(case.text, case.thinking, options.get("force_nonempty_content", False))
    for chunks in every_split(case.text):
        assert reasoning_streamed(chunks, case.thinking, **options) == expected, chunks


@pytest.mark.parametrize("case", THINKING_CASES)
def test_reasoning_is_sent_as_it_arrives(case: ReasoningCase):
    """Split anywhere before the reasoning ends: the first chunk's reasoning is sent with that chunk (less a tail
    that may still become a tag), before `</think>` or the end arrive; byte by byte, all but that tail is sent
    before the end of the stream."""
    start = case.text.index(case.reasoning)
    reasoning_end_byte = len(case.text[:start + len(case.reasoning)].encode())
    for split in range(1, reasoning_end_byte):
        chunks = chunks_at(case.text, [split])
        first = reasoning_steps(chunks, case.thinking)[0].reasoning
        assert case.reasoning.startswith(first), chunks
        assert len(first) >= len(chunks[0]) - start - HELD_TAIL, chunks
    single_bytes = chunks_at(case.text, list(range(1, len(case.text.encode()))))
    steps = reasoning_steps(single_bytes, case.thinking)
    before_end = "".join(s.reasoning for s in steps[:-1])
    assert case.reasoning.startswith(before_end) and len(before_end) >= len(case.reasoning) - HELD_TAIL
    assert sum(bool(s.reasoning) for s in steps) >= min(len(case.reasoning) - HELD_TAIL, 2)


@pytest.mark.parametrize("case", THINKING_CASES)
def test_stream_reasoning_off_sends_the_reasoning_in_one_delta(case: ReasoningCase):
    single_bytes = chunks_at(case.text, list(range(1, len(case.text.encode()))))
    steps = reasoning_steps(single_bytes, case.thinking, stream_reasoning=False)
    assert [s.reasoning for s in steps if s.reasoning] == [case.reasoning]


NONEMPTY = [  # (output, thinking, reasoning, content) with chat_template_kwargs.force_nonempty_content
    pytest.param("The answer is 4.", True, "", "The answer is 4.", id="thinking-skipped-is-content"),
    pytest.param("Two plus two.</think>4", True, "Two plus two.", "4", id="thinking-then-answer-unchanged"),
    pytest.param("Only thoughts.</think>", True, "", "Only thoughts.", id="no-answer-after-thinking"),
    pytest.param("<think>hmm", False, "", "hmm", id="model-opened-thinking-cut"),
    pytest.param("Plain.", False, "", "Plain.", id="thinking-off"),
]


@pytest.mark.parametrize("text,thinking,reasoning,content", NONEMPTY)
def test_force_nonempty_content_repairs_skipped_thinking(text, thinking, reasoning, content):
    expected = ReasoningResult(reasoning, content)
    assert reasoning_non_streamed(text, thinking, force_nonempty_content=True) == expected
    for chunks in every_split(text):
        assert reasoning_streamed(chunks, thinking, force_nonempty_content=True) == expected, chunks


def test_max_tokens_cut_inside_thinking_is_reasoning():
    """What a length-finished stream sent live stays reasoning, and the held tail is flushed as reasoning."""
    text = "Step one. Step two. </thin"
    steps = reasoning_steps(chunks_at(text, [10, 20]), True)
    assert [s.reasoning for s in steps] == ["Step one. ", "Step two. ", "", "</thin"]  # last: the end
    assert all(not s.content for s in steps)


def test_sglang_glm45_returns_a_skipped_thinking_answer_as_reasoning():
    assert ReasoningParser("glm45", force_reasoning=True).parse_non_stream("The answer is 4.") == ("The answer is 4.", "")


PIPELINE = [
    pytest.param("I need the weather.</think>Checking." + WEATHER, True, id="thinking-then-call"),
    pytest.param("Checking." + WEATHER, True, id="thinking-unclosed-then-call"),
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
