"""EAGLE speculative decoding with GLM-5's MTP draft vs plain decoding, same trained tiny checkpoint, same run.

A tiny checkpoint is trained (`sglang-glm5 tiny-checkpoint --train-steps`, main model + MTP layer on the built-in
token-cycle corpus), then served twice through `sglang-glm5 serve` in float32: without speculation and with the
cookbook's EAGLE flags (steps 3, topk 1, draft tokens 4). Both get the same batch of corpus prompts (greedy,
ignore_eos, fixed max_tokens); their outputs must be identical (the benchmark stops otherwise). Reported: SGLang's
average accept length (completion tokens / verify steps, from each response's meta_info) and decode tokens/s =
batch * max_tokens / wall seconds (median of reps), for both servers.

Run from the repo root: .venv/bin/python -m bench.speculative [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.lib import common
from bench.lib.server_timing import timed_rounds

NAME = "speculative"
DTYPE = "float32"
EAGLE_FLAGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]
QUICK = {"batch": 2, "max_tokens": 16, "reps": 1, "train_steps": 40}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="concurrent prompts per round (one /generate call)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=11)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the servers")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    p.add_argument("--no-results-md", action="store_true", help="do not update bench/RESULTS.md")
    return common.parse_quick(p, argv, QUICK)


def trained_checkpoint(steps: int) -> Path:
    from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
    from sglang_glm5.checkpoint.train import TrainConfig, train_checkpoint

    path = common.CACHE_ROOT / NAME / f"trained-{steps}"
    if not (path / "trained.ok").is_file():
        write_tiny_checkpoint(path, dtype="bf16")
        train_checkpoint(path, TrainConfig(steps=steps))
        (path / "trained.ok").write_text("ok\n")
    return path


def measure(checkpoint: Path, flags: list[str], prompts, args, log: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    seconds, outputs = timed_rounds(checkpoint, ["--dtype", DTYPE, *flags], prompts, args.max_tokens, args.reps, log, env)
    accept = [o["meta_info"].get("spec_accept_length") for o in outputs]
    return {
        "flags": flags,
        "seconds": seconds,
        "output_ids": [o["output_ids"] for o in outputs],
        "accept_length": None if None in accept else sum(accept) / len(accept),
        "tok_s": len(prompts) * args.max_tokens / common.median(seconds),
    }


def markdown(p: dict) -> str:
    plain, eagle = p["plain"], p["eagle"]
    rows = [
        ["no speculation", "—", f"{plain['tok_s']:.1f}", "1.00x"],
        ["EAGLE (MTP draft)", f"{eagle['accept_length']:.2f}", f"{eagle['tok_s']:.1f}",
         f"{eagle['tok_s'] / plain['tok_s']:.2f}x"],
    ]
    return f"""## EAGLE speculative decoding with the MTP draft (CPU, trained tiny checkpoint)

Command: `{p["command"]}`

{p["date"]}, commit {p["git_commit"] or "not recorded (run outside a git checkout)"}; {common.machine_line(p["machine"])}.
Tiny GLM-5 trained {p["train_steps"]} steps (main model + MTP layer, token-cycle corpus), served in **{DTYPE}**
twice in this run; batch {p["batch"]} corpus prompts of {p["prompt_tokens"]} tokens, {p["max_tokens"]} greedy tokens
each, median of {p["reps"]} rounds, OMP_NUM_THREADS={p["threads"]}. EAGLE flags: `{" ".join(EAGLE_FLAGS)}`.
Outputs identical with and without speculation: **{p["identical"]}**.

{common.md_table(["server", "avg accept length (SGLang)", "decode tok/s", "vs no speculation"], rows)}

Accept length counts the bonus token (at most num_steps + 1 = 4). On this CPU EAGLE is slower despite accepting
~3 tokens per verify: each verify round adds 2 draft-step forwards, a draft-extend forward and SGLang's EAGLE
bookkeeping kernels, which here run in Triton's Python interpreter (`hooks/cpu_eagle.py`); at tiny model size
that overhead outweighs the saved target forwards. Not profiled further; the speed-up EAGLE is for needs a GPU.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = common.announce(argv)
    from sglang_glm5.checkpoint.train import TrainConfig, corpus_for

    checkpoint = trained_checkpoint(args.train_steps)
    corpus = corpus_for(checkpoint, TrainConfig(steps=args.train_steps))
    prompts = [corpus.sequence(int(corpus.tokens[5 * i]), args.prompt_tokens) for i in range(args.batch)]
    work = common.CACHE_ROOT / NAME / "logs"
    payload = {
        "command": command, "date": common.utc_now(), "git_commit": common.git_commit(), "machine": common.machine(),
        "train_steps": args.train_steps, "batch": args.batch, "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens, "reps": args.reps, "threads": args.threads,
    }
    payload["plain"] = measure(checkpoint, [], prompts, args, work / "plain.log")
    payload["eagle"] = measure(checkpoint, EAGLE_FLAGS, prompts, args, work / "eagle.log")
    payload["identical"] = payload["plain"]["output_ids"] == payload["eagle"]["output_ids"]
    stem = common.result_stem(NAME, args.quick)
    print(f"accept length {payload['eagle']['accept_length']:.2f}; decode tok/s: no speculation "
          f"{payload['plain']['tok_s']:.1f}, EAGLE {payload['eagle']['tok_s']:.1f}; identical {payload['identical']}")
    if not payload["identical"]:
        print("EAGLE output differs from plain greedy output: not recording", file=sys.stderr)
    common.publish(payload, stem, markdown(payload), results_dir=args.results_dir,
                   section=payload["identical"] and not args.no_results_md and not args.quick)
    return 0 if payload["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
