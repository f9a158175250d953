"""SGLang reasoning detector `glm5`: GLM-5 `<think>` blocks -> reasoning_content / content, streamed or not.

GLM-5's template opens `<think>` itself when thinking is on (SGLang then passes force_reasoning), so the output
carries only `</think>`. Reasoning is what precedes `</think>` (or a `<tool_call>` written before it); a model may
also open its own `<think>` at the start. Everything after the reasoning is content, verbatim.

Reasoning is sent as it is generated (`stream_reasoning`, SGLang's default), holding back only a tail that may still
become `</think>` or `<tool_call>`. Thinking that never closes is reasoning, streamed or not: a max_tokens cut inside
thinking returns what was generated as reasoning. A model that skipped thinking without writing `</think>` cannot be
told apart from that cut while its reasoning streams (the detector never sees the finish reason), so its answer is
reasoning too, unless the request sets SGLang's `chat_template_kwargs.force_nonempty_content`: then an output that
ends with no content returns its reasoning as content, and a stream holds the reasoning until content starts (or the
end), so that streamed output still equals non-streamed. With thinking off, output is content unless the model opens
`<think>` itself. `stream_reasoning: false` holds the reasoning until thinking ends and sends it in one delta.
"""

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
    partial_tag_len,
)

THINKING_ENDS = (THINK_END, CALL_START)


class Phase(Enum):
    START = "start"  # has the model opened its own <think>?
    THINKING = "thinking"  # the template or the model opened <think>
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
        self._held = ""  # reasoning not sent yet (stream_reasoning off, or force_nonempty_content)
        self._content_sent = False
        if continue_final_message and THINK_END in previous_content:
            self._phase = Phase.CONTENT
        elif continue_final_message and THINK_START in previous_content:
            self._phase = Phase.THINKING

    def detect_and_parse(self, text: str) -> StreamingParseResult:
        head, tail = self.parse_streaming_increment(text), self.finish()
        return StreamingParseResult(
            normal_text=head.normal_text + tail.normal_text, reasoning_text=head.reasoning_text + tail.reasoning_text
        )

    def parse_streaming_increment(self, new_text: str) -> StreamingParseResult:
        self._buffer += new_text
        if self._phase == Phase.START:
            self._decide_opening()
        if self._phase == Phase.THINKING:
            return self._release(*self._read_thinking(), final=False)
        if self._phase == Phase.CONTENT:
            content, self._buffer = self._buffer, ""
            return self._release("", content, final=False)
        return StreamingParseResult()

    def finish(self) -> StreamingParseResult:
        rest, self._buffer = self._buffer, ""
        thinking = self._phase == Phase.THINKING or (self._phase == Phase.START and self._in_reasoning)
        self._phase = Phase.CONTENT
        return self._release(rest, "", final=True) if thinking else self._release("", rest, final=True)

    def _decide_opening(self) -> None:
        lead = self._buffer.lstrip()
        if lead.startswith(THINK_START):
            self._buffer = lead[len(THINK_START):]
            self._phase = Phase.THINKING
        elif not THINK_START.startswith(lead):
            self._phase = Phase.THINKING if self._in_reasoning else Phase.CONTENT

    def _read_thinking(self) -> tuple[str, str]:
        """(reasoning, content) decided by the buffer; a tail that may still become a tag stays buffered."""
        end = find_first(self._buffer, THINKING_ENDS)
        if end is None:
            decided = len(self._buffer) - partial_tag_len(self._buffer, THINKING_ENDS)
            reasoning, self._buffer = self._buffer[:decided], self._buffer[decided:]
            return reasoning, ""
        i, tag = end
        reasoning = self._buffer[:i]
        content = self._buffer[i + len(THINK_END):] if tag == THINK_END else self._buffer[i:]
        self._buffer = ""
        self._phase = Phase.CONTENT
        return reasoning, content

    def _release(self, reasoning: str, content: str, final: bool) -> StreamingParseResult:
        """What to send now of the reasoning and content just decided, as stream_reasoning and
        force_nonempty_content ask."""
        self._content_sent = self._content_sent or bool(content)
        if self.stream_reasoning and not self._force_nonempty_content:
            return StreamingParseResult(normal_text=content, reasoning_text=reasoning)
        self._held += reasoning
        if self._force_nonempty_content:
            if self._content_sent:
                return self._flush_held(content)
            if final:
                held, self._held = self._held, ""
                return StreamingParseResult(normal_text=held)
            return StreamingParseResult()
        if self._phase == Phase.CONTENT or final:
            return self._flush_held(content)
        return StreamingParseResult()

    def _flush_held(self, content: str) -> StreamingParseResult:
        held, self._held = self._held, ""
        return StreamingParseResult(normal_text=content, reasoning_text=held)
