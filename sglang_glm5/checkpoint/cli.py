from __future__ import annotations

import argparse
import sys

from sglang_glm5.checkpoint.archs import DEFAULT_ARCH, load_archs
from sglang_glm5.checkpoint.tiny import DTYPES, write_tiny_checkpoint
from sglang_glm5.checkpoint.train import TrainConfig, train_checkpoint

DEFAULTS = {"seed": 0, "shards": 3}  # --num-layers / --index-topk default to the arch's


def _run(args: argparse.Namespace) -> int:
    try:
        out = write_tiny_checkpoint(
            args.out,
            dtype=args.dtype,
            seed=args.seed,
            num_layers=args.num_layers,
            index_topk=args.index_topk,
            shards=args.shards,
            arch=args.arch,
        )
        if args.train_steps:
            losses = train_checkpoint(out, TrainConfig(steps=args.train_steps, seed=args.seed))
            print("trained: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()), file=sys.stderr)
    except ValueError as e:
        print(f"sglang-glm5 tiny-checkpoint: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tiny-checkpoint", help="write a tiny random GLM-5 checkpoint (config, weights, tokenizer)"
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--dtype", choices=DTYPES, required=True)
    archs = load_archs()
    p.add_argument(
        "--arch", choices=list(archs), default=DEFAULT_ARCH,
        help="named architecture (configs/tiny-archs.json): "
        + "; ".join(f"{name}: {a.description}" for name, a in archs.items()),
    )
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument(
        "--num-layers", type=int, default=None, help="decoder layers, MTP layer not counted (default: the arch's)"
    )
    p.add_argument("--index-topk", type=int, default=None, help="default: the arch's")
    p.add_argument("--shards", type=int, default=DEFAULTS["shards"])
    p.add_argument(
        "--train-steps", type=int, default=0, metavar="N",
        help="then train main model + MTP layer N steps on CPU on a built-in synthetic corpus (e.g. 200; 0: random)",
    )
    p.set_defaults(func=_run)
