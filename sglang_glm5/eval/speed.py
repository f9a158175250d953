"""`bench speed`: SGLang's own serving benchmark with the cookbook's settings, its result rewritten as our JSON.

The profile's flags (configs/cookbook-benchmarks.json) are the cookbook's command; flags given here replace them,
flags after `--` go to bench_serving verbatim.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from sglang_glm5.eval.errors import EvalError

BENCH_MODULE = "sglang.benchmark.serving"  # `python -m sglang.bench_serving` is its deprecated alias in 0.5.23
TAIL_CHARS = 4000
# bench_serving result key -> our key (same meaning; throughputs renamed with their unit)
HEADLINE = {
    "output_throughput": "output_throughput_tok_s",
    "total_throughput": "total_throughput_tok_s",
    "request_throughput": "request_throughput_req_s",
    "mean_ttft_ms": "mean_ttft_ms",
    "median_ttft_ms": "median_ttft_ms",
    "p99_ttft_ms": "p99_ttft_ms",
    "mean_tpot_ms": "mean_tpot_ms",
    "median_tpot_ms": "median_tpot_ms",
    "p99_tpot_ms": "p99_tpot_ms",
    "mean_itl_ms": "mean_itl_ms",
    "mean_e2e_latency_ms": "mean_e2e_latency_ms",
    "duration": "latency_s",
    "completed": "completed",
    "total_input_tokens": "input_tokens",
    "total_output_tokens": "output_tokens",
    "max_concurrency": "max_concurrency",
    "accept_length": "accept_length",
}


def merged_flags(profile_flags: dict[str, str], overrides: dict[str, object]) -> dict[str, str]:
    """The profile's flags with the user's replacements (None: keep the profile's)."""
    flags = dict(profile_flags)
    flags.update({k: str(v) for k, v in overrides.items() if v is not None})
    return flags


def bench_command(flags: dict[str, str], root_url: str, extra: list[str], output_file: Path) -> list[str]:
    flags = {**flags, "--base-url": root_url, "--output-file": str(output_file)}
    words = [w for flag, value in flags.items() for w in (flag, value)]
    return [sys.executable, "-m", BENCH_MODULE, *words, *extra]


def run_streaming(command: list[str], timeout_s: float) -> tuple[int, str]:
    """Run, echoing its output live (its progress bar and result table); return the exit code and the output's tail."""
    tail = ""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):
                text = chunk.decode(errors="replace")
                sys.stdout.write(text)
                sys.stdout.flush()
                tail = (tail + text)[-TAIL_CHARS:]
            return proc.wait(timeout=timeout_s), tail
        except subprocess.TimeoutExpired:
            proc.kill()
            raise EvalError(f"bench_serving ran past {timeout_s}s: {shlex.join(command)}") from None


def run_bench(command: list[str], output_file: Path, timeout_s: float) -> dict:
    returncode, tail = run_streaming(command, timeout_s)
    lines = output_file.read_text().splitlines() if output_file.is_file() else []
    if returncode != 0 or not lines:
        hint = ""
        if "--dataset-path" not in command and "random" in command:
            hint = ("\n(the `random` dataset samples prompt text from ShareGPT, which it downloads; offline use "
                    "--dataset-name random-ids, or --dataset-path a local ShareGPT json)")
        raise EvalError(f"bench_serving failed (exit {returncode}): {shlex.join(command)}\n{tail[-2000:]}{hint}")
    return json.loads(lines[-1])


def speed_metrics(raw: dict, num_prompts: int) -> dict:
    metrics = {ours: raw.get(theirs) for theirs, ours in HEADLINE.items()}
    metrics["num_prompts"] = num_prompts
    metrics["failed_requests"] = num_prompts - int(raw.get("completed") or 0)
    return metrics


def measure(flags: dict[str, str], root_url: str, extra: list[str], timeout_s: float) -> tuple[list[str], dict, dict]:
    """-> (bench_serving command, our metrics, bench_serving's own result)."""
    if "--num-prompts" not in flags:
        raise EvalError("bench speed: the profile names no --num-prompts")
    with tempfile.TemporaryDirectory() as tmp:
        output_file = Path(tmp) / "bench_serving.jsonl"
        command = bench_command(flags, root_url, extra, output_file)
        raw = run_bench(command, output_file, timeout_s)
    return command, speed_metrics(raw, int(flags["--num-prompts"])), raw
