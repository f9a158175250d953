"""`--reasoning-parser glm5 --tool-call-parser glm5` resolve to our detectors, through the plugin's `load()`."""

from collections import defaultdict

import pytest
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.parser.reasoning_parser import ReasoningParser
from sglang.srt.plugins.hook_registry import HookRegistry
from sglang.srt.server_args import prepare_server_args

from sglang_glm5 import plugin
from sglang_glm5.parsers import PARSER_NAME
from sglang_glm5.parsers.reasoning import Glm5ReasoningDetector
from sglang_glm5.parsers.tool_call import Glm5ToolDetector


def test_plugin_load_registers_both_parsers(monkeypatch):
    monkeypatch.setattr(ReasoningParser, "DetectorMap", {})
    monkeypatch.setattr(FunctionCallParser, "ToolCallParserEnum", {})
    monkeypatch.setattr(HookRegistry, "_hooks", defaultdict(list))
    plugin.load()
    assert ReasoningParser.DetectorMap == {PARSER_NAME: Glm5ReasoningDetector}
    assert FunctionCallParser.ToolCallParserEnum == {PARSER_NAME: Glm5ToolDetector}


def test_launch_server_flags_accept_glm5():
    args = prepare_server_args(["--model-path", "unused", "--reasoning-parser", "glm5", "--tool-call-parser", "glm5"])
    assert (args.reasoning_parser, args.tool_call_parser) == (PARSER_NAME, PARSER_NAME)


def test_parser_front_ends_build_our_detectors():
    assert isinstance(ReasoningParser(PARSER_NAME).detector, Glm5ReasoningDetector)
    assert isinstance(FunctionCallParser([], PARSER_NAME).detector, Glm5ToolDetector)


@pytest.mark.parametrize("kwarg", ["force_nonempty_content", "continue_final_message"])
def test_reasoning_detector_accepts_the_kwargs_sglang_passes(kwarg):
    assert Glm5ReasoningDetector(**{kwarg: True})
