"""SGLang tool-call detector `glm5`: GLM-5 `<tool_call>` markup -> OpenAI tool calls, streamed or not.

Streamed argument by argument, as SGLang's own detectors do: the name in one delta as soon as the markup fixes it,
then each argument as a JSON fragment (`{"city": "Paris"`, `, "days": 3`, ..., `}`) once its value is closed and
typed by the tool's schema; the fragments concatenate to `json.dumps` of the arguments. Streamed and non-streamed
output go through the same `ToolMarkupScanner` and `CallReader`, so any chunking gives the same content and calls.
Markup that cannot be read unambiguously is returned as content, and a warning names what was wrong: the whole call
while its name is not accepted yet, else the rest of the call after its last final argument (the call keeps those
arguments: they may have been streamed already). A repaired call is logged too.
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

from sglang_glm5.parsers.call_body import CallReader
from sglang_glm5.parsers.markup import CALL_END, CALL_START, TOOL_TAGS
from sglang_glm5.parsers.tool_scanner import CallEnd, CallText, Content, Event, ToolMarkupScanner

logger = logging.getLogger(__name__)

XGRAMMAR_GLM_TAG = "glm_4_7"  # xgrammar's structural tag for the GLM-4.7/GLM-5 call format


def tool_schemas(tools: list[Tool]) -> dict[str, Any]:
    return {t.function.name: t.function.parameters for t in tools or [] if t.function.name}


def argument_fragment(first: bool, key: str, value: Any) -> str:
    """One argument of the JSON object `json.dumps(arguments)` writes, with the separator before it."""
    return ("{" if first else ", ") + json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)


def merged(items: list[ToolCallItem]) -> list[ToolCallItem]:
    """A streamed call's deltas (name, then argument fragments) as one item per call."""
    calls: dict[int, ToolCallItem] = {}
    for item in items:
        if item.tool_index in calls:
            calls[item.tool_index].parameters += item.parameters
        else:
            calls[item.tool_index] = ToolCallItem(tool_index=item.tool_index, name=item.name,
                                                  parameters=item.parameters)
    return list(calls.values())


class Glm5ToolDetector(BaseFormatDetector):
    def __init__(self):
        super().__init__()
        self.bot_token, self.eot_token = CALL_START, CALL_END
        self._scanner = ToolMarkupScanner()
        self._reader: CallReader | None = None  # the open call
        self._open_index: int | None = None  # its index once its name was sent
        self._args_closed = False

    def has_tool_call(self, text: str) -> bool:
        """Any tool markup, so that non-streamed output with stray markup is parsed (and warned about) too."""
        return any(tag in text for tag in TOOL_TAGS)

    def detect_and_parse(self, text: str, tools: list[Tool]) -> StreamingParseResult:
        whole = Glm5ToolDetector()
        result = whole._consume(whole._scanner.feed(text) + whole._scanner.finish(), tools)
        return StreamingParseResult(normal_text=result.normal_text, calls=merged(result.calls))

    def parse_streaming_increment(self, new_text: str, tools: list[Tool]) -> StreamingParseResult:
        return self._consume(self._scanner.feed(new_text), tools)

    def finish(self, tools: list[Tool]) -> StreamingParseResult:
        return self._consume(self._scanner.finish(), tools)

    def _consume(self, events: list[Event], tools: list[Tool]) -> StreamingParseResult:
        normal: list[str] = []
        calls: list[ToolCallItem] = []
        for event in events:
            if isinstance(event, Content):
                stray = [tag for tag in TOOL_TAGS if tag in event.text]
                if stray:
                    logger.warning("GLM-5 tool markup %s outside a <tool_call> returned as content: %r",
                                   stray, event.text)
                normal.append(event.text)
                continue
            if self._reader is None:
                self._reader = CallReader(tool_schemas(tools), allow_unknown=envs.SGLANG_FORWARD_UNKNOWN_TOOLS.get())
            if isinstance(event, CallText):
                self._send(self._reader.feed(event.text), calls)
            else:
                self._send(self._reader.end(event.closed), calls)
                normal.append(self._end_call(event, calls))
        return StreamingParseResult(normal_text="".join(normal), calls=calls)

    def _send(self, arguments: list[tuple[str, Any]], calls: list[ToolCallItem]) -> None:
        reader = self._reader
        if reader.name is None:
            return
        if self._open_index is None:
            self._open_index, self._args_closed = len(self.prev_tool_call_arr), False
            self.prev_tool_call_arr.append({"name": reader.name, "arguments": {}})
            self.streamed_args_for_tool.append("")
            self.current_tool_id = self._open_index
            calls.append(ToolCallItem(tool_index=self._open_index, name=reader.name, parameters=""))
        for key, value in arguments:
            self._send_fragment(argument_fragment(not self.prev_tool_call_arr[-1]["arguments"], key, value), calls)
            self.prev_tool_call_arr[-1]["arguments"][key] = value
        if reader.error is not None and not self._args_closed:
            self._close_arguments(calls)

    def _send_fragment(self, fragment: str, calls: list[ToolCallItem]) -> None:
        self.streamed_args_for_tool[-1] += fragment
        calls.append(ToolCallItem(tool_index=self._open_index, name=None, parameters=fragment))

    def _close_arguments(self, calls: list[ToolCallItem]) -> None:
        self._send_fragment("}" if self.prev_tool_call_arr[-1]["arguments"] else "{}", calls)
        self._args_closed = True

    def _end_call(self, end: CallEnd, calls: list[ToolCallItem]) -> str:
        """Close the open call; the content its unreadable markup gives back."""
        reader, raw_end = self._reader, end.closing_tag
        self._reader = None
        if reader.name is None:
            raw = CALL_START + reader.body + raw_end
            logger.warning("GLM-5 tool call returned as content (%s): %r", reader.error, raw)
            return raw
        if not self._args_closed:
            self._close_arguments(calls)
        repairs = reader.repairs + ((f"missing {CALL_END} before the next {CALL_START}",)
                                    if end.ended_by == CALL_START else ())
        if repairs and reader.error is None:
            logger.warning("GLM-5 tool call %r repaired (%s): %r", reader.name, "; ".join(repairs),
                           CALL_START + reader.body + raw_end)
        self._open_index, self.current_tool_id = None, len(self.prev_tool_call_arr)
        if reader.error is None:
            return ""
        rest = (reader.body[reader.kept:] if reader.kept else CALL_START + reader.body) + raw_end
        logger.warning("GLM-5 tool call %r kept with its arguments %s; the rest of its markup returned as content "
                       "(%s): %r", reader.name, sorted(reader.arguments), reader.error, rest)
        return rest

    def supports_structural_tag(self) -> bool:
        return _glm47_native_structural_tag_available()

    def get_structural_tag_name(self) -> str:
        return XGRAMMAR_GLM_TAG

    def get_structural_tag(self, *args, **kwargs):
        return super().get_structural_tag(*args, **kwargs) if self.supports_structural_tag() else None

    def structure_info(self):
        raise NotImplementedError("glm5 tool calls are not JSON between tags; constrain them with xgrammar's glm_4_7 tag")
