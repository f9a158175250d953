"""The presets' error: a `DataFileError` (sglang_glm5/datafiles.py reads and checks the files), so a bad preset file
and a bad preset choice are caught alike."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sglang_glm5 import datafiles

PRESETS_DIR = "presets"  # in configs/


class PresetError(datafiles.DataFileError):
    pass


def read_json(path: Path) -> dict[str, Any]:
    return datafiles.read_json_object(path, PresetError)


def field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    return datafiles.field(data, name, kind, where, PresetError)
