"""DSA kernels of every GPU backend (triton, tilelang) against the torch reference, on a GPU; skipped without one.

Separate from tests/dsa/, whose conftest runs the Triton kernels in the interpreter: here they are compiled.
`bench/gpu_check.sh` runs this file in its own pytest process on a lent GPU.
"""

import importlib

import pytest
import torch

from sglang_glm5.dsa import reference as dsa_reference
from tests.dsa.cases import SM_SCALE, V_DIM, make_batch, nan_except, sparse_mla_inputs

BACKENDS = ("triton", "tilelang")
INDEX_HEADS, INDEX_DIM = 32, 128
# kernel (bf16/fp16 tensor-core operands, fp32 accumulation) vs the fp32 reference on the same inputs;
# sparse MLA also rounds the softmax weights to q.dtype before the p @ v gemm, and its output to q.dtype
TOL = {
    "logits": dict(atol=2e-3, rtol=2e-3),
    "lse": dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
}
PREFILL = ([1, 63, 500, 3000], [1, 6, 5, 130])  # odd lengths, ragged, chunks at the end of long requests
DECODE = ([1, 64, 65, 500, 4097], [1, 1, 1, 1, 1])  # one token per request, either side of page boundaries
MLA_SHAPES = [(8, torch.bfloat16, 2048), (16, torch.float16, 256), (32, torch.bfloat16, 64), (64, torch.bfloat16, 2048),
              (8, torch.float16, 16)]  # fmt: skip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm GPU (bench/gpu_check.sh)")


def _backend(name):
    module = importlib.import_module(f"sglang_glm5.dsa.{name}")
    if name == "triton":
        from sglang_glm5.dsa.triton import indexer

        if type(indexer._indexer_logits_kernel).__name__ == "InterpretedFunction":
            pytest.skip("Triton kernels were imported under TRITON_INTERPRET: run this file in its own pytest process")
    return module


def _cuda(batch):
    return batch.page_table.cuda(), batch.q_seq.cuda(), batch.q_pos.cuda()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths,new", [PREFILL, DECODE], ids=["prefill", "decode"])
def test_indexer_logits(backend, lengths, new):
    impl = _backend(backend)
    gen = torch.Generator().manual_seed(len(lengths))
    batch = make_batch(lengths, new, gen)
    q = torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen).to(torch.bfloat16)
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    k_cache = nan_except(torch.randn(batch.num_slots, INDEX_DIM, generator=gen).to(torch.bfloat16),
                         batch.referenced_slots())  # fmt: skip
    args = (q.cuda(), weights.cuda(), k_cache.cuda(), *_cuda(batch))
    out = torch.full((batch.num_tokens, batch.page_table.shape[1]), float("nan"), device="cuda")
    impl.indexer_logits(*args, out=out)
    torch.testing.assert_close(_up_to_position(out.cpu(), batch.q_pos, backend),
                               dsa_reference.indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq,
                                                            batch.q_pos), **TOL["logits"])  # fmt: skip


def _up_to_position(logits, q_pos, backend):
    """tilelang neither computes nor writes positions past q_pos (its top-k reads only 0..q_pos): those stay as the
    NaN the test filled, compared as the reference's -inf; every position up to q_pos must be written."""
    if backend != "tilelang":
        return logits
    past = torch.arange(logits.shape[1])[None, :] > q_pos[:, None]  # [T, L]
    return logits.masked_fill(past, float("-inf"))


def _fp8_dtype(backend):
    """tilelang takes the e4m3 variant its tuning names for this device (fnuz on gfx942), triton OCP e4m3fn."""
    if backend == "tilelang":
        from sglang_glm5.dsa.tilelang.indexer import fp8_dtype_for

        return fp8_dtype_for(torch.device("cuda"))
    if getattr(torch.version, "hip", None) and "gfx942" in torch.cuda.get_device_properties(0).gcnArchName:
        pytest.skip("Triton's FP8 indexer takes OCP e4m3fn, which gfx942's fp8 mfma does not read")
    return torch.float8_e4m3fn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths,new", [PREFILL, DECODE], ids=["prefill", "decode"])
