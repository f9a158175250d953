"""Long context on CPU: prefill and decode time per token at 4k, 8k, 16k on the `long` tiny checkpoint (tiny dims,
GLM-5's index_topk 2048), sparse (index_topk 2048) vs the same checkpoint dense (index_topk >= every length, through
--json-model-override-args), two servers in one run, same prompts (random token ids), same flags.

Analytic model, per token per layer at context L (tiny dims: indexer 16 heads x 128, MLA 4 heads x (80 + 64)):
  sparse = c + 2*16*128*L + 2*4*144*min(L, 2048)      dense = c + 2*16*128*L + 2*4*144*L
(the indexer scores every key in both; only the attention is capped by top-k). So dense/sparse grows with L toward
1 + 1152/4096 ~ 1.28 and sparse's attention term is flat past 2048: at tiny dims the indexer dominates. At GLM-5's
dims the attention is ~17x the indexer per key and the same model gives the large ratios of bench/kernels.py.

Prefill: one request with max_new_tokens 1 after /flush_cache, wall seconds / prompt tokens (chunked prefill 2048).
Decode: a streamed request of --decode-tokens tokens; (last event - first event) / (tokens - 1).

Run from the repo root: .venv/bin/python -m bench.long_context [--lengths 4096 8192 16384] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import requests
from tqdm import tqdm

from bench.lib import common
from bench.lib.load_client import greedy

NAME = "long_context"
ARCH = "long"
PAGE_SIZE = 64
CHUNKED_PREFILL = 2048
QUICK = {"lengths": [2048, 4096], "decode_tokens": 4}
REQUEST_TIMEOUT_S = 1800


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384], help="prompt tokens")
    p.add_argument("--decode-tokens", type=int, default=16)
    common.add_output_args(p, QUICK, cache_help="where the long checkpoint is written")
    return common.parse_quick(p, argv, QUICK)


def checkpoint(cache_dir: Path) -> Path:
    from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint

    path = cache_dir / NAME / "long-bf16"
    if not (path / "config.json").is_file():
        write_tiny_checkpoint(path, dtype="bf16", arch=ARCH)
    return path


def prompt(length: int, vocab: int) -> list[int]:
    rng = random.Random(length)
    return [rng.randrange(3, vocab // 2) for _ in range(length)]


def timed_prefill(url: str, ids: list[int]) -> float:
    requests.post(f"{url}/flush_cache", timeout=60).raise_for_status()
    start = time.perf_counter()
    r = requests.post(f"{url}/generate", json={"input_ids": ids, "sampling_params": greedy(1)}, timeout=REQUEST_TIMEOUT_S)
    r.raise_for_status()
    return time.perf_counter() - start


def timed_decode(url: str, ids: list[int], tokens: int) -> tuple[float, list[int]]:
    """Seconds per decoded token between the first and the last streamed event (the prompt is cached by then)."""
    body = {"input_ids": ids, "sampling_params": greedy(tokens), "stream": True}
    stamps, last = [], None
    with requests.post(f"{url}/generate", json=body, stream=True, timeout=REQUEST_TIMEOUT_S) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                last = json.loads(line[len(b"data: "):])
                stamps.append(time.perf_counter())
    n = len(last["output_ids"])
    return (stamps[-1] - stamps[0]) / max(1, n - 1), last["output_ids"]


def measure(path: Path, label: str, flags: list[str], lengths, args, vocab: int) -> dict:
    from sglang_glm5.serving.process import ServerProcess

    out = {}
    log = args.results_dir / f"{NAME}-{label}.log"
    with ServerProcess(path, log, flags) as server:
        timed_prefill(server.url, prompt(256, vocab))  # warm-up
        for length in tqdm(lengths, desc=f"{label} server", unit="prompt"):
            ids = prompt(length, vocab)
            prefill = timed_prefill(server.url, ids)
            decode, tokens = timed_decode(server.url, ids, args.decode_tokens)
            out[length] = {"prefill_s": prefill, "prefill_ms_per_token": 1e3 * prefill / length,
                           "decode_ms_per_token": 1e3 * decode, "output_ids": tokens}  # fmt: skip
            print(f"{label} L={length}: prefill {out[length]['prefill_ms_per_token']:.3f} ms/token, "
                  f"decode {out[length]['decode_ms_per_token']:.1f} ms/token", flush=True)  # fmt: skip
    return out


def model_ratio(length: int, topk: int, idx: int, mla: int) -> float:
    """dense/sparse of the context-dependent per-token cost (the fixed part `c` left out: an upper bound)."""
    return (idx * length + mla * length) / (idx * length + mla * min(length, topk))


def context_flops(length: int, topk: int | None, idx: int, mla: int, prefill: bool) -> float:
    """Context-dependent FLOPs per token at context `length` (topk None: dense); prefill averages over the prompt's
    positions 1..length (query p scores p keys and attends to min(p, topk))."""
    import numpy as np

    pos = np.arange(1, length + 1, dtype=np.float64) if prefill else np.array([float(length)])
    keys = pos if topk is None else np.minimum(pos, topk)
    return float((idx * pos + mla * keys).mean())


def fit_model(lengths, sparse_ms, dense_ms, topk: int, idx: int, mla: int, prefill: bool) -> tuple[float, float]:
    """(c ms, a ms per FLOP) of ms/token = c + a * context_flops, least squares over both servers' points."""
    import numpy as np

    x = [context_flops(n, topk, idx, mla, prefill) for n in lengths] + [
        context_flops(n, None, idx, mla, prefill) for n in lengths
    ]
    design = np.stack([np.ones(len(x)), np.array(x)], axis=1)
    (c, a), *_ = np.linalg.lstsq(design, np.array(list(sparse_ms) + list(dense_ms)), rcond=None)
    return float(c), float(a)


