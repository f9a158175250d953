"""Load and fault campaign against the tiny GLM-5 behind launch_server on CPU: wrong or lost outputs (goal: zero).

Phase `load`: one server; every prompt (mixed lengths, most longer than index_topk, some sharing a prefix) is first
answered one at a time (greedy, the reference). Then R rounds: all prompts at once (half of them as streams read to
the end), and during each round D streams cut off after a few events and every bad request of
`bench.lib.load_client.bad_requests`. Each good output must equal its reference (else: wrong); each good
request must be answered (else: lost); each bad one must get a 4xx whose message names the problem; after each round
the server must return to idle (`/v1/loads` num_used_tokens == 0). Odd rounds start from an empty radix cache, even
rounds reuse it.

Phase `pressure`: a second server whose KV pool holds a few pages, with optimistic admission; more requests than
the pool holds at once; each must equal its one-at-a-time output; retractions and queueing are counted.

Run from the repo root: .venv/bin/python -m bench.faults [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from tqdm import tqdm

from bench.lib import common

NAME = "faults"
DTYPE = "float32"
PAGE_TOKENS = 64  # SGLang's DSA page
IDLE_TIMEOUT_S = 120
CHUNKS_BEFORE_DISCONNECT = 3
QUICK = {"num_prompts": 12, "rounds": 2, "disconnects": 2, "pressure_requests": 6}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-prompts", type=int, default=48, help="distinct prompts = concurrent requests per round")
    p.add_argument("--min-len", type=int, default=5)
    p.add_argument("--max-len", type=int, default=400)
    p.add_argument("--new-tokens", type=int, default=8, help="greedy tokens per good request")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--disconnects", type=int, default=4, help="streams cut off per round")
    p.add_argument("--context-length", type=int, default=512)
    p.add_argument("--pool-tokens", type=int, default=16384, help="load phase KV pool")
    p.add_argument("--pressure-requests", type=int, default=16)
    p.add_argument("--pressure-pages", type=int, default=6, help="pressure phase KV pool, in 64-token pages")
    p.add_argument("--pressure-prompt", type=int, default=40)
    p.add_argument("--pressure-new-tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server (OMP_NUM_THREADS)")
    common.add_output_args(p, QUICK)
    return common.parse_quick(p, argv, QUICK)


class LoadWatcher:
    """Samples `/v1/loads` in a thread: the timeline of KV tokens held and requests running / waiting."""

    def __init__(self, url: str, t0: float):
        self.url, self.t0, self.samples, self.stop = url, t0, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from bench.lib import load_client as client

        while not self.stop.is_set():
            load = client.loads(self.url)
            self.samples.append((time.monotonic() - self.t0, load["num_used_tokens"], load["num_running_reqs"],
                                 load["num_waiting_reqs"]))
            self.stop.wait(client.IDLE_POLL_S)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def good_request(url: str, ids: list[int], new_tokens: int, stream: bool) -> list[int]:
    from bench.lib import load_client as client

    if stream:
        return client.stream_generate(url, ids, new_tokens)[0]
    return client.generate(url, ids, new_tokens)["output_ids"]


def bad_request(url: str, bad) -> dict:
    from bench.lib import load_client as client

    try:
        response = client.send(url, bad)
    except requests.RequestException as err:  # a dropped connection is a finding, not a crash of the campaign
        return {"name": bad.name, "status": None, "ok": False, "message": repr(err)}
    message = client.error_message(response)
    ok = 400 <= response.status_code < 500 and bad.fragment in message
    return {"name": bad.name, "status": response.status_code, "ok": ok, "message": message[:300]}


def load_phase(args, ckpt: Path, prompts: list[list[int]], vocab_size: int, work: Path, env: dict) -> dict:
    from bench.lib import load_client as client
    from sglang_glm5.serving.process import ServerProcess

    flags = ["--dtype", DTYPE, "--context-length", str(args.context_length),
             "--max-total-tokens", str(args.pool_tokens), "--enable-metrics"]
    bad_inputs = client.bad_requests(args.context_length, vocab_size)
    out: dict = {"flags": flags, "rounds": [], "wrong": [], "lost": [], "bad": [], "not_idle": []}
    with ServerProcess(ckpt, work / "load-server.log", flags, env=env) as server:
        url = server.url
        reference = [client.generate(url, p, args.new_tokens)["output_ids"]
                     for p in tqdm(prompts, desc="reference, one at a time", unit="req")]
        t0 = time.monotonic()
        with LoadWatcher(url, t0) as watcher, ThreadPoolExecutor(len(prompts) + args.disconnects) as pool:
            for r in tqdm(range(args.rounds), desc="load rounds", unit="round"):
                if r % 2 == 0:
                    client.wait_idle(url, IDLE_TIMEOUT_S)
                    client.flush_cache(url)
                start = time.monotonic() - t0
                good = [pool.submit(good_request, url, p, args.new_tokens, i % 2 == 1) for i, p in enumerate(prompts)]
                cut = [pool.submit(client.stream_then_disconnect, url, prompts[(r + k) % len(prompts)],
                                   args.context_length - len(prompts[(r + k) % len(prompts)]) - 1,
                                   CHUNKS_BEFORE_DISCONNECT) for k in range(args.disconnects)]
                out["bad"] += [bad_request(url, bad) | {"round": r} for bad in bad_inputs]
                for i, future in enumerate(good):
                    try:
                        got = future.result()
                    except (requests.RequestException, RuntimeError) as err:
                        out["lost"].append({"round": r, "prompt": i, "error": repr(err)[:300]})
                        continue
                    if got != reference[i]:
                        out["wrong"].append({"round": r, "prompt": i, "got": got, "want": reference[i]})
                disconnected = sum(f.result() == CHUNKS_BEFORE_DISCONNECT for f in cut)
                try:
                    idle = client.wait_idle(url, IDLE_TIMEOUT_S)["num_used_tokens"]
                except TimeoutError as err:
                    idle = None
                    out["not_idle"].append({"round": r, "error": str(err)[:300]})
                out["rounds"].append({"start_s": round(start, 2), "end_s": round(time.monotonic() - t0, 2),
                                      "disconnected": disconnected, "idle_used_tokens": idle,
                                      "cache": "empty" if r % 2 == 0 else "warm"})
        out["timeline"] = watcher.samples
        out["aborted_metric"] = client.metric(url, "sglang:num_aborted_requests_total")
        out["alive_at_end"] = server.proc.poll() is None
    out["returncode"] = server.returncode
    return out


def pressure_phase(args, ckpt: Path, stream: list[int], work: Path, env: dict) -> dict:
    from bench.lib import load_client as client
    from sglang_glm5.serving.process import ServerProcess

    pool_tokens = args.pressure_pages * PAGE_TOKENS
    flags = ["--dtype", DTYPE, "--context-length", str(min(args.context_length, pool_tokens)),
             "--max-total-tokens", str(pool_tokens), "--schedule-conservativeness", "0.05"]
    n, length = args.pressure_requests, args.pressure_prompt
    prompts = [stream[i * 3 * length : i * 3 * length + length] for i in range(n)]
    out: dict = {"flags": flags, "wrong": [], "lost": []}
    with ServerProcess(ckpt, work / "pressure-server.log", flags, env=env) as server:
        url = server.url
        reference = []
        for p in tqdm(prompts, desc="pressure reference, one at a time", unit="req"):
            reference.append(client.generate(url, p, args.pressure_new_tokens)["output_ids"])
            client.flush_cache(url)
        with LoadWatcher(url, time.monotonic()) as watcher, ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(client.generate, url, p, args.pressure_new_tokens) for p in prompts]
            retractions = 0
            for i, future in enumerate(futures):
                try:
                    result = future.result()
                except (requests.RequestException, RuntimeError) as err:
                    out["lost"].append({"prompt": i, "error": repr(err)[:300]})
                    continue
                retractions += result["meta_info"]["num_retractions"]
                if result["output_ids"] != reference[i]:
                    out["wrong"].append({"prompt": i, "got": result["output_ids"], "want": reference[i]})
        out["retractions"] = retractions
        out["most_running"] = max(s[2] for s in watcher.samples)
        out["most_waiting"] = max(s[3] for s in watcher.samples)
        out["most_used_tokens"] = max(s[1] for s in watcher.samples)
        out["pool_tokens"] = pool_tokens
        out["tokens_asked"] = n * (length + args.pressure_new_tokens)
        out["idle_used_tokens"] = client.wait_idle(url, IDLE_TIMEOUT_S)["num_used_tokens"]
    out["returncode"] = server.returncode
    return out


def plot(payload: dict, path: Path) -> Path:
    plt = common.pyplot()
    t, used, running, waiting = zip(*payload["load"]["timeline"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, used, color="#36c", label="KV tokens held (num_used_tokens)")
    ax2 = ax.twinx()
    ax2.plot(t, running, color="#c63", lw=0.8, label="running requests")
    ax2.plot(t, waiting, color="#999", lw=0.8, label="waiting requests")
    for r in payload["load"]["rounds"]:
        ax.axvspan(r["start_s"], r["end_s"], color="#eee", zorder=0)
    ax.set_xlabel("seconds (grey: a round of concurrent requests, disconnects and bad inputs)")
    ax.set_ylabel("KV tokens held")
    ax2.set_ylabel("requests")
    fig.legend(loc="upper right", fontsize=8)
    ax.set_title("load phase: KV held returns to 0 after every round")
    return common.save_figure(fig, path)


def markdown(payload: dict) -> str:
    a, load, pressure = payload["args"], payload["load"], payload["pressure"]
    bad_ok = sum(b["ok"] for b in load["bad"])
    rows = [
        ["load", payload["load_requests"], a["num_prompts"] + a["disconnects"],
         f"{a['rounds'] * a['disconnects']} streams cut off", f"{len(load['bad'])} ({bad_ok} got 4xx + message)",
         len(load["wrong"]), len(load["lost"]),
         ", ".join(str(r["idle_used_tokens"]) for r in load["rounds"])],
        ["pressure", a["pressure_requests"], a["pressure_requests"],
         f"pool {pressure['pool_tokens']} tokens for {pressure['tokens_asked']} asked", "-",
         len(pressure["wrong"]), len(pressure["lost"]), pressure["idle_used_tokens"]],
    ]
    failing = [f"`{b['name']}` (round {b['round']}): {b['status']} {b['message']!r}" for b in load["bad"] if not b["ok"]]
    return f"""## Load and faults: tiny GLM-5 server on CPU{" (--quick)" if a["quick"] else ""}

