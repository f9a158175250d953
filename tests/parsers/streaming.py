"""Drive SGLang's own parser front-ends (`FunctionCallParser`, `ReasoningParser`) streamed and not, as serving does.

Chunks come from UTF-8 bytes through an incremental decoder, as SGLang's detokenizer delivers text: a chunk boundary
inside a multi-byte character yields an empty chunk and the character arrives whole with the next one.
"""

import codecs
import json
from dataclasses import dataclass
from itertools import pairwise

from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.parser.reasoning_parser import ReasoningParser

from sglang_glm5.parsers import PARSER_NAME


@dataclass(frozen=True)
class ToolResult:
    content: str
    calls: list[tuple[str, dict]]


@dataclass(frozen=True)
class ReasoningResult:
    reasoning: str
    content: str


def chunks_at(text: str, byte_splits: list[int]) -> list[str]:
    data = text.encode()
    decoder = codecs.getincrementaldecoder("utf-8")()
    bounds = [0, *byte_splits, len(data)]
    out = [decoder.decode(data[a:b]) for a, b in pairwise(bounds)]
    out[-1] += decoder.decode(b"", final=True)
    return out


def every_split(text: str) -> list[list[str]]:
    """Two-chunk streams at every byte offset, plus the stream of single bytes."""
    n = len(text.encode())
    return [chunks_at(text, [i]) for i in range(1, n)] + [chunks_at(text, list(range(1, n)))]


def tools_non_streamed(text: str, tools, parser: str = PARSER_NAME) -> ToolResult:
    content, items = FunctionCallParser(tools, parser).parse_non_stream(text)
    return ToolResult(content, [(c.name, json.loads(c.parameters)) for c in items])


def tools_streamed(chunks: list[str], tools, parser_name: str = PARSER_NAME) -> ToolResult:
    parser = FunctionCallParser(tools, parser_name)
    content, names, args = "", {}, {}
    steps = [parser.parse_stream_chunk(c) for c in chunks] + [parser.parse_stream_end()]
    for text, items in steps:
        content += text
        for item in items:
            if item.name:
                names[item.tool_index] = item.name
            args[item.tool_index] = args.get(item.tool_index, "") + item.parameters
    return ToolResult(content, [(names.get(i), _json_or_text(args.get(i, ""))) for i in sorted({*names, *args})])


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def reasoning_parser(thinking: bool, stream_reasoning: bool = True, force_nonempty_content: bool = False):
    """SGLang's `ReasoningParser` front-end as serving builds it, `force_nonempty_content` through the request."""
    request = ChatCompletionRequest(model="default", messages=[{"role": "user", "content": "hi"}],
                                    chat_template_kwargs={"force_nonempty_content": force_nonempty_content})
    return ReasoningParser(PARSER_NAME, stream_reasoning=stream_reasoning, force_reasoning=thinking, request=request)


def reasoning_non_streamed(text: str, thinking: bool, force_nonempty_content: bool = False) -> ReasoningResult:
    parser = reasoning_parser(thinking, stream_reasoning=False, force_nonempty_content=force_nonempty_content)
    reasoning, content = parser.parse_non_stream(text)
    return ReasoningResult(reasoning or "", content or "")


def reasoning_steps(chunks: list[str], thinking: bool, **options) -> list[ReasoningResult]:
    """What each chunk (and the end of the stream, last) releases, as serving sends it."""
    parser = reasoning_parser(thinking, **options)
    steps = [parser.parse_stream_chunk(c) for c in chunks] + [parser.parse_stream_end()]
    return [ReasoningResult(r or "", c or "") for r, c in steps]


def reasoning_streamed(chunks: list[str], thinking: bool, **options) -> ReasoningResult:
    steps = reasoning_steps(chunks, thinking, **options)
    return ReasoningResult("".join(s.reasoning for s in steps), "".join(s.content for s in steps))
