"""Triton indexer logits (bf16-model and FP8 inputs) against the reference, under the interpreter."""

import pytest
import torch

from sglang_glm5.dsa.triton import indexer, indexer_logits, indexer_logits_fp8
from sglang_glm5.dsa.reference import indexer_logits as ref_indexer_logits
from sglang_glm5.dsa.reference import indexer_logits_fp8 as ref_indexer_logits_fp8
from sglang_glm5.dsa.reference import quantize_fp8_rows
from tests.dsa.cases import DTYPE_ID, INDEX_DIM, TOL, batch_id, make_batch, nan_except
from tests.dsa.triton_launches import trace_host

# (lengths, new tokens per request, page size): odd lengths, ragged, across 64-slot page boundaries
BATCHES = [
    ([1, 63, 500], [1, 63, 9], 64),
    ([1, 64, 65, 500], [1, 1, 1, 1], 64),
    ([63, 130], [5, 3], 1),
]
CASES = [
    pytest.param(*b, heads, dtype, id=f"{batch_id(*b[:2])}-P{b[2]}-H{heads}-{DTYPE_ID[dtype]}")
    for b in BATCHES
    for heads, dtype in [(8, torch.float32), (16, torch.float16), (32, torch.float32), (32, torch.bfloat16)]
] + [pytest.param([1, 63], [1, 4], 64, 64, torch.float32, id="B2-S1.63-prefill-P64-H64-fp32")]


def _inputs(lengths, new, page_size, heads, dtype, gen):
    batch = make_batch(lengths, new, gen, page_size)
    q = torch.randn(batch.num_tokens, heads, INDEX_DIM, generator=gen)  # [T, H, D]
    weights = torch.randn(batch.num_tokens, heads, generator=gen) * heads**-0.5  # [T, H]
    k_cache = torch.randn(batch.num_slots, INDEX_DIM, generator=gen)  # [S, D]
    return batch, q, weights, k_cache


@pytest.mark.parametrize("lengths,new,page_size,heads,dtype", CASES)
def test_indexer_logits_matches_reference(lengths, new, page_size, heads, dtype):
    gen = torch.Generator().manual_seed(0)
    batch, q, weights, k_cache = _inputs(lengths, new, page_size, heads, dtype, gen)
    q, weights, k_cache = q.to(dtype), weights.to(dtype), nan_except(k_cache.to(dtype), batch.referenced_slots())
    out = torch.full((batch.num_tokens, max(lengths)), float("nan"))
    indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos, out=out)
    ref = ref_indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, **TOL[torch.float32])


@pytest.mark.parametrize("lengths,new,page_size", BATCHES, ids=[f"{batch_id(*b[:2])}-P{b[2]}-H32-fp8" for b in BATCHES])
def test_indexer_logits_fp8_matches_reference(lengths, new, page_size):
    gen = torch.Generator().manual_seed(1)
    batch, q, weights, k_cache = _inputs(lengths, new, page_size, 32, torch.float32, gen)
    q_fp8, q_scale = quantize_fp8_rows(q)
    k_fp8, k_scale = quantize_fp8_rows(k_cache)
    k_scale = nan_except(k_scale, batch.referenced_slots())
    args = (q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
    out = torch.full((batch.num_tokens, max(lengths)), float("nan"))
    indexer_logits_fp8(*args, out=out)
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref_indexer_logits_fp8(*args), **TOL[torch.float8_e4m3fn])


def test_indexer_logits_allocates_and_accepts_int64_indices():
    gen = torch.Generator().manual_seed(2)
    batch, q, weights, k_cache = _inputs([70], [3], 64, 16, torch.float32, gen)
    args = (q, weights, k_cache, batch.page_table.long(), batch.q_seq.long(), batch.q_pos.long())
    torch.testing.assert_close(indexer_logits(*args), ref_indexer_logits(*args), **TOL[torch.float32])


BAD_ARGUMENTS = [
    ("q", lambda a: {**a, "q": a["q"][0]}),
    ("weights", lambda a: {**a, "weights": a["weights"][:, 1:]}),
    ("k_cache", lambda a: {**a, "k_cache": a["k_cache"][:, :64]}),
    ("page_table", lambda a: {**a, "page_table": a["page_table"].float()}),
    ("q_pos", lambda a: {**a, "q_pos": a["q_pos"][1:]}),
    ("out", lambda a: {**a, "out": torch.empty(1, 1)}),
]


@pytest.mark.parametrize("argument,change", BAD_ARGUMENTS, ids=[case[0] for case in BAD_ARGUMENTS])
def test_bad_arguments_are_named(argument, change):
    gen = torch.Generator().manual_seed(3)
    batch, q, weights, k_cache = _inputs([9], [2], 64, 8, torch.float32, gen)
    args = dict(q=q, weights=weights, k_cache=k_cache, page_table=batch.page_table, q_seq=batch.q_seq, q_pos=batch.q_pos)
    with pytest.raises((TypeError, ValueError), match=argument):
        indexer_logits(**change(args))


CHUNK_CASES = [((1, 65536, 132), 4), ((2048, 8192, 132), 128), ((64, 8192, 132), 26), ((1, 100, 132), 1),
               ((3, 500, None), 4)]  # fmt: skip


@pytest.mark.parametrize("case,blocks", CHUNK_CASES, ids=[f"TB{c[0]}-S{c[1]}-SM{c[2]}" for c, _ in CHUNK_CASES])
def test_key_chunks_fill_the_sms(case, blocks):
    """Batch-1 decode at 64k keys: 256 programs of 4 key blocks (each a 64-key step) instead of one long loop;
    a prefill's token blocks fill the GPU alone, so each program loops over all its keys (reusing its q tile)."""
    token_blocks, length, sms = case
    assert indexer.default_chunk_blocks(token_blocks, length, sms) == blocks


def test_indexer_is_one_launch_over_token_blocks_without_host_sync(monkeypatch):
    """4 query tokens per program at 32 heads (128 dot columns), one launch, nothing read back on the host."""
    gen = torch.Generator().manual_seed(4)
    batch, q, weights, k_cache = _inputs([63, 500], [9, 2], 64, 32, torch.float32, gen)
    out = torch.empty(batch.num_tokens, 500)
    trace = trace_host(monkeypatch, indexer, ["_indexer_logits_kernel"],
                       lambda: indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos, out=out))
    assert indexer.query_block(32) == 4
    assert trace.launches == [("_indexer_logits_kernel", (3, 2))]  # 11 tokens / 4, 500 keys / (4 x 64)
    assert not trace.syncs() and not trace.allocations(), trace.ops
