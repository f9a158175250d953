"""IndexCache: what an S layer saves. Two measurements, each side by side in one run.

1. Decode, one layer of GLM-5 at its real dimensions, batch 1, `--context` cached tokens, the torch reference path
   (sglang_glm5.dsa.reference, what the CPU backend runs), bf16 caches and weights:
   F layer = indexer projections (wq_b, wk + LayerNorm, weights_proj) + indexer K-cache write + indexer logits
             + top-k + sparse MLA;  S layer = sparse MLA with the reused top-k.
   The MLA projections (q_a, q_b, kv_a, absorption, o_proj) are the same for both and timed on their own.
2. Prefill through SGLang's launch_server on a tiny but wide checkpoint (GLM-5's per-head widths: 32 x 128 indexer,
   576-d MLA, top-k 2048; 8 MLA heads = one GPU's share at TP 8; few layers and experts): one long prompt,
   all-F vs the cookbook's pattern (its first `--layers` letters) vs 75% of the indexers removed, same run. The
   indexer's share is measured directly in each server: py-spy samples the scheduler during every timed prefill, and
   the share of the model forward's samples inside `Glm5Indexer.forward` (projections, RoPE, K write, logits, top-k:
   all an S layer skips) times the prefill time is the time the indexers took. All-F's indexer time per layer
   then predicts each pattern's prefill (all-F minus one indexer per S layer), next to the measured one.

Run from the repo root: .venv/bin/python -m bench.indexcache [--context 65536] [--prefill-tokens 2560] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import requests
import torch

from bench.lib import common, pyspy
from bench.kernels import time_call
from bench.lib.synthetic_checkpoint import GLM5_DIMS, GLM5_INDEX_TOPK, SyntheticSpec, write_checkpoint
from sglang_glm5.dsa.impls import resolve_impl
from sglang_glm5.attention.index_k_store import ModelDtypeKeys
from sglang_glm5.attention.indexer_workspace import chunked_topk, load_indexer_workspace
from sglang_glm5.indexcache.plan import IndexerPlan
from sglang_glm5.dsa import reference as dsa_reference
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.serving.process import ServerProcess

NAME = "indexcache"
# the released GLM-5-FP8 pattern: the `indexcache` feature of configs/features.json
COOKBOOK = load_catalog().features["indexcache"].options["model_override_args"]["index_topk_pattern"]
INDEX_TOPK = GLM5_INDEX_TOPK
DTYPE = torch.bfloat16
D = dict(GLM5_DIMS)
QK_DIM = D["kv_lora_rank"] + D["qk_rope_head_dim"]  # 576
SM_SCALE = (D["qk_nope_head_dim"] + D["qk_rope_head_dim"]) ** -0.5
INDEX_LN_EPS = 1e-6
# Tiny but wide: GLM-5's per-head widths, 8 MLA heads (TP 8's share), narrow hidden/MoE so the attention dominates.
WIDE_DIMS = (
    ("hidden_size", 512), ("intermediate_size", 1024), ("moe_intermediate_size", 128), ("num_attention_heads", 8),
    ("num_key_value_heads", 8), ("q_lora_rank", 512),
)  # fmt: skip
WIDE_VOCAB = 1024
REQUEST_TIMEOUT_S = 1800
WARMUP_TOKENS = 64
INDEXER_FRAME = "Glm5Indexer.forward ("  # models/indexer.py: all the work an S layer skips
FORWARD_FRAME = "ModelRunner.forward ("  # SGLang's model forward: the prefill's compute
SPY_ATTACH_S = 0.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", type=int, default=65536, help="decode: cached tokens")
    p.add_argument("--repeats", type=int, default=5, help="decode: timed runs per op (fastest reported)")
    p.add_argument("--threads", type=int, default=1, help="decode: torch CPU threads")
    p.add_argument("--prefill-tokens", type=int, default=2560, help="prefill: prompt length (> top-k 2048)")
    p.add_argument("--layers", type=int, default=8, help="prefill: decoder layers of the wide checkpoint")
    p.add_argument("--prefill-repeats", type=int, default=2, help="prefill: timed prompts per pattern (fastest)")
    p.add_argument("--skip-prefill", action="store_true")
    p.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md section")
    return p.parse_args(argv)


def _w(gen, n_in: int, n_out: int) -> torch.Tensor:
    return (torch.randn(n_in, n_out, generator=gen) * n_in**-0.5).to(DTYPE)  # [in, out]


def decode_problem(ctx: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    h, heads, hi, di = D["hidden_size"], D["num_attention_heads"], D["index_n_heads"], D["index_head_dim"]
    nope, v = D["qk_nope_head_dim"], D["v_head_dim"]
    p = dict(
        x=torch.randn(1, h, generator=gen).to(DTYPE),  # [1, 6144]
        q_latent=torch.randn(1, D["q_lora_rank"], generator=gen).to(DTYPE),  # [1, 2048]
        wq_b=_w(gen, D["q_lora_rank"], hi * di), wk=_w(gen, h, di), weights_proj=_w(gen, h, hi),
        q_a=_w(gen, h, D["q_lora_rank"]), q_b=_w(gen, D["q_lora_rank"], heads * (nope + D["qk_rope_head_dim"])),
        kv_a=_w(gen, h, QK_DIM), o_proj=_w(gen, heads * v, h),
        w_kc=(torch.randn(heads, nope, D["kv_lora_rank"], generator=gen) * nope**-0.5).to(DTYPE),  # [H, 192, 512]
        w_vc=(torch.randn(heads, D["kv_lora_rank"], v, generator=gen) * 512**-0.5).to(DTYPE),  # [H, 512, 256]
        page_table=torch.randperm(ctx, generator=gen).to(torch.int32)[None],  # [1, ctx]
        q_seq=torch.zeros(1, dtype=torch.int64),
        q_pos=torch.full((1,), ctx - 1, dtype=torch.int64),
        out_loc=torch.tensor([ctx - 1]),
        index_k=torch.randn(ctx, di, generator=gen).to(DTYPE),  # [S, 128]
        q=torch.randn(1, heads, QK_DIM, generator=gen).to(DTYPE),  # [1, H, 576]
        kv_cache=torch.randn(ctx, QK_DIM, generator=gen).to(DTYPE),  # [S, 576]
    )  # fmt: skip
    p["topk"] = f_layer_topk(p)
    return p


def f_layer_topk(p: dict) -> torch.Tensor:
    """Everything an F layer does that an S layer skips: indexer GEMMs, K-cache write, logits, top-k."""
    hi, di = D["index_n_heads"], D["index_head_dim"]
    q = (p["q_latent"] @ p["wq_b"]).view(1, hi, di)  # [1, 32, 128]
    k = torch.nn.functional.layer_norm(p["x"] @ p["wk"], (di,), eps=INDEX_LN_EPS)  # [1, 128]
    weights = (p["x"] @ p["weights_proj"]).float() * hi**-0.5  # [1, 32]
    p["index_k"][p["out_loc"]] = k
    logits = dsa_reference.indexer_logits(q, weights, p["index_k"], p["page_table"], p["q_seq"], p["q_pos"])
    return dsa_reference.topk_positions(logits, p["q_pos"], INDEX_TOPK)  # [1, 2048]


def sparse_attention(p: dict, topk: torch.Tensor) -> torch.Tensor:
    return dsa_reference.sparse_mla_decode(
        p["q"], p["kv_cache"], p["page_table"], p["q_seq"], topk, SM_SCALE, D["kv_lora_rank"]
    )  # [1, H, 512]


def mla_projections(p: dict) -> torch.Tensor:
    """The attention layer's own GEMMs, the same in F and S layers."""
    heads, nope = D["num_attention_heads"], D["qk_nope_head_dim"]
    q = ((p["x"] @ p["q_a"]) @ p["q_b"]).view(1, heads, -1)  # [1, H, 256]
    _ = p["x"] @ p["kv_a"]  # [1, 576]
    q_abs = torch.bmm(q[..., :nope].transpose(0, 1), p["w_kc"])  # [H, 1, 512]
    out = torch.bmm(q_abs, p["w_vc"])  # [H, 1, 256]
    return out.transpose(0, 1).reshape(1, -1) @ p["o_proj"]  # [1, 6144]


