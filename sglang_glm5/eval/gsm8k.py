"""GSM8K as SGLang's benchmark/gsm8k/bench_sglang.py poses it: k solved examples, then "Question: ...\\nAnswer:";
the prediction is the last integer of the reply, the label the last integer of the reference answer ("#### N").

Shots, as SGLang takes them: the first k records of the same file (which are also among the questions asked).
Given a folder with train.jsonl beside test.jsonl, the shots come from train.jsonl instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sglang_glm5.eval.errors import EvalError

STOP = ("Question", "Assistant:", "<|separator|>")
MAX_TOKENS = 512
TEST_FILE = "test.jsonl"
TRAIN_FILE = "train.jsonl"
INTEGER = re.compile(r"\d+")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # worked solution ending in "#### N"


@dataclass(frozen=True)
class Prompts:
    prompts: list[str]
    labels: list[int]
    shots_from: str


def read_problems(path: Path) -> list[Problem]:
    problems = []
    if not path.is_file():
        raise EvalError(f"{path}: no such file (GSM8K jsonl, one {{'question', 'answer'}} object a line)")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}:{line_no}: not JSON ({e})") from None
            if not isinstance(record, dict):
                raise EvalError(f"{path}:{line_no}: expected an object with 'question' and 'answer'")
            for key in ("question", "answer"):
                if not isinstance(record.get(key), str):
                    raise EvalError(f"{path}:{line_no}: missing string field '{key}'")
            problems.append(Problem(record["question"], record["answer"]))
    if not problems:
        raise EvalError(f"{path}: no GSM8K records")
    return problems


def answer_value(text: str) -> int | None:
    """Last run of digits after dropping thousands commas (SGLang's rule: "-3" reads 3, "2.5" reads 5, and "0123"
    is invalid, since SGLang reads the digits as a Python literal)."""
    numbers = INTEGER.findall(text.replace(",", ""))
    if not numbers or numbers[-1][0] == "0" and numbers[-1].strip("0"):
        return None
    return int(numbers[-1])


def format_example(problem: Problem, with_answer: bool) -> str:
    text = f"Question: {problem.question}\nAnswer:"
    return f"{text} {problem.answer}" if with_answer else text


def few_shot_prefix(shots: list[Problem]) -> str:
    return "".join(format_example(p, True) + "\n\n" for p in shots)


def build_prompts(path: Path, num_questions: int, num_shots: int) -> Prompts:
    if num_questions < 1 or num_shots < 0:
        raise EvalError(f"--num-questions {num_questions} / --num-shots {num_shots}: need >= 1 question, >= 0 shots")
    if path.is_dir():
        test = read_problems(path / TEST_FILE)
        train_path = path / TRAIN_FILE
        shot_pool, shots_from = (read_problems(train_path), str(train_path)) if train_path.is_file() else (test, str(path / TEST_FILE))
    else:
        test = read_problems(path)
        shot_pool, shots_from = test, str(path)
    if num_shots > len(shot_pool):
        raise EvalError(f"--num-shots {num_shots}: {shots_from} has only {len(shot_pool)} records")
    prefix = few_shot_prefix(shot_pool[:num_shots])
    asked = test[:num_questions]
    labels = []
    for i, p in enumerate(asked):
        label = answer_value(p.answer)
        if label is None:
            raise EvalError(f"GSM8K record {i}: reference answer has no number: {p.answer[-80:]!r}")
        labels.append(label)
    return Prompts([prefix + format_example(p, False) for p in asked], labels, shots_from)
