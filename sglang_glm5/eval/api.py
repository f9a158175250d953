"""The two OpenAI endpoints a prompt can go through: its request body and the generated text of its reply.

`completions` sends the prompt as raw text, as SGLang's benchmark/gsm8k and benchmark/mmlu scripts do (the
cookbook's numbers); `chat` sends it as one user message through the server's chat template, where
`chat_template_kwargs` (GLM-5: `enable_thinking`) apply.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_END = "</think>"


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    stop: tuple[str, ...] = ()
    thinking: bool | None = None  # None: the template's default


@dataclass(frozen=True)
class Completions:
    path = "/v1/completions"

    def body(self, model: str, prompt: str, sampling: Sampling) -> dict:
        body = {"model": model, "prompt": prompt, "max_tokens": sampling.max_tokens, "temperature": 0}
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        return body

    def text(self, reply: dict) -> str:
        return reply["choices"][0].get("text") or ""


@dataclass(frozen=True)
class Chat:
    path = "/v1/chat/completions"

    def body(self, model: str, prompt: str, sampling: Sampling) -> dict:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": sampling.max_tokens, "temperature": 0}
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": sampling.thinking}
        return body

    def text(self, reply: dict) -> str:
        """The answer part: `content`, less any reasoning a server without a reasoning parser leaves in it."""
        content = reply["choices"][0]["message"].get("content") or ""
        return content.rsplit(THINK_END, 1)[-1]


APIS = {"completions": Completions(), "chat": Chat()}


def completion_tokens(reply: dict) -> int:
    return int((reply.get("usage") or {}).get("completion_tokens") or 0)
