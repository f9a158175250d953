"""flashmla sparse MLA: our converted arguments fed to torch references of FlashMLA's documented kernels == our
reference sparse MLA on the same inputs (bf16 and FP8 656 B pools, 8..128 heads, ragged batches, page boundaries,
k > length, all -1 rows). Caches are NaN wherever the reference reads nothing, so a wrong index shows."""

import pytest
import torch

from sglang_glm5.dsa.flashmla import layout, mla
from sglang_glm5.dsa.flashmla.layout import mla_output
from sglang_glm5.dsa.flashmla.mla import decode_kwargs, prefill_kwargs
from sglang_glm5.dsa.impls import resolve_impl
from sglang_glm5.dsa.triton.kv_layout import unpack_fp8_kv
from sglang_glm5.dsa.reference import sparse_mla
from tests.dsa import flashmla_refs
from tests.dsa.flashmla_cases import CASES, DECODE_CASES, MLA_HEADS, fp8_latent_pool, mla_inputs
from tests.dsa.cases import QK_DIM, ROPE_DIM, SM_SCALE, V_DIM

TOL = {"atol": 1e-3, "rtol": 8e-3}  # both sides round an fp32 result to bf16 once: one bf16 ulp apart at most
NO_SCHEDULE = object()  # the references never read FlashMLA's scheduler metadata


def _expected(batch, q, kv_float, topk, return_lse=True):
    return sparse_mla(q, kv_float, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, return_lse=return_lse)


def _params(cases, heads=MLA_HEADS):
    """`heads` on the first case, two head counts on the others (CI time)."""
    few = [h for h in heads if h in (8, 64)]
    return [pytest.param(c, h, id=f"{c.id}-H{h}") for i, c in enumerate(cases) for h in (heads if i == 0 else few)]


