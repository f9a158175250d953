"""Splits GLM-5 output, fed in chunks of any size, into plain content and tool-call markup.

Chunking never changes the result: a tag cut by a chunk boundary is held back until it is whole. Content between,
before or after calls is kept verbatim, except that a run of only whitespace next to a call is layout and dropped
(so it is held back until it is known to be neither). A call ends at `</tool_call>`, at the next `<tool_call>` (its
closing tag is missing) or at the end of the output.
"""

from dataclasses import dataclass

from sglang_glm5.parsers.markup import (
    CALL_END,
    CALL_START,
    TOOL_TAGS,
    find_first,
    partial_tag_len,
    rescan_from,
)

CALL_ENDINGS = (CALL_END, CALL_START)

END_OF_OUTPUT = ""


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class CallMarkup:
    body: str
    ended_by: str  # CALL_END, CALL_START (closing tag missing) or END_OF_OUTPUT

    @property
    def closed(self) -> bool:
        return self.ended_by != END_OF_OUTPUT

    @property
    def raw(self) -> str:
        return CALL_START + self.body + (CALL_END if self.ended_by == CALL_END else "")


class ToolMarkupScanner:
    def __init__(self):
        self._buffer = ""
        self._in_call = False
        self._scanned = 0  # characters of a call's body already searched for its end
        self._seen_call = False
        self._run_has_text = False  # the current content run has more than whitespace

    def feed(self, text: str) -> list[Content | CallMarkup]:
        self._buffer += text
        events: list[Content | CallMarkup] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> list[Content | CallMarkup]:
        events = self.feed("")
        if self._in_call:
            events.append(CallMarkup(self._buffer, END_OF_OUTPUT))
        elif self._buffer and (self._run_has_text or self._buffer.strip() or not self._seen_call):
            events.append(Content(self._buffer))
        self._buffer, self._in_call = "", False
        return events

    def _step(self, events: list) -> bool:
        """Consume what can be decided now; True while progress is possible."""
        if self._in_call:
            end = find_first(self._buffer, CALL_ENDINGS, rescan_from(self._scanned, CALL_ENDINGS))
            if end is None:
                self._scanned = len(self._buffer)
                return False
            i, tag = end
            self._scanned = 0
            events.append(CallMarkup(self._buffer[:i], tag))
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
