"""MMLU as SGLang's benchmark/mmlu/bench_sglang.py poses it: a subject header, k solved dev examples (fewer when
they pass a token budget), the test question with its lettered options, "Answer:"; the prediction is the first
character of the stripped reply.

Data: the Hendrycks csv layout, `dev/SUBJECT_dev.csv` and `test/SUBJECT_test.csv`, no header, six columns
(question, A, B, C, D, answer letter).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sglang_glm5.eval.errors import EvalError

LETTERS = ("A", "B", "C", "D")
COLUMNS = 1 + len(LETTERS) + 1
MAX_TOKENS = 1  # SGLang asks for one token: the letter
SHOT_TOKEN_BUDGET = 1536  # SGLang drops shots until the examples fit this many tokens ...
TIKTOKEN_ENCODING = "cl100k_base"  # ... counted by gpt-3.5-turbo's encoding
DEV_SUFFIX = "_dev.csv"
TEST_SUFFIX = "_test.csv"


@dataclass(frozen=True)
class Item:
    question: str
    options: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Prompts:
    prompts: list[str]
    labels: list[str]
    subjects: list[str]  # the subject of each prompt
    shots: dict[str, int]  # shots each subject got after the budget


def read_items(path: Path) -> list[Item]:
    if not path.is_file():
        raise EvalError(f"{path}: no such file (MMLU csv: question, A, B, C, D, answer; no header)")
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        for row_no, row in enumerate(csv.reader(f), 1):
            if len(row) != COLUMNS:
                raise EvalError(f"{path}:{row_no}: {len(row)} columns, expected {COLUMNS} (question, A, B, C, D, answer)")
            if row[-1] not in LETTERS:
                raise EvalError(f"{path}:{row_no}: answer {row[-1]!r} is not one of {', '.join(LETTERS)}")
            items.append(Item(row[0], tuple(row[1:-1]), row[-1]))
    if not items:
        raise EvalError(f"{path}: no questions")
    return items


def list_subjects(root: Path) -> list[str]:
    test = root / "test"
    if not test.is_dir():
        raise EvalError(f"{root}: no test/ folder (MMLU: dev/SUBJECT_dev.csv and test/SUBJECT_test.csv)")
    subjects = sorted(p.name[: -len(TEST_SUFFIX)] for p in test.iterdir() if p.name.endswith(TEST_SUFFIX))
    if not subjects:
        raise EvalError(f"{test}: no *{TEST_SUFFIX} files")
    return subjects


def answer_letter(text: str) -> str | None:
    """First character of the stripped reply (SGLang's rule); None when the reply is empty or not a letter A-D."""
    text = text.strip()
    return text[0] if text and text[0] in LETTERS else None


def format_example(item: Item, with_answer: bool) -> str:
    text = item.question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, item.options))
    text += "\nAnswer:"
    return f"{text} {item.answer}\n\n" if with_answer else text


def few_shot_prefix(subject: str, dev: Sequence[Item]) -> str:
    header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return header + "".join(format_example(item, True) for item in dev)


def fitted_prefix(subject: str, dev: Sequence[Item], count_tokens: Callable[[str], int], budget: int) -> tuple[str, int]:
    k = len(dev)
    prefix = few_shot_prefix(subject, dev)
    while k > 0 and count_tokens(prefix) > budget:
        k -= 1
        prefix = few_shot_prefix(subject, dev[:k])
    return prefix, k


def build_prompts(
    root: Path,
    subjects: Sequence[str] | None,
    num_shots: int,
    max_per_subject: int | None,
    count_tokens: Callable[[str], int],
    budget: int = SHOT_TOKEN_BUDGET,
) -> Prompts:
    available = list_subjects(root)
    if subjects:
        unknown = sorted(set(subjects) - set(available))
        if unknown:
            raise EvalError(f"--subjects: {', '.join(unknown)} not in {root / 'test'} (have: {', '.join(available)})")
        chosen = [s for s in available if s in set(subjects)]
    else:
        chosen = available
    prompts, labels, owners, shots = [], [], [], {}
    for subject in chosen:
        dev = read_items(root / "dev" / f"{subject}{DEV_SUFFIX}")[:num_shots] if num_shots > 0 else []
        test = read_items(root / "test" / f"{subject}{TEST_SUFFIX}")[:max_per_subject]
        prefix, shots[subject] = fitted_prefix(subject, dev, count_tokens, budget)
        prompts += [prefix + format_example(item, False) for item in test]
        labels += [item.answer for item in test]
        owners += [subject] * len(test)
    return Prompts(prompts, labels, owners, shots)


def shot_token_counter(name: str) -> Callable[[str], int]:
    """`cl100k_base` (SGLang's choice, through tiktoken) or a Hugging Face tokenizer name or folder."""
    if name == TIKTOKEN_ENCODING:
        import tiktoken

        try:
            encoding = tiktoken.get_encoding(name)
        except Exception as e:  # noqa: BLE001 - tiktoken fetches the encoding on first use and raises whatever its fetch raised
            raise EvalError(
                f"--shots-tokenizer {name}: tiktoken could not load it ({type(e).__name__}: {str(e)[:200]}); "
                "offline, pass a local tokenizer folder instead (e.g. the model's)"
            ) from None
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError or HF hub errors for a missing tokenizer
        raise EvalError(f"--shots-tokenizer {name}: cannot load a tokenizer ({type(e).__name__}: {str(e)[:200]})") from None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
