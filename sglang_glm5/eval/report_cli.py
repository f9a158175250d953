"""`sglang-glm5 report RESULT.json... -o report.md [--png report.png]`: measured next to the cookbook's figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_glm5.eval.cookbook import cookbook
from sglang_glm5.eval.errors import reports_errors
from sglang_glm5.eval.report import write_report


@reports_errors
def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    png = None if args.no_png else Path(args.png) if args.png else out.with_suffix(".png")
    md, png = write_report(args.results, out, png, cookbook())
    print(f"wrote {md}" + (f" and {png}" if png else ""))
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="eval/bench result JSONs next to the cookbook's published figures")
    parser.add_argument("results", nargs="+", help="JSON files written by `eval` and `bench speed`")
    parser.add_argument("-o", "--output", default="report.md")
    parser.add_argument("--png", default=None, help="default: the report's name with .png")
    parser.add_argument("--no-png", action="store_true")
    parser.set_defaults(func=run, command_path=("report",))
