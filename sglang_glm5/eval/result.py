"""The JSON every eval/bench command writes: what was measured, on which server and model, by which command."""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
from pathlib import Path

PROGRAM = "sglang-glm5"
NOT_OPTIONS = frozenset({"func", "rest", "command", "passthrough", "command_path", "eval_task", "bench_task"})


def command_line(args: argparse.Namespace) -> str:
    """The command with every effective setting spelled out (defaults included), so it reruns the same way."""
    words = [PROGRAM, *args.command_path]
    for key, value in vars(args).items():
        if key in NOT_OPTIONS or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    rest = getattr(args, "rest", None) or []
    return shlex.join(words + rest)


def document(task: str, args: argparse.Namespace, model: str, base_url: str, metrics: dict, **extra) -> dict:
    return {
        "task": task,
        "model": model,
        "base_url": base_url,
        "command": command_line(args),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **metrics,
        **extra,
    }


def write(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
