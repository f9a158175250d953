"""Model outputs in GLM-5's markup, written for this project, with the content and calls each must give."""

from dataclasses import dataclass, field
from typing import Any

from sglang.srt.entrypoints.openai.protocol import Tool


def _tool(name: str, properties: dict | None) -> Tool:
    parameters = None if properties is None else {"type": "object", "properties": properties}
    return Tool(type="function", function={"name": name, "parameters": parameters})


TOOLS = [
    _tool("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}}),
    _tool("lookup", {"id": {"type": "string"}}),
    _tool("now", {}),
    _tool("put", {"doc": {"type": "object"}, "tags": {"type": "array", "items": {"type": "string"}}}),
    _tool("search", {"query": {"type": "string"}, "limit": {"type": "integer"}, "exact": {"type": "boolean"},
                     "score": {"type": ["number", "null"]}, "mode": {"enum": ["fast", "1", 2]}}),
    _tool("free", None),
]


@dataclass(frozen=True)
class ToolCase:
    id: str
    text: str
    content: str
    calls: list[tuple[str, dict[str, Any]]]
    warnings: tuple[str, ...] = field(default=())


def call(name: str, *pairs: tuple[str, str], close: bool = True) -> str:
    args = "".join(f"<arg_key>{k}</arg_key><arg_value>{v}</arg_value>" for k, v in pairs)
    return f"<tool_call>{name}{args}" + ("</tool_call>" if close else "")


WEATHER = call("get_weather", ("city", "Paris"), ("days", "3"))
PARIS_3 = ("get_weather", {"city": "Paris", "days": 3})

TOOL_CASES = [
    ToolCase("plain-text", "No tools needed: 2 < 3 and <b>bold</b>.", "No tools needed: 2 < 3 and <b>bold</b>.", []),
    ToolCase("single", "I'll check the weather." + WEATHER, "I'll check the weather.", [PARIS_3]),
    ToolCase("parallel", WEATHER + "\n" + call("lookup", ("id", "A-7")) + "\n", "",
             [PARIS_3, ("lookup", {"id": "A-7"})]),
    ToolCase("zero-argument", call("now"), "", [("now", {})]),
    ToolCase("zero-argument-parallel", call("now") + call("now") + "\nDone.", "\nDone.", [("now", {}), ("now", {})]),
    ToolCase("text-around-calls", "Checking.\n\n" + call("now") + "\n\nThen: " + call("lookup", ("id", "x")),
             "Checking.\n\n\n\nThen: ", [("now", {}), ("lookup", {"id": "x"})]),
    ToolCase("nested-object-and-array",
             call("put", ("doc", '{"a": {"b": [1, "2", null, {"c": true}]}, "d": 1.5}'), ("tags", '["x", "y"]')), "",
             [("put", {"doc": {"a": {"b": [1, "2", None, {"c": True}]}, "d": 1.5}, "tags": ["x", "y"]})]),
    ToolCase("unicode", "天气？" + call("get_weather", ("city", "北京 🌧️ Zürich"), ("days", "2")), "天气？",
             [("get_weather", {"city": "北京 🌧️ Zürich", "days": 2})]),
    ToolCase("numeric-looking-strings", call("lookup", ("id", "00123")) + call("lookup", ("id", "123")), "",
             [("lookup", {"id": "00123"}), ("lookup", {"id": "123"})]),
    ToolCase("schema-typed-values",
             call("search", ("query", '{"a": 1}'), ("limit", "10"), ("exact", "true"), ("score", "null"),
                  ("mode", "1")), "",
             [("search", {"query": '{"a": 1}', "limit": 10, "exact": True, "score": None, "mode": "1"})]),
    ToolCase("schema-mismatch-keeps-text", call("search", ("limit", "ten"), ("mode", "2")), "",
             [("search", {"limit": "ten", "mode": 2})]),
    ToolCase("no-schema-json-literals",
             call("free", ("n", "123"), ("s", "abc"), ("z", "007"), ("o", '{"k": [1]}'), ("q", '"quoted"')), "",
             [("free", {"n": 123, "s": "abc", "z": "007", "o": {"k": [1]}, "q": "quoted"})]),
    ToolCase("multiline-layout",
             "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
             "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>", "", [PARIS_3]),
    ToolCase("value-with-newlines-and-tags-text", call("lookup", ("id", "line1\nline2 <b> & </c>")), "",
             [("lookup", {"id": "line1\nline2 <b> & </c>"})]),
    # malformed but unambiguous: repaired, with a warning
    ToolCase("missing-arg_key-after-name", "<tool_call>get_weather\ncity</arg_key><arg_value>Paris</arg_value>"
             "</tool_call>", "", [("get_weather", {"city": "Paris"})], ("missing <arg_key>",)),
    ToolCase("missing-arg_key-glued-to-name", "<tool_call>get_weathercity</arg_key><arg_value>Paris</arg_value>"
             "</tool_call>", "", [("get_weather", {"city": "Paris"})], ("missing <arg_key>",)),
    ToolCase("missing-arg_key-second-key", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris"
             "</arg_value>days</arg_key><arg_value>3</arg_value></tool_call>", "", [PARIS_3], ("missing <arg_key>",)),
    ToolCase("missing-arg_value", "<tool_call>get_weather<arg_key>city</arg_key>Paris</arg_value><arg_key>days"
             "</arg_key><arg_value>3</arg_value></tool_call>", "", [PARIS_3], ("missing <arg_value>",)),
    ToolCase("missing-close-arg_value", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris<arg_key>"
             "days</arg_key><arg_value>3</tool_call>", "", [PARIS_3], ("missing </arg_value>",)),
    ToolCase("missing-close-arg_key", "<tool_call>get_weather<arg_key>city<arg_value>Paris</arg_value>"
             "</tool_call>", "", [("get_weather", {"city": "Paris"})], ("missing </arg_key>",)),
    ToolCase("unclosed-call-at-eos", "Sure." + call("get_weather", ("city", "Paris"), ("days", "3"), close=False),
             "Sure.", [PARIS_3], ("missing </tool_call>",)),
    ToolCase("unclosed-zero-argument-at-eos", "<tool_call>now", "", [("now", {})], ("missing </tool_call>",)),
    ToolCase("unclosed-call-before-next-call", call("now", close=False) + WEATHER, "", [("now", {}), PARIS_3],
             ("missing </tool_call>",)),
    # malformed and ambiguous: returned as content, with a warning; a call whose name was accepted keeps the
    # arguments final before the fault (they may have been streamed) and the rest of its markup is content
    ToolCase("truncated-inside-value", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Par",
             "<arg_key>city</arg_key><arg_value>Par", [("get_weather", {})], ("ends inside the value",)),
    ToolCase("truncated-inside-second-value", call("get_weather", ("city", "Paris"), close=False) +
             "<arg_key>days</arg_key><arg_value>1", "<arg_key>days</arg_key><arg_value>1",
             [("get_weather", {"city": "Paris"})], ("ends inside the value",)),
    ToolCase("truncated-inside-name", "Let me see<tool_call>get_wea", "Let me see<tool_call>get_wea", [],
             ("ends inside the call",)),
    ToolCase("unknown-function", "<tool_call>rm_rf<arg_key>path</arg_key><arg_value>/</arg_value></tool_call>",
             "<tool_call>rm_rf<arg_key>path</arg_key><arg_value>/</arg_value></tool_call>", [],
             ("unknown function 'rm_rf'",)),
    ToolCase("ambiguous-name-and-key", "<tool_call>get_weatherzone</arg_key><arg_value>x</arg_value></tool_call>",
             "<tool_call>get_weatherzone</arg_key><arg_value>x</arg_value></tool_call>", [],
             ("cannot tell the function name from the key",)),
    ToolCase("text-after-last-argument", call("lookup", ("id", "1"), close=False) + "oops</tool_call>" + call("now"),
             "oops</tool_call>", [("lookup", {"id": "1"}), ("now", {})], ("after the last argument",)),
    ToolCase("duplicate-key", call("lookup", ("id", "1"), ("id", "2")),
             "<arg_key>id</arg_key><arg_value>2</arg_value></tool_call>", [("lookup", {"id": "1"})],
             ("given twice",)),
    ToolCase("unexpected-tag-after-value", call("lookup", ("id", "1"), close=False) + "<arg_value>x</tool_call>",
             "<arg_value>x</tool_call>", [("lookup", {"id": "1"})], ("unexpected <arg_value>",)),
    ToolCase("missing-tool_call-opener", "get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>",
             "get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>", [],
             ("outside a <tool_call>",)),
    ToolCase("good-call-after-bad-one", call("rm_rf") + WEATHER, call("rm_rf"), [PARIS_3], ("unknown function",)),
]


@dataclass(frozen=True)
class ReasoningCase:
    id: str
    text: str
    thinking: bool  # the template opened <think> (enable_thinking on, SGLang's force_reasoning)
    reasoning: str
    content: str


REASONING_CASES = [
    ReasoningCase("thinking", "Two plus two.</think>The answer is 4.", True, "Two plus two.", "The answer is 4."),
    # never closed: thinking cut short by max_tokens, or skipped (only force_nonempty_content tells them apart)
    ReasoningCase("thinking-unclosed", "The answer is 4.", True, "The answer is 4.", ""),
    ReasoningCase("thinking-unclosed-multiline", "\n\nLine one.\nLine <b>two</b>.", True,
                  "\n\nLine one.\nLine <b>two</b>.", ""),
    ReasoningCase("thinking-cut-inside-end-tag", "Let me see</thi", True, "Let me see</thi", ""),
    ReasoningCase("empty-thinking", "</think>Hi!", True, "", "Hi!"),
    ReasoningCase("thinking-off", "The answer is 4.", False, "", "The answer is 4."),
    ReasoningCase("thinking-off-model-thinks-anyway", "<think>hmm</think>4", False, "hmm", "4"),
    ReasoningCase("model-opened-thinking-cut-short", "\n<think>hmm, let me", False, "hmm, let me", ""),
    ReasoningCase("template-and-model-open", "<think>a</think>b", True, "a", "b"),
    ReasoningCase("tool-call-ends-thinking", "I need the weather<tool_call>now</tool_call>", True,
                  "I need the weather", "<tool_call>now</tool_call>"),
    ReasoningCase("thinking-then-call", "I need the weather</think>" + WEATHER, True, "I need the weather", WEATHER),
    ReasoningCase("unicode", "思考中🤔…</think>答案：४२ ✅", True, "思考中🤔…", "答案：४२ ✅"),
    ReasoningCase("later-think-tags-are-content", "a</think>b<think>c</think>d", True, "a", "b<think>c</think>d"),
    ReasoningCase("think-mentioned-mid-answer", "Use the <think> tag.", False, "", "Use the <think> tag."),
]