`{payload["command"]}`

{payload["date"]}, commit {payload["git_commit"]}; {common.machine_line(payload["machine"])}.

Tiny GLM-5 (bf16 on disk, served in {DTYPE}, index_topk {a["index_topk"]}), `launch_server` through `sglang-glm5 serve`.
Load phase: {a["num_prompts"]} prompts of {payload["prompt_lengths"][0]}..{payload["prompt_lengths"][-1]} tokens
({payload["prompts_longer_than_topk"]} longer than index_topk, {len(payload["shared_prefix_prompts"])} sharing a
{payload["shared_prefix"]}-token prefix), greedy {a["new_tokens"]} tokens, reference = each prompt alone on the same
server; {a["rounds"]} rounds of all prompts at once (half streamed), {a["disconnects"]} streams cut off after
{CHUNKS_BEFORE_DISCONNECT} events and {len(load["bad"]) // a["rounds"]} bad requests per round, radix cache emptied
before even rounds. Pressure phase: {a["pressure_requests"]} requests of {a["pressure_prompt"]}+{a["pressure_new_tokens"]}
tokens at once into a {a["pressure_pages"]}-page pool: most running at once {pressure["most_running"]}, most waiting
{pressure["most_waiting"]}, retractions {pressure["retractions"]}, most KV tokens held {pressure["most_used_tokens"]}.

{common.md_table(["phase", "good requests", "concurrent streams", "faults injected", "bad inputs",
                  "wrong outputs", "lost outputs", "KV tokens held when idle"], rows)}

Server alive at the end: {load["alive_at_end"]}; SGLang counted {load["aborted_metric"]:.0f} aborted requests
(`sglang:num_aborted_requests_total`); rounds not back to idle: {len(load["not_idle"])}.
{"Bad inputs without a 4xx naming the problem: " + "; ".join(failing) if failing else "Every bad input got a 4xx naming the problem."}

![load timeline](results/{Path(payload["plot"]).name})
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = common.announce(argv)
    machine = common.machine()
    from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
    from sglang_glm5.config import Glm5Config
    from bench.lib import load_client as client
    from tests.oracle import tokenizer

    work = args.cache_dir / "runs" / f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.index_topk = 16
    ckpt = write_tiny_checkpoint(work / "tiny-bf16", dtype="bf16", index_topk=args.index_topk)
    lengths = client.geometric_lengths(args.num_prompts, args.min_len, args.max_len)
    stream = client.token_stream(tokenizer(ckpt), 4 * args.max_len * args.num_prompts // 8)
    shared_prefix = PAGE_TOKENS + 5
    prompts, sharing = client.mixed_prompts(stream, lengths, shared_prefix, share_every=2)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    vocab_size = Glm5Config.from_pretrained(ckpt).vocab_size
    load = load_phase(args, ckpt, prompts, vocab_size, work, env)
    pressure = pressure_phase(args, ckpt, stream, work, env)
    stem = common.result_stem(NAME, args.quick)
    payload = {
        "benchmark": NAME, "command": command, "date": common.utc_now(), "git_commit": common.git_commit(),
        "machine": machine, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "prompt_lengths": lengths, "prompts_longer_than_topk": sum(n > args.index_topk for n in lengths),
        "shared_prefix": shared_prefix, "shared_prefix_prompts": sharing,
        "load_requests": args.rounds * args.num_prompts, "load": load, "pressure": pressure,
    }
    payload["plot"] = str(plot(payload, args.results_dir / f"{stem}.png"))
    wrong = len(load["wrong"]) + len(pressure["wrong"])
    lost = len(load["lost"]) + len(pressure["lost"])
    bad_failed = sum(not b["ok"] for b in load["bad"])
    print(f"wrong {wrong}, lost {lost}, bad inputs without a clear 4xx {bad_failed}, "
          f"rounds not idle {len(load['not_idle'])}")
    common.publish(payload, stem, markdown(payload), results_dir=args.results_dir, section=args.markdown)
    return int(bool(wrong or lost or bad_failed or load["not_idle"] or not load["alive_at_end"]))


if __name__ == "__main__":
    sys.exit(main())
