"""SGLang tool-call detector `glm5`: GLM-5 `<tool_call>` markup -> OpenAI tool calls, streamed or not.

Streamed and non-streamed output go through the same `ToolMarkupScanner` and `parse_call`, so any chunking of the
output gives the same content and the same calls. A call is emitted whole (name and JSON arguments in one delta) once
its markup ends: arguments are never streamed half-typed. Markup that `parse_call` cannot read unambiguously is
returned as content, and a warning names what was wrong; a repaired call is logged too.
"""

import json
import logging
from typing import Any

from sglang.srt.entrypoints.openai.protocol import Tool
from sglang.srt.environ import envs
from sglang.srt.function_call.base_format_detector import BaseFormatDetector
from sglang.srt.function_call.core_types import StreamingParseResult, ToolCallItem
from sglang.srt.function_call.glm47_moe_detector import (
    _glm47_native_structural_tag_available,
)

from sglang_glm5.parsers.call_body import MalformedCall, parse_call
from sglang_glm5.parsers.markup import CALL_END, CALL_START, TOOL_TAGS
from sglang_glm5.parsers.tool_scanner import CallMarkup, Content, ToolMarkupScanner

logger = logging.getLogger(__name__)

XGRAMMAR_GLM_TAG = "glm_4_7"  # xgrammar's structural tag for the GLM-4.7/GLM-5 call format


def tool_schemas(tools: list[Tool]) -> dict[str, Any]:
    return {t.function.name: t.function.parameters for t in tools or [] if t.function.name}


class Glm5ToolDetector(BaseFormatDetector):
    def __init__(self):
        super().__init__()
        self.bot_token, self.eot_token = CALL_START, CALL_END
        self._scanner = ToolMarkupScanner()

    def has_tool_call(self, text: str) -> bool:
        """Any tool markup, so that non-streamed output with stray markup is parsed (and warned about) too."""
        return any(tag in text for tag in TOOL_TAGS)

    def detect_and_parse(self, text: str, tools: list[Tool]) -> StreamingParseResult:
        whole = Glm5ToolDetector()
        return whole._consume(whole._scanner.feed(text) + whole._scanner.finish(), tools)

    def parse_streaming_increment(self, new_text: str, tools: list[Tool]) -> StreamingParseResult:
        return self._consume(self._scanner.feed(new_text), tools)

    def finish(self, tools: list[Tool]) -> StreamingParseResult:
        return self._consume(self._scanner.finish(), tools)

    def _consume(self, events: list[Content | CallMarkup], tools: list[Tool]) -> StreamingParseResult:
        normal, calls = [], []
        for event in events:
            if isinstance(event, Content):
                stray = [tag for tag in TOOL_TAGS if tag in event.text]
                if stray:
                    logger.warning("GLM-5 tool markup %s outside a <tool_call> returned as content: %r",
                                   stray, event.text)
                normal.append(event.text)
                continue
            try:
                call = parse_call(event.body, event.closed, tool_schemas(tools),
                                  allow_unknown=envs.SGLANG_FORWARD_UNKNOWN_TOOLS.get())
            except MalformedCall as e:
                logger.warning("GLM-5 tool call returned as content (%s): %r", e, event.raw)
                normal.append(event.raw)
                continue
            repairs = call.repairs + ((f"missing {CALL_END} before the next {CALL_START}",)
                                      if event.ended_by == CALL_START else ())
            if repairs:
                logger.warning("GLM-5 tool call %r repaired (%s): %r", call.name, "; ".join(repairs), event.raw)
            calls.append(self._record(call.name, call.arguments))
        return StreamingParseResult(normal_text="".join(normal), calls=calls)

    def _record(self, name: str, arguments: dict[str, Any]) -> ToolCallItem:
        index = len(self.prev_tool_call_arr)
        serialized = json.dumps(arguments, ensure_ascii=False)
        self.prev_tool_call_arr.append({"name": name, "arguments": arguments})
        self.streamed_args_for_tool.append(serialized)
        self.current_tool_id = index + 1
        return ToolCallItem(tool_index=index, name=name, parameters=serialized)

    def supports_structural_tag(self) -> bool:
        return _glm47_native_structural_tag_available()

    def get_structural_tag_name(self) -> str:
        return XGRAMMAR_GLM_TAG

    def get_structural_tag(self, *args, **kwargs):
        return super().get_structural_tag(*args, **kwargs) if self.supports_structural_tag() else None

    def structure_info(self):
        raise NotImplementedError("glm5 tool calls are not JSON between tags; constrain them with xgrammar's glm_4_7 tag")
