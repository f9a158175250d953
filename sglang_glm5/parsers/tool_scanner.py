"""Splits GLM-5 output, fed in chunks of any size, into plain content and tool-call markup, as it arrives.

Chunking never changes the result: a tag cut by a chunk boundary is held back until it is whole. Content between,
before or after calls is kept verbatim, except that a run of only whitespace next to a call is layout and dropped
(so it is held back until it is known to be neither). A call's body is passed on as it arrives (`CallText`, less a
tail that may still become its end tag); the call ends (`CallEnd`) at `</tool_call>`, at the next `<tool_call>` (its
closing tag is missing) or at the end of the output.
"""

from dataclasses import dataclass

from sglang_glm5.parsers.markup import (
    CALL_END,
    CALL_START,
    TOOL_TAGS,
    find_first,
    partial_tag_len,
)

CALL_ENDINGS = (CALL_END, CALL_START)

END_OF_OUTPUT = ""


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class CallText:
    """More of the body of the open call (after its `<tool_call>`)."""

    text: str


@dataclass(frozen=True)
class CallEnd:
    ended_by: str  # CALL_END, CALL_START (closing tag missing) or END_OF_OUTPUT

    @property
    def closed(self) -> bool:
        return self.ended_by != END_OF_OUTPUT

    @property
    def closing_tag(self) -> str:
        """The markup that ended the call and belongs to it."""
        return CALL_END if self.ended_by == CALL_END else ""


Event = Content | CallText | CallEnd


class ToolMarkupScanner:
    def __init__(self):
        self._buffer = ""
        self._in_call = False
        self._seen_call = False
        self._run_has_text = False  # the current content run has more than whitespace

    def feed(self, text: str) -> list[Event]:
        self._buffer += text
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> list[Event]:
        events = self.feed("")
        if self._in_call:
            if self._buffer:
                events.append(CallText(self._buffer))
            events.append(CallEnd(END_OF_OUTPUT))
        elif self._buffer and (self._run_has_text or self._buffer.strip() or not self._seen_call):
            events.append(Content(self._buffer))
        self._buffer, self._in_call = "", False
        return events

    def _step(self, events: list) -> bool:
        """Consume what can be decided now; True while progress is possible."""
        if self._in_call:
            end = find_first(self._buffer, CALL_ENDINGS)
            if end is None:
                decided = len(self._buffer) - partial_tag_len(self._buffer, CALL_ENDINGS)
                if decided:
                    events.append(CallText(self._buffer[:decided]))
                    self._buffer = self._buffer[decided:]
                return False
            i, tag = end
            if i:
                events.append(CallText(self._buffer[:i]))
            events.append(CallEnd(tag))
            self._buffer = self._buffer[i + len(CALL_END):] if tag == CALL_END else self._buffer[i:]
            self._in_call, self._run_has_text = False, False
            return True
        start = self._buffer.find(CALL_START)
        if start >= 0:
            run = self._buffer[:start]
            if run and (self._run_has_text or run.strip()):
                events.append(Content(run))
            self._buffer = self._buffer[start + len(CALL_START):]
            self._in_call = self._seen_call = True
            return True
        decided = self._buffer[: len(self._buffer) - partial_tag_len(self._buffer, TOOL_TAGS)]
        self._run_has_text = self._run_has_text or bool(decided.strip())
        if self._run_has_text and decided:
            events.append(Content(decided))
            self._buffer = self._buffer[len(decided):]
        return False
