"""CPU decode tokens/s of the tiny GLM-5 at tp 1 vs tp 2 through `sglang-glm5 serve`, in one run.

Both servers get the same batch of prompts (greedy, fixed max_tokens, float32); their outputs must be identical (the
benchmark stops otherwise: tp 2 must compute what tp 1 does). Reported: decode tokens/s = batch * max_tokens / wall
seconds (median of reps) and the tp 2 / tp 1 ratio. On a 2-core machine the two ranks share the cores and exchange
every layer's partial sums over gloo: the ratio shows TP's overhead at tiny size, not a speed-up.

Run from the repo root: .venv/bin/python -m bench.tensor_parallel [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

from bench.lib import common
from bench.lib.server_timing import timed_rounds

NAME = "tensor_parallel"
DTYPE = "float32"
TP_SIZES = (1, 2)
FIRST_PLAIN_TOKEN = 3
QUICK = {"batch": 2, "max_tokens": 8, "reps": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="concurrent prompts per round (one /generate call)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=37)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    p.add_argument("--no-results-md", action="store_true", help="do not update bench/RESULTS.md")
    return common.parse_quick(p, argv, QUICK)


def checkpoint() -> Path:
    from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint

    path = common.CACHE_ROOT / NAME / "tiny-bf16"
    if not (path / "config.json").is_file():
        write_tiny_checkpoint(path, dtype="bf16")
    return path


def prompts(batch: int, length: int, vocab: int) -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(FIRST_PLAIN_TOKEN, vocab // 2) for _ in range(length)] for _ in range(batch)]


def measure(path: Path, tp: int, batch: list[list[int]], args, log: Path) -> dict:
    flags = ["--dtype", DTYPE, "--tp-size", str(tp)]
    seconds, outputs = timed_rounds(path, flags, batch, args.max_tokens, args.reps, log, dict(os.environ))
    return {
        "tp": tp,
        "seconds": seconds,
        "output_ids": [o["output_ids"] for o in outputs],
        "tok_s": len(batch) * args.max_tokens / common.median(seconds),
    }


def markdown(p: dict) -> str:
    base = p["runs"][0]["tok_s"]
    rows = [[f"tp {r['tp']}", f"{r['tok_s']:.1f}", f"{r['tok_s'] / base:.2f}x"] for r in p["runs"]]
    return f"""## Tensor parallel on CPU: decode tokens/s at tp 1 vs tp 2 (tiny checkpoint)

Command: `{p["command"]}`

{p["date"]}, commit {p["git_commit"]}; {common.machine_line(p["machine"])}.
Tiny GLM-5 (4 heads, 8 experts) served in **{DTYPE}** through `sglang-glm5 serve` at tp 1 and tp 2 in this run
(tp 2: two SGLang ranks, gloo collectives, `SGLANG_CPU_OMP_THREADS_BIND` set by `serve`); batch {p["batch"]} prompts
of {p["prompt_tokens"]} tokens, {p["max_tokens"]} greedy tokens each, median of {p["reps"]} rounds.
Outputs identical at tp 1 and tp 2: **{p["identical"]}**.

{common.md_table(["server", "decode tok/s", "vs tp 1"], rows)}

On an idle 2-core machine the two ranks split the same cores and all-reduce every layer's attention and MoE output
over gloo, so the ratio shows TP's overhead at tiny size, not the speed-up TP gives a model too large for one GPU.
Read it with the load average above: on a machine shared with other jobs, two server processes get a larger share
of the contended cores than one, which can make tp 2 look faster than tp 1.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = common.announce(argv)
    import json

    path = checkpoint()
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    batch = prompts(args.batch, args.prompt_tokens, vocab)
    work = common.CACHE_ROOT / NAME / "logs"
    payload = {
        "command": command, "date": common.utc_now(), "git_commit": common.git_commit(), "machine": common.machine(),
        "batch": args.batch, "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens, "reps": args.reps,
    }
    payload["runs"] = [measure(path, tp, batch, args, work / f"tp{tp}.log") for tp in TP_SIZES]
    payload["identical"] = all(r["output_ids"] == payload["runs"][0]["output_ids"] for r in payload["runs"])
    print(", ".join(f"tp {r['tp']}: {r['tok_s']:.1f} tok/s" for r in payload["runs"]) + f"; identical {payload['identical']}")
    if not payload["identical"]:
        print("tp 2 output differs from tp 1: not recording", file=sys.stderr)
        return 1
    publish(payload, args)
    return 0


def publish(payload: dict, args) -> None:
    common.publish(payload, common.result_stem(NAME, args.quick), markdown(payload),
                   write=not args.no_results_md and not args.quick, results_dir=args.results_dir)


if __name__ == "__main__":
    sys.exit(main())
