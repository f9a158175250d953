"""Weight-loading overhead: our GLM-5 `load_weights` inside SGLang vs SGLang merely iterating the same shards.

Per dtype (BF16, FP8), on a synthetic checkpoint with GLM-5's real per-tensor shapes (bench/lib/synthetic_checkpoint.py):
  (a) ours: SGLang's ModelRunner.load_model() in process (bench/lib/load_worker.py), and the real server's own
      `Load weight end. elapsed=` log line (`sglang-glm5 serve` through ServerProcess) as a cross-check;
  (b) SGLang's weight iterator alone on the same files (page touch, and copy of every tensor).
Overhead = median(a) / median(b) - 1, judged against the copy baseline. Every file is read once before timing,
so (a) and (b) both run from a warm page cache. FP8 is dequantized on CPU while loading (expected to cost more).

Run from the repo root: .venv/bin/python -m bench.weight_loading [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.lib import common
from bench.lib.synthetic_checkpoint import (
    GLM5_VOCAB,
    SyntheticSpec,
    cached_checkpoint,
    checkpoint_bytes,
    checkpoint_files,
    fp8_byte_share,
    real_model_bytes,
)

NAME = "weight_loading"
OVERHEAD_GOAL = 0.20
PRIMARY_BASELINE = "iterate_copy_s"
LOAD_LOG_LINE = re.compile(r"Load weight end\. elapsed=([0-9.]+) s")
WORKER_TIMEOUT_S = 900
# The CPU default (0.05 of RAM) cannot hold GB-sized real-shape weights; the KV pool stays capped by the CPU
# default --max-total-tokens, so a large fraction only lets SGLang's memory check pass.
SERVER_FLAGS = ("--mem-fraction-static", "0.8")
QUICK = {"experts": 1, "vocab": 4096, "reps": 1, "server_reps": 0, "profile": False}  # no server start
SERIES = (  # result key, plot label
    ("iterate_page_s", "(b) SGLang\niterator,\npage touch"),
    ("iterate_copy_s", "(b) SGLang\niterator\n+ copy (kept)"),
    ("ours_load_weights_only_s", "(a) ours:\nmodel\n.load_weights"),
    ("ours_weight_load_s", "(a) ours:\nModelRunner\n.load_model"),
    ("server_weight_load_s", "(a) ours:\nserver log,\nfresh process"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp8"], choices=["bf16", "fp8"])
    p.add_argument("--layers", type=int, default=2, help="decoder layers (no MTP layer)")
    p.add_argument("--dense-layers", type=int, default=1, help="first_k_dense_replace")
    p.add_argument("--experts", type=int, default=8, help="routed experts per MoE layer (GLM-5: 256)")
    p.add_argument("--vocab", type=int, default=GLM5_VOCAB)
    p.add_argument("--shards", type=int, default=8, help="at most this many safetensors shards")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=5, help="in-process repeats of (a) and (b), interleaved")
    p.add_argument("--server-reps", type=int, default=1, help="real-server starts per dtype (0: skip)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile'd extra load")
    common.add_output_args(p, QUICK, cache_help="synthetic checkpoints and logs")
    return common.parse_quick(p, argv, QUICK)


def spec_for(args, dtype: str) -> SyntheticSpec:
    return SyntheticSpec(dtype, args.layers, args.dense_layers, args.experts, args.vocab, args.shards, args.seed)


def run_worker(ckpt: Path, reps: int, profile: bool, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.lib.load_worker", "--checkpoint", str(ckpt), "--reps", str(reps), "--out", str(out)]
    cmd += ["--profile"] if profile else []
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=common.REPO, stdout=f, stderr=subprocess.STDOUT, timeout=WORKER_TIMEOUT_S)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"load worker failed ({proc.returncode}); log {log}:\n{tail}")
    return json.loads(out.read_text())


def server_load_seconds(ckpt: Path, log_path: Path) -> float:
    from bench.lib.load_worker import warm_page_cache
    from sglang_glm5.serving.process import ServerProcess

    warm_page_cache(checkpoint_files(ckpt))
    with ServerProcess(ckpt, log_path, SERVER_FLAGS):
        pass
    match = LOAD_LOG_LINE.search(log_path.read_text(errors="replace"))
    if match is None:
        raise RuntimeError(f"no 'Load weight end. elapsed=' line in {log_path}")
    return float(match.group(1))


def summarize(r: dict) -> dict:
    med = {key: common.median(r[key]) for key, _ in SERIES if r.get(key)}
    base = med[PRIMARY_BASELINE]
    out = {f"median_{k}": v for k, v in med.items()}
    for key in ("ours_weight_load_s", "ours_load_weights_only_s", "server_weight_load_s"):
        if key in med:
            out[f"overhead_{key}_vs_copy"] = med[key] / base - 1
            out[f"overhead_{key}_vs_page"] = med[key] / med["iterate_page_s"] - 1
    # Other jobs share this machine and only ever add time: best-of-N and CPU time are the noise-robust readings.
    out["overhead_best_vs_copy"] = min(r["ours_weight_load_s"]) / min(r[PRIMARY_BASELINE]) - 1
    cpu_ours, cpu_copy = common.median(r["ours_weight_load_cpu_s"]), common.median(r["iterate_copy_cpu_s"])
    out["overhead_cpu_vs_copy"] = cpu_ours / cpu_copy - 1
    out["overhead"] = out["overhead_ours_weight_load_s_vs_copy"]
    out["within_goal"] = out["overhead"] <= OVERHEAD_GOAL
    out["within_goal_best"] = out["overhead_best_vs_copy"] <= OVERHEAD_GOAL
    out["within_goal_cpu"] = out["overhead_cpu_vs_copy"] <= OVERHEAD_GOAL
    out["load_GBps"] = r["file_bytes"] / med["ours_weight_load_s"] / 1e9
    out["copy_GBps"] = r["file_bytes"] / base / 1e9
    if r.get("fp8_byte_share"):
        # Linear model: extra time over the copy is all FP8 dequant, proportional to FP8 bytes; the full GLM-5-FP8
        # is ~99% FP8 bytes where this few-layer checkpoint (BF16 embedding + LM head) has far fewer.
        extra = med["ours_weight_load_s"] - base
        out["projected_full_glm5_overhead"] = extra / base * r["full_glm5_fp8_byte_share"] / r["fp8_byte_share"]
    return out


def measure_dtype(args, dtype: str, work: Path) -> dict:
    spec = spec_for(args, dtype)
    ckpt = cached_checkpoint(spec, args.cache_dir)
    r = run_worker(ckpt, args.reps, args.profile, work / f"{spec.name}.worker.json")
    r["server_weight_load_s"] = [
        server_load_seconds(ckpt, work / f"{spec.name}.server{i}.log")
        for i in range(args.server_reps)
    ]
    r.update(spec_facts(spec))
    r["checkpoint_bytes"] = checkpoint_bytes(ckpt)
    r["summary"] = summarize(r)
    return r


def spec_facts(spec: SyntheticSpec) -> dict:
    return {
        "spec": asdict(spec),
        "fp8_byte_share": fp8_byte_share(spec),
        "full_glm5_bytes": real_model_bytes(spec),
        "full_glm5_fp8_byte_share": fp8_byte_share(spec, full=True),
    }


def plot(results: dict, path: Path) -> Path:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5), squeeze=False)
    for ax, (dtype, r) in zip(axes[0], results.items()):
        keys = [(k, label) for k, label in SERIES if r.get(k)]
        meds = [common.median(r[k]) for k, _ in keys]
        lo = [m - min(r[k]) for m, (k, _) in zip(meds, keys)]
        hi = [max(r[k]) - m for m, (k, _) in zip(meds, keys)]
        colors = ["#9aa" if k.startswith("iterate") else "#36c" for k, _ in keys]
        ax.bar(range(len(keys)), meds, yerr=[lo, hi], color=colors, capsize=4)
        ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
        ax.set_ylabel("seconds (median, min-max bars)")
        gb = r["checkpoint_bytes"] / 1e9
        s = r["summary"]
        ax.set_title(
            f"{dtype}, {gb:.2f} GB: overhead vs iterate + copy\n{s['overhead']:+.0%} median,"
            f" {s['overhead_best_vs_copy']:+.0%} best-of-{len(r['ours_weight_load_s'])}", fontsize=10
        )
    fig.suptitle("GLM-5 real-shape synthetic checkpoint: load time, warm page cache", fontsize=10)
    return common.save_figure(fig, path)


def _seconds_row(dtype: str, r: dict) -> list[str]:
    s = r["summary"]

    def fmt(key: str) -> str:
        return f"{s[key]:.2f}" if key in s else "—"

    return [
        dtype, f"{r['checkpoint_bytes'] / 1e9:.2f}", f"{r['fp8_byte_share']:.0%}",
        fmt("median_iterate_page_s"), fmt("median_iterate_copy_s"), fmt("median_ours_load_weights_only_s"),
        fmt("median_ours_weight_load_s"), f"{r['first_weight_load_s']:.2f}", fmt("median_server_weight_load_s"),
    ]


def _overhead_row(dtype: str, r: dict) -> list[str]:
    s = r["summary"]
    verdict = " / ".join("yes" if s[k] else "**no**" for k in ("within_goal", "within_goal_best", "within_goal_cpu"))
    projected = s.get("projected_full_glm5_overhead")
    return [
        dtype, f"**{s['overhead']:+.0%}**", f"{s['overhead_best_vs_copy']:+.0%}", f"{s['overhead_cpu_vs_copy']:+.0%}",
        verdict, "—" if projected is None else f"{projected:+.0%}",
    ]


def _projection_note(results: dict) -> str:
    fp8 = [r for r in results.values() if r["fp8_byte_share"]]
    if not fp8:
        return ""
    r = fp8[0]
    return (
        f'"Projected, full GLM-5 mix": FP8 weights are {r["fp8_byte_share"]:.0%} of this few-layer checkpoint\'s bytes'
        f" (the BF16 embedding and LM head dominate it) but {r['full_glm5_fp8_byte_share']:.1%} of the full"
        f" GLM-5-FP8's {r['full_glm5_bytes'] / 1e9:.0f} GB, so the measured extra time is scaled by FP8 bytes to the"
        " full model's mix (a linear model of the same CPU dequantizing path).\n"
    )


def markdown(payload: dict) -> str:
    a, results = payload["args"], payload["results"]
    seconds = common.md_table(
        ["dtype", "GB", "FP8 bytes", "(b) iterate, page touch", "(b) iterate + copy", "(a) model.load_weights",
         "(a) ModelRunner.load_model", "(a) same, first load in a fresh process", "(a) server log"],
        [_seconds_row(dtype, r) for dtype, r in results.items()],
    )
    overhead = common.md_table(
        ["dtype", "median wall", f"best-of-{a['reps']} wall", "median CPU time",
         f"within {OVERHEAD_GOAL:.0%}? (median / best / CPU)", "projected, full GLM-5 mix"],
        [_overhead_row(dtype, r) for dtype, r in results.items()],
    )
    r0 = next(iter(results.values()))
    spec = r0["spec"]
    return f"""## Weight loading: ours vs SGLang's iterator{" (--quick)" if a["quick"] else ""}