@pytest.mark.parametrize("case,heads", _params(CASES))
def test_prefill_over_the_bf16_pool(case, heads):
    batch, q, kv_cache, topk, _ = mla_inputs(case, heads)
    kwargs, empty = prefill_kwargs(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
    assert kwargs["kv"].data_ptr() == kv_cache.data_ptr()  # the pool itself, no copy
    out, _, lse = flashmla_refs.flash_mla_sparse_fwd(**kwargs)
    out, lse = mla_output(out, lse, heads, empty, q.dtype, return_lse=True)
    expected, expected_lse = _expected(batch, q, kv_cache, topk)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(lse, expected_lse, atol=1e-4, rtol=1e-5)
    assert (out[list(case.empty_rows)] == 0).all()


@pytest.mark.parametrize("case,heads", _params(CASES, (8, 64)))
def test_prefill_over_the_fp8_pool(case, heads):
    batch, q, kv_cache, topk, selected = mla_inputs(case, heads)
    pool = fp8_latent_pool(kv_cache, selected)  # [S, 656], NaN outside the selected slots
    kwargs, empty = prefill_kwargs(q, pool, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
    assert kwargs["kv"].dtype == torch.bfloat16 and kwargs["kv"].shape[0] <= sum(case.lengths)  # request spans only
    out, _, lse = flashmla_refs.flash_mla_sparse_fwd(**kwargs)
    out, lse = mla_output(out, lse, heads, empty, q.dtype, return_lse=True)
    # what the kernel reads: the pool dequantized to bf16 (flash_mla_sparse_fwd takes a bf16 kv, as in SGLang)
    expected, expected_lse = _expected(batch, q, unpack_fp8_kv(pool, V_DIM, ROPE_DIM).to(torch.bfloat16), topk)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(lse, expected_lse, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case,heads", _params(DECODE_CASES))
def test_decode_over_the_fp8_pool_in_place(case, heads):
    batch, q, kv_cache, topk, selected = mla_inputs(case, heads)
    pool = fp8_latent_pool(kv_cache, selected)
    kwargs, empty = decode_kwargs(q, pool, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, NO_SCHEDULE)
    assert kwargs["k_cache"].data_ptr() == pool.data_ptr() and kwargs["k_cache"].shape[1:] == (64, 1, 656)
    out, lse = flashmla_refs.flash_mla_with_kvcache(**kwargs)  # [T, 1, H', 512], [T, H', 1]
    out, lse = mla_output(out[:, 0], lse[..., 0], heads, empty, q.dtype, return_lse=True)
    expected, expected_lse = _expected(batch, q, unpack_fp8_kv(pool, V_DIM, ROPE_DIM), topk)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(lse, expected_lse, atol=1e-4, rtol=1e-5)
    assert (out[list(case.empty_rows)] == 0).all() and (lse[list(case.empty_rows)] == float("-inf")).all()


def test_our_fp8_layout_is_flashmlas_v32():
    """pack_fp8_kv (the pool's writer) read back by the V32 dequantization written from FlashMLA's docs."""
    kv = torch.randn(64, QK_DIM)
    pool = fp8_latent_pool(kv, range(64))
    torch.testing.assert_close(flashmla_refs.dequantize_v32(pool.view(1, 64, 1, -1)), unpack_fp8_kv(pool, V_DIM, ROPE_DIM))


def test_a_pool_typed_e4m3_is_read_as_its_bytes():
    """SGLang types its packed FP8 pool float8_e4m3fn; the 656 B rows are the same bytes."""
    batch, q, kv_cache, topk, selected = mla_inputs(DECODE_CASES[0], 8)
    pool = fp8_latent_pool(kv_cache, selected)
    typed = pool.view(torch.float8_e4m3fn)
    for build in (prefill_kwargs, lambda *a: decode_kwargs(*a, NO_SCHEDULE)):
        got, _ = build(q, typed, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
        want, _ = build(q, pool, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
        cache = "kv" if "kv" in got else "k_cache"
        assert got[cache].dtype == want[cache].dtype  # the same bytes (NaN included): compared as bytes
        assert torch.equal(got[cache].contiguous().view(torch.uint8), want[cache].contiguous().view(torch.uint8))


def test_decode_refuses_a_bf16_pool():
    batch, q, kv_cache, topk, _ = mla_inputs(DECODE_CASES[0], 8)
    with pytest.raises(TypeError, match=r"sparse decode reads only the FP8 pool .*--kv-cache-dtype fp8_e4m3"):
        decode_kwargs(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, NO_SCHEDULE)


BAD = {
    "H96": ({"heads": 96}, ValueError, r"96 heads per GPU: the kernel runs 64 or 128 heads"),
    "H3": ({"heads": 3}, ValueError, r"3 heads per GPU"),
    "v_dim-448": ({"v_dim": 448}, ValueError, r"V32 sparse kernels take"),
    "fp32-pool": ({"kv": torch.zeros(64, QK_DIM)}, TypeError, r"bfloat16 pool or the \[slots, 656\] uint8 FP8 pool"),
    "fp8-pool-576": ({"kv": torch.zeros(64, 576, dtype=torch.uint8)}, ValueError, r"FP8 pool rows are 656 bytes"),
    "topk-rows": ({"topk_rows": 1}, ValueError, r"topk must be \["),
}


@pytest.mark.parametrize("change,error,message", BAD.values(), ids=list(BAD))
def test_bad_inputs_are_named(change, error, message):
    q = torch.zeros(3, change.get("heads", 8), QK_DIM, dtype=torch.bfloat16)
    kv = change.get("kv", torch.zeros(64, QK_DIM, dtype=torch.bfloat16))
    topk = torch.zeros(change.get("topk_rows", 3), 4, dtype=torch.int32)
    page_table = torch.arange(8, dtype=torch.int32).view(1, 8)
    with pytest.raises(error, match=message):
        prefill_kwargs(q, kv, page_table, torch.zeros(3, dtype=torch.long), topk, SM_SCALE, change.get("v_dim", V_DIM))


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_table_row_loads_and_refuses_cpu_tensors(phase):
    impl = resolve_impl("flashmla", phase, "cuda")
    assert impl.name == "flashmla" and impl.sparse_mla is getattr(mla, f"sparse_mla_{phase}")
    batch, q, kv_cache, topk, selected = mla_inputs(DECODE_CASES[0], 8)
    with pytest.raises(RuntimeError, match=r"FlashMLA on an SM90 GPU; got tensors on cpu"):
        impl.sparse_mla(q, fp8_latent_pool(kv_cache, selected), batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)


def test_page_table_off_64_slot_pages_is_refused():
    page_table = torch.tensor([[5, 6, 7]], dtype=torch.int32)  # slot 5 is not a page start
    with pytest.raises(ValueError, match=r"pages of 64 slots.*--page-size 64"):
        layout.check_paged(page_table, torch.tensor([0]), torch.tensor([2]))
    layout.check_paged(torch.tensor([[128, 129, 130]], dtype=torch.int32), torch.tensor([0]), torch.tensor([2]))
