"""`sglang-glm5 eval gsm8k|mmlu --base-url URL ...`: SGLang's GSM8K / MMLU benchmarks over the OpenAI API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sglang_glm5.eval import gsm8k, mmlu, result
from sglang_glm5.eval.api import Sampling
from sglang_glm5.eval.client import OpenAIClient
from sglang_glm5.eval.data import default_cache_dir, gsm8k_path, mmlu_dir
from sglang_glm5.eval.errors import EvalError, reports_errors
from sglang_glm5.eval.runner import Run, run_prompts

THINKING_MAX_TOKENS = 16384  # room for GLM-5's reasoning before the answer
THINKING = {"on": True, "off": False}


def sampling(args: argparse.Namespace, max_tokens: int, stop: tuple[str, ...]) -> Sampling:
    if args.thinking is not None and args.api != "chat":
        raise EvalError("--thinking needs --api chat: chat_template_kwargs only reach the chat template")
    thinking = THINKING.get(args.thinking)
    # Reasoning may say "Question"; the answer comes after it, so no stop strings while thinking.
    return Sampling(
        max_tokens=args.max_tokens or (THINKING_MAX_TOKENS if thinking else max_tokens),
        stop=() if thinking else stop,
        thinking=thinking,
    )


def client(args: argparse.Namespace) -> OpenAIClient:
    return OpenAIClient(args.base_url, os.environ.get("OPENAI_API_KEY"), args.request_timeout, args.retries)


def records(run: Run, **columns: list) -> list[dict]:
    rows = []
    for i, r in enumerate(run.records):
        row = {"label": r.label, "pred": r.pred, "correct": r.correct, "output": r.output, "attempts": r.attempts,
               "error": r.error}
        rows.append({**{k: v[i] for k, v in columns.items()}, **row})
    return rows


def finish(doc: dict, args: argparse.Namespace, run: Run) -> int:
    print(f"Accuracy: {doc['accuracy']:.3f}\nInvalid: {doc['invalid']:.3f}\nLatency: {doc['latency_s']:.3f} s\n"
          f"Output throughput: {doc['output_throughput_tok_s'] or 0:.3f} token/s")
    if run.failed:
        print(f"warning: {run.failed} of {len(run.records)} requests failed after retries (counted as wrong); "
              "see 'error' in the JSON records", file=sys.stderr)
    print(f"wrote {result.write(doc, args.output)}")
    return 2 if run.failed == len(run.records) else 0


@reports_errors
def run_gsm8k(args: argparse.Namespace) -> int:
    prompts = gsm8k.build_prompts(gsm8k_path(args.data, Path(args.cache_dir)), args.num_questions, args.num_shots)
    sample = sampling(args, gsm8k.MAX_TOKENS, gsm8k.STOP)
    api = client(args)
    model = api.model_name()
    run = run_prompts(api, args.api, model, prompts.prompts, prompts.labels, gsm8k.answer_value, sample,
                      args.parallel, "gsm8k")
    doc = result.document("gsm8k", args, model, api.root, run.metrics(), shots_from=prompts.shots_from,
                          records=records(run))
    return finish(doc, args, run)


@reports_errors
def run_mmlu(args: argparse.Namespace) -> int:
    root = mmlu_dir(args.data, Path(args.cache_dir))
    count = mmlu.shot_token_counter(args.shots_tokenizer)
    prompts = mmlu.build_prompts(root, args.subjects, args.num_shots, args.max_per_subject, count)
    sample = sampling(args, mmlu.MAX_TOKENS, ())
    api = client(args)
    model = api.model_name()
    run = run_prompts(api, args.api, model, prompts.prompts, prompts.labels, mmlu.answer_letter, sample,
                      args.parallel, "mmlu")
    per_subject: dict[str, dict] = {}
    for subject, r in zip(prompts.subjects, run.records):
        s = per_subject.setdefault(subject, {"num_questions": 0, "correct": 0, "shots": prompts.shots[subject]})
        s["num_questions"] += 1
        s["correct"] += r.correct
    for subject, s in per_subject.items():
        s["accuracy"] = round(s["correct"] / s["num_questions"], 4)
        print(f"subject: {subject}, #q:{s['num_questions']}, acc: {s['accuracy']:.3f}")
    doc = result.document("mmlu", args, model, api.root, run.metrics(), per_subject=per_subject,
                          records=records(run, subject=prompts.subjects))
    return finish(doc, args, run)


def add_common(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:30000")
    parser.add_argument("--api", choices=("completions", "chat"), default="completions",
                        help="completions: the prompt as raw text, as SGLang's own script (the cookbook's figures); "
                        "chat: as one user message through the chat template")
    parser.add_argument("--thinking", choices=tuple(THINKING), default=None,
                        help="with --api chat: chat_template_kwargs enable_thinking (default: the template's)")
    parser.add_argument("--num-shots", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=64, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help=f"per answer (default: SGLang's, or {THINKING_MAX_TOKENS} with --thinking on)")
    parser.add_argument("--data", default=None, help="a local copy of the data (default: the public files, cached)")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()), help="where downloaded data is kept")
    parser.add_argument("--retries", type=int, default=3, help="retries per request on connection errors, timeouts, 5xx, 429")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds per attempt")
    parser.add_argument("-o", "--output", default=f"{task}.json", help="result JSON")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="GSM8K or MMLU accuracy of a running server (OpenAI API; key: $OPENAI_API_KEY)")
    tasks = parser.add_subparsers(dest="eval_task", required=True, metavar="TASK")

    g = tasks.add_parser("gsm8k", help="GSM8K, as SGLang's benchmark/gsm8k (few-shot, last number)")
    add_common(g, "gsm8k")
    g.add_argument("--num-questions", type=int, default=200)
    g.set_defaults(func=run_gsm8k, command_path=("eval", "gsm8k"))

    m = tasks.add_parser("mmlu", help="MMLU, as SGLang's benchmark/mmlu (few-shot from dev, first letter)")
    add_common(m, "mmlu")
    m.add_argument("--subjects", nargs="+", default=None, help="default: every subject in test/")
    m.add_argument("--max-per-subject", type=int, default=None, help="first N test questions of each subject")
    m.add_argument("--shots-tokenizer", default=mmlu.TIKTOKEN_ENCODING,
                   help=f"counts the shots' tokens against the {mmlu.SHOT_TOKEN_BUDGET}-token budget: tiktoken's "
                   "cl100k_base (SGLang's), or a Hugging Face tokenizer name or folder")
    m.set_defaults(func=run_mmlu, command_path=("eval", "mmlu"))