def test_indexer_logits_fp8(backend, lengths, new):
    impl = _backend(backend)
    dtype = _fp8_dtype(backend)
    gen = torch.Generator().manual_seed(len(lengths) + 1)
    batch = make_batch(lengths, new, gen)
    q_fp8, q_scale = dsa_reference.quantize_fp8_rows(torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM,
                                                                 generator=gen), dtype)  # fmt: skip
    k_fp8, k_scale = dsa_reference.quantize_fp8_rows(torch.randn(batch.num_slots, INDEX_DIM, generator=gen), dtype)
    k_fp8 = nan_except(k_fp8, batch.referenced_slots())  # unreferenced rows and scales are never read
    k_scale = nan_except(k_scale[:, None], batch.referenced_slots())[:, 0]
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    args = (q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
    out = torch.full((batch.num_tokens, batch.page_table.shape[1]), float("nan"), device="cuda")
    impl.indexer_logits_fp8(*(a.cuda() for a in args), out=out)
    torch.testing.assert_close(_up_to_position(out.cpu(), batch.q_pos, backend),
                               dsa_reference.indexer_logits_fp8(*args), **TOL["logits"])  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [16, 2048, 5000], ids=lambda k: f"topk{k}")
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_topk_positions(backend, k, ties):
    impl = _backend(backend)
    gen = torch.Generator().manual_seed(k)
    lengths = [1, 17, 2048, 2049, 4097, 9000]
    q_pos = torch.tensor([n - 1 for n in lengths])
    logits = torch.randn(len(lengths), max(lengths), generator=gen)
    if ties:  # few distinct values: the k-th largest is shared by many positions
        logits = (logits * 2).round()
        logits[0, 0] = -0.0
    out = torch.full((len(lengths), k), -7, dtype=torch.int32, device="cuda")
    impl.topk_positions(logits.cuda(), q_pos.cuda(), k, out=out)
    # both in canonical form (ascending positions, ties to the lower position, -1 padding): equal as tensors
    assert torch.equal(out.cpu(), dsa_reference.topk_positions(logits, q_pos, k))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("length", [65536, 200_000], ids=lambda n: f"S{n}")
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_topk_batch1_long_row_split_across_programs(backend, length, ties):
    """Batch-1 decode over a long context: the row is split across programs / CTAs (default_num_chunks > 1 on any GPU
    with more than one SM), same canonical result as the reference and as one program for the row."""
    impl = _backend(backend)
    default_num_chunks = importlib.import_module(f"sglang_glm5.dsa.{backend}.topk").default_num_chunks

    gen = torch.Generator().manual_seed(length)
    logits = torch.randn(1, length, generator=gen)
    if ties:
        logits = (logits * 4).round()
    q_pos = torch.tensor([length - 1])
    chunks = default_num_chunks(1, length, torch.cuda.get_device_properties(0).multi_processor_count)
    assert chunks > 1
    out = impl.topk_positions(logits.cuda(), q_pos.cuda(), 2048)
    assert torch.equal(out.cpu(), dsa_reference.topk_positions(logits, q_pos, 2048))
    assert torch.equal(out, impl.topk_positions(logits.cuda(), q_pos.cuda(), 2048, num_chunks=1))


@pytest.mark.parametrize("num_chunks", [1, 5], ids=["one-cta", "split"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_tilelang_topk_shared_list_overflow_falls_back(num_chunks, ties):
    """A candidate list larger than the shared capacity (forced: capacity 64 < k) is refined over the row instead:
    same canonical result, with one CTA per row and with split rows (several rows, odd lengths, some <= k)."""
    impl = _backend("tilelang")
    gen = torch.Generator().manual_seed(num_chunks)
    lengths = [100, 129, 5000, 20_001]
    logits = torch.randn(len(lengths), max(lengths), generator=gen)
    if ties:
        logits = (logits * 2).round()
    q_pos = torch.tensor([n - 1 for n in lengths])
    out = torch.full((len(lengths), 128), -7, dtype=torch.int32, device="cuda")
    impl.topk_positions(logits.cuda(), q_pos.cuda(), 128, out=out, num_chunks=num_chunks, capacity=64)
    assert torch.equal(out.cpu(), dsa_reference.topk_positions(logits, q_pos, 128))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("heads,dtype,topk", MLA_SHAPES,
                         ids=[f"H{h}-{str(d)[6:]}-topk{k}" for h, d, k in MLA_SHAPES])  # fmt: skip
def test_sparse_mla(backend, phase, heads, dtype, topk):
    impl = _backend(backend)
    lengths, new = PREFILL if phase == "prefill" else DECODE
    batch, q, kv_cache, sel = sparse_mla_inputs(lengths, new, heads, dtype, topk, seed=heads + topk)
    out = torch.full((batch.num_tokens, heads, V_DIM), float("nan"), dtype=dtype, device="cuda")
    lse = torch.full((batch.num_tokens, heads), float("nan"), device="cuda")
    page_table, q_seq, _ = _cuda(batch)
    getattr(impl, f"sparse_mla_{phase}")(q.cuda(), kv_cache.cuda(), page_table, q_seq, sel.cuda(), SM_SCALE, V_DIM,
                                         return_lse=True, out=out, lse=lse)  # fmt: skip
    ref_out, ref_lse = dsa_reference.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM,
                                                return_lse=True)  # fmt: skip
    out, lse = out.cpu(), lse.cpu()
    assert not out.isnan().any() and not lse.isnan().any()
    torch.testing.assert_close(out.float(), ref_out.float(), **TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, **TOL["lse"])
    assert torch.equal(out[-1], torch.zeros_like(out[-1])) and torch.isneginf(lse[-1]).all()  # the all -1 row


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_page_table(backend):
    """SGLang's page table is a column slice of req_to_token: rows strided by the pool's max context."""
    impl = _backend(backend)
    batch, q, kv_cache, sel = sparse_mla_inputs(*DECODE, 8, torch.bfloat16, 256, seed=3)
    wide = torch.zeros(batch.page_table.shape[0], batch.page_table.shape[1] + 37, dtype=torch.int32)
    wide[:, : batch.page_table.shape[1]] = batch.page_table
    strided = wide.cuda()[:, : batch.page_table.shape[1]]
    out = impl.sparse_mla_decode(q.cuda(), kv_cache.cuda(), strided, batch.q_seq.cuda(), sel.cuda(), SM_SCALE, V_DIM)
    ref = dsa_reference.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    torch.testing.assert_close(out.cpu().float(), ref.float(), **TOL[torch.bfloat16])
