"""CUDA graph capture and replay of GLM-5's DSA decode per implementation: eager vs graph time per layer (GPU only).

One layer's DSA decode core, as the backend runs it under a captured forward (attention/graph_state.py): the
implementation's graph-safe ops (impls.resolve_graph_impl) over the static page-table width, indexer logits ->
top-k -> sparse MLA decode, batch `--batch` at context `--context`. The layer's projections are SGLang modules and
SGLang is not on the lent GPU machines, so they are left out; the whole decoder layer is captured on CPU by
tests/attention/test_graph_capture.py. Correctness first: the graph is captured on one set of input values, new
values are written into the same (static) input tensors, and the replay must equal, bit for bit, the eager call on
the new values (a host value frozen at capture, or an output buffer the eager call shares with the graph, shows).
Implementations the capability table marks graph-unsafe, or that do not import here, are skipped with the reason.
`--device cpu` runs the same correctness check with tests/attention/cpu_graph.py's recorder standing in for the CUDA
graph (it replays recorded aten ops, so only the torch `reference` can be captured there) and times nothing.
Usage: python -m bench.graph_decode [--batch 1 8 32] [--context 4096] [--device cuda|cpu] [--no-write]
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.lib.common import publish

IMPLS = ("reference", "triton", "tilelang", "trtllm")
INDEX_HEADS, INDEX_DIM, INDEX_TOPK = 32, 128, 2048  # GLM-5 indexer
HEADS, QK_DIM, V_DIM = 8, 576, 512  # 64 heads over 8 GPUs; absorbed latent + rope; latent value
SM_SCALE = (192 + 64) ** -0.5
WARMUP, REPEATS = 3, 20


def inputs(batch: int, context: int, device, seed: int = 0):
    gen = torch.Generator(device="cpu").manual_seed(batch * 1000 + seed)
    slots = batch * context + 64
    return {
        "q": torch.randn(batch, INDEX_HEADS, INDEX_DIM, generator=gen).to(device, torch.bfloat16),
        "weights": (torch.randn(batch, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5).to(device),
        "k_cache": torch.randn(slots, INDEX_DIM, generator=gen).to(device, torch.bfloat16),
        "q_mla": torch.randn(batch, HEADS, QK_DIM, generator=gen).to(device, torch.bfloat16),
        "kv_cache": torch.randn(slots, QK_DIM, generator=gen).to(device, torch.bfloat16),
        "page_table": torch.randperm(slots, generator=gen)[: batch * context].view(batch, context).to(device, torch.int32),
        "q_seq": torch.arange(batch, device=device),
        "q_pos": torch.randint(context // 2, context, (batch,), generator=gen).to(device),
    }


def decode(impl, t):
    logits = impl.indexer_logits(t["q"], t["weights"], t["k_cache"], t["page_table"], t["q_seq"], t["q_pos"])
    topk = impl.topk_positions(logits, t["q_pos"], INDEX_TOPK)
    return impl.sparse_mla(t["q_mla"], t["kv_cache"], t["page_table"], t["q_seq"], topk, SM_SCALE, V_DIM)


def timed_us(fn) -> float:
    for _ in range(WARMUP):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(REPEATS):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / REPEATS


def capture_cuda(fn):
    """(replay, output) of a CUDA graph of fn, warmed up on a side stream as SGLang's runner does."""
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        torch.cuda.synchronize()
        return out

    return replay, out


def capture_cpu(fn):
    """The CPU stand-in (tests/attention/cpu_graph.py): replay reruns the recorded aten ops on the same tensors."""
    from tests.attention.cpu_graph import CpuGraph

    fn()
    graph = CpuGraph()
    out = graph.capture(fn)
    return graph.replay, out


def measure(name: str, batch: int, context: int, device: str = "cuda", impl=None) -> dict:
    """impl: the ops to capture (default: resolve_graph_impl(name), the graph-safe ones; tests pass others)."""
    from sglang_glm5.attention.capabilities import load_capabilities
    from sglang_glm5.dsa.impls import resolve_graph_impl

    unsafe = load_capabilities().why_not_graph({"prefill": name, "decode": name})
    if unsafe:
        return {"skipped": "; ".join(unsafe)}
    try:
        impl = impl or resolve_graph_impl(name, "decode")
        t = inputs(batch, context, torch.device(device), seed=0)
        decode(impl, t)  # eager: the JIT compile / autotune and the ops' plans, outside capture
    except Exception as error:  # not importable or not runnable on this device
        return {"skipped": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"}
    replay, _ = (capture_cuda if device == "cuda" else capture_cpu)(lambda: decode(impl, t))
    before = decode(impl, t).clone()  # eager on the capture's values (cloned: a planned op reuses its output buffer)
    for key, value in inputs(batch, context, torch.device(device), seed=1).items():
        t[key].copy_(value)  # new values in the captured (static) tensors: lengths, slots, queries, caches
    want = decode(impl, t).clone()  # eager on the new values
    got = replay()
    # the second check keeps the first honest: a replay equal to the eager call only because nothing changed
    row = {"equal": bool(torch.equal(got, want)), "inputs_change_output": not torch.equal(want, before)}
    if device != "cuda":
        return row  # a CPU replay of recorded ops says nothing about GPU launch overhead
    eager_us, graph_us = timed_us(lambda: decode(impl, t)), timed_us(replay)
    return {**row, "eager_us": eager_us, "graph_us": graph_us, "speedup": eager_us / graph_us}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the correctness check only, with the CPU stand-in graph (reference captures)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args)
    if rows is None:
        return 0
    # a replay equal to eager only because new inputs change nothing would be no check: that fails too
    failed = any(r.get("equal") is False or r.get("inputs_change_output") is False for r in rows)
    if args.device != "cuda":
        return 1 if failed else 0  # no timings: nothing to publish
    card = torch.cuda.get_device_name(0)
    lines = [
        f"DSA decode core of one GLM-5 layer (indexer {INDEX_HEADS}x{INDEX_DIM}, top-k {INDEX_TOPK}, sparse MLA "
        f"{HEADS} heads), context {args.context}, on {card}: eager vs CUDA graph replay, us per layer "
        f"(`python -m bench.graph_decode --batch {' '.join(map(str, args.batch))} --context {args.context}`)",
        "",
        "| impl | batch | eager us | graph us | eager/graph | replay == eager |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['impl']} | {r['batch']} | skipped: {r['skipped']} | | | |")
        else:
            lines.append(f"| {r['impl']} | {r['batch']} | {r['eager_us']:.1f} | {r['graph_us']:.1f} | {r['speedup']:.2f}x | {r['equal']} |")
    publish({"card": card, "rows": rows}, "graph-decode", "\n".join(lines), write=not args.no_write)
    return 1 if failed else 0


def run(args) -> list[dict] | None:
    """One row per (implementation, batch); None when CUDA graphs were asked for and no GPU is visible."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("graph_decode: skipped: no CUDA/ROCm device visible to torch (CUDA graphs need one; --device cpu runs "
              "the correctness check only)")  # fmt: skip
        return None
    rows = []
    for name in args.impls:
        for batch in args.batch:
            r = {"impl": name, "batch": batch, "context": args.context,
                 **measure(name, batch, args.context, args.device)}  # fmt: skip
            rows.append(r)
            print(r, flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
