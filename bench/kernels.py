"""DSA kernels, one layer of GLM-5 at batch 1 decode: per op and provider, time, TFLOPS, GB/s (and % of the card's
memory bandwidth on a GPU), and the decode-cost curve sparse (indexer + top-k + sparse MLA) vs dense MLA.

Shapes are GLM-5's real ones: indexer 32 heads x 128, top-k 2048, MLA 576-d query/key and 512-d latent value,
bf16 caches (the serving dtype), `--heads` query heads per GPU (64 at TP 1, 8 at TP 8). FLOP model per token:
sparse = 2*32*128*ctx + 2*H*1088*2048, dense = 2*H*1088*ctx (1088 = 576 for q.k + 512 for p.v).
Dense MLA is always the reference's dense_mla: fp32 matmuls over the same key chunks as the reference indexer, so the
CPU ratio compares like with like. Providers: `reference` (sglang_glm5.dsa.reference, torch) everywhere; `triton`
(sglang_glm5.dsa.triton) and `tilelang` (sglang_glm5.dsa.tilelang) on a GPU only: on a CPU Triton would run in
its interpreter, whose time says nothing about the kernel, and TileLang's GPU kernels do not run at all.

Run from the repo root: .venv/bin/python -m bench.kernels [--contexts 4096 16384 65536] [--heads 64] [--repeats 5]
[--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch

from bench.lib import common
from bench.lib.glm5 import glm5
from sglang_glm5.dsa import reference as dsa_reference

NAME = "kernels"
_GLM5 = glm5()  # configs/glm5-config.json
INDEX_HEADS, INDEX_DIM, INDEX_TOPK = _GLM5.index_n_heads, _GLM5.index_head_dim, _GLM5.index_topk
KV_LORA_RANK, ROPE_DIM, QK_NOPE_DIM = _GLM5.kv_lora_rank, _GLM5.qk_rope_head_dim, _GLM5.qk_nope_head_dim
QK_DIM, V_DIM = KV_LORA_RANK + ROPE_DIM, KV_LORA_RANK
SM_SCALE = (QK_NOPE_DIM + ROPE_DIM) ** -0.5
MLA_FLOPS_PER_KEY = 2 * (QK_DIM + V_DIM)  # per head: q.k over 576 dims, p.v over 512
CACHE_DTYPE = torch.bfloat16
INDEX_BYTES = 4  # int32 page-table entries and top-k positions
LOGIT_BYTES = 4  # fp32 indexer logits
# GOALS (issue 4): dense/sparse at the largest context, sparse largest/smallest context
GOAL_DENSE_OVER_SPARSE = 8.0
GOAL_SPARSE_GROWTH = 3.0
GOAL_H200_DECODE_8H_US = 16.8  # padded FlashMLA: ~22.8 us
BANDWIDTH_TBPS = {"H100": 3.35, "H200": 4.8, "B200": 8.0, "MI300X": 5.3, "MI355X": 8.0}  # vendors' HBM datasheet figures
OPS = ("indexer", "topk", "sparse_mla", "dense_mla")
GPU_ONLY = {
    "triton": "the Triton interpreter's time says nothing about the kernel",
    "tilelang": "TileLang's kernels are GPU programs",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 65536], help="cached tokens")
    p.add_argument("--heads", type=int, nargs="+", default=[64], help="MLA query heads per GPU")
    p.add_argument("--providers", nargs="+", default=["reference", "triton"], choices=["reference", "triton", "tilelang"])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per op (CPU: fastest reported); one warm-up first")
    p.add_argument("--rounds", type=int, default=3,
                   help="CPU: sweeps over every context and op; per context the sweep with the least total time is "
                   "reported whole, so a burst of load on a shared machine costs one sweep, not the curve")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    p.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md section")
    p.add_argument("--tag", default="", help="suffix of the JSON / RESULTS.md section name, so runs of one provider "
                   "each (bench/gpu_check.sh) keep their own results")  # fmt: skip
    return p.parse_args(argv)


def flops_model(ctx: int, heads: int) -> dict:
    """Per decoded token, as issue 4 states it; topk is min(2048, ctx)."""
    selected = min(INDEX_TOPK, ctx)
    indexer = 2 * INDEX_HEADS * INDEX_DIM * ctx
    return {
        "indexer": indexer,
        "topk": 0,
        "sparse_mla": heads * MLA_FLOPS_PER_KEY * selected,
        "dense_mla": heads * MLA_FLOPS_PER_KEY * ctx,
    }


def bytes_model(ctx: int, heads: int) -> dict:
    """Bytes each op must move at least: cache rows read, queries, logits and outputs."""
    cache = torch.tensor([], dtype=CACHE_DTYPE).element_size()
    selected = min(INDEX_TOPK, ctx)
    q_and_out = heads * (QK_DIM + V_DIM) * cache
    return {
        "indexer": ctx * (INDEX_DIM * cache + INDEX_BYTES + LOGIT_BYTES),
        "topk": ctx * LOGIT_BYTES + INDEX_TOPK * INDEX_BYTES,
        "sparse_mla": selected * (QK_DIM * cache + 2 * INDEX_BYTES) + q_and_out,
        "dense_mla": ctx * (QK_DIM * cache + INDEX_BYTES) + q_and_out,
    }


def make_problem(ctx: int, heads: int, device: torch.device, seed: int = 0) -> dict:
    """One request at position ctx - 1, its cache on shuffled slots of a pool of exactly ctx slots."""
    gen = torch.Generator().manual_seed(seed)
    page_table = torch.randperm(ctx, generator=gen).to(torch.int32)[None]  # [1, ctx]
    problem = dict(
        page_table=page_table,
        q_seq=torch.zeros(1, dtype=torch.int64),
        q_pos=torch.full((1,), ctx - 1, dtype=torch.int64),
        index_q=torch.randn(1, INDEX_HEADS, INDEX_DIM, generator=gen).to(CACHE_DTYPE),  # [1, 32, 128]
        index_w=(torch.randn(1, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5).to(CACHE_DTYPE),  # [1, 32]
        index_k=torch.randn(ctx, INDEX_DIM, generator=gen).to(CACHE_DTYPE),  # [S, 128]
        q=torch.randn(1, heads, QK_DIM, generator=gen).to(CACHE_DTYPE),  # [1, H, 576]
        kv_cache=torch.randn(ctx, QK_DIM, generator=gen).to(CACHE_DTYPE),  # [S, 576]
    )
    problem = {k: v.to(device) for k, v in problem.items()}
    problem["logits"] = dsa_reference.indexer_logits(
        problem["index_q"], problem["index_w"], problem["index_k"], problem["page_table"], problem["q_seq"],
        problem["q_pos"],
    )  # fmt: skip
    problem["topk"] = dsa_reference.topk_positions(problem["logits"], problem["q_pos"], INDEX_TOPK)
    return problem


def op_calls(impl, p: dict) -> dict:
    """Each op of one decode step as a closure over its inputs; dense MLA always uses the reference."""
    return {
        "indexer": lambda: impl.indexer_logits(p["index_q"], p["index_w"], p["index_k"], p["page_table"], p["q_seq"],
                                               p["q_pos"]),  # fmt: skip
        "topk": lambda: impl.topk_positions(p["logits"], p["q_pos"], INDEX_TOPK),
        "sparse_mla": lambda: impl.sparse_mla_decode(p["q"], p["kv_cache"], p["page_table"], p["q_seq"], p["topk"],
                                                     SM_SCALE, V_DIM),  # fmt: skip
        "dense_mla": lambda: dsa_reference.dense_mla(p["q"], p["kv_cache"], p["page_table"], p["q_seq"], p["q_pos"],
                                                     SM_SCALE, V_DIM),  # fmt: skip
    }


def time_op(fn, repeats: int, device: torch.device, graph: bool = True) -> tuple[float, str]:
    """(seconds per call, how it was timed). CPU: the fastest of `repeats` runs after one warm-up, since other jobs
    on a shared machine only ever add time. CUDA: the median of CUDA-graph replays (triton.testing.do_bench_cudagraph),
    so host launch overhead is not counted, as in a served decode step; with graph=False (the reference, which syncs
    to check its indices) or an op that cannot be captured, do_bench's median of launches, and the row says so."""
    if device.type == "cuda":
        import triton.testing

        if not graph:
            return triton.testing.do_bench(fn, return_mode="median") / 1e3, "launches"
        try:
            return triton.testing.do_bench_cudagraph(fn, return_mode="median") / 1e3, "cuda-graph"
        except Exception as exc:  # noqa: BLE001 - a capture failure only changes how the op is timed
            torch.cuda.synchronize()
            print(f"  (not capturable, timed with launches: {type(exc).__name__}: {str(exc)[:120]})", flush=True)
            return triton.testing.do_bench(fn, return_mode="median") / 1e3, "launches"
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), "wall"


