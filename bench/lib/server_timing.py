"""Timing greedy `/generate` rounds on one launched server: the loop the serving benchmarks share (tp 1 vs tp 2,
EAGLE vs none), so both sides of a comparison are timed the same way."""

from __future__ import annotations

import time
from pathlib import Path

from bench.lib.load_client import generate

WARMUP_TOKENS = 4


def timed_rounds(checkpoint: Path, flags: list[str], prompts: list[list[int]], max_tokens: int, reps: int, log: Path,
                 env: dict[str, str]) -> tuple[list[float], list[dict]]:  # fmt: skip
    """(seconds per round, the last round's outputs): one server with `flags`, a short warm-up call, then `reps` rounds
    of one `/generate` call on all `prompts`."""
    from sglang_glm5.serving.process import ServerProcess

    with ServerProcess(checkpoint, log, flags, env=env) as server:
        generate(server.url, prompts, WARMUP_TOKENS)
        seconds, outputs = [], []
        for _ in range(reps):
            start = time.perf_counter()
            outputs = generate(server.url, prompts, max_tokens)
            seconds.append(time.perf_counter() - start)
    return seconds, outputs
