"""trtllm sparse MLA: our converted inputs fed to FlashInfer's own CPU references == our reference sparse MLA.

FlashInfer ships two torch references for what its TRT-LLM sparse MLA kernel computes:
- `_trtllm_batch_decode_mla_sparse_reference` takes the kernel's exact arguments, but reads each index as a page
  of the cache it is given; the kernel reads it as a flat token row (FlashInfer's GPU test: `block_tables[b, pos //
  block] * block + pos % block`). Both readings agree on the same memory viewed as one-token pages, which is how
  it is fed here.
- `_dsa_paged_reference` reads flat token rows of the paged cache, like the kernel, and returns the (base-2) LSE.
Our reference is fed the same inputs; for an FP8 cache the query is the e4m3-rounded one the kernel gets.
"""

import importlib.util
import inspect
import math

import pytest
import torch
from flashinfer.mla import _core as flashinfer_mla_core
from flashinfer.trace.templates.attention import (
    _dsa_paged_reference,
    _trtllm_batch_decode_mla_sparse_reference,
)

from sglang_glm5.dsa.impls import resolve_impl
from sglang_glm5.dsa.trtllm import mla
from sglang_glm5.dsa.trtllm.mla import (
    KERNEL_BY_PHASE,
    flashinfer_kernel,
    trtllm_output,
    trtllm_sparse_mla_kwargs,
)
from sglang_glm5.dsa.reference import sparse_mla
from tests.dsa.trtllm_cases import CASES, DECODE_CASES, case_inputs
from tests.dsa.cases import DTYPE_ID, QK_DIM, SM_SCALE, V_DIM

HEADS = 8  # GLM-5's 64 heads at tp 8
# the references round their fp32 result to bf16 once, ours too: one bf16 ulp apart at most
TOL = {"atol": 1e-3, "rtol": 8e-3}
KV_DTYPES = [torch.bfloat16, torch.float8_e4m3fn]
NO_WORKSPACE = torch.empty(0, dtype=torch.uint8)  # the CPU references never touch it


def _inputs(case, kv_dtype):
    batch, q, kv_cache, topk = case_inputs(case, HEADS, torch.bfloat16, seed=case.k)
    kv_cache = kv_cache.to(kv_dtype)
    # what the kernel computes with: q in the cache dtype; our reference gets that q back in bf16 (exact)
    q_seen = q.to(kv_dtype).to(torch.bfloat16) if kv_dtype == torch.float8_e4m3fn else q
    return batch, q, q_seen, kv_cache, topk


def _as_bf16(kwargs):
    """e4m3 query / cache -> bf16 (exact): the references write their output in the query dtype, the kernel in bf16."""
    return {
        **kwargs,
        "query": kwargs["query"].to(torch.bfloat16),
        "kv_cache": kwargs["kv_cache"].to(torch.bfloat16),
    }


def _reference(batch, q_seen, kv_cache, topk, return_lse=False):
    return sparse_mla(
        q_seen,
        kv_cache,
        batch.page_table,
        batch.q_seq,
        topk,
        SM_SCALE,
        V_DIM,
        return_lse=return_lse,
    )


def _ids(cases):
    return [f"{c.id}-{DTYPE_ID[d]}" for c in cases for d in KV_DTYPES]


def _params(cases):
    return [(c, d) for c in cases for d in KV_DTYPES]


@pytest.mark.parametrize("case,kv_dtype", _params(CASES), ids=_ids(CASES))
def test_trtllm_reference_on_converted_inputs_matches_ours(case, kv_dtype):
    batch, q, q_seen, kv_cache, topk = _inputs(case, kv_dtype)
    kwargs, empty = trtllm_sparse_mla_kwargs(
        q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, NO_WORKSPACE
    )
    one_token_pages = kwargs["kv_cache"].reshape(-1, 1, 1, QK_DIM)  # [S, 1, 1, 576], same memory
    result = _trtllm_batch_decode_mla_sparse_reference(**_as_bf16({**kwargs, "kv_cache": one_token_pages}))
    out = trtllm_output(result, empty, q.dtype)  # [T, H, 512]
    expected = _reference(batch, q_seen, kv_cache, topk)
    assert not out.isnan().any()  # every unselected slot is NaN: nothing else was read
    torch.testing.assert_close(out, expected, **TOL)
    assert (out[list(case.empty_rows)] == 0).all()


