"""Our option names -> launch_server arguments, spelled as the installed SGLang's own argument parser defines them."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from sglang_glm5.presets.catalog import OPTIONS_FILE, thaw
from sglang_glm5.presets.files import PresetError

DEPRECATED = "deprecated"


class SGLangArgumentError(PresetError):
    pass


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise SGLangArgumentError(f"SGLang {version('sglang')} launch_server rejects the command: {message}")


def sglang_parser() -> argparse.ArgumentParser:
    """launch_server's parser as `python -m sglang.launch_server` builds it: plugins first (they may add parser names)."""
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import ServerArgs

    load_plugins()
    parser = _RaisingParser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parser.parse_args(argv)


def is_deprecated(action: argparse.Action) -> bool:
    help_text = (action.help or "").lstrip("(").lower()
    return type(action).__name__.lower().startswith(DEPRECATED) or help_text.startswith(DEPRECATED)


def _usable_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and not is_deprecated(a)}


def parsed_options(parser: argparse.ArgumentParser, table: Mapping[str, tuple], ns: argparse.Namespace) -> dict[str, Any]:
    """Our option names -> the values SGLang parsed into the arguments that carry them (options it lacks are left out)."""
    actions = _usable_actions(parser)
    out = {}
    for name, candidates in table.items():
        dest = next((c["dest"] for c in candidates if c["dest"] in actions), None)
        if dest is not None:
            out[name] = getattr(ns, dest)
    return out


def to_argv(parser: argparse.ArgumentParser, table: Mapping[str, tuple], options: Mapping[str, Any]) -> list[str]:
    actions = _usable_actions(parser)
    argv: list[str] = []
    for name, value in options.items():
        if name not in table:
            raise PresetError(f"option '{name}' is not in {OPTIONS_FILE}")
        argv += _one(name, value, table[name], actions)
    return argv


def _one(name: str, value: Any, candidates: tuple, actions: Mapping[str, argparse.Action]) -> list[str]:
    for candidate in candidates:
        action = actions.get(candidate["dest"])
        if action is not None:
            return _emit(name, candidate.get("value", value), action, candidate.get("value_spellings", {}))
    dests = [c["dest"] for c in candidates]
    raise PresetError(
        f"option '{name}': SGLang {version('sglang')} defines none of the arguments {dests} ({OPTIONS_FILE})"
    )


def _emit(name: str, value: Any, action: argparse.Action, spellings: Mapping[str, Any]) -> list[str]:
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag] if _flag_value(name, value, flag) else [action.option_strings[1]]
    if action.nargs == 0:
        return [flag] if _flag_value(name, value, flag) else []
    if isinstance(value, bool):
        raise PresetError(f"option '{name}': {flag} takes a value, got {value!r}")
    if isinstance(value, Mapping):
        return [flag, json.dumps(thaw(value), separators=(",", ":"))]
    text = str(value)
    if action.choices is not None:
        tried = [str(s) for s in spellings.get(text, [text])]
        chosen = next((s for s in tried if s in action.choices), None)
        if chosen is None:
            raise PresetError(f"option '{name}': {flag} accepts none of {tried} (choices: {sorted(map(str, action.choices))})")
        text = chosen
    return [flag, text]


def _flag_value(name: str, value: Any, flag: str) -> bool:
    if not isinstance(value, bool):
        raise PresetError(f"option '{name}': {flag} is an on/off flag, got {value!r}")
    return value
