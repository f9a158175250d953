"""What SGLang 0.5.23's own GLM parsers do with the same fixtures (the failures issue 12 lists), next to ours."""

import pytest

from tests.parsers.fixtures import TOOL_CASES, TOOLS
from tests.parsers.streaming import every_split, tools_non_streamed, tools_streamed

CASE = {case.id: case for case in TOOL_CASES}


@pytest.mark.parametrize("case_id", ["missing-arg_key-after-name", "missing-arg_value", "unclosed-call-at-eos"])
def test_glm47_loses_or_changes_the_call_we_repair(case_id):
    case = CASE[case_id]
    assert tools_non_streamed(case.text, TOOLS, "glm47").calls != case.calls
    assert tools_non_streamed(case.text, TOOLS).calls == case.calls


def test_glm47_streams_only_one_of_two_parallel_calls_at_some_split_points():
    case = CASE["parallel"]
    counts = {len(tools_streamed(chunks, TOOLS, "glm47").calls) for chunks in every_split(case.text)}
    assert counts == {1, 2}


def test_glm45_reads_no_glm5_call():
    case = CASE["single"]
    assert tools_non_streamed(case.text, TOOLS, "glm45").calls == []
    assert tools_non_streamed(case.text, TOOLS).calls == case.calls
