"""Batches shared by the trtllm conversion tests: ragged, across page boundaries, k > length, all -1 rows."""

from dataclasses import dataclass

import torch

from tests.dsa.cases import QK_DIM, batch_id, make_batch, nan_except, random_topk


@dataclass(frozen=True)
class Case:
    lengths: tuple
    new_tokens: tuple
    k: int
    page_size: int = 64  # SGLang's page size for DSA on CUDA; 32 gives a pool the kernel reads in blocks of 32
    empty_rows: tuple = ()  # query tokens whose top-k row is all -1

    @property
    def id(self):
        empty = f"-empty{len(self.empty_rows)}" if self.empty_rows else ""
        return f"{batch_id(self.lengths, self.new_tokens)}-k{self.k}-page{self.page_size}{empty}"


CASES = [
    Case((1, 63, 130), (1, 5, 7), 16),  # ragged prefill; 130 spans three 64-slot pages
    Case((5, 64, 65, 200), (1, 1, 1, 1), 32),  # decode; k > length for the first request; either side of 64
    Case((70, 9), (3, 2), 10, empty_rows=(0, 4)),  # all -1 rows; k not a multiple of 4
    Case((33, 95), (2, 1), 128, page_size=32),  # k > every length; pool in 32-slot pages
]
DECODE_CASES = [c for c in CASES if set(c.new_tokens) == {1}]


def case_inputs(case: Case, heads: int, dtype: torch.dtype, seed: int = 0):
    """-> batch, q [T, H, 576], kv_cache [S, 576] (NaN in every slot no top-k entry selects), topk [T, k]."""
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(list(case.lengths), list(case.new_tokens), gen, page_size=case.page_size)
    q = torch.randn(batch.num_tokens, heads, QK_DIM, generator=gen).to(dtype)  # [T, H, 576]
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen).to(dtype)  # [S, 576]
    topk = random_topk(batch, case.k, gen, empty_rows=set(case.empty_rows))  # [T, k], shuffled, -1 padded
    selected = {int(batch.page_table[int(b), p]) for b, row in zip(batch.q_seq, topk.tolist()) for p in row if p >= 0}
    return batch, q, nan_except(kv_cache, selected), topk
