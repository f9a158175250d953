"""flashmla indexer: our converted arguments fed to torch references of DeepGEMM's documented FP8 indexer kernels
(and to SGLang 0.5.23's own torch fallbacks of them) == our reference indexer_logits_fp8 on the same FP8 pool.

The pool is SGLang's paged FP8 index-K layout with every slot no query sees poisoned (NaN bytes), so a wrong
page, offset or span shows; 4..64 indexer heads (below 32 the call pads to 32, as SGLang does)."""

import pytest
import torch
from sglang.srt.layers.attention.dsa.utils import _fp8_mqa_logits_torch
from sglang.srt.layers.attention.dsv4.indexer import fp8_paged_mqa_logits_torch

from sglang_glm5.dsa.flashmla import indexer
from sglang_glm5.dsa.flashmla.indexer import mqa_logits_kwargs, paged_mqa_logits_kwargs
from sglang_glm5.dsa.flashmla.layout import (
    causal_logits,
    index_k_blocks,
    pack_index_k,
    ragged_logits_to_positions,
    unpack_index_k,
)
from sglang_glm5.dsa.impls import resolve_impl
from sglang_glm5.dsa.reference import indexer_logits_fp8, quantize_fp8_rows
from tests.dsa import flashmla_refs
from tests.dsa.flashmla_cases import CASES, DECODE_CASES, INDEXER_HEADS, index_k_pool
from tests.dsa.cases import INDEX_DIM, make_batch

TOL = {"atol": 1e-4, "rtol": 1e-4}  # both fp32 from the same e4m3 inputs; the scales fold in another order
SGLANG_TOL = {"atol": 2e-2, "rtol": 2e-2}  # SGLang's fallbacks multiply in bf16 (one bf16 rounding per head score)
NO_SCHEDULE = object()


def _inputs(case, heads, seed=0):
    gen = torch.Generator().manual_seed(seed + heads)
    batch = make_batch(list(case.lengths), list(case.new_tokens), gen)
    q = torch.randn(batch.num_tokens, heads, INDEX_DIM, generator=gen).to(torch.bfloat16)  # [T, Hi, 128]
    weights = torch.randn(batch.num_tokens, heads, generator=gen) * heads**-0.5  # [T, Hi]
    pool, k_fp8, k_scale = index_k_pool(batch, seed)
    return batch, q, weights, pool


def _expected(batch, q, weights, pool):
    q_fp8, q_scale = quantize_fp8_rows(q)  # what the call quantizes
    k_fp8, k_scale = unpack_index_k(pool)  # the pool's own bytes, by slot
    return indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)


def _finite_equal(got, expected, tol):
    assert torch.equal(got.isinf(), expected.isinf()) and not got.isnan().any()
    torch.testing.assert_close(got.masked_fill(got.isinf(), 0), expected.masked_fill(expected.isinf(), 0), **tol)


def _params(cases):
    """Every head count on the first case, two on the others (CI time)."""
    return [pytest.param(c, h, id=f"{c.id}-Hi{h}") for i, c in enumerate(cases) for h in (INDEXER_HEADS if i == 0 else (8, 32))]


@pytest.mark.parametrize("case,heads", _params(CASES))
def test_prefill_mqa_logits(case, heads):
    batch, q, weights, pool = _inputs(case, heads)
    kwargs, ragged = mqa_logits_kwargs(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos)
    assert kwargs["q"].shape[1] in (32, 64) and kwargs["kv"][0].shape[0] == sum(case.lengths)  # each request once
    expected = _expected(batch, q, weights, pool)
    length = batch.page_table.shape[1]
    got = ragged_logits_to_positions(flashmla_refs.fp8_mqa_logits(**kwargs), ragged, batch.q_pos, length)
    _finite_equal(got, expected, TOL)
    args = [kwargs[name] for name in ("q", "kv", "weights", "ks", "ke")]  # its first parameter is named q_fp8
    sglang = ragged_logits_to_positions(_fp8_mqa_logits_torch(*args), ragged, batch.q_pos, length)
    _finite_equal(sglang, expected, SGLANG_TOL)


@pytest.mark.parametrize("case,heads", _params(DECODE_CASES))
def test_decode_paged_mqa_logits_read_the_pool_in_place(case, heads):
    batch, q, weights, pool = _inputs(case, heads)
    kwargs = paged_mqa_logits_kwargs(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos, NO_SCHEDULE)
    assert kwargs["kv_cache"].data_ptr() == pool.data_ptr() and kwargs["kv_cache"].shape[1:] == (64, 1, 132)
    expected = _expected(batch, q, weights, pool)
    got = causal_logits(flashmla_refs.fp8_paged_mqa_logits(**kwargs), batch.q_pos)
    _finite_equal(got, expected, TOL)
    sglang = fp8_paged_mqa_logits_torch(
        kwargs["q"], kwargs["kv_cache"], kwargs["weights"], kwargs["context_lens"][:, 0], kwargs["block_table"],
        None, kwargs["max_context_len"], clean_logits=False,
    )  # fmt: skip
    _finite_equal(causal_logits(sglang, batch.q_pos), expected, SGLANG_TOL)


