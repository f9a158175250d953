"""The long-context oracle (tests/oracle.hf_chunked) on the tiny checkpoint (index_topk 16): HF's prefill fed in chunks
equals one HF forward, and the tie mask of the logprob window, whose gaps alone it computes (the [rows, H, T] index
scores of earlier rows are the oracle's cost at 16k), equals the one computed over every row."""

import pytest
import torch

from tests import oracle
from tests.models.test_hf_parity import prompt_ids, vocab_size

LENGTH = 301  # odd, > index_topk: most rows select a strict subset of their keys
CHUNK = 64  # several chunks, the last one partial
WINDOW_FROM = 173  # inside a chunk: the window's first chunk has rows on both sides
TIE_GAPS = (1.0, 1e2, 1e3)  # float32 roundings: the rule's (no window row at this length), 10 and 57 of 128 rows


@pytest.fixture(scope="module")
def case(tiny_checkpoint):
    checkpoint = tiny_checkpoint("bf16")
    return checkpoint, prompt_ids(LENGTH, vocab_size(checkpoint))


def test_chunked_prefill_equals_one_forward(case):
    checkpoint, ids = case
    rows, tokens, _ = oracle.hf_chunked(checkpoint, ids, 4, CHUNK, WINDOW_FROM)
    full = oracle.hf_logprobs(checkpoint, ids)[WINDOW_FROM:]
    assert rows.shape == full.shape
    torch.testing.assert_close(rows, full, atol=1e-5, rtol=0)
    assert tokens == oracle.hf_greedy(checkpoint, ids, 4)


def test_window_tie_mask_equals_the_all_rows_one(case, monkeypatch):
    checkpoint, ids = case
    mixed = 0
    for gap in TIE_GAPS:
        monkeypatch.setattr(oracle, "TIE_GAP", gap)
        window = oracle.hf_chunked(checkpoint, ids, 1, CHUNK, WINDOW_FROM)[2]
        every_row = oracle.hf_chunked(checkpoint, ids, 1, CHUNK, 0)[2][WINDOW_FROM:]
        assert torch.equal(window, every_row), f"TIE_GAP {gap}"
        mixed += bool(0 < int(window.sum()) < len(window))
    assert mixed, f"no TIE_GAP of {TIE_GAPS} marks some but not all window rows: the comparison shows nothing"
