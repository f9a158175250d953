"""The request checks our plugin adds to SGLang's validation, and the load client's pure parts (fast, no server).
Through a real server: tests/serving/test_load_and_faults.py."""

import pytest

from bench.lib import load_client as client
from sglang_glm5.hooks.request_checks import (
    chat_template_kwargs_error,
    check_input_ids,
)

VOCAB = 1024


@pytest.mark.parametrize(
    "ids,message",
    [
        ([], "The input is empty (0 tokens)"),
        ([3, VOCAB], f"Invalid token id {VOCAB} at position 1: token ids must be in [0, {VOCAB})."),
        ([-1, 2], "Invalid token id -1 at position 0:"),
        (list(range(-7, 1)), ("Invalid token ids -7 at position 0, -6 at position 1, -5 at position 2, -4 at position 3,"
                             " -3 at position 4 (and 2 more)")),
    ],
    ids=["empty", "past-vocab", "negative", "many-bad"],
)
def test_bad_input_ids_are_named(ids, message):
    with pytest.raises(ValueError) as err:
        check_input_ids(ids, VOCAB)
    assert message in str(err.value)


def test_good_input_ids_pass():
    check_input_ids([0, 5, VOCAB - 1], VOCAB)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tools": []}, "chat_template_kwargs must not set 'tools'"),
        ({"add_generation_prompt": False, "tokenize": True}, "must not set 'add_generation_prompt', 'tokenize'"),
        ({"enable_thinking": "false"}, "chat_template_kwargs['enable_thinking'] must be true or false, got 'false'"),
        ({"clear_thinking": 0}, "chat_template_kwargs['clear_thinking'] must be true or false, got 0"),
    ],
    ids=["tools", "two-server-args", "thinking-string", "clear-thinking-int"],
)
def test_bad_chat_template_kwargs_are_named(kwargs, message):
    assert message in chat_template_kwargs_error(kwargs)


@pytest.mark.parametrize("kwargs", [None, {}, {"enable_thinking": False, "clear_thinking": True, "custom": "x"}],
                         ids=["none", "empty", "booleans-and-extra"])
def test_good_chat_template_kwargs_pass(kwargs):
    assert chat_template_kwargs_error(kwargs) is None


def test_mixed_prompts_share_a_prefix_and_keep_lengths():
    stream = list(range(5000))
    lengths = client.geometric_lengths(32, 5, 300)
    prompts, sharing = client.mixed_prompts(stream, lengths, shared_prefix=69, share_every=2)
    assert [len(p) for p in prompts] == lengths
    assert sharing == [i for i, n in enumerate(lengths) if n > 69][::2] and len(sharing) == 6
    assert all(prompts[i][:69] == stream[:69] for i in sharing)
    others = [p[:69] for i, p in enumerate(prompts) if i not in sharing and len(p) >= 69]
    assert stream[:69] not in others and len({tuple(p) for p in prompts}) == len(prompts)


def test_bad_request_table_names_are_unique_and_fragments_set():
    table = client.bad_requests(context_len=512, vocab_size=VOCAB)
    assert len({b.name for b in table}) == len(table)
    assert all(b.fragment and b.path.startswith("/") for b in table)
