"""FP8 block dequantization on CPU, the cost that dominates loading an FP8 checkpoint for CPU serving.

Times our `dequantize_fp8_blocks` (scales expanded with two repeat_interleave, fp32 product, cast) against a
broadcast variant (fp32 weight viewed as [gn, bn, gk, bk] times scale[:, None, :, None]; ragged edges padded),
on GLM-5's real weight shapes, and checks the two are bit-identical.

Run from the repo root: .venv/bin/python -m bench.fp8_dequant [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.lib import common
from sglang_glm5.quant.fp8_block import dequantize_fp8_blocks, quantize_fp8_blocks

NAME = "fp8_dequant"
BLOCK = (128, 128)
SHAPES = {  # GLM-5 FP8 weights, [N, K]
    "dense mlp gate/up (12288 x 6144)": (12288, 6144),
    "routed expert gate/up (2048 x 6144)": (2048, 6144),
    "kv_a_proj_with_mqa (576 x 6144, ragged rows)": (576, 6144),
    "o_proj (6144 x 16384)": (6144, 16384),
}
QUICK_SHAPES = ("routed expert gate/up (2048 x 6144)", "kv_a_proj_with_mqa (576 x 6144, ragged rows)")


def dequantize_broadcast(w_fp8, scale_inv, block=BLOCK, dtype=torch.bfloat16):
    bn, bk = block
    n, k = w_fp8.shape
    gn, gk = scale_inv.shape
    w = w_fp8.float()
    if (gn * bn, gk * bk) != (n, k):
        w = torch.nn.functional.pad(w, (0, gk * bk - k, 0, gn * bn - n))
    out = w.view(gn, bn, gk, bk) * scale_inv.float()[:, None, :, None]  # [gn, bn, gk, bk]
    return out.view(gn * bn, gk * bk)[:n, :k].to(dtype)


def best_of(fn, reps: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="best of this many per variant")
    p.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    p.add_argument("--no-markdown", dest="markdown", action="store_false")
    p.add_argument("--quick", action="store_true", help=f"two small shapes, 1 rep: {QUICK_SHAPES}")
    args = p.parse_args(argv)
    if args.quick:
        args.reps = 1
    return args


def markdown(payload: dict) -> str:
    args = payload["args"]
    table = common.md_table(
        ["weight", "ours s", "broadcast s", "speedup", "fp8->fp32 cast alone s", "ours Mparam/s", "bit-identical"],
        [[k, f"{r['ours_s']:.3f}", f"{r['broadcast_s']:.3f}", f"{r['speedup']:.2f}x",
          f"{r['fp8_to_fp32_cast_s']:.3f}", f"{r['ours_Mparams_per_s']:.0f}", r["bit_identical"]]
         for k, r in payload["results"].items()],
    )  # fmt: skip
    return f"""## FP8 block dequantization on CPU{" (--quick)" if args["quick"] else ""}

`{payload["command"]}`

{payload["date"]}, commit {payload["git_commit"]}; {common.machine_line(payload["machine"])}.

`sglang_glm5.quant.fp8_block.dequantize_fp8_blocks` (what loading an FP8 checkpoint on CPU runs per weight) vs a
broadcast variant that skips the two `repeat_interleave` scale expansions; best of {args["reps"]}, 128x128 blocks, to bf16.

{table}
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    command = common.announce(argv)
    machine = common.machine()
    shapes = {k: v for k, v in SHAPES.items() if not args.quick or k in QUICK_SHAPES}
    rows = {}
    for label, shape in shapes.items():
        w = (torch.randn(shape) / shape[1] ** 0.5).to(torch.bfloat16)
        w_fp8, scale = quantize_fp8_blocks(w, BLOCK)
        ours_s, ours = best_of(lambda: dequantize_fp8_blocks(w_fp8, scale, BLOCK, torch.bfloat16), args.reps)
        bcast_s, bcast = best_of(lambda: dequantize_broadcast(w_fp8, scale), args.reps)
        cast_s, _ = best_of(lambda: w_fp8.float(), args.reps)
        params = shape[0] * shape[1]
        rows[label] = {
            "ours_s": ours_s, "broadcast_s": bcast_s, "fp8_to_fp32_cast_s": cast_s, "speedup": ours_s / bcast_s,
            "ours_Mparams_per_s": params / ours_s / 1e6, "bit_identical": torch.equal(ours, bcast),
        }
        print(f"{label}: ours {ours_s:.3f} s, broadcast {bcast_s:.3f} s ({ours_s / bcast_s:.2f}x), fp8->fp32 cast"
              f" alone {cast_s:.3f} s, bit-identical {rows[label]['bit_identical']}")
    stem = common.result_stem(NAME, args.quick)
    payload = {"benchmark": NAME, "command": command, "date": common.utc_now(), "git_commit": common.git_commit(),
               "machine": machine, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "results": rows}
    common.publish(payload, stem, markdown(payload), results_dir=args.results_dir, section=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
