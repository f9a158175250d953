"""Sparse MLA prefill throughput at GLM-5's dims on a GPU: TFLOPS per provider (issue 5's goal: >= 500 on Hopper).

T query tokens of one request at the end of a `--context`-token cache, each attending to `--topk` 2048 random distinct
positions, 576-d query/key and 512-d latent value, bf16, `--heads` heads per GPU. FLOPs = 2 * T * H * topk * (576 + 512).
Each provider's output is checked against the previous one (`triton` vs `tilelang`, fp32 reference on a slice of the
tokens) before it is timed; times are triton.testing.do_bench medians. GPU only: on a CPU it says so and writes nothing.

Run from the repo root: .venv/bin/python -m bench.sparse_mla_prefill [--tokens 4096] [--heads 64 16] [--providers ...]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys

import torch

from bench.lib import common
from bench.lib.glm5 import glm5
from sglang_glm5.dsa import reference as dsa_reference

NAME = "sparse-mla-prefill"
_GLM5 = glm5()  # configs/glm5-config.json
KV_LORA_RANK, ROPE_DIM, QK_NOPE_DIM = _GLM5.kv_lora_rank, _GLM5.qk_rope_head_dim, _GLM5.qk_nope_head_dim
QK_DIM, V_DIM = KV_LORA_RANK + ROPE_DIM, KV_LORA_RANK
SM_SCALE = (QK_NOPE_DIM + ROPE_DIM) ** -0.5
GOAL_TFLOPS = 500.0
CHECK_TOKENS = 8  # tokens compared against the fp32 reference (it materialises [T, topk, 576])
TOL = dict(atol=2e-2, rtol=2e-2)  # bf16 output, bf16 softmax weights in the p @ v gemm


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096, help="query tokens (one prefill chunk)")
    p.add_argument("--context", type=int, default=32768, help="cached positions of the request")
    p.add_argument("--topk", type=int, default=_GLM5.index_topk)
    p.add_argument("--heads", type=int, nargs="+", default=[64, 16], help="heads per GPU (64 = TP 1, 16 = TP 4)")
    p.add_argument("--providers", nargs="+", default=["tilelang", "triton"], choices=["triton", "tilelang"])
    p.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md section")
    return p.parse_args(argv)


def make_problem(args, heads, device, seed):
    """Built on `device` (the [T, context] argsort is large for a CPU)."""
    tokens, ctx = args.tokens, args.context
    assert tokens <= ctx and args.topk <= ctx - tokens + 1, "every token needs topk distinct visible positions"
    gen = torch.Generator(device).manual_seed(seed)
    q_pos = torch.arange(ctx - tokens, ctx, device=device)  # [T]
    # random distinct positions in 0..q_pos: an argsort of random keys, the invisible ones keyed past every visible one
    keys = torch.rand(tokens, ctx, generator=gen, device=device)
    keys = keys.masked_fill(torch.arange(ctx, device=device) > q_pos[:, None], 2.0)
    topk = keys.argsort(dim=-1)[:, : args.topk].to(torch.int32)  # [T, K]
    return dict(
        q=torch.randn(tokens, heads, QK_DIM, generator=gen, device=device).to(torch.bfloat16),  # [T, H, 576]
        kv_cache=torch.randn(ctx, QK_DIM, generator=gen, device=device).to(torch.bfloat16),  # [S, 576]
        page_table=torch.randperm(ctx, generator=gen, device=device).to(torch.int32)[None],  # [1, ctx]
        q_seq=torch.zeros(tokens, dtype=torch.int64, device=device),
        topk=topk,
    )


def run(args) -> dict:
    import triton.testing

    device = torch.device("cuda")
    card = torch.cuda.get_device_name(device)
    rows, failed = [], {}
    for heads in args.heads:
        p = make_problem(args, heads, device, seed=heads)
        cpu = {k: v.cpu() for k, v in p.items() if k != "q"}
        cpu["q"] = p["q"][:CHECK_TOKENS].cpu()
        call_args = (p["q"], p["kv_cache"], p["page_table"], p["q_seq"], p["topk"], SM_SCALE, V_DIM)
        part = slice(0, CHECK_TOKENS)
        ref = dsa_reference.sparse_mla(cpu["q"], cpu["kv_cache"], cpu["page_table"], cpu["q_seq"][part],
                                       cpu["topk"][part], SM_SCALE, V_DIM)  # fmt: skip
        for provider in args.providers:
            if provider in failed:
                continue
            try:  # one provider's failure is recorded and the next still runs
                impl = importlib.import_module(f"sglang_glm5.dsa.{provider}")
                out = impl.sparse_mla_prefill(*call_args)
                torch.testing.assert_close(out[part].float().cpu(), ref.float(), **TOL)
                call = functools.partial(impl.sparse_mla_prefill, *call_args)
                ms = triton.testing.do_bench(call, return_mode="median")
            except Exception as exc:  # noqa: BLE001
                failed[provider] = f"H{heads}: {type(exc).__name__}: {exc}"[:500]
                print(f"{provider} failed: {failed[provider]}", flush=True)
                torch.cuda.synchronize()
                continue
            flops = 2 * args.tokens * heads * args.topk * (QK_DIM + V_DIM)
            rows.append(dict(heads=heads, provider=provider, ms=ms, tflops=flops / ms / 1e9))
            print(f"H{heads} {provider:>9}: {ms:8.3f} ms {flops / ms / 1e9:8.1f} TFLOPS", flush=True)
    return dict(card=card, rows=rows, failed=failed)


def markdown(payload: dict) -> str:
    res = payload["result"]
    lines = [
        "## Sparse MLA prefill throughput (`bench/sparse_mla_prefill.py`)",
        "",
        f"`{payload['command']}`",
        "",
        f"{payload['date']}, commit {payload['commit']}; **{res['card']}**. {payload['tokens']} tokens x top-k "
        f"{payload['topk']} of a {payload['context']}-token cache, bf16; FLOPs = 2·T·H·topk·(576 + 512); goal on "
        f"Hopper >= {GOAL_TFLOPS:g} TFLOPS.",
        "",
        common.md_table(["heads", "provider", "ms", "TFLOPS"],
                        [[r["heads"], r["provider"], f"{r['ms']:.3f}", f"{r['tflops']:.1f}"] for r in res["rows"]]),
    ]  # fmt: skip
    for provider, reason in res.get("failed", {}).items():
        lines += ["", f"Provider `{provider}` **failed** (the others still ran): {reason}"]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command = common.announce(argv)
    if not torch.cuda.is_available():
        print("sparse_mla_prefill: no GPU: the kernels are GPU programs; nothing measured, nothing written")
        return
    result = run(args)
    payload = dict(command=command, date=common.utc_now(), commit=common.git_commit(), machine=common.machine(),
                   tokens=args.tokens, context=args.context, topk=args.topk, result=result)  # fmt: skip
    common.publish(payload, NAME, markdown(payload), write=not args.no_write)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
