"""The flashmla table row end to end on CPU, with the vendor modules stood in by the torch references of their
documented semantics (tests/dsa/flashmla_refs.py): what the call functions do around the kernels (scheduler
metadata, output shapes, head trimming, empty rows, logits by position) against our reference ops."""

import types

import pytest
import torch

from sglang_glm5.dsa.flashmla import indexer, mla
from sglang_glm5.dsa.impls import resolve_impl
from sglang_glm5.dsa.triton.kv_layout import unpack_fp8_kv
from sglang_glm5.dsa.reference import sparse_mla
from tests.dsa import flashmla_refs
from tests.dsa.flashmla_cases import CASES, DECODE_CASES, fp8_latent_pool, mla_inputs
from tests.dsa.test_flashmla_indexer import TOL as LOGITS_TOL
from tests.dsa.test_flashmla_indexer import _expected as expected_logits
from tests.dsa.test_flashmla_indexer import _finite_equal
from tests.dsa.test_flashmla_indexer import _inputs as indexer_inputs
from tests.dsa.cases import ROPE_DIM, SM_SCALE, V_DIM

TOL = {"atol": 1e-3, "rtol": 8e-3}


@pytest.fixture
def vendor_references(monkeypatch):
    """flash_mla / deep_gemm replaced by the references; the device check off (the kernels' only CPU refusal)."""
    calls = []

    def record(name, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapped

    flash_mla = types.SimpleNamespace(
        flash_mla_sparse_fwd=record("flash_mla_sparse_fwd", flashmla_refs.flash_mla_sparse_fwd),
        flash_mla_with_kvcache=record("flash_mla_with_kvcache", flashmla_refs.flash_mla_with_kvcache),
        get_mla_metadata=lambda *args, **kwargs: (object(), None),
    )
    deep_gemm = types.SimpleNamespace(
        fp8_mqa_logits=record("fp8_mqa_logits", flashmla_refs.fp8_mqa_logits),
        fp8_paged_mqa_logits=record("fp8_paged_mqa_logits", flashmla_refs.fp8_paged_mqa_logits),
        get_paged_mqa_logits_metadata=lambda context_lens, block_kv, num_sms: torch.zeros(num_sms + 1, 2, dtype=torch.int32),
        get_num_sms=lambda: 132,
    )  # fmt: skip
    monkeypatch.setattr(mla, "flash_mla", lambda: flash_mla)
    monkeypatch.setattr(indexer, "deep_gemm", lambda: deep_gemm)
    monkeypatch.setattr(mla, "_check_device", lambda q, phase: None)
    monkeypatch.setattr(indexer, "_check_device", lambda q, phase: None)
    return calls


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_phases_through_the_table(case, vendor_references):
    phases = ["prefill"] + (["decode"] if case in DECODE_CASES else [])
    batch, q, kv_cache, topk, selected = mla_inputs(case, 16)
    pool = fp8_latent_pool(kv_cache, selected)
    for phase in phases:
        impl = resolve_impl("flashmla", phase, "cuda")
        out, lse = impl.sparse_mla(q, pool, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, return_lse=True)
        seen = unpack_fp8_kv(pool, V_DIM, ROPE_DIM)
        seen = seen.to(torch.bfloat16) if phase == "prefill" else seen  # prefill's kernel reads a bf16 kv
        want, want_lse = sparse_mla(q, seen, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, return_lse=True)
        assert out.shape == want.shape and out.dtype == q.dtype
        torch.testing.assert_close(out, want, **TOL)
        torch.testing.assert_close(lse, want_lse, atol=1e-4, rtol=1e-5)

        b, qi, weights, index_pool = indexer_inputs(case, 8)
        logits = impl.indexer_logits(qi, weights, index_pool, b.page_table, b.q_seq, b.q_pos)
        _finite_equal(logits, expected_logits(b, qi, weights, index_pool), LOGITS_TOL)
        # prefill: the bf16 pool as well; decode also takes a model-dtype key store (contiguous path)
        if phase == "prefill":
            out = impl.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
            torch.testing.assert_close(out, sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM), **TOL)
    expected_calls = {"flash_mla_sparse_fwd", "fp8_mqa_logits"} | (
        {"flash_mla_with_kvcache", "fp8_paged_mqa_logits"} if "decode" in phases else set()
    )
    assert set(vendor_references) == expected_calls
