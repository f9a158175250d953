"""One GLM-5 tool call, `<tool_call>NAME(<arg_key>K</arg_key><arg_value>V</arg_value>)*</tool_call>`, read from its
body as it arrives (`CallReader`), so a call can be streamed argument by argument.

The name is accepted once the first tag after it (or the end of the call) fixes it and it names a declared tool;
each argument is final, typed by the tool's schema, once the tag after its value fixes the value's end. A malformed
body is repaired only where one reading is possible: a missing `<arg_key>` after a value (or after a name it is
separated from by whitespace or, failing that, a declared tool name plus one of its declared properties), a missing
`</arg_key>`, `<arg_value>` or `</arg_value>` next to a tag that still fixes the boundary, and a missing
`</tool_call>` at the end of the output once the last argument is closed. Anything else is `MalformedCall`: before
the name is accepted the whole call is unreadable; after it, the call keeps the arguments already final (they may
have been streamed) and the rest of its markup is unreadable.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from sglang_glm5.parsers.arguments import typed_value
from sglang_glm5.parsers.markup import (
    ARGUMENT_TAGS,
    CALL_END,
    KEY_END,
    KEY_START,
    VALUE_END,
    VALUE_START,
)

_TAG_RE = re.compile("(" + "|".join(map(re.escape, ARGUMENT_TAGS)) + ")")


class MalformedCall(ValueError):
    pass


@dataclass
class _Reading:
    state: str = "name"
    name: str | None = None
    key: str | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    def add_value(self, raw: str) -> None:
        if any(k == self.key for k, _ in self.pairs):
            raise MalformedCall(f"argument {self.key!r} given twice")
        self.pairs.append((self.key, raw))

    def set_key(self, text: str) -> None:
        key = text.strip()
        if not key:
            raise MalformedCall("empty argument key")
        self.key = key


def _split_name_key(text: str, tools: dict[str, Any]) -> tuple[str, str]:
    stripped = text.strip()
    if len(stripped.split(None, 1)) == 2:
        name, key = stripped.split(None, 1)
        return name, key
    candidates = [
        (name, stripped[len(name):]) for name, params in tools.items()
        if stripped.startswith(name) and stripped[len(name):] in ((params or {}).get("properties") or {})
    ]
    if len(candidates) != 1:
        raise MalformedCall(f"missing {KEY_START}: cannot tell the function name from the key in {text!r}")
    return candidates[0]


def _read_name(r: _Reading, text: str, tools: dict[str, Any]) -> None:
    r.name = text.strip()


def _read_name_and_key(r: _Reading, text: str, tools: dict[str, Any]) -> None:
    r.name, key = _split_name_key(text, tools)
    r.set_key(key)


def _read_key(r: _Reading, text: str, tools: dict[str, Any]) -> None:
    r.set_key(text)


def _read_value(r: _Reading, text: str, tools: dict[str, Any]) -> None:
    r.add_value(text)


# The call's grammar, with its repairs: (state, tag ending the text) -> (what the text is, next state, the repair that
# reading implies, formatted with the key). `None`: whitespace only between two tags. Any other pair is malformed.
_STEPS = {
    ("name", KEY_START): (_read_name, "key", None),
    ("name", KEY_END): (_read_name_and_key, "after_key", f"missing {KEY_START} after the function name"),
    ("key", KEY_END): (_read_key, "after_key", None),
    ("key", VALUE_START): (_read_key, "value", f"missing {KEY_END} after key {{key!r}}"),
    ("after_key", VALUE_START): (None, "value", None),
    ("after_key", VALUE_END): (_read_value, "after_value", f"missing {VALUE_START} for key {{key!r}}"),
    ("value", VALUE_END): (_read_value, "after_value", None),
    ("value", KEY_START): (_read_value, "key", f"missing {VALUE_END} for key {{key!r}}"),
    ("after_value", KEY_START): (None, "key", None),
    ("after_value", KEY_END): (_read_key, "after_key", f"missing {KEY_START} before key {{key!r}}"),
}


def _step(r: _Reading, tag: str, text: str, tools: dict[str, Any]) -> None:
    step = _STEPS.get((r.state, tag))
    if step is None or (step[0] is None and text.strip()):
        raise MalformedCall(f"unexpected {tag} after {text!r} (while reading the {r.state.replace('_', ' ')})")
    read, state, repair = step
    if read is not None:
        read(r, text, tools)
    if repair is not None:
        r.repairs.append(repair.format(key=r.key))
    r.state = state


def _end(r: _Reading, text: str, closed: bool, tools: dict[str, Any]) -> None:
    if r.state == "name":
        r.name = text.strip()
        if not closed and r.name not in tools:
            raise MalformedCall(f"output ends inside the call after {text!r}")
    elif r.state == "value" and closed:
        r.add_value(text)
        r.repairs.append(f"missing {VALUE_END} for key {r.key!r}")
    elif r.state == "value":
        raise MalformedCall(f"output ends inside the value of {r.key!r}")
    elif r.state == "after_value" and text.strip():
        raise MalformedCall(f"text {text.strip()!r} after the last argument")
    elif r.state in ("key", "after_key"):
        raise MalformedCall(f"call ends after key {r.key or text!r} without a value")
    if not closed:
        r.repairs.append(f"missing {CALL_END} at the end of the output")


_LONGEST_TAG = max(map(len, ARGUMENT_TAGS))


class CallReader:
    """Reads one call's body fed in pieces of any size; what it reports never depends on the pieces."""

    def __init__(self, tools: dict[str, Any], allow_unknown: bool = False):
        self.tools, self.allow_unknown = tools, allow_unknown
        self.body = ""
        self.name: str | None = None  # set once accepted
        self.arguments: dict[str, Any] = {}
        self.error: MalformedCall | None = None
        self.kept = 0  # the body up to here is the accepted name and arguments; the rest is unread or unreadable
        self._reading = _Reading()
        self._consumed = 0  # the body up to here went through `_step`
        self._searched = 0  # no tag starts in body[_consumed:_searched]
        self._kept_pairs = 0

    @property
    def repairs(self) -> tuple[str, ...]:
        return tuple(self._reading.repairs)

    def feed(self, text: str) -> list[tuple[str, Any]]:
        """New final arguments as (key, typed value) pairs; `name` is set before the first is returned."""
        self.body += text
        if self.error is not None:
            return []
        before = len(self._reading.pairs)
        try:
            while (match := _TAG_RE.search(self.body, self._searched)) is not None:
                _step(self._reading, match.group(), self.body[self._consumed:match.start()], self.tools)
                self._consumed = self._searched = match.end()
                self._accept(match.end(), match.start())
            self._searched = max(self._consumed, len(self.body) - _LONGEST_TAG + 1)
        except MalformedCall as e:
            self.error = e
        return self._new_arguments(before)

    def end(self, closed: bool) -> list[tuple[str, Any]]:
        """The call's markup ended (`closed`: at a tag, else at the end of the output): its last arguments."""
        if self.error is not None:
            return []
        before = len(self._reading.pairs)
        try:
            _end(self._reading, self.body[self._consumed:], closed, self.tools)
            self._accept(len(self.body), len(self.body))
            if self.name is None:
                raise MalformedCall("no function name")
        except MalformedCall as e:
            self.error = e
        return self._new_arguments(before)

    def _accept(self, after_tag: int, tag_start: int) -> None:
        """Accept the name once it is known; the body up to `after_tag` is kept once it closed an argument."""
        name = self._reading.name
        if self.name is None and name is not None:
            if not name or len(name.split()) != 1:
                raise MalformedCall(f"bad function name {name!r}")
            if name not in self.tools and not self.allow_unknown:
                raise MalformedCall(f"unknown function {name!r} (tools: {sorted(self.tools)})")
            self.name = name
            self.kept = tag_start if self._reading.state == "key" else 0
        if self.name is not None and len(self._reading.pairs) > self._kept_pairs:
            self._kept_pairs = len(self._reading.pairs)
            self.kept = after_tag if self._reading.state == "after_value" else tag_start

    def _new_arguments(self, before: int) -> list[tuple[str, Any]]:
        if self.name is None:
            return []
        parameters = self.tools.get(self.name)
        new = [(key, typed_value(raw, parameters, key)) for key, raw in self._reading.pairs[before:]]
        self.arguments.update(new)
        return new
