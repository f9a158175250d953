"""The data files of `configs/` (and any JSON file a command reads): where the folder is, reading one file, checking
one field. Every problem is a `DataFileError` (or a reader's own subclass of it) naming the file and the field.

The folder is the repository's top-level configs/, reached through the link `sglang_glm5/configs` (package-data
follows it, so wheels carry the files), or `SGLANG_GLM5_CONFIGS` (tests, site-specific presets).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIGS_ENV = "SGLANG_GLM5_CONFIGS"
PACKAGED_CONFIGS = Path(__file__).parent / "configs"


class DataFileError(ValueError):
    pass


def configs_dir() -> Path:
    path = Path(os.environ.get(CONFIGS_ENV) or PACKAGED_CONFIGS).resolve()
    if not path.is_dir():
        raise DataFileError(f"{path}: no configs folder (set {CONFIGS_ENV} to one)")
    return path


def config_path(name: str, root: Path | str | None = None) -> Path:
    """`name` in the configs folder (`root`, else `configs_dir()`)."""
    return (Path(root) if root is not None else configs_dir()) / name


def read_json_object(path: Path | str, error: type[Exception] = DataFileError) -> dict[str, Any]:
    """The JSON object in `path`; `error` (naming the file) if it is missing, not JSON, or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def field(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str,
    error: type[Exception] = DataFileError,
) -> Any:  # fmt: skip
    """`data[name]`, checked to be of `kind` (bool is never an int here); `where` names the file and enclosing field."""
    if name not in data:
        raise error(f"{where}: missing field '{name}'")
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise error(f"{where}: field '{name}' must be {names}, got {value!r}")
    return value
