"""One accuracy run: prompts -> concurrent requests -> extracted answers -> accuracy, invalid rate, speed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sglang_glm5.eval.api import APIS, Sampling, completion_tokens
from sglang_glm5.eval.client import OpenAIClient


@dataclass(frozen=True)
class Record:
    label: Any
    output: str | None  # the generated answer text; None when the request failed
    pred: Any  # None: no answer could be read (invalid), or the request failed
    error: str | None
    attempts: int

    @property
    def correct(self) -> bool:
        return self.pred is not None and self.pred == self.label


@dataclass(frozen=True)
class Run:
    records: list[Record]
    latency_s: float
    output_tokens: int

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.records) / len(self.records)

    @property
    def invalid(self) -> float:
        return sum(r.pred is None for r in self.records) / len(self.records)

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.records)

    @property
    def retried(self) -> int:
        return sum(r.attempts > 1 for r in self.records)

    def metrics(self) -> dict:
        return {
            "accuracy": round(self.accuracy, 4),
            "invalid": round(self.invalid, 4),
            "latency_s": round(self.latency_s, 3),
            "output_tokens": self.output_tokens,
            "output_throughput_tok_s": round(self.output_tokens / self.latency_s, 3) if self.latency_s > 0 else None,
            "num_questions": len(self.records),
            "failed_requests": self.failed,
            "retried_requests": self.retried,
        }


def run_prompts(
    client: OpenAIClient,
    api_name: str,
    model: str,
    prompts: Sequence[str],
    labels: Sequence[Any],
    extract: Callable[[str], Any],
    sampling: Sampling,
    parallel: int,
    desc: str,
) -> Run:
    if not prompts:
        raise ValueError("no prompts to run")
    api = APIS[api_name]
    bodies = [api.body(model, p, sampling) for p in prompts]
    tic = time.perf_counter()
    replies = client.post_all(api.path, bodies, parallel, desc)
    latency = time.perf_counter() - tic
    records = []
    for label, reply in zip(labels, replies, strict=True):
        output, pred, error = None, None, reply.error
        if reply.body is not None:
            try:
                output = api.text(reply.body)
                pred = extract(output)
            except (KeyError, IndexError, TypeError, AttributeError) as e:
                error = f"malformed reply ({type(e).__name__}: {e}): {str(reply.body)[:200]}"
        records.append(Record(label, output, pred, error, reply.attempts))
    tokens = sum(completion_tokens(r.body) for r in replies if r.body is not None)
    return Run(records, latency, tokens)
