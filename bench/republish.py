"""Re-render RESULTS.md sections from their recorded results (bench/results/<stem>.json) through each benchmark's own
markdown: after a change to how a section is written, without re-running the benchmark. It runs nothing.

    .venv/bin/python -m bench.republish [STEM ...]      # default: every stem below that has a recorded result

Not here: long_context and cookbook_checks, whose recorded JSON does not hold all their section says (they render
while running); re-run them instead. tests/bench/test_results_generated.py checks that each section below is exactly
what its markdown makes of its recorded result: a hand edit inside one fails it.
"""

from __future__ import annotations

import argparse
import importlib

from bench.lib import common

# section stem -> the bench module whose `markdown(payload)` writes it
RENDERED_BY = {
    "serving_throughput": "serving_throughput", "weight_loading": "weight_loading", "kernels": "kernels",
    "indexcache": "indexcache", "faults": "faults", "speculative": "speculative", "kv-capacity": "kv_capacity",
    "tensor_parallel": "tensor_parallel", "fp8_dequant": "fp8_dequant", "findings": "findings",
}  # fmt: skip


def renderer(stem: str):
    return importlib.import_module(f"bench.{RENDERED_BY[stem]}").markdown


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stems", nargs="*", metavar="STEM", help=f"of {sorted(RENDERED_BY)}; default: all with a recorded result")
    args = p.parse_args(argv)
    stems = args.stems or [s for s in RENDERED_BY if (common.RESULTS_DIR / f"{s}.json").is_file()]
    for stem in stems:
        print(f"republished {stem} in {common.republish(stem, renderer(stem))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
