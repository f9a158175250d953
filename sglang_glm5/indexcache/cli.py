"""`sglang-glm5 indexcache search`: find an IndexCache pattern by the paper's greedy calibration search."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sglang_glm5.config import Glm5ConfigError
from sglang_glm5.indexcache.calibration import calibration_batches, load_hf_model
from sglang_glm5.indexcache.plan import PATTERN_KEY, IndexerPlan
from sglang_glm5.indexcache.search import (
    PLAN_SOURCE,
    CalibrationError,
    CalibrationModel,
    greedy_search,
    target_full,
    write_results,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _search(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    try:
        model = load_hf_model(args.model_path, DTYPES[args.dtype], args.device)
        batches = calibration_batches(
            AutoTokenizer.from_pretrained(args.model_path), args.calib, args.seq_len, args.max_tokens, args.device
        )
        calib = CalibrationModel(model, batches)
        target = target_full(calib.num_layers, args.target_f, args.remove_fraction)
    except (CalibrationError, Glm5ConfigError) as err:
        print(f"sglang-glm5 indexcache search: error: {err}", file=sys.stderr)
        return 2
    steps = greedy_search(calib, target)
    out = args.output
    steps_path = args.steps_json or out.with_suffix(".steps.json")
    plot_path = args.plot or out.with_suffix(".png")
    write_results(steps, out, steps_path, plot_path)
    plan = IndexerPlan(steps[-1].pattern, PLAN_SOURCE)
    print(plan.summary())
    print(f"loss {steps[0].loss:.4f} (all F) -> {steps[-1].loss:.4f}; wrote {out}, {steps_path}, {plot_path}")
    print(f"serve with: --json-model-override-args '{json.dumps({PATTERN_KEY: plan.pattern})}'")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("indexcache", help="IndexCache patterns (which DSA layers reuse top-k)")
    sub = p.add_subparsers(dest="indexcache_command", required=True, metavar="ACTION")
    s = sub.add_parser("search", help="greedy calibration search for a pattern (arXiv 2603.12201)")
    s.add_argument("--model-path", type=Path, required=True, help="GLM-5 checkpoint directory (BF16 or FP8)")
    s.add_argument("--calib", type=Path, required=True, help="calibration text file (UTF-8)")
    goal = s.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-f", type=int, help="stop when this many layers still run their indexer")
    goal.add_argument("--remove-fraction", type=float, help="stop when this fraction of the indexers is removed")
    s.add_argument("-o", "--output", type=Path, required=True, help="pattern file to write (one line of F/S)")
    s.add_argument("--steps-json", type=Path, help="loss per step (default: OUTPUT with .steps.json)")
    s.add_argument("--plot", type=Path, help="PNG of loss against indexers kept (default: OUTPUT with .png)")
    s.add_argument("--seq-len", type=int, default=512, help="tokens per calibration sequence")
    s.add_argument("--max-tokens", type=int, default=8192, help="calibration tokens used in all")
    s.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.set_defaults(func=_search)
