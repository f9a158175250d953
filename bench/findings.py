"""Findings: one line per benchmark, each derived from that benchmark's recorded result (bench/results/<stem>.json), so
the `findings` section of bench/RESULTS.md is generated like every other section and never quotes a number its section
no longer shows. Re-run after any benchmark (it runs nothing itself, it reads the results):

    .venv/bin/python -m bench.findings

Explanations that no recorded number carries (why FP8 loading is slow, why the benchmarks pin one torch thread) live in
README's Benchmarks section, not here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.lib import common

NAME = "findings"


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def serving(d: dict) -> str:
    s, h = d["server"], d["hf"]
    work = (f"equal work: {s['tokens']['prompt']} prompt + {s['tokens']['output']} output tokens served vs"
            f" {h['tokens']['prompt']} + {h['tokens']['output']} for HF, one prompt per `generate`"
            if "tokens" in s and "tokens" in h else "HF as one left-padded batch (more prompt tokens than the server)")
    top = (s.get("profile") or {}).get("self_top") or []
    hot = f"; top self time in the scheduler: `{top[0][0]}` ({top[0][1]:.0%})" if top else ""
    return (f"**Serving: our server {d['ratio']:.2f}x HF transformers in wall clock** ({d['server_tok_s']:.0f} vs"
            f" {d['hf_tok_s']:.0f} output tok/s), {d['cpu_ratio']:.2f}x per CPU-second ({work}); greedy outputs equal"
            f" to HF's for {d['agreement']}/{d['args']['num_prompts']} prompts{hot}.")  # fmt: skip


def weight_loading(d: dict) -> str:
    parts = []
    for dtype, r in d["results"].items():
        sm = r["summary"]
        verdict = "within" if sm["within_goal"] else "**not** within"
        line = (f"{dtype}: {_pct(sm['overhead'])} median wall ({_pct(sm['overhead_best_vs_copy'])} best-of-N,"
                f" {_pct(sm['overhead_cpu_vs_copy'])} CPU), {verdict} the {d['overhead_goal']:.0%} goal")
        if "projected_full_glm5_overhead" in sm:
            line += f", projected {_pct(sm['projected_full_glm5_overhead'])} for the full GLM-5 byte mix"
        parts.append(line + f"; server log {sm['median_server_weight_load_s']:.1f} s")
    return "**Weight loading over SGLang's iterator + one copy**: " + "; ".join(parts) + "."


def fp8_dequant(d: dict) -> str:
    rows = d["results"].values()
    speed = [r["speedup"] for r in rows]
    rate = [r["ours_Mparams_per_s"] for r in rows]
    cast = [r["fp8_to_fp32_cast_s"] / r["ours_s"] for r in rows]
    same = all(r["bit_identical"] for r in rows)
    return (f"**FP8 dequantization on CPU: {min(rate):.0f}-{max(rate):.0f} Mparam/s**; broadcasting the scales instead of"
            f" `repeat_interleave` is {min(speed):.2f}-{max(speed):.2f}x ({'bit-identical' if same else 'NOT identical'});"
            f" the fp8->fp32 cast alone is {min(cast):.0%}-{max(cast):.0%} of the time.")  # fmt: skip


def kernels(d: dict) -> str:
    lines = []
    for c in d["result"]["curves"]:
        first, last = c["points"][0], c["points"][-1]
        lines.append(
            f"**DSA decode ({c['provider']}, {c['heads']} heads): dense/sparse {last['dense_over_sparse']:.2f}x at"
            f" {last['ctx']}** (model {last['model_dense_over_sparse']:.1f}x); sparse grows"
            f" {c['sparse_growth']:.2f}x from {first['ctx']} to {last['ctx']} (model {c['sparse_growth_model']:.1f}x),"
            f" the indexer being {last['indexer_share']:.0%} of the sparse step there"
        )
    return "; ".join(lines) + "." if lines else "DSA kernels: no decode curve recorded."


def indexcache(d: dict) -> str:
    dec, pre = d["decode"], d.get("prefill")
    line = (f"**IndexCache: an S layer's attention takes {dec['s_over_f']:.2f}x an F layer's** (decode, ctx"
            f" {dec['context']}; {dec['s_over_f_with_projections']:.2f}x with the MLA projections)")
    if pre and "indexer_share" in pre["rows"][0]:
        speed = {r["name"]: pre["rows"][0]["seconds"] / r["seconds"] for r in pre["rows"]}
        line += (f"; prefill of {pre['tokens']} tokens {', '.join(f'{k} {v:.2f}x' for k, v in speed.items() if v != 1.0)}"
                 f" vs all-F, the indexer measured at {pre['indexer_share_all_f']:.0%} of all-F's prefill")
    return line + "."


def speculative(d: dict) -> str:
    p, e = d["plain"], d["eagle"]
    return (f"**EAGLE with the MTP draft on CPU: {e['tok_s'] / p['tok_s']:.2f}x the decode speed without it**"
            f" ({e['tok_s']:.0f} vs {p['tok_s']:.0f} tok/s) at accept length {e['accept_length']:.2f}; outputs"
            f" identical: {d['identical']}.")  # fmt: skip


def tensor_parallel(d: dict) -> str:
    tok, m = {r["tp"]: r["tok_s"] for r in d["runs"]}, d["machine"]
    contended = m["loadavg_1m_at_start"] > m["cores"]
    return (f"**tp 2 vs tp 1 on CPU: {tok[2] / tok[1]:.2f}x decode tok/s** ({tok[2]:.1f} vs {tok[1]:.1f}; outputs"
            f" identical: {d['identical']}) at load average {m['loadavg_1m_at_start']} on {m['cores']} cores"
            + (": on contended cores two server processes get a larger share than one." if contended else "."))


def long_context(d: dict) -> str:
    n = max(d["sparse"], key=int)
    s, k = d["sparse"][n], d["dense"][n]
    return (f"**Long context at {n} tokens: sparse prefill {k['prefill_ms_per_token'] / s['prefill_ms_per_token']:.1f}x"
            f" faster than the dense stand-in**, decode {k['decode_ms_per_token'] / s['decode_ms_per_token']:.2f}x"
            " (tiny dims: the indexer, which scores every key, dominates).")  # fmt: skip


def kv_capacity(d: dict) -> str:
    rows = [f"{r['preset']} {r['before_tokens']} -> {r['after_tokens']} ({r['after_tokens'] / r['before_tokens']:.2f}x;"
            f" FP8 latent {r['fp8_tokens']})" for r in d["result"]]  # fmt: skip
    return "**KV tokens per GPU, before -> after the index-K store**: " + "; ".join(rows) + "."


def faults(d: dict) -> str:
    load, pressure = d["load"], d["pressure"]
    bad_ok = sum(b["ok"] for b in load["bad"])
    return (f"**Under load and faults: {len(load['wrong']) + len(pressure['wrong'])} wrong and"
            f" {len(load['lost']) + len(pressure['lost'])} lost outputs** over {d['load_requests']} + "
            f"{d['args']['pressure_requests']} requests; {bad_ok}/{len(load['bad'])} bad inputs got a 4xx with a"
            f" message; server alive at the end: {load['alive_at_end']}.")  # fmt: skip


# result stem -> its finding: one line from its recorded JSON (a stem with no result is listed as not run)
FINDINGS = {
    "serving_throughput": serving, "weight_loading": weight_loading, "fp8_dequant": fp8_dequant, "kernels": kernels,
    "indexcache": indexcache, "speculative": speculative, "tensor_parallel": tensor_parallel,
    "long_context": long_context, "kv-capacity": kv_capacity, "faults": faults,
}  # fmt: skip


def derive(results_dir: Path) -> dict:
    """Per stem: its finding, the run's date and load average at start (None where not recorded), or why none."""
    out = {}
    for stem, finding in FINDINGS.items():
        path = results_dir / f"{stem}.json"
        if not path.is_file():
            out[stem] = {"missing": f"no recorded run ({path.name} absent)"}
            continue
        d = json.loads(path.read_text())
        machine = d.get("machine") or {}
        out[stem] = {"line": finding(d), "date": d.get("date"), "load": machine.get("loadavg_1m_at_start")}
    return out


