"""KV tokens per GPU that `sglang-glm5 plan` reports, with the indexer keys where they were (our model-dtype keys
beside SGLang's unread FP8 index-K buffer: issue 19's "before") and where the backend now keeps them (the store
attention/index_k_policy.py picks per GPU: FP8 in SGLang's pool on NVIDIA, unchanged on AMD). Both from the same
planner in one run, GLM-5's real config, each preset's defaults (context 202752); no GPU needed.

Run from the repo root: .venv/bin/python -m bench.kv_capacity [--presets h200-fp8 mi355x-bf16] [--with indexcache]
"""

from __future__ import annotations

import argparse

from bench.lib import common
from sglang_glm5.attention.index_k_policy import MODEL
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.datafiles import configs_dir
from sglang_glm5.presets.planner import default_index_k_store, plan

NAME = "kv-capacity"
UPSTREAM_PER_LAYER = 656 + 132  # upstream's FP8 latent + FP8 index key per token per layer (issue 19's goal)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["h200-fp8", "mi355x-bf16"])
    p.add_argument("--with", dest="features", default="", help="comma-separated preset features, as `plan --with`")
    p.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md section")
    return p.parse_args(argv)


def run(presets: list[str], features: tuple[str, ...]) -> list[dict]:
    catalog = load_catalog(configs_dir())
    rows = []
    for name in presets:
        store = default_index_k_store(catalog.preset(name))
        before = plan(catalog, name, features, index_k_store=MODEL)
        after = plan(catalog, name, features, index_k_store=store)
        fp8 = plan(catalog, name, features, index_k_store=store, kv_cache_dtype="fp8_e4m3")  # the 656 B latent
        mla_layers = int(after.kv_per_token[0].label.split(" x ")[1].split()[0])
        rows.append(dict(
            preset=name, kv_cache_dtype=after.kv_cache_dtype, store=store, mla_layers=mla_layers,
            before_bytes=before.kv_bytes_per_token, after_bytes=after.kv_bytes_per_token,
            before_tokens=before.kv_tokens, after_tokens=after.kv_tokens,
            fp8_bytes=fp8.kv_bytes_per_token, fp8_tokens=fp8.kv_tokens,
            upstream_bytes=mla_layers * UPSTREAM_PER_LAYER, items=[(i.label, i.bytes) for i in after.kv_per_token],
        ))  # fmt: skip
    return rows


def markdown(payload: dict) -> str:
    rows = payload["result"]
    return "\n".join([
        "## KV tokens per GPU: where the indexer keys live (`bench/kv_capacity.py`)",
        "",
        f"`{payload['command']}`",
        "",
        f"{payload['date']}, commit {payload['commit']}. `sglang-glm5 plan`'s figures (GLM-5's real config, each "
        "preset's mem-fraction and KV dtype, context 202752). Before: our model-dtype indexer keys (256 B per token "
        "per indexer layer) beside SGLang's unread FP8 index-K buffer (132 B). After: the index-K store the backend "
        "picks there (`pool-fp8`: the keys in SGLang's buffer, nothing beside it). Upstream: 656 B FP8 latent + 132 B "
        "index key per layer. FP8 latent: the same store with `--kv-cache-dtype fp8_e4m3`, the 656 B layout in SGLang's "
        "pool (NVIDIA's scaled layout; what `plan --kv-cache-dtype fp8_e4m3` reports).",
        "",
        common.md_table(
            ["preset", "KV dtype", "store", "B/token before", "B/token after", "tokens/GPU before", "tokens/GPU after",
             "after/before", "B/token FP8 latent", "tokens/GPU FP8 latent", "FP8/before", "upstream B/token"],
            [[r["preset"], r["kv_cache_dtype"], r["store"], r["before_bytes"], r["after_bytes"], r["before_tokens"],
              r["after_tokens"], f"{r['after_tokens'] / r['before_tokens']:.3f}x", r["fp8_bytes"], r["fp8_tokens"],
              f"{r['fp8_tokens'] / r['before_tokens']:.3f}x", r["upstream_bytes"]] for r in rows],
        ),
        "",
        "AMD keeps the model-dtype store (SGLang 0.5.23's HIP DSA pool pages are not the 64-slot FP8 layout), so its "
        "figure does not move. The presets state a BF16 KV cache (they must start where flashmla does not import); "
        "`--kv-cache-dtype auto` picks the FP8 latent on Hopper where flashmla runs (README: KV cache dtype). On AMD "
        "the FP8 column is the planner's arithmetic for the 656 B layout; SGLang's HIP pool and our AMD picks use "
        "the raw layout; there the FP8 column is what the planner counts for `--kv-cache-dtype fp8_e4m3` beside the "
        "model-dtype index-K store, not a default.",
    ])  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    command = common.announce(argv)
    features = tuple(f for f in args.features.split(",") if f)
    payload = dict(command=command, date=common.utc_now(), commit=common.git_commit(), result=run(args.presets, features))
    common.publish(payload, NAME, markdown(payload), write=not args.no_write)


if __name__ == "__main__":
    main()
