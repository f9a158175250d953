"""Where the preset data lives and how it is read: every error names the file (and the field, where there is one)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sglang_glm5.jsonfile import read_json_object

CONFIGS_ENV = "SGLANG_GLM5_CONFIGS"  # another configs/ folder (tests, site-specific presets)
# The repository's top-level configs/, through a link that package-data follows, so wheels carry the files.
PACKAGED_CONFIGS = Path(__file__).parent / "configs"
PRESETS_DIR = "presets"


class PresetError(ValueError):
    pass


def configs_dir() -> Path:
    path = Path(os.environ.get(CONFIGS_ENV) or PACKAGED_CONFIGS).resolve()
    if not path.is_dir():
        raise PresetError(f"{path}: no configs folder (set {CONFIGS_ENV} to one)")
    return path


def read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, PresetError)


def field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`data[name]`, checked to be of `kind` (bool is never an int here); `where` names the file and enclosing field."""
    if name not in data:
        raise PresetError(f"{where}: missing field '{name}'")
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise PresetError(f"{where}: field '{name}' must be {names}, got {value!r}")
    return value