@pytest.mark.parametrize("case,kv_dtype", _params(CASES), ids=_ids(CASES))
def test_dsa_reference_on_converted_paged_layout_matches_ours(case, kv_dtype):
    batch, q, q_seen, kv_cache, topk = _inputs(case, kv_dtype)
    kwargs, empty = trtllm_sparse_mla_kwargs(
        q,
        kv_cache,
        batch.page_table,
        batch.q_seq,
        topk,
        SM_SCALE,
        V_DIM,
        NO_WORKSPACE,
        return_lse=True,
    )
    kw = _as_bf16(kwargs)
    query, paged = kw["query"][:, 0], kw["kv_cache"]  # [T, H, 576], [P, 1, block, 576]
    out2, lse2 = _dsa_paged_reference(
        query[..., :V_DIM], query[..., V_DIM:], paged[..., :V_DIM], paged[..., V_DIM:],
        kw["block_tables"][:, 0], kw["bmm1_scale"],
    )  # fmt: skip
    out, lse = trtllm_output((out2.unsqueeze(1), lse2 * math.log(2.0)), empty, q.dtype, return_lse=True)
    expected, expected_lse = _reference(batch, q_seen, kv_cache, topk, return_lse=True)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(lse, expected_lse, atol=1e-4, rtol=1e-5)  # both fp32


@pytest.mark.parametrize("case,kv_dtype", _params(CASES), ids=_ids(CASES))
def test_converted_inputs_pass_flashinfers_shape_contract(case, kv_dtype):
    batch, q, _, kv_cache, topk = _inputs(case, kv_dtype)
    kw, _ = trtllm_sparse_mla_kwargs(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, NO_WORKSPACE)
    assert kw["query"].dtype == kv_dtype and kw["block_tables"].dtype == kw["seq_lens"].dtype == torch.int32
    # FlashInfer's own check of sparse trtllm-gen inputs, run on the GPU path before the kernel
    flashinfer_mla_core._check_trtllm_gen_mla_shape(
        kw["query"], kw["kv_cache"], kw["kv_lora_rank"], kw["qk_rope_head_dim"], kw["sparse_mla_top_k"],
        kw["block_tables"], kw["kv_cache"].shape[2],
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lengths_are_physical_kv_lengths(case):
    """seq_lens / max_seq_len: physical KV lengths (FlashInfer's docstring, SGLang's _forward_trtllm), not the count
    of valid top-k entries: every row gets the batch's longest, an upper bound of its own request's length."""
    batch, q, _, kv_cache, topk = _inputs(case, torch.bfloat16)
    kw, _ = trtllm_sparse_mla_kwargs(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, NO_WORKSPACE)
    longest = max(case.lengths)
    assert kw["max_seq_len"] == longest and kw["seq_lens"].dtype == torch.int32
    assert torch.equal(kw["seq_lens"], torch.full((batch.num_tokens,), longest, dtype=torch.int32))
    assert (kw["seq_lens"] >= batch.q_pos + 1).all()  # each row's physical length fits under it
    assert "sparse_mla_top_k_lens" not in kw  # FlashInfer takes it for no-rope MLA only


def test_length_semantics_match_flashinfer_and_sglang():
    """The contract read from the installed sources: an upgrade that changes what these lengths mean fails here."""
    doc = " ".join(inspect.getdoc(flashinfer_mla_core._trtllm_batch_decode_with_kv_cache_mla_impl).split())
    assert "seq_lens : Optional[torch.Tensor] Per-request physical KV sequence lengths for dense and TRTLLM-GEN" in doc
    assert "max_seq_len : int Maximum physical KV sequence length used for dense/TRTLLM-GEN scheduling" in doc
    assert "Required by the native ``kv_lora_rank=512, qk_rope_head_dim=0`` TRTLLM-GEN kernel" in doc
    origin = importlib.util.find_spec("sglang.srt.layers.attention.dsa_backend").origin
    source = open(origin).read()
    body = source[source.index("def _forward_trtllm(") :]
    body = body[: body.index("\n    def ", 1)]
    assert "seq_lens = metadata.cache_seqlens_int32 if seq_lens is None else seq_lens" in body
    assert "max_seq_len=metadata.max_seq_len_k," in body
    assert "sparse_mla_top_k_lens = prepare_trtllm_nope_sparse_metadata" in body  # only when qk_rope_head_dim == 0


@pytest.mark.parametrize("phase", list(KERNEL_BY_PHASE))
@pytest.mark.parametrize("return_lse", [False, True], ids=["out", "out+lse"])
def test_flashinfer_api_accepts_what_we_pass(phase, return_lse):
    """API drift guard: an upgrade that renames the function or an argument we pass fails here, not at launch."""
    case = CASES[0]
    batch, q, _, kv_cache, topk = _inputs(case, torch.bfloat16)
    kwargs, _ = trtllm_sparse_mla_kwargs(
        q,
        kv_cache,
        batch.page_table,
        batch.q_seq,
        topk,
        SM_SCALE,
        V_DIM,
        NO_WORKSPACE,
        return_lse=return_lse,
    )
    signature = inspect.signature(flashinfer_kernel(phase))
    signature.bind(**kwargs)
    assert "trtllm-gen" in inspect.getdoc(flashinfer_mla_core._trtllm_batch_decode_with_kv_cache_mla_impl)


@pytest.mark.parametrize("phase", list(KERNEL_BY_PHASE))
def test_table_row_loads_and_refuses_cpu_tensors(phase):
    impl = resolve_impl("trtllm", phase, "cuda")
    assert impl.name == "trtllm" and impl.sparse_mla is getattr(mla, f"sparse_mla_{phase}")
    batch, q, _, kv_cache, topk = _inputs(DECODE_CASES[0], torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"SM100/SM103 GPU; got tensors on cpu"):
        impl.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)


