"""GLM-5's reasoning and tool-call markup, and the helpers the streaming scanners here share."""

THINK_START = "<think>"
THINK_END = "</think>"
CALL_START = "<tool_call>"
CALL_END = "</tool_call>"
KEY_START = "<arg_key>"
KEY_END = "</arg_key>"
VALUE_START = "<arg_value>"
VALUE_END = "</arg_value>"

ARGUMENT_TAGS = (KEY_START, KEY_END, VALUE_START, VALUE_END)
TOOL_TAGS = (CALL_START, CALL_END, *ARGUMENT_TAGS)


def partial_tag_len(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a strict prefix of one of `tags` (it may still become one)."""
    longest = 0
    for tag in tags:
        for n in range(min(len(text), len(tag) - 1), longest, -1):
            if text.endswith(tag[:n]):
                longest = n
                break
    return longest


def find_first(text: str, tags: tuple[str, ...], start: int = 0) -> tuple[int, str] | None:
    """(index, tag) of the earliest of `tags` in `text` at or after `start`, or None."""
    found = [(i, tag) for tag in tags if (i := text.find(tag, start)) >= 0]
    return min(found) if found else None

