from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def gsm8k_file() -> Path:
    return DATA / "gsm8k" / "test.jsonl"


@pytest.fixture
def gsm8k_dir() -> Path:
    return DATA / "gsm8k"


@pytest.fixture
def mmlu_dir() -> Path:
    return DATA / "mmlu"