def time_call(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call, timed as time_op does."""
    return time_op(fn, repeats, device)[0]


def card_bandwidth_tbps(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return common.cpu_model(), None
    name = torch.cuda.get_device_name(device)
    return name, next((bw for card, bw in BANDWIDTH_TBPS.items() if card in name.replace(" ", "")), None)


def check_matches(kernels, provider: str, problem: dict) -> None:
    """Correctness before timing: each op of a GPU provider against the reference on this very problem."""
    calls, ref_calls = op_calls(kernels, problem), op_calls(dsa_reference, problem)
    logits = calls["indexer"]()
    torch.testing.assert_close(logits, ref_calls["indexer"](), atol=1e-3, rtol=1e-3)
    got, want = calls["topk"](), ref_calls["topk"]()
    # canonical form: the same index sets, ascending, ties to the lower position, -1 padding
    assert torch.equal(got.cpu(), want.cpu()), f"{provider} top-k differs from the reference"
    torch.testing.assert_close(calls["sparse_mla"]().float(), ref_calls["sparse_mla"]().float(), atol=2e-2, rtol=2e-2)


def run(args, on_step=None) -> dict:
    """Every (heads, ctx, provider, op) timing. Providers run in the order given (reference last when not given, for
    the dense curve); each is isolated: an import, check or timing failure records its reason in `failed` and the
    others still run. on_step(partial result) is called after each (heads, ctx), so a killed run leaves its results."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card, bandwidth = card_bandwidth_tbps(device)
    order = list(dict.fromkeys([*args.providers, "reference"]))
    providers, skipped, failed = {}, {}, {}
    for name in order:
        if name == "reference":
            providers[name] = dsa_reference
        elif device.type != "cuda":
            skipped[name] = f"no GPU: {GPU_ONLY[name]}"
        else:
            try:
                providers[name] = importlib.import_module(f"sglang_glm5.dsa.{name}")
            except Exception as exc:  # noqa: BLE001 - one provider's failure must not stop the others
                failed[name] = f"import: {type(exc).__name__}: {exc}"[:500]
    # (heads, ctx) -> one {(provider, op): (seconds, how timed)} per sweep: every number reported for a context
    # (op table, decode step, dense/sparse) comes from one of its sweeps, never from per-op minima of different sweeps
    sweeps: dict[tuple[int, int], list[dict]] = {}
    result = dict(device=device.type, card=card, bandwidth_tbps=bandwidth, skipped=skipped, failed=failed)
    for sweep in range(args.rounds if device.type == "cpu" else 1):
        for heads in args.heads:
            for ctx in args.contexts:
                problem = make_problem(ctx, heads, device)
                this_sweep = {}
                sweeps.setdefault((heads, ctx), []).append(this_sweep)
                for provider, impl in providers.items():
                    if provider in failed:
                        continue
                    try:
                        if provider in GPU_ONLY:
                            check_matches(impl, provider, problem)
                        for op, call in op_calls(impl, problem).items():
                            if provider != "reference" and op == "dense_mla":
                                continue
                            seconds, how = time_op(call, args.repeats, device, graph=provider in GPU_ONLY)
                            this_sweep[(provider, op)] = (seconds, how)
                            print(f"round {sweep} H{heads} ctx {ctx:>6} {provider:>9} {op:>10}: "
                                  f"{seconds * 1e3:10.3f} ms ({how})", flush=True)  # fmt: skip
                    except Exception as exc:  # noqa: BLE001 - recorded with the case, the next provider runs
                        failed[provider] = f"H{heads} ctx {ctx}: {type(exc).__name__}: {exc}"[:500]
                        print(f"{provider} failed: {failed[provider]}", flush=True)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                del problem
                if on_step is not None:
                    on_step(dict(result, rows=_rows(chosen_sweeps(sweeps), bandwidth), curves=[]))
    rows = _rows(chosen_sweeps(sweeps), bandwidth)
    return dict(result, rows=rows, curves=decode_curves(rows, args))


def chosen_sweeps(sweeps: dict) -> dict:
    """(heads, ctx) -> the one sweep reported for it: the one with the least total time over all its ops (the least
    disturbed by other jobs on a shared machine), taken whole."""
    return {key: min((r for r in runs if r), key=lambda r: sum(sec for sec, _ in r.values()))
            for key, runs in sweeps.items() if any(runs)}  # fmt: skip


def _rows(chosen: dict, bandwidth: float | None) -> list[dict]:
    rows = []
    for (heads, ctx), sweep in chosen.items():
        for (provider, op), (seconds, how) in sweep.items():
            flops, moved = flops_model(ctx, heads)[op], bytes_model(ctx, heads)[op]
            rows.append(dict(
                heads=heads, ctx=ctx, provider=provider, op=op, seconds=seconds, flops=flops, bytes=moved,
                tflops=flops / seconds / 1e12, gbps=moved / seconds / 1e9, timing=how,
                bandwidth_pct=None if bandwidth is None else 100 * moved / seconds / (bandwidth * 1e12),
            ))  # fmt: skip
    return rows


def decode_curves(rows: list[dict], args) -> list[dict]:
    """Per (heads, provider): one decode step per context, sparse = indexer + topk + sparse MLA vs the reference's
    dense MLA, all four from the context's one reported sweep (`rows`)."""
    curves = []
    by_key = {(r["heads"], r["provider"], r["ctx"], r["op"]): r for r in rows}
    for heads in args.heads:
        for provider in sorted({r["provider"] for r in rows}):
            points = []
            for ctx in args.contexts:
                parts = [by_key.get((heads, provider, ctx, op)) for op in ("indexer", "topk", "sparse_mla")]
                dense = by_key.get((heads, "reference", ctx, "dense_mla"))
                if dense is None or None in parts:
                    continue
                sparse_s = sum(p["seconds"] for p in parts)
                model = flops_model(ctx, heads)
                points.append(dict(
                    ctx=ctx, sparse_s=sparse_s, dense_s=dense["seconds"], dense_over_sparse=dense["seconds"] / sparse_s,
                    model_dense_over_sparse=model["dense_mla"] / (model["indexer"] + model["sparse_mla"]),
                    indexer_share=parts[0]["seconds"] / sparse_s, topk_share=parts[1]["seconds"] / sparse_s,
                    indexer_gflops=parts[0]["tflops"] * 1e3, mla_gflops=parts[2]["tflops"] * 1e3,
                    # the FLOP model assumes one FLOP rate: this step with the indexer at sparse MLA's rate
                    sparse_s_equal_rates=parts[0]["flops"] / (parts[2]["tflops"] * 1e12) + parts[1]["seconds"]
                    + parts[2]["seconds"],
                ))  # fmt: skip
            if points:
                first, last = points[0], points[-1]
                model = {ctx: flops_model(ctx, heads) for ctx in (first["ctx"], last["ctx"])}
                growth_model = (model[last["ctx"]]["indexer"] + model[last["ctx"]]["sparse_mla"]) / (
                    model[first["ctx"]]["indexer"] + model[first["ctx"]]["sparse_mla"]
                )
                curves.append(dict(heads=heads, provider=provider, points=points,
                                   sparse_growth=last["sparse_s"] / first["sparse_s"], sparse_growth_model=growth_model))  # fmt: skip
    return curves


def markdown(payload: dict) -> str:
    res = payload["result"]
    lines = [
        "## DSA kernels: one GLM-5 layer, batch 1 decode (`bench/kernels.py`)",
        "",
        f"`{payload['command']}`",
        "",
        f"{payload['date']}, commit {payload['commit']}; "
        + (f"**{res['card']}**" if res["device"] == "cuda" else common.machine_line(payload["machine"])) + ".",
        "",
        f"GLM-5 dims (configs/glm5-config.json): indexer {INDEX_HEADS} heads x {INDEX_DIM}, top-k {INDEX_TOPK}, MLA "
        f"{QK_DIM}/{V_DIM} latent, bf16 caches on shuffled slots; {payload['threads']} torch thread(s), fastest of "
        f"{payload['repeats']} runs per op in each of {payload['rounds']} sweeps over all contexts on CPU. Per context, "
        "every number below (op table, decode step, dense/sparse) comes from one sweep, the one with the least total "
        "time over its ops; a decode step sums that sweep's three sparse ops, never minima from different sweeps. "
        "FLOP model per token: sparse = "
        f"2·{INDEX_HEADS}·{INDEX_DIM}·ctx + 2·H·{QK_DIM + V_DIM}·{INDEX_TOPK}, dense = 2·H·{QK_DIM + V_DIM}·ctx.",
    ]
    for provider, reason in res["skipped"].items():
        lines += ["", f"Provider `{provider}` not run: {reason}."]
    for provider, reason in res.get("failed", {}).items():
        lines += ["", f"Provider `{provider}` **failed** (the others still ran): {reason}"]
    bw = res["bandwidth_tbps"]
    header = ["H", "ctx", "provider", "op", "time ms", "timing", "GFLOP", "TFLOPS", "GB/s"] + (["% of BW"] if bw else [])
    table = [
        [r["heads"], r["ctx"], r["provider"], r["op"], f"{r['seconds'] * 1e3:.3f}", r.get("timing", "?"),
         f"{r['flops'] / 1e9:.3f}",
         f"{r['tflops']:.4f}", f"{r['gbps']:.2f}"] + ([f"{r['bandwidth_pct']:.1f}"] if bw else [])
        for r in res["rows"]
    ]  # fmt: skip
    lines += ["", common.md_table(header, table)]
    for curve in res["curves"]:
        lines += ["", f"Decode step, {curve['heads']} heads, `{curve['provider']}` sparse path vs reference dense MLA:", ""]
        lines.append(common.md_table(
            ["ctx", "sparse ms", "dense ms", "dense/sparse", "model dense/sparse", "indexer share", "top-k share"],
            [[p["ctx"], f"{p['sparse_s'] * 1e3:.2f}", f"{p['dense_s'] * 1e3:.2f}", f"{p['dense_over_sparse']:.2f}x",
              f"{p['model_dense_over_sparse']:.2f}x", f"{100 * p['indexer_share']:.0f}%",
              f"{100 * p['topk_share']:.0f}%"] for p in curve["points"]],
        ))  # fmt: skip
        last = curve["points"][-1]
        lines += [
            "",
            f"dense/sparse at {last['ctx']}: **{last['dense_over_sparse']:.2f}x** (goal >= {GOAL_DENSE_OVER_SPARSE:g}x, "
            f"model {last['model_dense_over_sparse']:.1f}x); sparse {last['ctx']}/{curve['points'][0]['ctx']}: "
            f"**{curve['sparse_growth']:.2f}x** (goal <= {GOAL_SPARSE_GROWTH:g}x, model {curve['sparse_growth_model']:.1f}x).",
            "",
            f"FLOP rates at {last['ctx']}: indexer {last['indexer_gflops']:.1f} GFLOP/s, sparse MLA "
            f"{last['mla_gflops']:.1f} GFLOP/s. With the indexer at sparse MLA's rate (the model's assumption) the "
            f"sparse step would take {last['sparse_s_equal_rates'] * 1e3:.2f} ms: growth "
            f"{last['sparse_s_equal_rates'] / curve['points'][0]['sparse_s']:.2f}x.",
        ]
    for r in res["rows"]:
        if r["provider"] in GPU_ONLY and r["op"] == "sparse_mla" and r["heads"] == 8:
            lines += ["", f"{r['provider']} sparse MLA decode, 8 heads, ctx {r['ctx']}: **{r['seconds'] * 1e6:.1f} us** per layer "
                          f"(goal < {GOAL_H200_DECODE_8H_US} us on H200; padded FlashMLA ~22.8 us)."]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command = common.announce(argv)
    torch.set_num_threads(args.threads)
    machine = common.machine()

    def write(result):
        payload = dict(command=command, date=common.utc_now(), commit=common.git_commit(), machine=machine,
                       threads=args.threads, repeats=args.repeats, rounds=args.rounds, result=result)  # fmt: skip
        stem = NAME if result["device"] == "cpu" else f"{NAME}-{result['device']}"
        stem += f"-{args.tag}" if args.tag else ""
        common.publish(payload, stem, markdown(payload), write=not args.no_write)

    # on a GPU, results so far are written after every (heads, ctx): a step killed by its timeout keeps them
    result = run(args, on_step=write if torch.cuda.is_available() else None)
    write(result)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