`{payload["command"]}`

{payload["date"]}, commit {payload["git_commit"]}; {common.machine_line(payload["machine"])}; load average
{payload["loadavg_1m_at_end"]} at the end.

Synthetic checkpoint with GLM-5's real per-tensor shapes: {spec["num_layers"]} decoder layers ({spec["dense_layers"]}
dense, {spec["num_layers"] - spec["dense_layers"]} MoE with {spec["experts"]} routed experts + 1 shared), vocab
{spec["vocab"]}, no MTP layer; FP8 = e4m3, 128x128 blocks, dequantized on CPU while loading. {a["reps"]} interleaved
in-process repeats of (a) and (b), {a["server_reps"]} server start(s) per dtype; page cache warm for all (every file
read once first). Iterator: `{r0["iterator"]}`, what DefaultModelLoader picks here.
(b) "page touch" reads one byte per 4 KiB page: safetensors hands out lazy mmap views, so that is all the iterator
costs. (b) "iterate + copy" also copies every tensor into fresh process memory, kept until the pass ends like a
model's parameters: the one copy any loader must make, and the baseline for the overhead.

Median seconds:

{seconds}

Overhead of (a) ModelRunner.load_model over (b) iterate + copy (other jobs share this machine and only add time,
so best-of-N and CPU time are the noise-robust readings):

