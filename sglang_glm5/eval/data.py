"""Where evaluation data comes from: a local path, else a cached copy of the canonical public file, else a download
into that cache (once); when none works, an error that says what was tried and how to pass a local copy."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import requests

from sglang_glm5.eval.errors import EvalError

CACHE_ENV = "SGLANG_GLM5_CACHE"
DOWNLOAD_TIMEOUT_S = 60
# The files SGLang's benchmark/gsm8k and benchmark/mmlu scripts fetch.
GSM8K_URL = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl"
MMLU_URL = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sglang-glm5") / "eval"


def download(url: str, dest: Path, what: str, local_hint: str) -> Path:
    """`url` -> `dest` (written whole or not at all)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_S) as response:
            response.raise_for_status()
            with open(tmp, "wb") as f:
                f.writelines(response.iter_content(1 << 20))
    except (requests.RequestException, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise EvalError(
            f"{what}: no --data given, no cached copy at {dest}, and downloading {url} failed "
            f"({type(e).__name__}: {e}). Without network access pass a local copy: --data {local_hint}"
        ) from None
    os.replace(tmp, dest)
    return dest


def gsm8k_path(data: str | None, cache_dir: Path, url: str = GSM8K_URL) -> Path:
    """A GSM8K jsonl file, or a folder with test.jsonl (and train.jsonl for the shots)."""
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise EvalError(f"--data {data}: no such file or folder (GSM8K: a jsonl file, or a folder with test.jsonl)")
        return path
    cached = cache_dir / "gsm8k" / "test.jsonl"
    return cached if cached.is_file() else download(url, cached, "GSM8K", "PATH/test.jsonl")


def mmlu_dir(data: str | None, cache_dir: Path, url: str = MMLU_URL) -> Path:
    """A folder with dev/ and test/ (one `SUBJECT_dev.csv` / `SUBJECT_test.csv` per subject)."""
    if data is not None:
        path = Path(data)
        if not path.is_dir():
            raise EvalError(f"--data {data}: no such folder (MMLU: a folder with dev/ and test/ csv files)")
        return path
    root = cache_dir / "mmlu"
    extracted = root / "data"
    if (extracted / "test").is_dir():
        return extracted
    archive = download(url, root / "data.tar", "MMLU", "PATH (a folder with dev/ and test/)")
    staging = Path(tempfile.mkdtemp(dir=root))
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    if not (staging / "data" / "test").is_dir():
        shutil.rmtree(staging)
        raise EvalError(f"{archive} (from {url}): no data/test folder inside")
    os.replace(staging / "data", extracted)
    shutil.rmtree(staging)
    archive.unlink()
    return extracted
