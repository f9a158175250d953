"""End to end through launch_server: the tiny GLM-5 served with `--reasoning-parser glm5 --tool-call-parser glm5`.

The tiny model's text is random; what is checked is the request path, the chat template and the response structure,
and that the server's reasoning/content/tool-call split of its greedy output is exactly our parsers' split
of it (the same prompt's greedy /generate text), streamed and not. Forced tool choices, through the official
client: test_openai_client.py.
"""

import json

import pytest
import requests

from tests.oracle import tokenizer
from tests.parsers.fixtures import TOOLS as PARSER_TOOLS
from tests.parsers.streaming import reasoning_non_streamed, tools_non_streamed

pytestmark = pytest.mark.slow

MAX_TOKENS = 24
REQUEST_TIMEOUT_S = 300
CLIENT_ERROR = range(400, 500)
TOOLS = [t.model_dump(exclude_none=True) for t in PARSER_TOOLS]
TOOL_NAMES = {t["function"]["name"] for t in TOOLS}
FIRST_TURN = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]
THIRD_TURN = FIRST_TURN + [
    {"role": "assistant", "content": "", "reasoning_content": "I need the forecast.",
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 3})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 20C"},
    {"role": "assistant", "content": "It is sunny.", "reasoning_content": "Easy.",
     "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
]
CONVERSATIONS = [pytest.param(FIRST_TURN, id="first-turn"), pytest.param(THIRD_TURN, id="third-turn-after-tools")]
THINKING = [pytest.param(True, id="thinking"), pytest.param(False, id="no-thinking")]


def body(messages, thinking: bool, **extra) -> dict:
    return {"model": "default", "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": thinking}, **extra}


def post(url: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/v1/chat/completions", json=payload, timeout=REQUEST_TIMEOUT_S)


def non_streamed_with_prompt(url: str, payload: dict) -> tuple[dict, list[int]]:
    response = post(url, {**payload, "return_prompt_token_ids": True})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    message = choice["message"]
    assert message["role"] == "assistant" and choice["finish_reason"] in ("stop", "length", "tool_calls")
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []]
    split = {"content": message.get("content") or "", "reasoning": message.get("reasoning_content") or "",
             "calls": calls}
    return split, choice["prompt_token_ids"]


def non_streamed(url: str, payload: dict) -> dict:
    return non_streamed_with_prompt(url, payload)[0]


def generated_text(url: str, prompt_ids: list[int]) -> str:
    """The raw text the model generates for the chat's own prompt: greedy, so the chat request's output."""
    response = requests.post(f"{url}/generate", json={
        "input_ids": prompt_ids, "sampling_params": {"max_new_tokens": MAX_TOKENS, "temperature": 0}},
        timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    return response.json()["text"]


def streamed(url: str, payload: dict) -> dict:
    response = requests.post(f"{url}/v1/chat/completions", json={**payload, "stream": True}, stream=True,
                             timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    content, reasoning, names, args, finished = "", "", {}, {}, []
    lines = [line for line in response.iter_lines(decode_unicode=True) if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line.removeprefix("data: "))
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                if call["function"].get("name"):
                    names[call["index"]] = call["function"]["name"]
                args[call["index"]] = args.get(call["index"], "") + (call["function"].get("arguments") or "")
            if choice.get("finish_reason"):
                finished.append(choice["finish_reason"])
    assert finished and finished[-1] in ("stop", "length", "tool_calls")
    return {"content": content, "reasoning": reasoning,
            "calls": [(names[i], json.loads(args[i])) for i in sorted(names)]}


@pytest.mark.parametrize("thinking", THINKING)
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_with_tools_is_our_parsers_split_of_the_output(server, messages, thinking):
    payload = body(messages, thinking, tools=TOOLS)
    served, prompt_ids = non_streamed_with_prompt(server.url, payload)
    text = generated_text(server.url, prompt_ids)
    split = reasoning_non_streamed(text, thinking)
    parsed = tools_non_streamed(split.content, PARSER_TOOLS)
    expected = {"content": parsed.content, "reasoning": split.reasoning, "calls": parsed.calls}
    assert served == expected, text
    assert streamed(server.url, payload) == expected, text
    assert all(name in TOOL_NAMES for name, _ in expected["calls"])


@pytest.mark.parametrize("thinking,prompt_end", [(True, "<|assistant|><think>"), (False, "<|assistant|></think>")],
                         ids=["thinking", "no-thinking"])
def test_prompt_renders_tools_calls_and_results_in_glm5_format(server, checkpoint, thinking, prompt_end):
    _, prompt_ids = non_streamed_with_prompt(server.url, body(THIRD_TURN, thinking, tools=TOOLS))
    prompt = tokenizer(checkpoint).decode(prompt_ids)
    assert prompt.startswith("[gMASK]<sop><|system|>\n# Tools\n") and '"name": "get_weather"' in prompt
    assert ("<|assistant|><think>I need the forecast.</think><tool_call>get_weather<arg_key>city</arg_key>"
            "<arg_value>Paris</arg_value><arg_key>days</arg_key><arg_value>3</arg_value></tool_call>"
            "<|observation|><tool_response>sunny, 20C</tool_response>") in prompt
    assert ("<|assistant|><think>Easy.</think>It is sunny.<tool_call>now</tool_call>"
            "<|observation|><tool_response>12:00</tool_response>") in prompt
    assert prompt.endswith(prompt_end)


@pytest.mark.parametrize(
    "tools",
    [
        pytest.param("get_weather", id="tools-not-a-list"),
        pytest.param([{"type": "function", "function": {"parameters": {}}}], id="function-without-name"),
        pytest.param([{"type": "function"}], id="tool-without-function"),
    ],
)
def test_malformed_tools_are_a_client_error_and_the_server_keeps_serving(server, tools):
    response = post(server.url, {**body(FIRST_TURN, True), "tools": tools})
    assert response.status_code in CLIENT_ERROR, (response.status_code, response.text)
    assert non_streamed(server.url, body(FIRST_TURN, True, tools=TOOLS))["content"] is not None
