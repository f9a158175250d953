"""SGLang reasoning detector `glm5`: GLM-5 `<think>` blocks -> reasoning_content / content, streamed or not.

GLM-5's template opens `<think>` itself when thinking is on (SGLang then passes force_reasoning), so the output
carries only `</think>`. Reasoning is what precedes `</think>` (or a `<tool_call>` written before it); a model may
also open its own `<think>` at the start. Thinking the template opened but the model never closed means the model
skipped thinking: that output is content (SGLang's glm45 returns it as reasoning with empty content). Only a
`<think>` the model wrote itself and never closed is reasoning cut short. Since which case holds is known only once
`</think>` or the end arrives, reasoning is held back until then, and any chunking gives the non-streamed result.
Everything after the reasoning is content, verbatim. `stream_reasoning` changes nothing (reasoning is held anyway);
`force_nonempty_content` is accepted but not applied: reasoning already sent cannot become content afterwards.
"""

import logging
from enum import Enum

from sglang.srt.parser.reasoning_parser import (
    BaseReasoningFormatDetector,
    StreamingParseResult,
)

from sglang_glm5.parsers.markup import (
    CALL_START,
    THINK_END,
    THINK_START,
    find_first,
    rescan_from,
)

logger = logging.getLogger(__name__)

THINKING_ENDS = (THINK_END, CALL_START)


class Phase(Enum):
    START = "start"  # has the model opened its own <think>?
    TEMPLATE_THINKING = "template_thinking"  # the template opened <think>
    MODEL_THINKING = "model_thinking"  # the model wrote <think>
    CONTENT = "content"


class Glm5ReasoningDetector(BaseReasoningFormatDetector):
    def __init__(
        self,
        stream_reasoning: bool = True,
        force_reasoning: bool = False,
        continue_final_message: bool = False,
        previous_content: str = "",
        force_nonempty_content: bool = False,
    ):
        super().__init__(
            THINK_START,
            THINK_END,
            force_reasoning=force_reasoning,
            stream_reasoning=stream_reasoning,
            tool_start_token=CALL_START,
            continue_final_message=continue_final_message,
            previous_content=previous_content,
            thinks_internally=True,
            reasoning_default="enable_thinking",
            force_nonempty_content=force_nonempty_content,
        )
        self._phase = Phase.START
        self._scanned = 0  # characters of held reasoning already searched for its end
        if continue_final_message and THINK_END in previous_content:
            self._phase = Phase.CONTENT
        elif continue_final_message and THINK_START in previous_content:
            self._phase = Phase.MODEL_THINKING

    def detect_and_parse(self, text: str) -> StreamingParseResult:
        head, tail = self.parse_streaming_increment(text), self.finish()
        return StreamingParseResult(
            normal_text=head.normal_text + tail.normal_text, reasoning_text=head.reasoning_text + tail.reasoning_text
        )

    def parse_streaming_increment(self, new_text: str) -> StreamingParseResult:
        self._buffer += new_text
        if self._phase == Phase.START:
            self._decide_opening()
        if self._phase in (Phase.TEMPLATE_THINKING, Phase.MODEL_THINKING):
            return self._close_thinking()
        if self._phase == Phase.CONTENT:
            content, self._buffer = self._buffer, ""
            return StreamingParseResult(normal_text=content)
        return StreamingParseResult()

    def finish(self) -> StreamingParseResult:
        rest, self._buffer = self._buffer, ""
        if self._phase == Phase.MODEL_THINKING:
            return StreamingParseResult(reasoning_text=rest)
        if self._phase == Phase.TEMPLATE_THINKING:
            logger.info("GLM-5 output ended without %s: the model skipped thinking; returned as content", THINK_END)
        self._phase = Phase.CONTENT
        return StreamingParseResult(normal_text=rest)

    def _decide_opening(self) -> None:
        lead = self._buffer.lstrip()
        if lead.startswith(THINK_START):
            self._buffer = lead[len(THINK_START):]
            self._phase = Phase.MODEL_THINKING
        elif not THINK_START.startswith(lead):
            self._phase = Phase.TEMPLATE_THINKING if self._in_reasoning else Phase.CONTENT

    def _close_thinking(self) -> StreamingParseResult:
        end = find_first(self._buffer, THINKING_ENDS, rescan_from(self._scanned, THINKING_ENDS))
        if end is None:
            self._scanned = len(self._buffer)
            return StreamingParseResult()
        i, tag = end
        reasoning = self._buffer[:i]
        content = self._buffer[i + len(THINK_END):] if tag == THINK_END else self._buffer[i:]
        self._buffer = ""
        self._phase = Phase.CONTENT
        return StreamingParseResult(normal_text=content, reasoning_text=reasoning)