BAD_INPUTS = {
    "fp32-cache": (
        {"kv_dtype": torch.float32},
        TypeError,
        "kv_cache: the TRT-LLM sparse MLA kernel reads",
    ),
    "H96": ({"heads": 96}, ValueError, "96 heads per GPU"),
    "v_dim-448": ({"v_dim": 448}, ValueError, r"supports \(kv_lora_rank, rope dim\)"),
    "topk-rows": ({"topk_rows": 1}, ValueError, r"topk must be \["),
}


@pytest.mark.parametrize("change,error,message", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_bad_inputs_are_named(change, error, message):
    heads = change.get("heads", HEADS)
    q = torch.zeros(3, heads, QK_DIM, dtype=torch.bfloat16)
    kv_cache = torch.zeros(64, QK_DIM, dtype=change.get("kv_dtype", torch.bfloat16))
    topk = torch.zeros(change.get("topk_rows", 3), 4, dtype=torch.int32)
    page_table = torch.arange(8, dtype=torch.int32).view(1, 8)
    with pytest.raises(error, match=message):
        trtllm_sparse_mla_kwargs(
            q, kv_cache, page_table, torch.zeros(3, dtype=torch.long), topk, SM_SCALE, change.get("v_dim", V_DIM),
            NO_WORKSPACE,
        )  # fmt: skip


def _blackwell():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 10


@pytest.mark.skipif(
    not _blackwell(),
    reason="needs an SM100/SM103 GPU for FlashInfer's TRT-LLM-gen kernel; none here",
)
@pytest.mark.parametrize("case,kv_dtype", _params(CASES), ids=_ids(CASES))
def test_kernel_on_blackwell_matches_reference(case, kv_dtype):
    batch, q, q_seen, kv_cache, topk = _inputs(case, kv_dtype)
    phase = "decode" if case in DECODE_CASES else "prefill"
    args = (batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
    out = getattr(mla, f"sparse_mla_{phase}")(
        q.cuda(),
        kv_cache.cuda(),
        *(a.cuda() if torch.is_tensor(a) else a for a in args),
    )
    expected = _reference(batch, q_seen, kv_cache, topk)
    torch.testing.assert_close(out.cpu(), expected, atol=2e-2, rtol=2e-2)  # FlashInfer's own bf16 test tolerance
