"""The graph-safe DSA ops (static shapes, no host reads) against the reference: same results, and they compile
under torch.compile(fullgraph=True), which fails on any host sync or value-dependent shape."""

import pytest
import torch

from sglang_glm5.dsa import reference as ref
from sglang_glm5.dsa import static
from tests.dsa.cases import nan_except
from tests.dsa.test_reference import BATCHES, INDEX_DIM, QK_DIM, SM_SCALE, V_DIM, make_batch

INDEX_HEADS = 16
STATIC_WIDTH_EXTRA = 37  # graph state: the page table is wider than any request (columns past it hold garbage)


def widened(batch, extra):
    """The batch's page table padded to a static width with out-of-range slot ids (never read)."""
    garbage = torch.full((batch.page_table.shape[0], extra), 10**9, dtype=batch.page_table.dtype)
    return torch.cat([batch.page_table, garbage], dim=1)  # [B, L + extra]


def indexer_case(name, gen):
    lengths, new = next((b[1], b[2]) for b in BATCHES if b[0] == name)
    batch = make_batch(lengths, new, gen)
    q = torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen)
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    used = {int(s) for s in batch.page_table.flatten() if s < batch.num_slots}
    k_cache = nan_except(torch.randn(batch.num_slots, INDEX_DIM, generator=gen), used)  # NaN off the table
    return batch, q, weights, k_cache


@pytest.mark.parametrize("key_chunk", [4096, 50], ids=["one-chunk", "chunk50"])
@pytest.mark.parametrize("name", [b[0] for b in BATCHES])
def test_indexer_logits_equal_reference_on_a_wider_table(name, key_chunk, monkeypatch):
    monkeypatch.setattr(static, "KEY_CHUNK", key_chunk)
    gen = torch.Generator().manual_seed(7)
    batch, q, weights, k_cache = indexer_case(name, gen)
    want = ref.indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)  # [T, L]
    got = static.indexer_logits(q, weights, k_cache, widened(batch, STATIC_WIDTH_EXTRA), batch.q_seq, batch.q_pos)
    width = batch.page_table.shape[1]
    assert torch.isneginf(got[:, width:]).all(), "columns past every request are masked"
    torch.testing.assert_close(got[:, :width], want, atol=2e-5, rtol=2e-5)
    assert torch.equal(torch.isneginf(got[:, :width]), torch.isneginf(want))
    for k in (16, 300):  # selections (index sets) agree, -1 padding included
        assert torch.equal(static.topk_positions(got, batch.q_pos, k), ref.topk_positions(want, batch.q_pos, k))


@pytest.mark.parametrize("k", [1, 7, 40, 90], ids=lambda k: f"topk{k}")
def test_topk_positions_equal_reference_with_ties_nan_and_inf(k):
    gen = torch.Generator().manual_seed(100 + k)
    logits = torch.randint(-3, 3, (24, 63), generator=gen).float()  # [T, L], exact ties
    logits[::2] = torch.randn(12, 63, generator=gen)  # tie-free rows: the reference takes its shortcut there
    special = torch.rand(logits.shape, generator=gen)
    logits[special < 0.05] = float("nan")
    logits[special > 0.95] = float("inf")
    logits[(special > 0.45) & (special < 0.5)] = float("-inf")
    q_pos = torch.randint(0, 63, (24,), generator=gen)
    assert torch.equal(static.topk_positions(logits, q_pos, k), ref.topk_positions(logits, q_pos, k))
    clean = torch.randn(5, 63, generator=gen)  # every row tie-free: the reference's shortcut for the whole batch
    q_pos = torch.tensor([62, 30, 0, 5, 17])
    assert torch.equal(static.topk_positions(clean, q_pos, k), ref.topk_positions(clean, q_pos, k))


