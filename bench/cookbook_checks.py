"""The cookbook's validation runs (GSM8K, MMLU, latency and throughput speed) and the report next to its figures.

    python -m bench.cookbook_checks --base-url http://HOST:30000     # a real GLM-5 deployment, cookbook sizes
    python -m bench.cookbook_checks --tiny                           # the tiny checkpoint on this CPU, small sizes

Results: bench/results/cookbook[-tiny]/ (one JSON per run, report.md, report.png) and the `cookbook_checks` section of
bench/RESULTS.md. With --tiny the weights are random (accuracy ~0) and the data is the test fixture: the run shows
the harness working end to end, the figures say nothing about GLM-5.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from bench.lib.common import (
    CACHE_ROOT,
    REPO,
    RESULTS_DIR,
    announce,
    git_commit,
    machine,
    machine_line,
    publish,
    utc_now,
)
from sglang_glm5.cli import main as cli

FIXTURES = REPO / "tests" / "eval" / "data"


def runs(url: str, tiny_checkpoint: Path | None) -> dict[str, list[str]]:
    """run name -> `sglang-glm5` argv; cookbook sizes, or small ones on the fixture data for the tiny model."""
    if tiny_checkpoint is None:
        return {
            "gsm8k": ["eval", "gsm8k", "--base-url", url, "--num-questions", "200"],
            "mmlu": ["eval", "mmlu", "--base-url", url],
            "speed-latency": ["bench", "speed", "--base-url", url, "--profile", "latency"],
            "speed-throughput": ["bench", "speed", "--base-url", url, "--profile", "throughput"],
        }
    small_speed = ["--random-input-len", "128", "--random-output-len", "32", "--dataset-name", "random-ids",
                   "--tokenizer", str(tiny_checkpoint)]
    return {
        "gsm8k": ["eval", "gsm8k", "--base-url", url, "--data", str(FIXTURES / "gsm8k" / "test.jsonl"),
                  "--num-questions", "6", "--num-shots", "5", "--max-tokens", "32"],
        "mmlu": ["eval", "mmlu", "--base-url", url, "--data", str(FIXTURES / "mmlu"),
                 "--shots-tokenizer", str(tiny_checkpoint)],
        "speed-latency": ["bench", "speed", "--base-url", url, "--profile", "latency", "--num-prompts", "4",
                          *small_speed],
        "speed-throughput": ["bench", "speed", "--base-url", url, "--profile", "throughput", "--num-prompts", "16",
                             "--max-concurrency", "16", *small_speed],
    }


def run_all(url: str, out: Path, tiny_checkpoint: Path | None) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name, argv in runs(url, tiny_checkpoint).items():
        path = out / f"{name}.json"
        print(f"+ sglang-glm5 {' '.join(argv)} -o {path}", flush=True)
        if cli([*argv, "-o", str(path)]) not in (0, 1):
            sys.exit(f"{name} failed")
        done.append(str(path))
    if cli(["report", *done, "-o", str(out / "report.md")]) != 0:
        sys.exit("report failed")
    return done


@contextlib.contextmanager
def tiny_server():
    from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
    from sglang_glm5.serving.process import ServerProcess

    checkpoint = CACHE_ROOT / "cookbook" / "tiny-bf16"
    if not (checkpoint / "config.json").is_file():
        write_tiny_checkpoint(checkpoint, dtype="bf16")
    with ServerProcess(checkpoint, CACHE_ROOT / "cookbook" / "server.log") as server:
        yield server.url, checkpoint


def section(command: str, out: Path, tiny: bool) -> str:
    report = (out / "report.md").read_text()
    table = report[report.index("| run |"): report.index("\n\n", report.index("| run |"))]
    rel = out.relative_to(REPO / "bench")
    what = ("the tiny random-weight checkpoint served on this CPU by launch_server, fixture data, small sizes: "
            "the harness end to end, **not** GLM-5's figures" if tiny else "a GLM-5 deployment at cookbook sizes")
    return (f"## Cookbook checks: accuracy and speed next to the SGLang cookbook\n\n`{command}`\n\n"
            f"{utc_now()}, commit {git_commit()}; {machine_line(machine())}.\n\n{what[0].upper()}{what[1:]}. "
            f"Per-run JSON, report and plot: `bench/{rel}/`.\n\n{table}\n\n![cookbook checks]({rel}/report.png)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--base-url", help="a running GLM-5 server")
    target.add_argument("--tiny", action="store_true", help="serve the tiny checkpoint on this CPU and use it")
    args = parser.parse_args()
    command = announce()
    out = RESULTS_DIR / ("cookbook-tiny" if args.tiny else "cookbook")
    if args.tiny:
        with tiny_server() as (url, checkpoint):
            run_all(url, out, checkpoint)
    else:
        run_all(args.base_url, out, None)
    publish({"command": command, "results": str(out), "tiny": args.tiny}, "cookbook_checks", section(command, out, args.tiny))


if __name__ == "__main__":
    main()
