"""DSAMetadata for EAGLE's forward modes: target verify, draft extend, multi-step draft decode (topk 1)."""

from types import SimpleNamespace

import pytest
import torch
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from sglang_glm5.attention.metadata import DraftStep, DSAMetadata

POOL_LEN = 32


def req_to_token(rows: int) -> torch.Tensor:  # [R, POOL_LEN] slot of (request row, position): row * 100 + pos
    return torch.arange(rows)[:, None] * 100 + torch.arange(POOL_LEN)[None, :]


def batch(mode, seq_lens, positions, out_cache_loc, extend_seq_lens=None):
    seq_lens = torch.tensor(seq_lens)
    return SimpleNamespace(
        forward_mode=mode, seq_lens=seq_lens, seq_lens_cpu=seq_lens, req_pool_indices=torch.tensor([2, 0]),
        positions=torch.tensor(positions), out_cache_loc=torch.tensor(out_cache_loc),
        extend_seq_lens=None if extend_seq_lens is None else torch.tensor(extend_seq_lens),
    )


def test_target_verify_four_drafts_per_request():
    positions = [5, 6, 7, 8, 9, 10, 11, 12]
    fb = batch(ForwardMode.TARGET_VERIFY, [5, 9], positions, [205, 206, 207, 208, 9, 10, 11, 12])
    meta = DSAMetadata.from_forward_batch(fb, req_to_token(3))
    assert meta.q_seq.tolist() == [0] * 4 + [1] * 4
    assert meta.q_pos.tolist() == positions
    assert meta.page_table.shape == (2, 13)  # the last draft position (12) is addressable
    assert meta.page_table[0, 8].item() == 208 and meta.page_table[1, 12].item() == 12
    assert not meta.is_decode and meta.phase == "prefill"


def test_prefill_draft_extend_ragged():
    fb = batch(ForwardMode.EXTEND, [7, 4], [5, 6, 3], [205, 206, 3], extend_seq_lens=[2, 1])
    meta = DSAMetadata.from_forward_batch(fb, req_to_token(3))
    assert meta.q_seq.tolist() == [0, 0, 1]
    assert meta.page_table.shape == (2, 7)


def test_draft_extend_v2_fixed_tokens_per_request():
    positions = [5, 6, 7, 8, 9, 10, 11, 12]
    fb = batch(ForwardMode.DRAFT_EXTEND_V2, [5, 9], positions, [205, 206, 207, 208, 9, 10, 11, 12])
    meta = DSAMetadata.from_forward_batch(fb, req_to_token(3))
    assert meta.q_seq.tolist() == [0] * 4 + [1] * 4
    assert meta.page_table.shape == (2, 13)


@pytest.mark.parametrize("step", [0, 1], ids=["step0", "step1"])
def test_draft_decode_step_shifts_positions_and_slots(step):
    # 2 requests x 3 steps, request-major draft slots (SGLang's layout before per_step_draft_out_cache_loc)
    slots = [205, 206, 207, 9, 10, 11]
    fb = batch(ForwardMode.DECODE, [5, 9], [5, 9], slots)
    meta = DSAMetadata.from_forward_batch(fb, req_to_token(3), DraftStep(step, num_steps=3, topk=1))
    assert meta.q_pos.tolist() == [5 + step, 9 + step]
    assert meta.out_cache_loc.tolist() == [205 + step, 9 + step]
    assert meta.q_seq.tolist() == [0, 1] and meta.is_decode
    assert fb.positions.tolist() == [5, 9], "the batch's own positions must not change"
