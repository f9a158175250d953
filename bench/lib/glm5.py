"""GLM-5's real dimensions for the benchmarks: configs/glm5-config.json (the public GLM-5-FP8 config.json) read through
the validated `Glm5Config`, so no benchmark hard-codes a dimension."""

from __future__ import annotations

import functools

from sglang_glm5.config import Glm5Config
from sglang_glm5.datafiles import config_path, read_json_object

GLM5_CONFIG_FILE = "glm5-config.json"  # in configs/


@functools.cache
def glm5_json() -> dict:
    """The file as written (a fresh copy each call is not needed: callers copy before changing it)."""
    return read_json_object(config_path(GLM5_CONFIG_FILE))


@functools.cache
def glm5() -> Glm5Config:
    path = config_path(GLM5_CONFIG_FILE)
    return Glm5Config.from_dict(dict(glm5_json()), source=str(path))
