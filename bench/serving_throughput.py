"""Serving throughput: our GLM-5 behind SGLang's launch_server vs HF transformers' generate, same tiny checkpoint.

Both sides run in float32 (the correctness check needs float32, and the timed runs reuse that server, so the two
sides compare at one dtype). Before any timing, the server's greedy output for the longest prompt must equal HF's
greedy output for it; the benchmark stops if it does not. Then the same work on both sides: N prompts of mixed
lengths (most longer than index_topk), greedy, ignore_eos, fixed max_tokens; the server gets them as N concurrent
/generate requests, HF as N `generate` calls of one prompt each (batch 1: no padding, so HF processes exactly the
prompt tokens the server does; a left-padded batch would make HF process N x the longest prompt). The section states
both sides' prompt and output token counts (the server's from its meta_info). Output tokens/s = N * max_tokens / wall
seconds.

Both sides use the same torch thread count (--threads, default 1): on this shared 2-core machine, 2 OpenMP threads
make every small op wait on a descheduled peer (measured 25x slower per tiny linear under load average 5).

Run from the repo root: .venv/bin/python -m bench.serving_throughput [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.lib import common, hf_generate, pyspy
from bench.lib import load_client

NAME = "serving_throughput"
DTYPE = "float32"
PAGE_TOKENS = 64  # SGLang's DSA page size: every request's KV rounds up to whole pages
WARMUP_TOKENS = 8
PROFILE_ROWS = 10
QUICK = {"num_prompts": 4, "max_len": 64, "max_tokens": 16, "reps": 1, "hf_reps": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-prompts", type=int, default=16, help="concurrent requests = HF batch size")
    p.add_argument("--min-len", type=int, default=6, help="shortest prompt, tokens")
    p.add_argument("--max-len", type=int, default=240, help="longest prompt, tokens (lengths spaced geometrically)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per request (ignore_eos)")
    p.add_argument("--reps", type=int, default=3, help="timed server rounds")
    p.add_argument("--hf-reps", type=int, default=2, help="timed HF generate calls")
    p.add_argument("--layers", type=int, default=4, help="tiny checkpoint decoder layers")
    p.add_argument("--index-topk", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads, both sides (OMP_NUM_THREADS for the server)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip py-spy on the scheduler")
    common.add_output_args(p, QUICK)
    return common.parse_quick(p, argv, QUICK)


def prompt_lengths(n: int, lo: int, hi: int) -> list[int]:
    if n == 1:
        return [hi]
    return [round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)]


def make_prompts(tok, lengths: list[int]) -> list[list[int]]:
    """Token-id prompts of exactly `lengths` tokens, cut from the tiny tokenizer's corpus at different offsets."""
    from sglang_glm5.checkpoint.tokenizer import CORPUS

    stream = tok("\n".join(CORPUS), add_special_tokens=False)["input_ids"]
    while len(stream) < 2 * max(lengths):
        stream = stream + stream
    step = max(1, (len(stream) - max(lengths)) // max(1, len(lengths)))
    return [stream[i * step : i * step + n] for i, n in enumerate(lengths)]


def server_flags(args, lengths: list[int]) -> list[str]:
    pages = sum(-(-(n + args.max_tokens) // PAGE_TOKENS) for n in lengths)
    total = max(4096, (pages + len(lengths)) * PAGE_TOKENS)  # every request resident at once, plus slack
    return ["--dtype", DTYPE, "--max-total-tokens", str(total), "--max-running-requests", str(max(len(lengths), 1))]


def generate(url: str, ids: list[int], max_tokens: int) -> list[int]:
    return load_client.generate(url, ids, max_tokens)["output_ids"]


def token_counts(responses: list[dict]) -> dict:
    """Prompt and output tokens the server reports (meta_info) for one round of responses."""
    return {"prompt": sum(r["meta_info"]["prompt_tokens"] for r in responses),
            "output": sum(r["meta_info"]["completion_tokens"] for r in responses)}  # fmt: skip


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (the server's processes)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def concurrent_round(url: str, prompts: list[list[int]], max_tokens: int) -> tuple[list[dict], float]:
    """(the /generate responses, wall s) of one round: every prompt as its own request, all at once."""
    with ThreadPoolExecutor(len(prompts)) as pool:
        t0 = time.perf_counter()
        responses = list(pool.map(lambda ids: load_client.generate(url, ids, max_tokens), prompts))
        return responses, time.perf_counter() - t0


def timed_round(server, prompts: list[list[int]], max_tokens: int) -> tuple[list[dict], float, float]:
    """(responses, wall s, CPU s of the server's processes) for one concurrent round."""
    cpu0 = tree_cpu_seconds(server.proc.pid)
    responses, seconds = concurrent_round(server.url, prompts, max_tokens)
    return responses, seconds, tree_cpu_seconds(server.proc.pid) - cpu0


def profile_round(server, prompts, max_tokens: int, seconds: float, out: Path) -> dict:
    pid = pyspy.scheduler_pid(server.proc.pid)
    if pid is None or pyspy.py_spy() is None:
        return {"skipped": "no scheduler process or no py-spy"}
    spy = pyspy.record(pid, seconds, out)
    time.sleep(1.0)  # py-spy attaches
    concurrent_round(server.url, prompts, max_tokens)
    spy.wait(timeout=seconds + 60)
    return {"pid": pid, "file": str(out), **pyspy.summarize(pyspy.parse_collapsed(out.read_text()))}


def first_divergence(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def run_server_side(args, ckpt: Path, prompts, check_index: int, hf_check: list[int], work: Path) -> dict:
    from sglang_glm5.serving.process import ServerProcess

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    lengths = [len(p) for p in prompts]
    out: dict = {"flags": server_flags(args, lengths), "log": str(work / "server.log")}
    with ServerProcess(ckpt, work / "server.log", out["flags"], env=env) as server:
        got = generate(server.url, prompts[check_index], args.max_tokens)
        out["check"] = {
            "prompt_index": check_index,
            "prompt_tokens": lengths[check_index],
            "passed": got == hf_check,
            "first_divergence": first_divergence(got, hf_check),
            "server": got,
            "hf": hf_check,
        }
        if not out["check"]["passed"]:
            return out
        concurrent_round(server.url, prompts, WARMUP_TOKENS)
        rounds = [timed_round(server, prompts, args.max_tokens) for _ in range(args.reps)]
        out["seconds"] = [s for _, s, _ in rounds]
        out["cpu_seconds"] = [c for _, _, c in rounds]
        out["outputs"] = [r["output_ids"] for r in rounds[-1][0]]
        out["tokens"] = token_counts(rounds[-1][0])
        if args.profile:
            out["profile"] = profile_round(
                server, prompts, args.max_tokens, common.median(out["seconds"]), work / "scheduler.pyspy.txt"
            )
    out["returncode"] = server.returncode
    return out


def run_hf_side(args, model, tok, prompts) -> dict:
    """Each prompt alone through `generate`, one after another (batch 1, no padding): the server's work, no more."""
    hf_generate.generate_each(model, tok, prompts, WARMUP_TOKENS)
    seconds, cpu_seconds = [], []
    for _ in range(args.hf_reps):
        cpu0 = time.process_time()
        outputs, wall, prompt_tokens = hf_generate.generate_each(model, tok, prompts, args.max_tokens)
        cpu_seconds.append(time.process_time() - cpu0)
        seconds.append(wall)
    tokens = {"prompt": prompt_tokens, "output": sum(len(o) for o in outputs)}
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "outputs": outputs, "tokens": tokens}


def plot(payload: dict, path: Path) -> Path:
    plt = common.pyplot()
    tokens = payload["output_tokens_per_round"]
    n = payload["args"]["num_prompts"]
    sides = [(f"ours: SGLang server\n({n} concurrent requests)", payload["server"]["seconds"], "#36c"),
             ("HF transformers\n(one generate per prompt)", payload["hf"]["seconds"], "#9aa")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, seconds, color) in enumerate(sides):
        rates = [tokens / s for s in seconds]
        ax.bar(i, tokens / common.median(seconds), color=color)  # as in the table: tokens / median seconds
        ax.scatter([i] * len(rates), rates, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(sides)), [label for label, _, _ in sides])
    ax.set_ylabel("output tokens / s (median; dots: repeats)")
    ax.set_title(f"tiny GLM-5, {DTYPE}, max_tokens {payload['args']['max_tokens']}: ratio {payload['ratio']:.2f}x")
    return common.save_figure(fig, path)


def markdown(payload: dict) -> str:
    a, s, h = payload["args"], payload["server"], payload["hf"]
    rows = [
        [label, f"{payload[f'{key}_tok_s']:.1f}", ", ".join(f"{x:.2f}" for x in side["seconds"]),
         f"{payload[f'{key}_tok_per_cpu_s']:.1f}"]
        for label, key, side in (("ours: SGLang server", "server", s), ("HF transformers generate, per prompt", "hf", h))
    ]
    check = s["check"]
    profile = s.get("profile", {})
    top = "".join(f"\n  - `{frame}`: {share:.0%}" for frame, share in profile.get("self_top", [])[:PROFILE_ROWS])
    marks = "; ".join(f"{label} {share:.0%}" for label, share in profile.get("markers", {}).items())
    profile_md = (
        f"\npy-spy on the scheduler process during one extra round ({profile.get('samples')} samples at"
        f" {pyspy.RATE_HZ} Hz). Share of samples inside: {marks}. Top functions by self time:{top}\n"
        if top else ""
    )
    return f"""## Serving throughput: ours vs HF transformers{" (--quick)" if a["quick"] else ""}

`{payload["command"]}`

{payload["date"]}, commit {payload["git_commit"]}; {common.machine_line(payload["machine"])}.

Tiny GLM-5 checkpoint (`write_tiny_checkpoint`, bf16 on disk, {a["layers"]} layers, index_topk {a["index_topk"]}),
run in **{DTYPE}** on both sides, {a["threads"]} torch thread(s) each.
{a["num_prompts"]} prompts of {payload["prompt_lengths"][0]}..{payload["prompt_lengths"][-1]} tokens
({payload["prompts_longer_than_topk"]} longer than index_topk), greedy, {a["max_tokens"]} new tokens each (ignore_eos);
server: {a["num_prompts"]} concurrent /generate requests; HF: one `generate` per prompt, one after another (batch 1,
no padding). **Equal work**: prompt tokens processed per round, server {s["tokens"]["prompt"]} (its meta_info) vs HF
{h["tokens"]["prompt"]} (ids fed to `generate`); output tokens, server {s["tokens"]["output"]} vs HF {h["tokens"]["output"]}.
Correctness check before timing, server greedy ids for the {check["prompt_tokens"]}-token prompt == HF greedy ids:
**{"passed" if check["passed"] else "FAILED"}**. Server outputs equal to HF's per-prompt outputs:
{payload["agreement"]}/{a["num_prompts"]} prompts. Load average {payload["loadavg_1m_at_end"]} at the end.

{common.md_table(["side", "output tok/s (median)", "wall s per round", "output tok per CPU-second"], rows)}

**ratio ours / HF = {payload["ratio"]:.2f}x** (wall clock); per CPU-second of the serving processes:
{payload["cpu_ratio"]:.2f}x (the server's CPU counts all its processes: HTTP front end, scheduler, detokenizer).
{profile_md}
![throughput](results/{Path(payload["plot"]).name})
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = common.announce(argv)
    machine = common.machine()
    import torch

    from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint

    torch.set_num_threads(args.threads)
    work = args.cache_dir / "runs" / f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
    ckpt = write_tiny_checkpoint(work / "tiny-bf16", dtype="bf16", num_layers=args.layers, index_topk=args.index_topk)
    model, tok = hf_generate.load(ckpt, DTYPE)
    lengths = prompt_lengths(args.num_prompts, args.min_len, args.max_len)
    prompts = make_prompts(tok, lengths)
    check_index = max(range(len(prompts)), key=lambda i: len(prompts[i]))
    hf_check = hf_generate.generate(model, tok, [prompts[check_index]], args.max_tokens)[0][0]
    server = run_server_side(args, ckpt, prompts, check_index, hf_check, work)
    stem = common.result_stem(NAME, args.quick)
    payload = {
        "benchmark": NAME,
        "command": command,
        "date": common.utc_now(),
        "git_commit": common.git_commit(),
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dtype": DTYPE,
        "prompt_lengths": lengths,
        "prompts_longer_than_topk": sum(n > args.index_topk for n in lengths),
        "output_tokens_per_round": args.num_prompts * args.max_tokens,
        "server": server,
    }
    if not server["check"]["passed"]:
        common.publish(payload, stem, f"correctness check FAILED (first divergence at token "
                       f"{server['check']['first_divergence']}); no benchmark run", results_dir=args.results_dir,
                       section=False)
        return 1
    payload["hf"] = run_hf_side(args, model, tok, prompts)
    payload["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    payload["server_tok_s"] = payload["output_tokens_per_round"] / common.median(server["seconds"])
    payload["hf_tok_s"] = payload["output_tokens_per_round"] / common.median(payload["hf"]["seconds"])
    payload["ratio"] = payload["server_tok_s"] / payload["hf_tok_s"]
    tokens = payload["output_tokens_per_round"]
    payload["server_tok_per_cpu_s"] = tokens / common.median(server["cpu_seconds"])
    payload["hf_tok_per_cpu_s"] = tokens / common.median(payload["hf"]["cpu_seconds"])
    payload["cpu_ratio"] = payload["server_tok_per_cpu_s"] / payload["hf_tok_per_cpu_s"]
    payload["agreement"] = sum(a == b for a, b in zip(server["outputs"], payload["hf"]["outputs"]))
    payload["plot"] = str(plot(payload, args.results_dir / f"{stem}.png"))
    print(
        f"check passed; server {payload['server_tok_s']:.1f} tok/s vs HF {payload['hf_tok_s']:.1f} tok/s:"
        f" ratio {payload['ratio']:.2f}x; server == HF per prompt for {payload['agreement']}/{args.num_prompts} prompts"
    )
    common.publish(payload, stem, markdown(payload), results_dir=args.results_dir, section=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
