"""Chats as training sequences for a tiny checkpoint: each rendered by the checkpoint's own chat template with
thinking on, then the assistant's turn as GLM-5 writes it (`reasoning</think>answer<|user|>`), so a model trained
on them streams reasoning, then an answer, then stops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_glm5.checkpoint.train import IGNORED_LABEL
from sglang_glm5.parsers.markup import THINK_END

END_OF_TURN = "<|user|>"  # one of GLM-5's EOS tokens: the model stops by starting the user's turn


@dataclass(frozen=True)
class Chat:
    user: str
    reasoning: str
    answer: str


class ChatCorpus:
    """Every chat in every batch (cycled up to `batch`), padded after its end; padding is not learned."""

    def __init__(self, checkpoint: str | Path, chats: list[Chat]):
        from transformers import AutoTokenizer

        if not chats:
            raise ValueError("no chats to train on")
        tok = AutoTokenizer.from_pretrained(checkpoint)
        self.pad_id = tok.pad_token_id
        self.sequences = []
        for chat in chats:
            prompt = tok.apply_chat_template([{"role": "user", "content": chat.user}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
            text = prompt + chat.reasoning + THINK_END + chat.answer + END_OF_TURN
            self.sequences.append(tok(text, add_special_tokens=False)["input_ids"])

    @property
    def longest(self) -> int:
        return max(map(len, self.sequences))

    def training_batch(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:  # ids, labels [B, S]
        if length < self.longest:
            raise ValueError(f"seq_len {length} is shorter than the longest chat ({self.longest} tokens)")
        ids = torch.full((batch, length), self.pad_id)
        labels = torch.full((batch, length), IGNORED_LABEL)
        for row in range(batch):
            seq = torch.tensor(self.sequences[row % len(self.sequences)])
            ids[row, : len(seq)], labels[row, : len(seq)] = seq, seq
        return ids, labels
