"""`sglang-glm5 launch --preset NAME [--with eagle,...] [--model-path P] [--tp N] [--print-only] [-- launch_server flags]`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from sglang_glm5.attention.capabilities import DSACapabilityError
from sglang_glm5.attention.kv_policy import STRICT_ENV
from sglang_glm5.datafiles import DataFileError
from sglang_glm5.presets.catalog import Catalog, load_catalog
from sglang_glm5.presets.compose import (
    LaunchSpec, Refusal, add_preset_command, allowed_feature, compose, parse_features,
)
from sglang_glm5.presets.flags import parse, parsed_options, sglang_parser, to_argv
from sglang_glm5.presets.planner import EAGLE, check_weights_fit
from sglang_glm5.serving.cli import launch_command
from sglang_glm5.serving.startup_check import StartupDecision, decide, refuse_speculation_with_attention_dp, request_from_args

MULTI_NODE_NOTE = "tp {tp} spans {nnodes} nodes ({ranks} ranks each): run node R's command on node R, the head (node 0) first"
HEAD_PLACEHOLDER = "HEAD_IP"  # printed when --head-address is not given
DEFAULT_DIST_PORT = 25000  # SGLang's documented example port for --dist-init-addr
MULTI_NODE_HOST = "0.0.0.0"  # the head's HTTP server must be reachable from outside; launch_server's default is 127.0.0.1


def head_address(text: str | None) -> str:
    """`HOST[:PORT]` -> `HOST:PORT` (every node's --dist-init-addr)."""
    if text is None:
        return f"{HEAD_PLACEHOLDER}:{DEFAULT_DIST_PORT}"
    host, colon, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not colon:
        return f"{text}:{DEFAULT_DIST_PORT}"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Refusal(f"--head-address {text!r} is not HOST or HOST:PORT (e.g. 10.0.0.1:{DEFAULT_DIST_PORT})")
    return text


def node_flags(nnodes: int, node_rank: int, address: str, extra: list[str]) -> list[str]:
    """launch_server flags that make one node of a multi-node launch; a --host given after `--` wins."""
    host = [] if "--host" in extra or any(a.startswith("--host=") for a in extra) else ["--host", MULTI_NODE_HOST]
    return ["--node-rank", str(node_rank), "--dist-init-addr", address, *host]


def node_commands(catalog: Catalog, spec: LaunchSpec, extra: list[str], env: dict[str, str], address: str):
    """[(command, env, parsed)] for node 0 .. nnodes-1 (one entry, unchanged, for a single node)."""
    if spec.nnodes == 1:
        return [build(catalog, spec, extra, env)]
    return [build(catalog, spec, node_flags(spec.nnodes, r, address, extra) + extra, env) for r in range(spec.nnodes)]


def build(catalog: Catalog, spec: LaunchSpec, extra: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """The launch_server process (command, env) for `spec` plus `extra` flags, checked by the installed SGLang's parser,
    and the values it parsed under our option names."""
    parser = sglang_parser()
    argv = to_argv(parser, catalog.options, spec.options) + extra
    command, env = launch_command(argv, env)
    return command, env, parsed_options(parser, catalog.options, server_args(parser, command))


def server_args(parser: argparse.ArgumentParser, command: list[str]) -> argparse.Namespace:
    """launch_server's own parse of `command` (SGLang's server-args names)."""
    return parse(parser, command[command.index("sglang.launch_server") + 1 :])


def check_extra(catalog: Catalog, spec: LaunchSpec, parsed: dict[str, Any]) -> None:
    """Flags after `--` win in launch_server; the preset's checks must see what will really run."""
    if parsed["tp"] != spec.tp:
        raise Refusal(f"tp {parsed['tp']} given after `--` would skip the preset's checks: use --tp {parsed['tp']} instead")
    if parsed.get("mem_fraction_static") != spec.options.get("mem_fraction_static"):
        check_weights_fit(catalog, spec, parsed["mem_fraction_static"])
    if parsed.get("speculative_algorithm") and EAGLE not in spec.features:
        allowed_feature(catalog, spec.preset, EAGLE)  # raw EAGLE flags get the same vendor check as `--with eagle`


def check_startup(catalog: Catalog, command: list[str], env: dict[str, str]) -> StartupDecision:
    """The server's start-up check (KV dtype, DSA backends x this device), before anything runs: the same request the
    server's start-up hooks build, from launch_server's parse of the command."""
    args = server_args(sglang_parser(), command)
    config = Path(args.model_path) / "config.json"
    raw = json.loads(config.read_text()) if config.is_file() else None
    heads = raw["num_attention_heads"] if raw else catalog.model.num_attention_heads
    latent = (raw["kv_lora_rank"], raw["qk_rope_head_dim"]) if raw else None  # checked like the server's hook does
    request = request_from_args(args, heads, env, latent_dims=latent)
    return decide(request, env=env, warn=lambda message: print(f"warning: {message}", file=sys.stderr))


def run(args: argparse.Namespace) -> int:
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        catalog = load_catalog()
        spec = compose(catalog, args.preset, parse_features(args.features), args.tp, args.model_path, args.nnodes)
        check_weights_fit(catalog, spec)
        env = dict(os.environ, **({STRICT_ENV: "1"} if args.strict else {}))
        nodes = node_commands(catalog, spec, extra, env, head_address(args.head_address))
        for _, _, parsed in nodes:
            check_extra(catalog, spec, parsed)
            # also with --print-only, which skips the start-up check below
            refuse_speculation_with_attention_dp(parsed.get("speculative_algorithm"), parsed.get("attention_dp_size") or 1)
        chosen = check_node_choice(spec, args)
        if not args.print_only:
            check_startup(catalog, nodes[chosen][0], nodes[chosen][1])
    except (DataFileError, DSACapabilityError) as e:
        print(f"sglang-glm5 launch: error: {e}", file=sys.stderr)
        return 2
    for name in spec.features:
        if catalog.features[name].note:
            print(f"note ({name}): {catalog.features[name].note}")
    if spec.nnodes > 1:
        print(MULTI_NODE_NOTE.format(tp=spec.tp, nnodes=spec.nnodes, ranks=spec.tp // spec.nnodes))
    shown = range(len(nodes)) if args.print_only and args.node_rank is None else [chosen]
    for r in shown:
        if spec.nnodes > 1:
            print(f"# node {r}" + (" (head)" if r == 0 else ""))
        print("+", shlex.join(nodes[r][0]), flush=True)
    if args.print_only:
        return 0
    command, env, _ = nodes[chosen]
    os.execvpe(command[0], command, env)


def check_node_choice(spec: LaunchSpec, args: argparse.Namespace) -> int:
    """The node whose command runs (or is printed alone): --node-rank, which a multi-node run needs with --head-address."""
    if spec.nnodes == 1:
        if args.node_rank not in (None, 0) or args.head_address is not None:
            raise Refusal(f"tp {spec.tp} runs on one node: drop --node-rank/--head-address, or pass --nnodes N to spread it")
        return 0
    if args.node_rank is not None and not 0 <= args.node_rank < spec.nnodes:
        raise Refusal(f"--node-rank {args.node_rank} is outside 0..{spec.nnodes - 1} ({spec.nnodes} nodes)")
    if not args.print_only and (args.node_rank is None or args.head_address is None):
        raise Refusal(
            f"tp {spec.tp} spans {spec.nnodes} nodes: run on each node with --node-rank R --head-address HOST[:PORT]"
            " (node 0's address), or --print-only to see every node's command"
        )
    return args.node_rank or 0


def add_parser(subparsers) -> None:
    parser = add_preset_command(
        subparsers,
        "launch",
        help="serve GLM-5 with a hardware preset (configs/presets), checked against the installed SGLang's parser",
        description="Builds the launch_server command of a preset (see `sglang-glm5 presets`), prints it and runs it "
        "through `sglang-glm5 serve`. Flags after `--` go to launch_server as given.",
    )
    parser.add_argument("--model-path", help="checkpoint directory or hub id (default: the preset's)")
    parser.add_argument("--nnodes", type=int, help="spread tp over N nodes (default: as many as the preset's GPUs per node need)")
    parser.add_argument(
        "--head-address", metavar="HOST[:PORT]",
        help=f"multi-node: node 0's address, every node's --dist-init-addr (default port {DEFAULT_DIST_PORT})",
    )
    parser.add_argument("--node-rank", type=int, help="multi-node: run (or print) this node's command")
    parser.add_argument("--print-only", action="store_true", help="print the command, do not run it")
    parser.add_argument(
        "--strict", action="store_true", help=f"refuse FP8 KV for a checkpoint without calibrated k/v scales (sets {STRICT_ENV}=1)"
    )
    parser.set_defaults(func=run, passthrough=True)