def run_decode(args) -> dict:
    p = decode_problem(args.context)
    calls = {
        "F: indexer (GEMMs + K write + logits + top-k) then sparse MLA": lambda: sparse_attention(p, f_layer_topk(p)),
        "S: sparse MLA with the reused top-k": lambda: sparse_attention(p, p["topk"]),
        "indexer alone": lambda: f_layer_topk(p),
        "MLA projections (both)": lambda: mla_projections(p),
    }
    seconds = {}
    for name, fn in calls.items():
        seconds[name] = time_call(fn, args.repeats, torch.device("cpu"))
        print(f"decode ctx {args.context}: {name}: {seconds[name] * 1e3:.2f} ms", flush=True)
    f, s = seconds[next(iter(calls))], seconds["S: sparse MLA with the reused top-k"]
    proj = seconds["MLA projections (both)"]
    flops_indexer = 2 * D["index_n_heads"] * D["index_head_dim"] * args.context
    flops_mla = D["num_attention_heads"] * 2 * (QK_DIM + D["kv_lora_rank"]) * min(INDEX_TOPK, args.context)
    return dict(
        context=args.context, threads=args.threads, seconds=seconds, s_over_f=s / f,
        s_over_f_with_projections=(s + proj) / (f + proj),
        indexer_flop_share=flops_indexer / (flops_indexer + flops_mla),
    )  # fmt: skip


