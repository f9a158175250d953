"""trtllm conversions: KV rows gathered through the converted indices and layout == what the reference gathers."""

import pytest
import torch

from sglang_glm5.dsa.trtllm.layout import (
    ROW_ALIGN,
    TRTLLM_BLOCK_SIZES,
    fill_empty_rows,
    paged_kv_view,
    topk_to_kv_rows,
)
from sglang_glm5.dsa.reference import PAD, gather_kv
from tests.dsa.trtllm_cases import CASES, case_inputs
from tests.dsa.cases import QK_DIM


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_gather_what_the_reference_gathers(case):
    batch, _, kv_cache, topk = case_inputs(case, heads=1, dtype=torch.float32)
    rows, lens = topk_to_kv_rows(topk, batch.page_table, batch.q_seq)  # [T, K4], [T]
    paged = paged_kv_view(kv_cache)  # [P, 1, block, 576]
    flat = paged.reshape(-1, QK_DIM)  # [P * block, 576]: row r = page r // block, offset r % block
    expected = gather_kv(kv_cache, batch.page_table, batch.q_seq, topk)  # [T, k, 576]

    assert rows.dtype == lens.dtype == torch.int32
    assert rows.shape == (batch.num_tokens, -(-case.k // ROW_ALIGN) * ROW_ALIGN)
    for t in range(batch.num_tokens):
        valid = topk[t] >= 0
        n = int(lens[t])
        assert n == int(valid.sum()) == min(case.k, int(batch.q_pos[t]) + 1) * (t not in case.empty_rows)
        assert torch.equal(rows[t, n:], torch.full_like(rows[t, n:], PAD))  # padding only after the valid entries
        got = flat[rows[t, :n].long()]  # [n, 576], in topk order
        assert torch.equal(got, expected[t][valid]), f"token {t}"  # NaN anywhere would fail: unselected slots are NaN


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_paged_view_is_the_pool_itself(case):
    batch, _, _, _ = case_inputs(case, heads=1, dtype=torch.bfloat16)
    kv_cache = torch.arange(batch.num_slots * QK_DIM, dtype=torch.float32).view(batch.num_slots, QK_DIM)  # [S, 576]
    paged = paged_kv_view(kv_cache)
    num_pages, heads, block, dim = paged.shape
    assert (heads, dim) == (1, QK_DIM) and block in TRTLLM_BLOCK_SIZES and num_pages * block == batch.num_slots
    assert paged.data_ptr() == kv_cache.data_ptr()  # a view: the kernel reads the pool SGLang writes
    slots = torch.arange(batch.num_slots)
    assert torch.equal(paged[slots // block, 0, slots % block], kv_cache)  # slot s = page s // block, offset s % block


def test_empty_rows_get_one_dummy_entry():
    case = CASES[2]
    batch, _, _, topk = case_inputs(case, heads=1, dtype=torch.float32)
    rows, lens = topk_to_kv_rows(topk, batch.page_table, batch.q_seq)
    filled, filled_lens, empty = fill_empty_rows(rows, lens, batch.page_table, batch.q_seq)
    assert empty.tolist() == [t in case.empty_rows for t in range(batch.num_tokens)]
    for t in case.empty_rows:
        assert int(filled[t, 0]) == int(batch.page_table[int(batch.q_seq[t]), 0]) and int(filled_lens[t]) == 1
        assert (filled[t, 1:] == PAD).all()
    keep = ~empty
    assert torch.equal(filled[keep], rows[keep]) and torch.equal(filled_lens[keep], lens[keep])


def test_pool_not_in_kernel_blocks_is_refused():
    with pytest.raises(ValueError, match=r"pool has 100 slots.*--page-size 64"):
        paged_kv_view(torch.zeros(100, QK_DIM))


def test_strided_pool_is_refused():
    with pytest.raises(ValueError, match="contiguous"):
        paged_kv_view(torch.zeros(64, 2 * QK_DIM)[:, :QK_DIM])


@pytest.mark.parametrize("bad", [-2, 9], ids=["below-pad", "past-length"])
def test_out_of_range_topk_is_refused(bad):
    page_table = torch.arange(18, dtype=torch.int32).view(2, 9)
    topk = torch.tensor([[0, bad], [1, -1]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"topk values must be -1 or in \[0, 9\)"):
        topk_to_kv_rows(topk, page_table, torch.tensor([0, 1]))
