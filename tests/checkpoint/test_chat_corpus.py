"""The demo's training sequences (`checkpoint/chat_corpus.py`) and chat file (`serving/demo_chats.json`)."""

import pytest
import torch
from transformers import AutoTokenizer

from sglang_glm5.checkpoint.chat_corpus import END_OF_TURN, Chat, ChatCorpus
from sglang_glm5.checkpoint.train import IGNORED_LABEL
from sglang_glm5.parsers.reasoning import Glm5ReasoningDetector
from sglang_glm5.serving.demo import demo_chats

CHATS = [Chat("Hi?", "Greet back.", "Hello!"), Chat("What is 2 + 2? Explain.", "Two plus two is four.", "4.")]
ODD_BATCH = 5


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


def test_each_sequence_is_the_thinking_prompt_then_the_assistant_turn(checkpoint):
    corpus = ChatCorpus(checkpoint, CHATS)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    for chat, seq in zip(CHATS, corpus.sequences):
        text = tok.decode(seq)
        prompt, turn = text.split("<|assistant|><think>")
        assert prompt.endswith(chat.user) and turn.endswith(END_OF_TURN)
        split = Glm5ReasoningDetector(force_reasoning=True).detect_and_parse(turn.removesuffix(END_OF_TURN))
        assert (split.reasoning_text, split.normal_text) == (chat.reasoning, chat.answer)


def test_batches_cycle_the_chats_and_do_not_learn_padding(checkpoint):
    corpus = ChatCorpus(checkpoint, CHATS)
    length = corpus.longest + 3
    ids, labels = corpus.training_batch(ODD_BATCH, length)
    assert ids.shape == labels.shape == (ODD_BATCH, length)
    for row in range(ODD_BATCH):
        seq = torch.tensor(corpus.sequences[row % len(CHATS)])
        assert torch.equal(ids[row, :len(seq)], seq) and torch.equal(labels[row, :len(seq)], seq)
        assert (labels[row, len(seq):] == IGNORED_LABEL).all() and (ids[row, len(seq):] == corpus.pad_id).all()
    with pytest.raises(ValueError, match="shorter than the longest chat"):
        corpus.training_batch(1, corpus.longest - 1)


def test_demo_chats_ship_with_the_package():
    chats = demo_chats()
    assert chats and all(c.user and c.reasoning and c.answer for c in chats)