def prefill_patterns(layers: int) -> dict[str, str]:
    quarter = "".join("F" if i % 4 == 0 else "S" for i in range(layers))
    return {"all-F": "F" * layers, f"cookbook[:{layers}]": COOKBOOK[:layers], "75% removed": quarter}


def time_prefill(checkpoint: Path, pattern: str, args, log_dir: Path) -> list[dict]:
    """One server with `pattern`; a short warm-up prompt, then `--prefill-repeats` timed prompts, each sampled by
    py-spy: per run, its seconds and the share of the model forward's samples inside the indexer."""
    flags = [
        "--dtype", "float32", "--disable-radix-cache", "--max-total-tokens", str(args.prefill_tokens + 256),
        "--json-model-override-args", json.dumps({"index_topk_pattern": pattern}),
        "--watchdog-timeout", str(REQUEST_TIMEOUT_S),  # one prefill forward can outlast SGLang's 300 s under load
    ]  # fmt: skip
    rng = random.Random(0)
    runs = []
    with ServerProcess(checkpoint, log_dir / f"indexcache-prefill-{pattern}.log", flags) as server:
        pid = pyspy.scheduler_pid(server.proc.pid)
        for i in range(args.prefill_repeats + 1):  # the first, short, is a warm-up
            ids = [rng.randrange(3, WIDE_VOCAB // 2) for _ in range(args.prefill_tokens if i else WARMUP_TOKENS)]
            out = log_dir / f"indexcache-prefill-{pattern}-{i}.pyspy.txt"
            spy = pyspy.record(pid, REQUEST_TIMEOUT_S, out) if i else None
            if spy is not None:
                time.sleep(SPY_ATTACH_S)
            start = time.perf_counter()
            try:
                response = requests.post(
                    f"{server.url}/generate",
                    json={"input_ids": ids, "sampling_params": {"max_new_tokens": 1, "temperature": 0}},
                    timeout=REQUEST_TIMEOUT_S,
                )
                response.raise_for_status()
            finally:
                seconds = time.perf_counter() - start
                if spy is not None:
                    pyspy.stop(spy)
            if spy is not None:
                stacks = pyspy.parse_collapsed(out.read_text())
                share, forward_samples = pyspy.share(stacks, INDEXER_FRAME, within=FORWARD_FRAME)
                forward_share, samples = pyspy.share(stacks, FORWARD_FRAME)
                runs.append(dict(seconds=seconds, indexer_share=share, forward_samples=forward_samples,
                                 forward_share=forward_share, samples=samples, profile=str(out)))  # fmt: skip
    return runs


def prefill_rows(measured: dict[str, tuple[str, list[dict]]], layers: int) -> list[dict]:
    """Per pattern, its fastest run with the indexer time measured in it (share of the forward x prefill seconds);
    all-F's indexer time per layer predicts every pattern's prefill: all-F minus one indexer per S layer."""
    rows = []
    for name, (pattern, runs) in measured.items():
        run = min(runs, key=lambda r: r["seconds"])
        num_full = pattern.count("F")
        indexer_s = run["indexer_share"] * run["seconds"]
        rows.append(dict(name=name, pattern=pattern, num_full=num_full, runs=runs, seconds=run["seconds"],
                         indexer_share=run["indexer_share"], indexer_s=indexer_s,
                         indexer_s_per_layer=indexer_s / num_full if num_full else 0.0))  # fmt: skip
    all_f = next(r for r in rows if r["num_full"] == layers)
    for r in rows:
        r["predicted_s"] = all_f["seconds"] - (layers - r["num_full"]) * all_f["indexer_s_per_layer"]
    return rows


def time_prefill_indexer(tokens: int, repeats: int) -> float:
    """One layer's prefill indexer as the server's backend runs it (chunked logits + top-k, reference, fp32, all
    cores): the direct estimate of what an S layer saves."""
    torch.set_num_threads(os.cpu_count())
    gen = torch.Generator().manual_seed(0)
    hi, di = D["index_n_heads"], D["index_head_dim"]
    q = torch.randn(tokens, hi, di, generator=gen)  # [T, 32, 128]
    weights = torch.randn(tokens, hi, generator=gen) * hi**-0.5  # [T, 32]
    k_cache = torch.randn(tokens, di, generator=gen)  # [S, 128]
    page_table = torch.arange(tokens, dtype=torch.int32)[None]  # [1, T]
    q_seq, q_pos = torch.zeros(tokens, dtype=torch.int64), torch.arange(tokens)
    impl, workspace = resolve_impl("reference", "prefill", "cpu"), load_indexer_workspace()
    return time_call(
        lambda: chunked_topk(impl, workspace, q, weights, ModelDtypeKeys(k_cache, page_table), q_seq, q_pos, INDEX_TOPK),
        repeats, torch.device("cpu"),
    )  # fmt: skip


def run_prefill(args) -> dict:
    spec = SyntheticSpec(
        dtype="bf16", num_layers=args.layers, dense_layers=1, experts=4, vocab=WIDE_VOCAB, shards=1, dims=WIDE_DIMS
    )
    checkpoint = common.CACHE_ROOT / spec.name
    if not (checkpoint / "config.json").is_file():
        write_checkpoint(spec, checkpoint)
    log_dir = common.CACHE_ROOT / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    measured = {}
    for name, pattern in prefill_patterns(args.layers).items():
        runs = time_prefill(checkpoint, pattern, args, log_dir)
        measured[name] = (pattern, runs)
        print(f"prefill {args.prefill_tokens} tokens, {name} {pattern}: "
              + ", ".join(f"{r['seconds']:.2f} s (indexer {r['indexer_share']:.0%} of the forward)" for r in runs),
              flush=True)  # fmt: skip
    rows = prefill_rows(measured, args.layers)
    indexer_op_s = time_prefill_indexer(args.prefill_tokens, args.prefill_repeats)
    print(f"prefill indexer (logits + top-k) of one layer, alone: {indexer_op_s:.2f} s", flush=True)
    all_f = rows[0]
    return dict(
        indexer_op_s=indexer_op_s, indexer_op_share_all_f=args.layers * indexer_op_s / all_f["seconds"],
        tokens=args.prefill_tokens, layers=args.layers, dims=dict(WIDE_DIMS), checkpoint=spec.name, rows=rows,
        indexer_share_all_f=all_f["indexer_share"], per_indexer_s=all_f["indexer_s_per_layer"],
        loadavg_1m_at_end=round(os.getloadavg()[0], 2),
    )  # fmt: skip


def markdown(payload: dict) -> str:
    dec, pre = payload["decode"], payload.get("prefill")
    lines = [
        "## IndexCache: S layer vs F layer (decode), GLM-5-style pattern vs all-F (prefill)",
        "",
        f"`{payload['command']}` — {payload['date']}, commit {payload['commit']}; "
        + common.machine_line(payload["machine"]),
        "",
        f"**Decode**, one GLM-5 layer at real dimensions, batch 1, {dec['context']} cached tokens, torch reference path,"
        f" bf16, {dec['threads']} thread, fastest of {payload['repeats']}:",
        "",
        common.md_table(["work", "ms"], [[k, f"{v * 1e3:.2f}"] for k, v in dec["seconds"].items()]),
        "",
        f"- S / F attention time: **{dec['s_over_f']:.3f}x** (the issue expects <= 0.45x; the indexer is"
        f" {dec['indexer_flop_share']:.0%} of an F layer's attention FLOPs here)",
        f"- S / F including the layer's MLA projections: {dec['s_over_f_with_projections']:.3f}x",
    ]
    if pre:
        table = []
        all_f = pre["rows"][0]["seconds"]
        for r in pre["rows"]:
            plan = IndexerPlan(r["pattern"], "bench")
            table.append([r["name"], f"`{r['pattern']}`", f"{plan.num_full} F / {plan.num_shared} S",
                          f"{r['seconds']:.2f}", f"{all_f / r['seconds']:.2f}x", f"{r['indexer_share']:.0%}",
                          f"{r['indexer_s']:.2f}", f"{r['indexer_s_per_layer']:.2f}", f"{r['predicted_s']:.2f}"])  # fmt: skip
        samples = min(run["forward_samples"] for r in pre["rows"] for run in r["runs"])
        lines += [
            "",
            f"**Prefill** of one {pre['tokens']}-token prompt through `launch_server` (CPU, float32, reference DSA) on a"
            f" tiny but wide synthetic checkpoint ({pre['layers']} layers, {pre['dims']}, GLM-5's indexer 32 x 128,"
            f" top-k 2048, 576-d MLA), fastest of {payload['prefill_repeats']} after a warm-up, one server per"
            f" pattern, same run; load average {pre.get('loadavg_1m_at_end', '?')} at the end. During every timed"
            f" prefill py-spy samples the scheduler ({pyspy.RATE_HZ} Hz, non-blocking; at least {samples} samples"
            " inside the model forward per run): *indexer share* is the share of the forward's samples inside"
            " `Glm5Indexer.forward` (projections, RoPE, K write, logits, top-k: everything an S layer skips),"
            " *indexer s* that share of the prefill time. *Predicted* is all-F's prefill minus all-F's indexer time"
            " per layer for each S layer: what skipping should save if the indexer is all an S layer drops.",
            "",
            common.md_table(["pattern", "", "layers", "prefill s", "speed-up vs all-F", "indexer share",
                             "indexer s", "per F layer s", "predicted s"], table),  # fmt: skip
            "",
            f"- Indexer share of all-F prefill, measured in the server: **{pre['indexer_share_all_f']:.0%}**"
            f" ({pre['per_indexer_s']:.2f} s per indexer layer)",
            f"- The indexer's logits + top-k alone over {pre['tokens']} tokens (the backend's chunked reference path,"
            f" fp32, all cores, outside the server, without the projections): {pre['indexer_op_s']:.2f} s per layer,"
            f" {pre['indexer_op_share_all_f']:.0%} of the all-F prefill for {pre['layers']} layers.",
            "- The paper reports 1.82x prefill with 75% of the indexers removed on a 30B DSA model (GPU).",
        ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command = common.announce(argv)
    torch.set_num_threads(args.threads)  # decode; the servers set their own threads
    machine = common.machine()
    payload = dict(command=command, date=common.utc_now(), commit=common.git_commit(), machine=machine,
                   repeats=args.repeats, prefill_repeats=args.prefill_repeats, decode=run_decode(args))  # fmt: skip
    if not args.skip_prefill:
        payload["prefill"] = run_prefill(args)
    common.publish(payload, NAME, markdown(payload), write=not args.no_write)


if __name__ == "__main__":
    main()
