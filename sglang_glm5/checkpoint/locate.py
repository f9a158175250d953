"""Where a `--model-path` lives on disk: a local directory as given, or a hub id's snapshot in the local Hugging Face
cache (never downloaded here: SGLang downloads, we read what it left), so the header checks, the raw config.json and
the KV-scale check run for `zai-org/GLM-5-FP8` as for a directory. A hub id that is not cached gets a
`CheckpointNotCached` saying so, where it looked, and whether downloads are off."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OFFLINE_ENV = "HF_HUB_OFFLINE"


class CheckpointNotCached(FileNotFoundError):
    pass


def hub_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """huggingface_hub's rule, read now (its constants are read once at import): HF_HUB_CACHE, HF_HOME/hub, default."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def checkpoint_dir(
    model_path: str | os.PathLike, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] = os.environ,
) -> Path:
    """The local checkpoint directory for a path or a cached hub id; CheckpointNotCached otherwise."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    cache = Path(cache_dir) if cache_dir else hub_cache_dir(env)
    try:
        return Path(
            snapshot_download(str(model_path), revision=revision, cache_dir=str(cache), local_files_only=True)
        )
    except HFValidationError:
        raise CheckpointNotCached(f"{model_path}: no such directory, and not a hub id") from None
    except LocalEntryNotFoundError:
        offline = " (downloads are off: HF_HUB_OFFLINE=1)" if env.get(OFFLINE_ENV, "") not in ("", "0") else ""
        raise CheckpointNotCached(
            f"{model_path}: not a local directory, and this hub id{f' at revision {revision}' if revision else ''} "
            f"is not in the local Hugging Face cache {cache}{offline}: download it first "
            f"(`hf download {model_path}`) or pass a local directory"
        ) from None
