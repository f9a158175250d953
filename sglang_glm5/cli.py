from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes add_parser(subparsers), which registers one subcommand and sets `func` (args -> exit code).
SUBCOMMAND_MODULES = (
    "sglang_glm5.checkpoint.cli",
    "sglang_glm5.serving.cli",
    "sglang_glm5.serving.demo",
    "sglang_glm5.presets.list_cli",
    "sglang_glm5.presets.launch_cli",
    "sglang_glm5.presets.plan_cli",
    "sglang_glm5.eval.cli",
    "sglang_glm5.eval.bench_cli",
    "sglang_glm5.eval.report_cli",
    "sglang_glm5.indexcache.cli",
)
# Subcommands that only exec another program: their parser alone is built, so the exec (every server start of the
# demo, tests and benchmarks) does not first wait for the other subcommands' imports (torch: seconds on 2 cores).
EXEC_SUBCOMMANDS = {"serve": "sglang_glm5.serving.cli"}


def build_parser(modules: tuple[str, ...] = SUBCOMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sglang-glm5", description="GLM-5 for SGLang")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser((EXEC_SUBCOMMANDS[argv[0]],) if argv and argv[0] in EXEC_SUBCOMMANDS else SUBCOMMAND_MODULES)
    # Subcommands that wrap another program (serve -> launch_server) set `passthrough` and get the rest verbatim.
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