def markdown(payload: dict) -> str:
    lines = [
        "## Findings: one line per benchmark, derived from its recorded result (`bench/findings.py`)",
        "",
        f"`{payload['command']}` ({payload['date']}, commit {payload['commit']}): reads `bench/results/<section>.json`;"
        " each line names its section, that run's date and its load average at start.",
        "",
    ]
    for stem, f in payload["findings"].items():
        if "missing" in f:
            lines.append(f"- `{stem}`: {f['missing']}.")
            continue
        when = ", ".join(x for x in (f["date"], f["load"] is not None and f"load {f['load']}") if x)
        lines.append(f"- {f['line']} (`{stem}`{'; ' + when if when else ''})")
    loads = [f["load"] for f in payload["findings"].values() if f.get("load") is not None]
    if loads:
        lines += ["", f"Load average at the start of these runs: {min(loads)} to {max(loads)} on a 2-core machine shared"
                  " with other jobs; where a section reports repeats, read its best-of-N and CPU-time figures as the"
                  " steadier ones."]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    p.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md section")
    args = p.parse_args(argv)
    command = common.announce(argv)
    payload = dict(command=command, date=common.utc_now(), commit=common.git_commit(),
                   findings=derive(args.results_dir))  # fmt: skip
    common.publish(payload, NAME, markdown(payload), write=not args.no_write, results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
