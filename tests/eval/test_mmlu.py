"""MMLU prompts (SGLang's benchmark/mmlu layout of text) and first-letter answers, on our csv fixture."""

import pytest

from sglang_glm5.eval import mmlu
from sglang_glm5.eval.errors import EvalError


def words(text: str) -> int:
    return len(text.split())


def test_prompt_text(mmlu_dir):
    built = mmlu.build_prompts(mmlu_dir, ["elementary_mathematics"], 5, None, words)
    assert built.prompts[1] == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "What is 7 + 6?\nA. 12\nB. 13\nC. 14\nD. 15\nAnswer: B\n\n"
        "What is 9 x 3?\nA. 27\nB. 24\nC. 21\nD. 30\nAnswer: A\n\n"
        "What is 1,000 divided by 10?\nA. 10\nB. 100\nC. 1000\nD. 1\nAnswer:"
    )
    assert built.labels == ["D", "B"]
    assert built.shots == {"elementary_mathematics": 2}


def test_subjects_sorted_and_labelled(mmlu_dir):
    built = mmlu.build_prompts(mmlu_dir, None, 1, None, words)
    assert built.subjects == ["astronomy"] * 3 + ["elementary_mathematics"] * 2
    assert built.labels == ["A", "B", "C", "D", "B"]
    assert built.prompts[0].startswith("The following are multiple choice questions (with answers) about astronomy.\n\n"
                                       "Which planet is closest to the Sun?\nA. Venus\nB. Mercury")
    assert "Which gas, by mass, makes up most of the Sun?\nA. Oxygen" in built.prompts[1]


@pytest.mark.parametrize("shots", [3, 2, 1, 0], ids=["shots3-all", "shots2", "shots1", "shots0-header-only"])
@pytest.mark.parametrize("slack", [0, -1], ids=["fits-exactly", "one-over"])
def test_shots_dropped_until_budget(mmlu_dir, shots, slack):
    dev = mmlu.read_items(mmlu_dir / "dev" / "astronomy_dev.csv")
    budget = words(mmlu.few_shot_prefix("astronomy", dev[:shots])) + slack
    kept = shots if slack == 0 else max(shots - 1, 0)
    built = mmlu.build_prompts(mmlu_dir, ["astronomy"], 5, 1, words, budget=budget)
    assert built.shots == {"astronomy": kept}
    assert built.prompts[0].count("\nAnswer:") == kept + 1


def test_max_per_subject(mmlu_dir):
    built = mmlu.build_prompts(mmlu_dir, None, 0, 1, words)
    assert built.subjects == ["astronomy", "elementary_mathematics"]
    assert built.prompts[0].startswith("The following are multiple choice questions (with answers) about astronomy.\n\n"
                                       "What is the largest planet")


REPLIES = {"letter": (" B", "B"), "letter-then-text": ("C. Neutron star", "C"), "newline-first": ("\nA", "A"),
           "lowercase": ("b", None), "word": ("The answer is B", None), "empty": ("", None), "space": ("  ", None)}


@pytest.mark.parametrize("reply,letter", REPLIES.values(), ids=REPLIES.keys())
def test_answer_letter(reply, letter):
    assert mmlu.answer_letter(reply) == letter


def test_unknown_subject_named(mmlu_dir):
    with pytest.raises(EvalError, match=r"--subjects: virology not in .*have: astronomy, elementary_mathematics"):
        mmlu.build_prompts(mmlu_dir, ["astronomy", "virology"], 5, None, words)


BAD_ROWS = {
    "five-columns": ("Q,a,b,c,A\n", r"x_test.csv:1: 5 columns, expected 6"),
    "answer-not-a-letter": ("Q,a,b,c,d,A\nQ2,a,b,c,d,E\n", r"x_test.csv:2: answer 'E' is not one of A, B, C, D"),
    "empty": ("", r"x_test.csv: no questions"),
}


@pytest.mark.parametrize("text,message", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_csv_names_file_and_row(tmp_path, text, message):
    (tmp_path / "test").mkdir()
    (tmp_path / "dev").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text(text)
    (tmp_path / "dev" / "x_dev.csv").write_text("Q,a,b,c,d,A\n")
    with pytest.raises(EvalError, match=message):
        mmlu.build_prompts(tmp_path, None, 5, None, words)


def test_missing_dev_file_named(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("Q,a,b,c,d,A\n")
    with pytest.raises(EvalError, match=r"dev/x_dev.csv: no such file"):
        mmlu.build_prompts(tmp_path, None, 5, None, words)


def test_folder_without_test_split(tmp_path):
    with pytest.raises(EvalError, match=r"no test/ folder"):
        mmlu.build_prompts(tmp_path, None, 5, None, words)


def test_shot_tokenizer_from_local_folder(tiny_checkpoint):
    count = mmlu.shot_token_counter(str(tiny_checkpoint("bf16")))
    assert 0 < count("What is 7 + 6?") < count("What is 7 + 6? " * 4)


def test_shot_tokenizer_missing_is_named(tmp_path):
    with pytest.raises(EvalError, match=rf"--shots-tokenizer {tmp_path}/nothing: cannot load a tokenizer"):
        mmlu.shot_token_counter(str(tmp_path / "nothing"))
