"""HF transformers' `GlmMoeDsaForCausalLM` greedy generation on a checkpoint: the serving benchmark's baseline."""

from __future__ import annotations

import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load(checkpoint: Path, dtype: str):
    from transformers import AutoTokenizer, GlmMoeDsaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()  # the MTP layer's tensors are "unexpected" to HF: it has no MTP module
    tok = AutoTokenizer.from_pretrained(checkpoint)
    tok.padding_side = "left"
    model = GlmMoeDsaForCausalLM.from_pretrained(checkpoint, dtype=DTYPES[dtype]).eval()
    return model, tok


def left_padded(tok, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
    return tok.pad({"input_ids": prompts}, padding=True, return_tensors="pt")  # [B, T] ids + attention_mask


@torch.no_grad()
def generate(model, tok, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], float]:
    """Greedy, no EOS stop (like SGLang's ignore_eos): (new token ids per prompt, wall seconds)."""
    batch = left_padded(tok, prompts)
    t0 = time.perf_counter()
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id
    )  # [B, T + max_new_tokens]
    seconds = time.perf_counter() - t0
    return out[:, batch["input_ids"].shape[1] :].tolist(), seconds


def generate_each(model, tok, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], float, int]:
    """Each prompt alone (batch 1, so no padding), one after another: (new token ids per prompt, wall seconds, prompt
    tokens fed to the model), the same work a server does for these prompts."""
    outputs, seconds = [], 0.0
    for ids in prompts:
        out, wall = generate(model, tok, [ids], max_new_tokens)
        outputs.append(out[0])
        seconds += wall
    return outputs, seconds, sum(len(ids) for ids in prompts)
