"""GSM8K prompts and answers, checked against SGLang's own functions (sglang.test.few_shot_gsm8k) on our fixture."""

import json

import pytest
from sglang.test import few_shot_gsm8k as sglang_gsm8k

from sglang_glm5.eval import gsm8k
from sglang_glm5.eval.errors import EvalError

REPLIES = {
    "final-hash": "#### 18",
    "thousands-comma": "So she needs 1,250 dollars.",
    "last-of-several": "First 12, then 7.",
    "negative-reads-positive": "The change is -3",
    "decimal-reads-fraction-digits": "It takes 2.5 hours",
    "leading-zero": "Code 0123",
    "zeros-only": "00",
    "no-digits": "I do not know.",
    "empty": "",
    "stop-word-left-in": "The answer is 39.\n\nQuestion: next one has 5",
}


@pytest.mark.parametrize("reply", REPLIES.values(), ids=REPLIES.keys())
def test_answer_value_equals_sglang(reply):
    theirs = sglang_gsm8k.get_answer_value(reply)
    assert gsm8k.answer_value(reply) == (None if theirs == sglang_gsm8k.INVALID else theirs)


@pytest.mark.parametrize("num_questions,num_shots", [(6, 5), (3, 2), (1, 0)], ids=["Q6-shots5", "Q3-shots2", "Q1-shots0"])
def test_prompts_equal_sglang(gsm8k_file, num_questions, num_shots):
    lines = [json.loads(line) for line in gsm8k_file.read_text().splitlines()]
    prefix = sglang_gsm8k.get_few_shot_examples(lines, num_shots)
    expected = [prefix + sglang_gsm8k.get_one_example(lines, i, False) for i in range(num_questions)]
    built = gsm8k.build_prompts(gsm8k_file, num_questions, num_shots)
    assert built.prompts == expected
    assert built.labels == [sglang_gsm8k.get_answer_value(line["answer"]) for line in lines[:num_questions]]
    assert built.shots_from == str(gsm8k_file)


def test_prompt_text_is_question_answer_blocks(gsm8k_file):
    prompt = gsm8k.build_prompts(gsm8k_file, 2, 1).prompts[1]
    assert prompt == (
        "Question: A baker fills 4 trays with 12 rolls each. She sells 30 rolls. How many rolls are left?\n"
        "Answer: She baked 4 * 12 = <<4*12=48>>48 rolls.\nAfter selling, 48 - 30 = <<48-30=18>>18 rolls are left.\n"
        "#### 18\n\n"
        "Question: Tom reads 15 pages a day for 6 days, then 20 pages on the seventh day. How many pages did he read?\n"
        "Answer:"
    )


def test_folder_with_train_split_takes_shots_from_train(gsm8k_dir):
    built = gsm8k.build_prompts(gsm8k_dir, 2, 2)
    assert built.shots_from == str(gsm8k_dir / "train.jsonl")
    assert all(p.startswith("Question: Sam has 7 apples") for p in built.prompts)
    assert "Question: A pack has 6 pencils." in built.prompts[0]
    assert built.prompts[0].endswith("Question: A baker fills 4 trays with 12 rolls each. She sells 30 rolls. "
                                     "How many rolls are left?\nAnswer:")
    assert built.labels == [18, 110]


BAD_FILES = {
    "not-json": ('{"question": "q", "answer": "#### 1"}\n{oops\n', "bad.jsonl:2: not JSON"),
    "missing-answer": ('{"question": "q"}\n', "bad.jsonl:1: missing string field 'answer'"),
    "not-an-object": ('[1, 2]\n', "bad.jsonl:1: expected an object"),
    "empty": ("\n", "bad.jsonl: no GSM8K records"),
    "label-without-number": ('{"question": "q", "answer": "none"}\n', "GSM8K record 0: reference answer has no number"),
}


@pytest.mark.parametrize("text,message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(EvalError, match=message.replace("[", r"\[")):
        gsm8k.build_prompts(path, 1, 0)


def test_more_shots_than_records(gsm8k_dir):
    with pytest.raises(EvalError, match=r"--num-shots 3: .*train.jsonl has only 2 records"):
        gsm8k.build_prompts(gsm8k_dir, 1, 3)


def test_folder_without_test_file(tmp_path):
    with pytest.raises(EvalError, match=r"test.jsonl: no such file"):
        gsm8k.build_prompts(tmp_path, 1, 0)
