"""One GLM-5 tool call, `<tool_call>NAME(<arg_key>K</arg_key><arg_value>V</arg_value>)*</tool_call>`, read from its body.

A malformed body is repaired only where one reading is possible: a missing `<arg_key>` after a value (or after a name
it is separated from by whitespace or, failing that, a declared tool name plus one of its declared properties), a
missing `</arg_key>`, `<arg_value>` or `</arg_value>` next to a tag that still fixes the boundary, and a missing
`</tool_call>` at the end of the output once the last argument is closed. Anything else raises `MalformedCall`.
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


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]
    repairs: tuple[str, ...]


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


def _step(r: _Reading, tag: str, text: str, tools: dict[str, Any]) -> None:
    if r.state == "name" and tag == KEY_START:
        r.name, r.state = text.strip(), "key"
    elif r.state == "name" and tag == KEY_END:
        r.name, key = _split_name_key(text, tools)
        r.set_key(key)
        r.repairs.append(f"missing {KEY_START} after the function name")
        r.state = "after_key"
    elif r.state == "key" and tag in (KEY_END, VALUE_START):
        r.set_key(text)
        if tag == VALUE_START:
            r.repairs.append(f"missing {KEY_END} after key {r.key!r}")
        r.state = "after_key" if tag == KEY_END else "value"
    elif r.state == "after_key" and tag == VALUE_START and not text.strip():
        r.state = "value"
    elif r.state == "after_key" and tag == VALUE_END:
        r.add_value(text)
        r.repairs.append(f"missing {VALUE_START} for key {r.key!r}")
        r.state = "after_value"
    elif r.state == "value" and tag in (VALUE_END, KEY_START):
        r.add_value(text)
        if tag == KEY_START:
            r.repairs.append(f"missing {VALUE_END} for key {r.key!r}")
        r.state = "after_value" if tag == VALUE_END else "key"
    elif r.state == "after_value" and tag == KEY_START and not text.strip():
        r.state = "key"
    elif r.state == "after_value" and tag == KEY_END:
        r.set_key(text)
        r.repairs.append(f"missing {KEY_START} before key {r.key!r}")
        r.state = "after_key"
    else:
        raise MalformedCall(f"unexpected {tag} after {text!r} (while reading the {r.state.replace('_', ' ')})")


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


def parse_call(body: str, closed: bool, tools: dict[str, Any], allow_unknown: bool = False) -> ParsedCall:
    """`body` follows `<tool_call>`; `closed` says whether a tag ended it (else the output did); `tools`: name -> schema."""
    pieces = _TAG_RE.split(body)
    reading = _Reading()
    for i in range(1, len(pieces), 2):
        _step(reading, pieces[i], pieces[i - 1], tools)
    _end(reading, pieces[-1], closed, tools)
    name = reading.name
    if not name or len(name.split()) != 1:
        raise MalformedCall(f"bad function name {name!r}")
    if name not in tools and not allow_unknown:
        raise MalformedCall(f"unknown function {name!r} (tools: {sorted(tools)})")
    parameters = tools.get(name)
    arguments = {key: typed_value(raw, parameters, key) for key, raw in reading.pairs}
    return ParsedCall(name, arguments, tuple(reading.repairs))
