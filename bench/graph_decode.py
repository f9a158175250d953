"""CUDA graph capture and replay of GLM-5's DSA decode per implementation: eager vs graph time per layer (GPU only).

One layer's DSA decode core, as the backend runs it under a captured forward (attention/graph_state.py): the
implementation's graph-safe ops (impls.resolve_graph_impl) over the static page-table width, indexer logits ->
top-k -> sparse MLA decode, batch `--batch` at context `--context`. The layer's projections are SGLang modules and
SGLang is not on the lent GPU machines, so they are left out; the whole decoder layer is captured on CPU by
tests/attention/test_graph_capture.py. Each graph's replay is checked equal (bit for bit) to the eager call first.
Implementations the capability table marks graph-unsafe, or that do not import here, are skipped with the reason.
Usage: python bench/graph_decode.py [--batch 1 8 32] [--context 4096] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import publish  # noqa: E402

IMPLS = ("reference", "triton", "tilelang", "trtllm")
INDEX_HEADS, INDEX_DIM, INDEX_TOPK = 32, 128, 2048  # GLM-5 indexer
HEADS, QK_DIM, V_DIM = 8, 576, 512  # 64 heads over 8 GPUs; absorbed latent + rope; latent value
SM_SCALE = (192 + 64) ** -0.5
WARMUP, REPEATS = 3, 20


def inputs(batch: int, context: int, device):
    gen = torch.Generator(device="cpu").manual_seed(batch)
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


def measure(name: str, batch: int, context: int) -> dict:
    from sglang_glm5.attention.capabilities import load_capabilities
    from sglang_glm5.attention.impls import resolve_graph_impl

    unsafe = load_capabilities().why_not_graph({"prefill": name, "decode": name})
    if unsafe:
        return {"skipped": "; ".join(unsafe)}
    try:
        impl = resolve_graph_impl(name, "decode")
        t = inputs(batch, context, torch.device("cuda"))
        want = decode(impl, t)  # eager, also the JIT compile / autotune outside capture
    except Exception as error:  # not importable or not runnable on this device
        return {"skipped": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"}
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        decode(impl, t)
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        out = decode(impl, t)
    graph.replay()
    torch.cuda.synchronize()
    equal = bool(torch.equal(out, want))
    eager_us, graph_us = timed_us(lambda: decode(impl, t)), timed_us(graph.replay)
    return {"equal": equal, "eager_us": eager_us, "graph_us": graph_us, "speedup": eager_us / graph_us}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("graph_decode: skipped: no CUDA/ROCm device visible to torch (CUDA graphs need one)")
        return 0
    card = torch.cuda.get_device_name(0)
    rows, failed = [], False
    for name in args.impls:
        for batch in args.batch:
            r = {"impl": name, "batch": batch, "context": args.context, **measure(name, batch, args.context)}
            failed |= r.get("equal") is False
            rows.append(r)
            print(r, flush=True)
    lines = [
        f"DSA decode core of one GLM-5 layer (indexer {INDEX_HEADS}x{INDEX_DIM}, top-k {INDEX_TOPK}, sparse MLA "
        f"{HEADS} heads), context {args.context}, on {card}: eager vs CUDA graph replay, us per layer "
        f"(`python bench/graph_decode.py --batch {' '.join(map(str, args.batch))} --context {args.context}`)",
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


if __name__ == "__main__":
    sys.exit(main())
