"""FP8 lightning-indexer prefill throughput on a GPU: TFLOPS per provider, next to DeepGEMM's `fp8_mqa_logits`
(issue 5's Hopper goal: the tilelang indexer within 80% of DeepGEMM, i.e. DeepGEMM time / ours >= 0.8).

T query tokens of one request at the end of a `--context`-token cache (T = context: a whole prompt's prefill),
GLM-5's indexer dims (32 heads x 128), e4m3 q and keys with per-row fp32 scales. The keys sit on contiguous slots
(an identity page table), the layout DeepGEMM's kernel reads; ours still gather through the page table.
FLOPs = 2 * H * D * (visible (token, key) pairs). Providers: `triton`, `tilelang` (sglang_glm5.dsa), `deepgemm`
(the `deep_gemm` package SGLang installs, its weights pre-multiplied by q_scale * D**-0.5 as SGLang does; skipped with
its reason when it cannot run). Each provider's logits are checked against the torch reference (dsa_reference, on the
GPU) on every visible position before it is timed; times are triton.testing.do_bench medians. GPU only: on a CPU it
says so and writes nothing.

Run from the repo root: .venv/bin/python -m bench.indexer_fp8 [--context 4096 16384] [--tokens N] [--providers ...]
"""

from __future__ import annotations

import argparse
import functools
import importlib

import torch

from bench.lib import common
from bench.lib.glm5 import glm5
from sglang_glm5.dsa import reference as dsa_reference

NAME = "indexer-fp8"
INDEX_HEADS, INDEX_DIM = glm5().index_n_heads, glm5().index_head_dim  # configs/glm5-config.json
GOAL_VS_DEEPGEMM = 0.8
TOL = dict(atol=1e-3, rtol=1e-3)  # relative to the largest |logit|: fp8 products are exact, fp32 sums differ in order
PROVIDERS = ("triton", "tilelang", "deepgemm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", type=int, nargs="+", default=[4096, 16384], help="cached positions of the request")
    p.add_argument("--tokens", type=int, default=None, help="query tokens at the end of the context (default: all)")
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    p.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md section")
    return p.parse_args(argv)


def fp8_dtype_of(provider: str, device: torch.device) -> torch.dtype:
    """The e4m3 variant each provider takes: tilelang's from its tuning (fnuz on gfx942), the others OCP e4m3fn."""
    if provider != "tilelang":
        return torch.float8_e4m3fn
    from sglang_glm5.dsa.tilelang.indexer import fp8_dtype_for

    return fp8_dtype_for(device)


