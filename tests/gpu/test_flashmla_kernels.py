"""The flashmla implementation's real kernels (FlashMLA sparse MLA, DeepGEMM FP8 indexer) against our reference ops,
on an SM90 GPU where sgl-flash-mla and sgl-deep-gemm import; skipped with the reason everywhere else (the lent
H100/H200 image has neither package). `bench/gpu_check.sh` runs this file with -rs, so the reason is in its log.
"""

import pytest
import torch

from sglang_glm5.dsa.impls import unavailable_impls
from sglang_glm5.dsa.triton.kv_layout import unpack_fp8_kv
from sglang_glm5.dsa import reference as dsa_reference
from tests.dsa.flashmla_cases import CASES, DECODE_CASES, fp8_latent_pool, index_k_pool, mla_inputs
from tests.dsa.cases import INDEX_DIM, ROPE_DIM, SM_SCALE, V_DIM, make_batch


def _why_not() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if torch.cuda.get_device_capability()[0] != 9:
        return f"flashmla runs on sm_90; this is sm_{''.join(map(str, torch.cuda.get_device_capability()))}"
    return unavailable_impls(["flashmla"]).get("flashmla")


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"flashmla skipped: {WHY_NOT}")
MLA_TOL = dict(atol=2e-2, rtol=2e-2)  # bf16 tensor-core operands and output vs the fp32 reference
LOGITS_TOL = dict(atol=2e-3, rtol=2e-3)  # the same e4m3 operands, fp32 accumulation


def _impl():
    from sglang_glm5.dsa import flashmla

    return flashmla


def _cuda(*tensors):
    return [t.cuda() for t in tensors]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("heads", [8, 64])
def test_sparse_mla_prefill(case, heads):
    batch, q, kv_cache, topk, selected = mla_inputs(case, heads)
    fp8_pool = fp8_latent_pool(kv_cache, selected)
    # (pool, what the kernel computes with): prefill reads the FP8 pool dequantized to bf16
    for pool, seen in ((kv_cache, kv_cache), (fp8_pool, unpack_fp8_kv(fp8_pool, V_DIM, ROPE_DIM).bfloat16())):
        out = _impl().sparse_mla_prefill(*_cuda(q, pool, batch.page_table, batch.q_seq, topk), SM_SCALE, V_DIM)
        expected = dsa_reference.sparse_mla(q, seen, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
        torch.testing.assert_close(out.cpu().float(), expected.float(), **MLA_TOL)


@pytest.mark.parametrize("case", DECODE_CASES, ids=[c.id for c in DECODE_CASES])
@pytest.mark.parametrize("heads", [8, 64, 128])
def test_sparse_mla_decode(case, heads):
    batch, q, kv_cache, topk, selected = mla_inputs(case, heads)
    pool = fp8_latent_pool(kv_cache, selected)
    out, lse = _impl().sparse_mla_decode(*_cuda(q, pool, batch.page_table, batch.q_seq, topk), SM_SCALE, V_DIM,
                                         return_lse=True)  # fmt: skip
    expected, expected_lse = dsa_reference.sparse_mla(q, unpack_fp8_kv(pool, V_DIM, ROPE_DIM), batch.page_table,
                                                      batch.q_seq, topk, SM_SCALE, V_DIM, return_lse=True)  # fmt: skip
    torch.testing.assert_close(out.cpu().float(), expected.float(), **MLA_TOL)
    torch.testing.assert_close(lse.cpu(), expected_lse, **LOGITS_TOL)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_indexer_logits(case):
    gen = torch.Generator().manual_seed(1)
    batch = make_batch(list(case.lengths), list(case.new_tokens), gen)
    q = torch.randn(batch.num_tokens, 32, INDEX_DIM, generator=gen).to(torch.bfloat16)
    weights = torch.randn(batch.num_tokens, 32, generator=gen) * 32**-0.5
    pool, k_fp8, k_scale = index_k_pool(batch)
    q_fp8, q_scale = dsa_reference.quantize_fp8_rows(q)
    expected = dsa_reference.indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table,
                                                 batch.q_seq, batch.q_pos)  # fmt: skip
    phases = ["prefill"] + (["decode"] if case in DECODE_CASES else [])
    for phase in phases:
        fn = getattr(_impl(), f"indexer_logits_{phase}")
        got = fn(*_cuda(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos)).cpu()
        assert torch.equal(got.isinf(), expected.isinf()), phase
        torch.testing.assert_close(got.masked_fill(got.isinf(), 0), expected.masked_fill(expected.isinf(), 0), **LOGITS_TOL)
