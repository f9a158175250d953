"""`sglang-glm5 plan --preset NAME [--with ...] [--tp N] [--context N] [--concurrency N]`: per-GPU memory of a preset."""

from __future__ import annotations

import argparse
import sys

from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.presets.compose import add_preset_command, parse_features
from sglang_glm5.datafiles import DataFileError
from sglang_glm5.presets.planner import GIB, MemoryPlan, largest_context, plan, smallest_fitting_tp

LABEL_WIDTH = 44


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def line(label: str, value: str) -> str:
    return f"{label:<{LABEL_WIDTH}}{value}"


def describe(p: MemoryPlan, fitting_tp: int | None, longest: int = 0) -> tuple[list[str], bool]:
    dp = f", attention DP {p.attention_dp}" if p.attention_dp > 1 else ""
    lines = [
        f"{p.preset} on {p.gpu}: tp {p.tp}{dp}, kv-cache {p.kv_cache_dtype}, mem-fraction-static {p.mem_fraction_static}",
        line("nodes", f"{p.nnodes} ({p.tp // p.nnodes} GPUs each)"),
        line("GPU memory", f"{gib(p.gpu_bytes)} (static fraction {gib(p.static_bytes)})"),
        line("weights per GPU", gib(p.weight_bytes)),
        *(line(f"  {item.label}", gib(item.bytes)) for item in sorted(p.weights, key=lambda i: -i.bytes)),
        *(line(f"workspace: {item.label}", gib(item.bytes)) for item in p.workspace),
    ]
    if not p.weights_fit:
        instead = f": use tp {fitting_tp} instead" if fitting_tp else ""
        return lines + [f"DOES NOT FIT: weights need {gib(p.weight_bytes)} per GPU, the static fraction holds {gib(p.static_bytes)}{instead}"], False
    lines += [
        line("KV cache per token (per GPU)", f"{p.kv_bytes_per_token} B"),
        *(line(f"  {item.label}", f"{int(item.bytes)} B") for item in p.kv_per_token),
        line("KV cache", f"{gib(p.kv_budget_bytes)} = {p.kv_tokens} tokens per GPU"),
        line("largest context of one request", f"{longest} tokens"),
        line(f"max concurrent requests at {p.context} tokens", str(p.max_concurrency)),
        line("indexer logits", f"{min(p.prefill_chunk, p.indexer_rows_per_pass)} query rows per pass of the {p.prefill_chunk}-row"
             f" prefill chunk at {p.context} tokens (budget {gib(p.indexer_logits_budget)})"),
    ]
    if not p.indexer_fits:
        longest = p.indexer_logits_budget // 4
        return lines + [f"DOES NOT FIT one indexer logits row of {p.context} tokens in the budget: lower --context to {longest}"], False
    if p.max_concurrency == 0:
        return lines + [f"DOES NOT FIT one request of {p.context} tokens beside the weights: lower --context to {longest}"], False
    if p.concurrency is not None and p.concurrency > p.max_concurrency:
        return lines + [f"DOES NOT FIT {p.concurrency} requests of {p.context} tokens (at most {p.max_concurrency})"], False
    return lines + ["FITS"], True


def run(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog()
        options = {
            "features": parse_features(args.features), "context": args.context, "concurrency": args.concurrency,
            "mem_fraction_static": args.mem_fraction_static, "kv_cache_dtype": args.kv_cache_dtype,
        }
        p = plan(catalog, args.preset, tp=args.tp, **options)
        fitting_tp = None if p.weights_fit else smallest_fitting_tp(catalog, p, **options)
        longest = largest_context(catalog, p) if p.weights_fit else 0
    except DataFileError as e:
        print(f"sglang-glm5 plan: error: {e}", file=sys.stderr)
        return 2
    lines, fits = describe(p, fitting_tp, longest)
    print("\n".join(lines))
    return 0 if fits else 1


def add_parser(subparsers) -> None:
    parser = add_preset_command(
        subparsers,
        "plan",
        help="per-GPU memory of a preset: do the weights fit, how many KV tokens and concurrent requests remain",
        description="Computed from configs/glm5-config.json (every tensor of the checkpoint) and "
        "configs/memory-layout.json; exit status 1 when it does not fit.",
    )
    parser.add_argument("--context", type=int, help="tokens per request (default: GLM-5's maximum)")
    parser.add_argument("--concurrency", type=int, help="requests that must fit at --context")
    parser.add_argument("--mem-fraction-static", type=float, help="default: the preset's")
    parser.add_argument("--kv-cache-dtype", help="default: the preset's (fp8_e4m3 or bfloat16)")
    parser.set_defaults(func=run)