def make_problem(ctx: int, tokens: int, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator(device).manual_seed(seed)
    return dict(
        q=torch.randn(tokens, INDEX_HEADS, INDEX_DIM, generator=gen, device=device),  # [T, 32, 128] fp32
        k=torch.randn(ctx, INDEX_DIM, generator=gen, device=device),  # [S, 128] fp32
        weights=torch.randn(tokens, INDEX_HEADS, generator=gen, device=device) * INDEX_HEADS**-0.5,  # [T, 32]
        page_table=torch.arange(ctx, dtype=torch.int32, device=device)[None],  # [1, ctx]: contiguous slots
        q_seq=torch.zeros(tokens, dtype=torch.int64, device=device),
        q_pos=torch.arange(ctx - tokens, ctx, device=device),  # [T]
    )


def quantized(p: dict, dtype: torch.dtype) -> tuple:
    """(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos): the reference op's arguments."""
    q_fp8, q_scale = dsa_reference.quantize_fp8_rows(p["q"], dtype)
    k_fp8, k_scale = dsa_reference.quantize_fp8_rows(p["k"], dtype)
    return q_fp8, q_scale, p["weights"], k_fp8, k_scale, p["page_table"], p["q_seq"], p["q_pos"]


def deepgemm_args(args: tuple) -> tuple:
    """The reference op's arguments as DeepGEMM's fp8_mqa_logits takes them: (q_fp8, (k_fp8, k_scale), weights, ks,
    ke), logits[t, p] for ks[t] <= p < ke[t]; q_scale and D**-0.5 folded into the weights (both positive, so
    relu(x * s) = s * relu(x)), as SGLang's indexer does."""
    q_fp8, q_scale, weights, k_fp8, k_scale, _, _, q_pos = args
    folded = (weights * q_scale * INDEX_DIM**-0.5).float().contiguous()  # [T, H]
    ks = torch.zeros_like(q_pos, dtype=torch.int32)  # [T]: the request's keys start at slot 0
    ke = (q_pos + 1).to(torch.int32)  # [T]
    return q_fp8, (k_fp8, k_scale.float()), folded, ks, ke


def deepgemm_call(args: tuple):
    import deep_gemm

    return functools.partial(deep_gemm.fp8_mqa_logits, *deepgemm_args(args), clean_logits=False)


def provider_call(provider: str, args: tuple):
    if provider == "deepgemm":
        return deepgemm_call(args)
    impl = importlib.import_module(f"sglang_glm5.dsa.{provider}")
    return functools.partial(impl.indexer_logits_fp8, *args)


TAIL_UNWRITTEN = ("deepgemm", "tilelang")  # providers whose logits past q_pos are unspecified


def check(logits: torch.Tensor, ref: torch.Tensor, q_pos: torch.Tensor, provider: str) -> None:
    """Every visible position equal to the reference within TOL x max|logit|; -inf past q_pos from the providers that
    write it (DeepGEMM and the tilelang indexer leave positions past q_pos unwritten: their top-k never reads them)."""
    visible = torch.arange(ref.shape[1], device=ref.device) <= q_pos[:, None]  # [T, L]
    logits = logits[:, : ref.shape[1]]
    scale = ref[visible].abs().max().item()
    torch.testing.assert_close(logits[visible], ref[visible], atol=TOL["atol"] * scale, rtol=TOL["rtol"],
                               msg=lambda m: f"{provider}: {m}")  # fmt: skip
    if provider not in TAIL_UNWRITTEN:
        assert torch.isneginf(logits[~visible]).all(), f"{provider}: positions past q_pos are not -inf"


def run(args) -> dict:
    import triton.testing

    device = torch.device("cuda")
    card = torch.cuda.get_device_name(device)
    rows, skipped = [], {}
    for ctx in args.context:
        tokens = args.tokens or ctx
        problem = make_problem(ctx, tokens, device)
        pairs = int((problem["q_pos"] + 1).sum())
        flops = 2 * INDEX_HEADS * INDEX_DIM * pairs
        refs = {}
        for provider in args.providers:
            if provider in skipped:
                continue
            dtype = fp8_dtype_of(provider, device)
            call_args = quantized(problem, dtype)
            if dtype not in refs:
                refs[dtype] = dsa_reference.indexer_logits_fp8(*call_args)
            try:
                call = provider_call(provider, call_args)
                logits = call()
            except Exception as exc:  # noqa: BLE001 - DeepGEMM may not build here (no nvcc, other arch): say why
                if provider != "deepgemm":
                    raise
                skipped[provider] = f"{type(exc).__name__}: {exc}"[:300]
                print(f"deepgemm skipped: {skipped[provider]}", flush=True)
                continue
            check(logits, refs[dtype], problem["q_pos"], provider)
            ms = triton.testing.do_bench(call, return_mode="median")
            rows.append(dict(context=ctx, tokens=tokens, provider=provider, fp8=str(dtype)[6:], ms=ms,
                             tflops=flops / ms / 1e9))  # fmt: skip
            print(f"ctx {ctx} T {tokens} {provider:>9}: {ms:8.3f} ms {flops / ms / 1e9:8.1f} TFLOPS", flush=True)
        del problem, refs
    for row in rows:
        dg = next((r for r in rows if r["provider"] == "deepgemm" and r["context"] == row["context"]), None)
        row["vs_deepgemm"] = None if dg is None else dg["ms"] / row["ms"]
    return dict(card=card, rows=rows, skipped=skipped)


def markdown(payload: dict) -> str:
    res = payload["result"]
    lines = [
        "## FP8 indexer prefill throughput (`bench/indexer_fp8.py`)",
        "",
        f"`{payload['command']}`",
        "",
        f"{payload['date']}, commit {payload['commit']}; **{res['card']}**. One request's prefill, "
        f"{INDEX_HEADS} heads x {INDEX_DIM}, e4m3 q and keys with per-row scales, contiguous slots; "
        "FLOPs = 2·H·D·(visible pairs). "
        f"`vs DeepGEMM` = DeepGEMM's time / ours (goal for tilelang on Hopper >= {GOAL_VS_DEEPGEMM:g}).",
        "",
        common.md_table(["context", "tokens", "provider", "fp8", "ms", "TFLOPS", "vs DeepGEMM"],
                        [[r["context"], r["tokens"], r["provider"], r["fp8"], f"{r['ms']:.3f}", f"{r['tflops']:.1f}",
                          "-" if r["vs_deepgemm"] is None else f"{r['vs_deepgemm']:.2f}"] for r in res["rows"]]),
    ]  # fmt: skip
    lines += [f"\nSkipped {name}: {why}" for name, why in res["skipped"].items()]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command = common.announce(argv)
    if not torch.cuda.is_available():
        print("indexer_fp8: no GPU: the kernels (and DeepGEMM) are GPU programs; nothing measured, nothing written")
        return
    result = run(args)
    payload = dict(command=command, date=common.utc_now(), commit=common.git_commit(), machine=common.machine(),
                   result=result)  # fmt: skip
    common.publish(payload, NAME, markdown(payload), write=not args.no_write)


if __name__ == "__main__":
    main()
