"""`sglang-glm5 bench speed --base-url URL --profile latency|throughput`: the cookbook's speed runs, through SGLang's
own `sglang.benchmark.serving` (alias `sglang.bench_serving`); flags after `--` go to it verbatim."""

from __future__ import annotations

import argparse
import shlex

from sglang_glm5.eval import result, speed
from sglang_glm5.eval.client import OpenAIClient
from sglang_glm5.eval.cookbook import cookbook
from sglang_glm5.eval.errors import EvalError, reports_errors

# our option -> the bench_serving flag it replaces in the profile
OVERRIDES = {
    "num_prompts": "--num-prompts",
    "max_concurrency": "--max-concurrency",
    "random_input_len": "--random-input-len",
    "random_output_len": "--random-output-len",
    "dataset_name": "--dataset-name",
    "dataset_path": "--dataset-path",
    "tokenizer": "--tokenizer",
    "model": "--model",
}


@reports_errors
def run(args: argparse.Namespace) -> int:
    profiles = cookbook().speed_profiles
    if args.profile not in profiles:
        raise EvalError(f"--profile {args.profile}: not one of {', '.join(profiles)}")
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    client = OpenAIClient(args.base_url, retries=args.retries)
    model = client.model_name()
    flags = speed.merged_flags(profiles[args.profile], {flag: getattr(args, k) for k, flag in OVERRIDES.items()})
    command, metrics, raw = speed.measure(flags, client.root, extra, args.timeout)
    doc = result.document("speed", args, model, client.root, metrics, profile=args.profile,
                          bench_serving_command=shlex.join(command), bench_serving=raw)
    print(f"Output throughput: {metrics['output_throughput_tok_s']:.3f} tok/s\nMean TPOT: {metrics['mean_tpot_ms']:.3f} ms\n"
          f"Mean TTFT: {metrics['mean_ttft_ms']:.3f} ms")
    print(f"wrote {result.write(doc, args.output)}")
    return 0 if metrics["failed_requests"] == 0 else 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="serving speed of a running server (SGLang's bench_serving)")
    kinds = parser.add_subparsers(dest="bench_task", required=True, metavar="BENCH")
    s = kinds.add_parser("speed", help="the cookbook's latency (1 in flight) or throughput (100 in flight) run")
    s.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:30000")
    s.add_argument("--profile", default="latency", help="latency or throughput (configs/cookbook-benchmarks.json)")
    s.add_argument("--num-prompts", type=int, default=None, help="default: the profile's")
    s.add_argument("--max-concurrency", type=int, default=None, help="default: the profile's")
    s.add_argument("--random-input-len", type=int, default=None, help="default: the profile's (1000)")
    s.add_argument("--random-output-len", type=int, default=None, help="default: the profile's (1000)")
    s.add_argument("--dataset-name", default=None, help="default: random (prompt text from ShareGPT, downloaded); "
                   "random-ids needs no download")
    s.add_argument("--dataset-path", default=None, help="a local ShareGPT json for the random dataset")
    s.add_argument("--tokenizer", default=None, help="default: the served model's id")
    s.add_argument("--model", default=None, help="default: the served model's id")
    s.add_argument("--retries", type=int, default=3, help="for the model-name query")
    s.add_argument("--timeout", type=float, default=24 * 3600, help="seconds for the whole benchmark")
    s.add_argument("-o", "--output", default="speed.json", help="result JSON")
    s.set_defaults(func=run, passthrough=True, command_path=("bench", "speed"))