@pytest.mark.parametrize("case", CASES[:2], ids=[c.id for c in CASES[:2]])
def test_a_model_dtype_key_store_is_read_through_the_contiguous_path(case):
    """The backend's own [S, 128] store (until SGLang's pool holds the keys): its rows quantized like the pool's."""
    batch, q, weights, _ = _inputs(case, 32)
    keys = torch.randn(batch.num_slots, INDEX_DIM, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    kwargs, ragged = mqa_logits_kwargs(q, weights, keys, batch.page_table, batch.q_seq, batch.q_pos)
    got = ragged_logits_to_positions(flashmla_refs.fp8_mqa_logits(**kwargs), ragged, batch.q_pos, batch.page_table.shape[1])
    q_fp8, q_scale = quantize_fp8_rows(q)
    k_fp8, k_scale = quantize_fp8_rows(keys)
    expected = indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
    _finite_equal(got, expected, TOL)
    with pytest.raises(ValueError, match="paged kernel reads SGLang's FP8 index-K pool"):
        paged_mqa_logits_kwargs(q, weights, keys, batch.page_table, batch.q_seq, batch.q_pos, NO_SCHEDULE)


def test_prefill_groups_requests_within_the_callers_budget():
    """Eight requests of up to 300 keys, 2 query rows each: one call would be [16, sum of spans]; every call stays
    within [T, L] elements and the result is the ungrouped one."""
    lengths = (300, 7, 64, 65, 129, 250, 1, 33)
    gen = torch.Generator().manual_seed(5)
    batch = make_batch(list(lengths), [min(2, n) for n in lengths], gen)
    q = torch.randn(batch.num_tokens, 32, INDEX_DIM, generator=gen).to(torch.bfloat16)
    weights = torch.randn(batch.num_tokens, 32, generator=gen) * 32**-0.5
    pool, _, _ = index_k_pool(batch)
    sizes = []

    def kernel(**kwargs):
        logits = flashmla_refs.fp8_mqa_logits(**kwargs)
        sizes.append(logits.numel())
        return logits

    got = indexer.prefill_logits(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos, kernel)
    _finite_equal(got, _expected(batch, q, weights, pool), TOL)
    assert len(sizes) > 1 and max(sizes) <= batch.num_tokens * batch.page_table.shape[1]


def test_index_k_pool_layout_is_sglangs():
    """Per page: 64 x 128 key bytes, then 64 fp32 scales (SGLang's IndexKeyCache / DeepGEMM's fused kv_cache)."""
    k_fp8, k_scale = quantize_fp8_rows(torch.randn(128, INDEX_DIM))
    pool = pack_index_k(k_fp8, k_scale)  # [2, 64 * 132]
    assert pool.shape == (2, 64 * 132)
    slot = 70  # page 1, offset 6
    assert torch.equal(pool[1, 6 * 128 : 7 * 128], k_fp8[slot].view(torch.uint8))
    assert torch.equal(pool[1, 64 * 128 + 6 * 4 : 64 * 128 + 7 * 4].view(torch.float32), k_scale[slot : slot + 1])
    keys, scales = unpack_index_k(pool)
    assert torch.equal(keys.view(torch.uint8), k_fp8.view(torch.uint8)) and torch.equal(scales, k_scale)
    assert index_k_blocks(pool).data_ptr() == pool.data_ptr()


def test_weights_fold_the_q_scale_and_the_head_dim():
    case = CASES[0]
    batch, q, weights, pool = _inputs(case, 32)
    kwargs, _ = mqa_logits_kwargs(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos)
    _, q_scale = quantize_fp8_rows(q)
    torch.testing.assert_close(kwargs["weights"], weights * q_scale * INDEX_DIM**-0.5)
    assert kwargs["weights"].dtype == torch.float32 and kwargs["ks"].dtype == kwargs["ke"].dtype == torch.int32


def test_bad_pool_is_named():
    batch, q, weights, pool = _inputs(CASES[0], 8)
    with pytest.raises(ValueError, match=r"k_cache: the FP8 indexer reads SGLang's paged index-K pool"):
        mqa_logits_kwargs(q, weights, pool.view(-1, 132), batch.page_table, batch.q_seq, batch.q_pos)
    with pytest.raises(ValueError, match=r"48 heads per GPU: the kernel runs 32 or 64 heads"):
        q48 = torch.zeros(batch.num_tokens, 48, INDEX_DIM)
        mqa_logits_kwargs(q48, torch.zeros(batch.num_tokens, 48), pool, batch.page_table, batch.q_seq, batch.q_pos)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_table_row_loads_each_phases_indexer(phase):
    impl = resolve_impl("flashmla", phase, "cuda")
    assert impl.indexer_logits is getattr(indexer, f"indexer_logits_{phase}")
    batch, q, weights, pool = _inputs(DECODE_CASES[0], 8)
    with pytest.raises(RuntimeError, match=r"DeepGEMM on an SM90 GPU; got tensors on cpu"):
        impl.indexer_logits(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos)
