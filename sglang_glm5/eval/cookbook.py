"""The cookbook's benchmark settings and published figures (configs/cookbook-benchmarks.json), read once, checked."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sglang_glm5.eval.errors import EvalError
from sglang_glm5.datafiles import read_json_object
from sglang_glm5.datafiles import configs_dir

COOKBOOK_FILE = "cookbook-benchmarks.json"


@dataclass(frozen=True)
class Published:
    task: str
    profile: str | None
    metric: str
    value: float
    setup: str


@dataclass(frozen=True)
class Cookbook:
    source: str
    speed_profiles: dict[str, dict[str, str]]  # profile -> bench_serving flag -> value
    published: tuple[Published, ...]


@cache
def cookbook(path: Path | None = None) -> Cookbook:
    path = path or configs_dir() / COOKBOOK_FILE
    data = read_json_object(path, EvalError)
    try:
        profiles = {name: dict(p["bench_serving"]) for name, p in data["speed_profiles"].items()}
        published = tuple(
            Published(p["task"], p.get("profile"), p["metric"], float(p["value"]), p["setup"]) for p in data["published"]
        )
        return Cookbook(data["source"], profiles, published)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EvalError(f"{path}: malformed ({type(e).__name__}: {e})") from None
