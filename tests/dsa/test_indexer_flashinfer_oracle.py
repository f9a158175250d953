"""Our FP8 indexer reference against FlashInfer's own torch reference of the DSA indexer (b12x paged-decode contract).

FlashInfer's contract: q in e4m3 without a scale (the caller folds it into the head weights), keys packed per
64-slot page as e4m3 rows then fp32 per-token scales, logits = sum_h w[h] * relu(q[h] . k) * k_scale, valid for the
first seq_len positions. Ours: indexer_logits_fp8 with per-row q and k scales and the D**-0.5 score scale. The two agree
with w' = w * q_scale * D**-0.5 (a positive factor passes through relu).
"""

import pytest
import torch
from flashinfer.experimental.b12x.attention.dsa_indexer.reference import (
    _split_index_k_cache_reference,
    pack_index_k_cache_reference,
    paged_decode_logits_reference,
)

from sglang_glm5.dsa.reference import indexer_logits_fp8, quantize_fp8_rows
from tests.dsa.cases import batch_id, make_batch

PAGE = 64  # FlashInfer's indexer cache page
INDEX_DIM, HEADS = 128, 32  # GLM-5's index head dim and indexer heads
BATCHES = [((1, 63, 130), (1, 5, 7)), ((5, 64, 65, 200), (1, 1, 1, 1))]


@pytest.mark.parametrize("lengths,new", BATCHES, ids=[batch_id(*b) for b in BATCHES])
def test_fp8_indexer_reference_matches_flashinfers(lengths, new):
    gen = torch.Generator().manual_seed(sum(lengths))
    batch = make_batch(list(lengths), list(new), gen, page_size=PAGE)
    q = torch.randn(batch.num_tokens, HEADS, INDEX_DIM, generator=gen)  # [T, Hi, 128]
    k = torch.randn(batch.num_slots, INDEX_DIM, generator=gen)  # [S, 128]
    weights = torch.randn(batch.num_tokens, HEADS, generator=gen) * HEADS**-0.5  # [T, Hi]
    q_fp8, q_scale = quantize_fp8_rows(q)
    k_fp8, k_scale = quantize_fp8_rows(k)

    packed = pack_index_k_cache_reference(k, page_size=PAGE)  # [S / 64, 64 * 132] uint8
    their_k, their_scale = _split_index_k_cache_reference(packed, page_size=PAGE)
    assert torch.equal(their_k.reshape(-1, INDEX_DIM), k_fp8.float()) and torch.equal(their_scale.flatten(), k_scale)

    pages = -(-batch.page_table.shape[1] // PAGE)
    page_ids = batch.page_table[:, ::PAGE][:, :pages] // PAGE  # [B, pages]: slot = page * 64 + offset
    theirs = paged_decode_logits_reference(
        q_fp8=q_fp8,
        weights=weights * q_scale * INDEX_DIM**-0.5,
        index_k_cache=packed,
        real_page_table=page_ids.to(torch.int32).contiguous(),
        query_row_to_batch=batch.q_seq.to(torch.int32),
        seqlens_per_query=(batch.q_pos + 1).to(torch.int32),
        page_size=PAGE,
    )  # [T, pages * 64]
    ours = indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
    length = ours.shape[1]
    torch.testing.assert_close(ours, theirs[:, :length], atol=1e-5, rtol=1e-5)  # -inf in the same places
    assert torch.isneginf(theirs[:, length:]).all()