@pytest.mark.parametrize("name", [b[0] for b in BATCHES])
def test_sparse_mla_bitwise_equal_reference(name):
    gen = torch.Generator().manual_seed(11)
    lengths, new = next((b[1], b[2]) for b in BATCHES if b[0] == name)
    batch = make_batch(lengths, new, gen)
    q = torch.randn(batch.num_tokens, 8, QK_DIM, generator=gen)
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen)
    logits = torch.randn(batch.num_tokens, batch.page_table.shape[1], generator=gen)
    topk = ref.topk_positions(logits, batch.q_pos, 16)
    want = ref.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, return_lse=True)
    wide = widened(batch, STATIC_WIDTH_EXTRA)
    got = static.sparse_mla_prefill(q, kv_cache, wide, batch.q_seq, topk, SM_SCALE, V_DIM, return_lse=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_static_ops_compile_without_graph_breaks():
    """fullgraph=True raises on a graph break: a host read (.item(), bool(tensor)) or a value-dependent shape."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    batch, q, weights, k_cache = indexer_case("B4-L200-decode", gen)
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen)
    q_mla = torch.randn(batch.num_tokens, 8, QK_DIM, generator=gen)
    page_table = widened(batch, STATIC_WIDTH_EXTRA)

    def decode(q, weights, q_mla):
        logits = static.indexer_logits(q, weights, k_cache, page_table, batch.q_seq, batch.q_pos)
        topk = static.topk_positions(logits, batch.q_pos, 16)
        return static.sparse_mla_decode(q_mla, kv_cache, page_table, batch.q_seq, topk, SM_SCALE, V_DIM), topk

    compiled = torch.compile(decode, fullgraph=True, backend="eager")
    got, topk = compiled(q, weights, q_mla)
    want, want_topk = decode(q, weights, q_mla)
    assert torch.equal(topk, want_topk) and torch.equal(got, want)
    with pytest.raises(torch._dynamo.exc.Unsupported):  # the same check catches the reference's host reads
        torch.compile(lambda lg: ref.topk_positions(lg, batch.q_pos, 16), fullgraph=True, backend="eager")(
            torch.randn(batch.num_tokens, page_table.shape[1])
        )


@pytest.mark.parametrize("key_chunk", [4096, 50], ids=["one-chunk", "chunk50"])
@pytest.mark.parametrize("name", [b[0] for b in BATCHES])
def test_indexer_logits_fp8_equal_reference_on_a_wider_table(name, key_chunk, monkeypatch):
    """The FP8 index-K store's op (pool-fp8 under graphs): same logits and top-k as dsa_reference's FP8 indexer;
    NaN keys and NaN scales off the table (never read)."""
    monkeypatch.setattr(static, "KEY_CHUNK", key_chunk)
    gen = torch.Generator().manual_seed(13)
    batch, q, weights, k_cache = indexer_case(name, gen)
    q_fp8, q_scale = ref.quantize_fp8_rows(q)
    k_fp8, k_scale = ref.quantize_fp8_rows(k_cache.nan_to_num(0.0))
    k_scale[k_cache.isnan().any(-1)] = float("nan")  # slots no request refers to: a NaN scale leaks if read
    args = (q_fp8, q_scale, weights, k_fp8, k_scale)
    want = ref.indexer_logits_fp8(*args, batch.page_table, batch.q_seq, batch.q_pos)  # [T, L]
    got = static.indexer_logits_fp8(*args, widened(batch, STATIC_WIDTH_EXTRA), batch.q_seq, batch.q_pos)
    width = batch.page_table.shape[1]
    assert torch.isneginf(got[:, width:]).all()
    torch.testing.assert_close(got[:, :width], want, atol=2e-5, rtol=2e-5)
    assert torch.equal(torch.isneginf(got[:, :width]), torch.isneginf(want))
    for k in (16, 300):
        assert torch.equal(static.topk_positions(got, batch.q_pos, k), ref.topk_positions(want, batch.q_pos, k))
    with pytest.raises(TypeError, match="k_fp8"):
        static.indexer_logits_fp8(q_fp8, q_scale, weights, k_cache, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
