"""`sglang-glm5 presets`: the presets in configs/presets as a table."""

from __future__ import annotations

import argparse
import sys

from sglang_glm5.presets.catalog import Catalog, load_catalog
from sglang_glm5.datafiles import DataFileError

COLUMNS = ("preset", "hardware", "dtype", "tp", "model", "--with", "mem", "kv cache", "description")
UNSET = "-"


def rows(catalog: Catalog) -> list[tuple[str, ...]]:
    out = []
    for name, p in catalog.presets.items():
        features = catalog.allowed_features(p)
        out.append((
            name, p.hardware.name, p.dtype, str(p.tp), p.model_path or "--model-path DIR", ",".join(features) or UNSET,
            str(p.options.get("mem_fraction_static", UNSET)), p.options.get("kv_cache_dtype", UNSET), p.description,
        ))
    return out


def table(catalog: Catalog) -> str:
    body = [COLUMNS, *rows(catalog)]
    widths = [max(len(r[i]) for r in body) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in body)


def run(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog()
    except DataFileError as e:
        print(f"sglang-glm5 presets: error: {e}", file=sys.stderr)
        return 2
    print(table(catalog))
    print(f"\nfiles: {catalog.root}/presets/*.json; features: {catalog.root}/features.json")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("presets", help="list the hardware presets of `sglang-glm5 launch` and `plan`")
    parser.set_defaults(func=run)