def plot(payload: dict, path: Path) -> Path:
    """Left/middle: ms/token vs prompt tokens (markers: measured; lines: the fitted analytic model); right: the
    dense/sparse ratio, measured and modelled, with the no-fixed-cost upper bound."""
    import numpy as np

    plt = common.pyplot()
    topk = payload["config"]["index_topk"]
    idx, mla = payload["flops_per_key"]["indexer"], payload["flops_per_key"]["mla"]
    lengths = sorted(int(n) for n in payload["sparse"])
    grid = np.linspace(min(lengths) // 2, max(lengths), 64).astype(int)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, phase, prefill in ((axes[0], "prefill", True), (axes[1], "decode", False)):
        key = f"{phase}_ms_per_token"
        c, a = payload["fit"][phase]["c_ms"], payload["fit"][phase]["a_ms_per_flop"]
        for label, cap, color in (("sparse", topk, "#36c"), ("dense", None, "#c63")):
            ax.plot(lengths, [payload[label][n][key] for n in lengths], "o", color=color, label=f"{label} measured")
            ax.plot(grid, [c + a * context_flops(int(n), cap, idx, mla, prefill) for n in grid], "-", color=color,
                    lw=0.9, label=f"{label} model")  # fmt: skip
            measured_ratio = [payload["dense"][n][key] / payload["sparse"][n][key] for n in lengths]
            if label == "dense":
                axes[2].plot(lengths, measured_ratio, "o", color="#36c" if prefill else "#c63",
                             label=f"{phase} measured")  # fmt: skip
        model = [(c + a * context_flops(int(n), None, idx, mla, prefill))
                 / (c + a * context_flops(int(n), topk, idx, mla, prefill)) for n in grid]  # fmt: skip
        axes[2].plot(grid, model, "-", color="#36c" if prefill else "#c63", lw=0.9, label=f"{phase} model")
        ax.axvline(topk, color="#999", lw=0.6, ls=":")
        ax.set_xticks(lengths)
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("ms / token")
        ax.set_title(f"{phase} ms/token")
        ax.legend(fontsize=7)
    axes[2].plot(grid, [model_ratio(int(n), topk, idx, mla) for n in grid], "--", color="#999", lw=0.8,
                 label="decode bound (no fixed cost)")  # fmt: skip
    axes[2].axvline(topk, color="#999", lw=0.6, ls=":")
    axes[2].set_xticks(lengths)
    axes[2].set_xlabel("prompt tokens")
    axes[2].set_title("dense / sparse")
    axes[2].legend(fontsize=7)
    return common.save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    cmd = common.announce(argv)
    path = checkpoint(args.cache_dir)
    config = json.loads((path / "config.json").read_text())
    topk, vocab = config["index_topk"], config["vocab_size"]
    lengths = sorted(args.lengths)
    context = max(config["max_position_embeddings"], max(lengths) + args.decode_tokens + PAGE_SIZE)
    base = ["--dtype", "float32", "--page-size", str(PAGE_SIZE), "--chunked-prefill-size", str(CHUNKED_PREFILL),
            "--max-total-tokens", str(2 * context), "--context-length", str(context)]  # fmt: skip
    dense_topk = max(lengths) + args.decode_tokens
    args.results_dir.mkdir(parents=True, exist_ok=True)
    machine = common.machine()
    sparse = measure(path, "sparse", base, lengths, args, vocab)
    dense = measure(path, "dense", base + ["--json-model-override-args", json.dumps({"index_topk": dense_topk})],
                    lengths, args, vocab)  # fmt: skip
    idx = 2 * config["index_n_heads"] * config["index_head_dim"]
    mla = 2 * config["num_attention_heads"] * (2 * config["kv_lora_rank"] + config["qk_rope_head_dim"])
    fit = {}
    for phase, prefill in (("prefill", True), ("decode", False)):
        key = f"{phase}_ms_per_token"
        c, a = fit_model(lengths, [sparse[n][key] for n in lengths], [dense[n][key] for n in lengths], topk, idx, mla,
                         prefill)  # fmt: skip
        fit[phase] = {"c_ms": c, "a_ms_per_flop": a}

    def fitted_ratio(length: int, phase: str) -> float:
        c, a, prefill = fit[phase]["c_ms"], fit[phase]["a_ms_per_flop"], phase == "prefill"
        dense_ms = c + a * context_flops(length, None, idx, mla, prefill)
        return dense_ms / (c + a * context_flops(length, topk, idx, mla, prefill))

    rows = []
    for length in lengths:
        s, d = sparse[length], dense[length]
        same = "yes" if s["output_ids"] == d["output_ids"] else "no"
        rows.append([
            length, f"{s['prefill_ms_per_token']:.3f}", f"{d['prefill_ms_per_token']:.3f}",
            f"{d['prefill_ms_per_token'] / s['prefill_ms_per_token']:.2f}",
            f"{s['decode_ms_per_token']:.1f}", f"{d['decode_ms_per_token']:.1f}",
            f"{d['decode_ms_per_token'] / s['decode_ms_per_token']:.2f}",
            f"{fitted_ratio(length, 'prefill'):.2f}", f"{fitted_ratio(length, 'decode'):.2f}",
            f"{model_ratio(length, topk, idx, mla):.2f}", same,
        ])  # fmt: skip
    table = common.md_table(
        ["prompt tokens", "prefill ms/token sparse", "dense", "dense/sparse", "decode ms/token sparse", "dense",
         "dense/sparse", "model prefill", "model decode", "bound (context part)", "same tokens"],
        rows,
    )  # fmt: skip
    text = (
        f"## Long context: sparse (index_topk {topk}) vs dense, `long` tiny checkpoint (`bench/long_context.py`)\n\n"
        f"Command: `{cmd}` ({common.utc_now()}, commit {common.git_commit()})\n\n"
        f"Machine: {common.machine_line(machine)}\n\n"
        f"Two launch_server runs of one checkpoint (tiny dims: {config['num_attention_heads']} heads, "
        f"{config['index_n_heads']} x {config['index_head_dim']} indexer, {config['num_hidden_layers']} layers), "
        f"float32, page size {PAGE_SIZE}, chunked prefill {CHUNKED_PREFILL}; dense = "
        f"`--json-model-override-args '{{\"index_topk\": {dense_topk}}}'`. Prefill: wall time of one uncached request / "
        f"prompt tokens; decode: streamed inter-token time over {args.decode_tokens} tokens.\n\n"
        f"{table}\n\n"
        f"Model: ms/token = c + a x (context FLOPs per token), context FLOPs = indexer {idx} x L + MLA {mla} x "
        f"min(L, {topk}) per key (dense: MLA x L; prefill: averaged over the prompt's positions), c and a fitted by "
        f"least squares to both servers' points per phase (prefill c = {fit['prefill']['c_ms']:.3f} ms, decode c = "
        f"{fit['decode']['c_ms']:.1f} ms); model columns "
        "are its dense/sparse. Bound: the context part alone (c = 0), the most sparsity can give at these dims. At "
        "tiny dims the indexer (which scores every key, sparse or not) outweighs the attention, so dense/sparse "
        "flattens near 1 + MLA/indexer once L >> top-k; sparse's attention term is flat past top-k. At GLM-5's dims "
        "the attention is ~17x the indexer per key and the same model gives the large ratios of bench/kernels.py. "
        "Same tokens: sparse and dense greedy outputs agree (they may differ once top-k drops keys). Dense is the "
        "same code with a wider top-k: every query token carries an index_topk-wide row of positions (-1 past its "
        "own position) and the CPU reference's sparse MLA gathers and masks every column, so dense prefill pays a "
        "per-token cost that follows index_topk, not L; the FLOP model counts valid keys only and misses it (read "
        "the prefill ratio as sparse vs this dense stand-in, not vs a dense-attention kernel).\n\n"
        f"![long context](results/{common.result_stem(NAME, args.quick)}.png)\n"
    )
    payload = {"command": cmd, "machine": machine, "config": {k: config[k] for k in ("index_topk", "num_hidden_layers")},
               "sparse": sparse, "dense": dense, "dense_topk": dense_topk,
               "flops_per_key": {"indexer": idx, "mla": mla}, "fit": fit}  # fmt: skip
    stem = common.result_stem(NAME, args.quick)
    payload["plot"] = str(plot(payload, args.results_dir / f"{stem}.png"))
    common.publish(payload, stem, text, write=args.markdown, results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