{overhead}

{_projection_note(results)}
![load times](results/{Path(payload["plot"]).name})
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = common.announce(argv)
    machine = common.machine()
    work = args.cache_dir / "runs" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    results = {dtype: measure_dtype(args, dtype, work) for dtype in args.dtypes}
    stem = common.result_stem(NAME, args.quick)
    payload = {
        "benchmark": NAME,
        "command": command,
        "date": common.utc_now(),
        "git_commit": common.git_commit(),
        "machine": machine,
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "overhead_goal": OVERHEAD_GOAL,
        "results": results,
    }
    payload["plot"] = str(plot(results, args.results_dir / f"{stem}.png"))
    for dtype, r in results.items():
        s = r["summary"]
        print(
            f"{dtype}: ours {s['median_ours_weight_load_s']:.2f} s vs iterate+copy {s['median_iterate_copy_s']:.2f} s"
            f" (page touch {s['median_iterate_page_s']:.2f} s): overhead {s['overhead']:+.1%}"
            f" ({'within' if s['within_goal'] else 'NOT within'} {OVERHEAD_GOAL:.0%});"
            f" best-of-{len(r['ours_weight_load_s'])} {s['overhead_best_vs_copy']:+.1%};"
            f" CPU time {s['overhead_cpu_vs_copy']:+.1%}"
        )
    common.publish(payload, stem, markdown(payload), results_dir=args.results_dir, section=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
