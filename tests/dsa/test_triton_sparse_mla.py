"""Triton sparse MLA prefill and decode against the reference, under the interpreter."""

import pytest
import torch

from sglang_glm5.dsa.triton import mla_decode, sparse_mla_decode, sparse_mla_prefill
from sglang_glm5.dsa.triton.kv_layout import fp8_kv_offsets, fp8_kv_width, pack_fp8_kv, unpack_fp8_kv
from sglang_glm5.dsa.reference import sparse_mla
from tests.dsa.cases import (
    DTYPE_ID,
    MLA_OUT_TOL,
    QK_DIM,
    SM_SCALE,
    TOL,
    V_DIM,
    batch_id,
    make_batch,
    random_topk,
    sparse_mla_inputs,
)
from tests.dsa.triton_launches import trace_host

PREFILL = ([1, 63, 500], [1, 6, 5])  # odd lengths, ragged, a chunk at the end of a 500-token request
DECODE = ([1, 64, 65, 500], [1, 1, 1, 1])  # one token per request, either side of a 64-slot page boundary
# (heads, dtype, topk): every TP degree's head count; topk 256 > most lengths, so rows end in -1 padding
SHAPES = [(8, torch.float32, 16), (16, torch.float16, 256), (32, torch.float32, 256), (64, torch.float16, 16),
          (8, torch.bfloat16, 16)]  # fmt: skip


def _check(entry, lengths, new, heads, dtype, topk, seed, **kwargs):
    batch, q, kv_cache, sel = sparse_mla_inputs(lengths, new, heads, dtype, topk, seed)
    out = torch.full((batch.num_tokens, heads, V_DIM), float("nan"), dtype=dtype)
    lse = torch.full((batch.num_tokens, heads), float("nan"))
    args = (q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    entry(*args, return_lse=True, out=out, lse=lse, **kwargs)
    ref_out, ref_lse = sparse_mla(*args, return_lse=True)
    assert not out.isnan().any() and not lse.isnan().any()
    torch.testing.assert_close(out.float(), ref_out.float(), **MLA_OUT_TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, **TOL[torch.float32])
    assert torch.equal(out[-1], torch.zeros_like(out[-1])) and torch.isneginf(lse[-1]).all()  # the all -1 row


def _case_id(batch, heads, dtype, topk):
    return f"{batch_id(*batch)}-H{heads}-{DTYPE_ID[dtype]}-topk{topk}"


@pytest.mark.parametrize("heads,dtype,topk", SHAPES, ids=[_case_id(PREFILL, *s) for s in SHAPES])
def test_sparse_mla_prefill_matches_reference(heads, dtype, topk):
    _check(sparse_mla_prefill, *PREFILL, heads, dtype, topk, seed=heads)


@pytest.mark.parametrize("heads,dtype,topk", SHAPES, ids=[_case_id(DECODE, *s) for s in SHAPES])
def test_sparse_mla_decode_matches_reference(heads, dtype, topk):
    _check(sparse_mla_decode, *DECODE, heads, dtype, topk, seed=heads + 1)


@pytest.mark.parametrize("num_splits", [1, 3, 8], ids=lambda n: f"splits{n}")
def test_sparse_mla_decode_splits(num_splits):
    """Splits merge exactly, including splits whose columns are all -1 or past the end of the row."""
    _check(sparse_mla_decode, *DECODE, 8, torch.float32, 96, seed=num_splits, num_splits=num_splits)


def test_returns_q_dtype_without_lse():
    batch, q, kv_cache, sel = sparse_mla_inputs([40], [2], 8, torch.float16, 16, seed=5)
    args = (q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    for entry in (sparse_mla_prefill, sparse_mla_decode):
        out = entry(*args)
        assert out.dtype == torch.float16 and out.shape == (batch.num_tokens, 8, V_DIM)
        torch.testing.assert_close(out, sparse_mla(*args), **TOL[torch.float16])


def test_small_latent_of_the_tiny_checkpoint():
    """kv_lora_rank 64 + rope 16 (tiny GLM-5): non-GLM-5 dims pad to power-of-two tiles."""
    gen = torch.Generator().manual_seed(6)
    batch = make_batch([30, 70], [30, 1], gen)
    q = torch.randn(batch.num_tokens, 4, 80, generator=gen)
    kv_cache = torch.randn(batch.num_slots, 80, generator=gen)
    sel = random_topk(batch, 16, gen)
    args = (q, kv_cache, batch.page_table, batch.q_seq, sel, 0.1, 64)
    for entry in (sparse_mla_prefill, sparse_mla_decode):
        torch.testing.assert_close(entry(*args), sparse_mla(*args), **TOL[torch.float32])


BAD_ARGUMENTS = [
    ("q", lambda a: {**a, "q": a["q"].long()}),
    ("kv_cache", lambda a: {**a, "kv_cache": a["kv_cache"][:, 1:]}),
    ("topk", lambda a: {**a, "topk": a["topk"][1:]}),
    ("q_seq", lambda a: {**a, "q_seq": a["q_seq"].float()}),
    ("v_dim", lambda a: {**a, "v_dim": QK_DIM + 1}),
    ("out", lambda a: {**a, "out": torch.empty(1)}),
]


@pytest.mark.parametrize("entry", [sparse_mla_prefill, sparse_mla_decode], ids=["prefill", "decode"])
@pytest.mark.parametrize("argument,change", BAD_ARGUMENTS, ids=[case[0] for case in BAD_ARGUMENTS])
def test_bad_arguments_are_named(entry, argument, change):
    batch, q, kv_cache, sel = sparse_mla_inputs([9], [2], 8, torch.float32, 4, seed=7)
    args = dict(q=q, kv_cache=kv_cache, page_table=batch.page_table, q_seq=batch.q_seq, topk=sel, sm_scale=SM_SCALE,
                v_dim=V_DIM)  # fmt: skip
    with pytest.raises((TypeError, ValueError), match=argument):
        entry(**change(args))


# ---- FlashMLA's FP8 KV cache layout ----


def test_fp8_kv_layout_round_trip():
    gen = torch.Generator().manual_seed(8)
    kv = torch.randn(5, QK_DIM, generator=gen) * torch.logspace(-2, 2, 5)[:, None]
    kv[0, :128] = 0.0  # a zero tile gets scale 1
    packed = pack_fp8_kv(kv, V_DIM)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 656) == (5, fp8_kv_width(V_DIM, QK_DIM - V_DIM))
    back = unpack_fp8_kv(packed, V_DIM, QK_DIM - V_DIM)
    assert torch.equal(back[:, V_DIM:], kv[:, V_DIM:].bfloat16().float())  # rope key: bf16, unscaled
    tile_amax = kv[:, :V_DIM].abs().view(5, 4, 128).amax(-1, keepdim=True).expand(5, 4, 128).reshape(5, V_DIM)
    # e4m3: 3 mantissa bits (relative error <= 2**-4); below its smallest normal the spacing is 2**-9 of the scale
    assert ((back[:, :V_DIM] - kv[:, :V_DIM]).abs() <= kv[:, :V_DIM].abs() * 2**-4 + tile_amax / 448 * 2**-9).all()


def _check_fp8(entry, lengths, new, heads, dtype, topk, seed):
    batch, q, kv_cache, sel = sparse_mla_inputs(lengths, new, heads, dtype, topk, seed)
    packed = pack_fp8_kv(torch.nan_to_num(kv_cache.float()), V_DIM)
    scale_start, _ = fp8_kv_offsets(V_DIM)
    unread = kv_cache.float().isnan().any(1)  # rows no selected position refers to: NaN scales, never read
    packed.view(torch.float32)[unread, scale_start : scale_start + V_DIM // 128] = float("nan")
    args = (batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    out = torch.full((batch.num_tokens, heads, V_DIM), float("nan"), dtype=dtype)
    lse = torch.full((batch.num_tokens, heads), float("nan"))
    entry(q, packed, *args, return_lse=True, out=out, lse=lse)
    # the kernels dequantize in fp32 and round the latent once to q.dtype for the tensor cores (FlashMLA: bf16)
    dequantized = unpack_fp8_kv(packed, V_DIM, QK_DIM - V_DIM)
    dequantized[:, :V_DIM] = dequantized[:, :V_DIM].to(dtype).float()
    ref_out, ref_lse = sparse_mla(q, dequantized, *args, return_lse=True)
    assert not out.isnan().any() and not lse.isnan().any()
    torch.testing.assert_close(out.float(), ref_out.float(), **MLA_OUT_TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, **TOL[torch.float32])


@pytest.mark.parametrize("heads,dtype,topk", SHAPES[:2], ids=[_case_id(PREFILL, *s) + "-fp8kv" for s in SHAPES[:2]])
def test_sparse_mla_prefill_fp8_kv_matches_dequantized_reference(heads, dtype, topk):
    _check_fp8(sparse_mla_prefill, *PREFILL, heads, dtype, topk, seed=heads + 2)


@pytest.mark.parametrize("heads,dtype,topk", SHAPES[:2], ids=[_case_id(DECODE, *s) + "-fp8kv" for s in SHAPES[:2]])
def test_sparse_mla_decode_fp8_kv_matches_dequantized_reference(heads, dtype, topk):
    _check_fp8(sparse_mla_decode, *DECODE, heads, dtype, topk, seed=heads + 3)


def test_fp8_kv_needs_whole_latent_tiles():
    batch, q, kv_cache, sel = sparse_mla_inputs([9], [2], 8, torch.float32, 4, seed=9)
    with pytest.raises(ValueError, match="kv_cache: FP8 layout rows are 656 bytes"):
        sparse_mla_prefill(q, pack_fp8_kv(kv_cache, V_DIM)[:, 1:], batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    with pytest.raises(ValueError, match="tiles of 128"):
        sparse_mla_decode(q, torch.zeros(4, 600, dtype=torch.uint8), batch.page_table, batch.q_seq, sel, SM_SCALE, 448)


# ---- decode splits: enough programs to fill the GPU once ----

SPLIT_CASES = [  # (tokens, head tiles, K, SMs) -> splits
    ((1, 1, 2048, 132), 128),  # batch 1, 8 heads on an H100/H200: 128 splits of 16 columns (132 wanted)
    ((1, 2, 2048, 132), 66),  # 64 heads (two 32-head tiles): 132 programs
    ((4, 1, 2048, 132), 33),  # 132 programs
    ((16, 1, 2048, 132), 9),  # ceil(132 / 16)
    ((132, 1, 2048, 132), 1),  # the batch alone fills the SMs
    ((1, 1, 100, 132), 7),  # short rows: at least 16 columns per split
    ((1, 1, 2048, None), 8),  # no SM count (CPU): 256 columns per split
]


@pytest.mark.parametrize("case,splits", SPLIT_CASES, ids=[f"T{c[0]}-tiles{c[1]}-K{c[2]}-SM{c[3]}" for c, _ in SPLIT_CASES])
def test_default_num_splits_fill_the_sms(case, splits):
    tokens, tiles, width, sms = case
    assert mla_decode.default_num_splits(tokens, tiles, width, sms) == splits
    columns, launched = mla_decode.split_columns(width, splits)
    assert (launched - 1) * columns < width <= launched * columns  # every launched split holds a column
    if sms is not None and splits > 1:  # the grid covers the SMs unless the column floor stops it
        assert tokens * tiles * launched >= 0.95 * sms or launched == -(-width // mla_decode.MIN_COLUMNS_PER_SPLIT)


def test_decode_is_two_queued_launches_without_host_sync(monkeypatch):
    """Split kernel then merge kernel, nothing read back on the host between them (no .item() / .tolist()), and
    with out / lse / workspace given nothing allocated: the call is CUDA-graph capturable as is."""
    batch, q, kv_cache, sel = sparse_mla_inputs(*DECODE, 8, torch.float32, 2048, seed=0)
    tokens = batch.num_tokens
    out, lse = torch.empty(tokens, 8, V_DIM), torch.empty(tokens, 8)
    splits = mla_decode.split_columns(2048, 128)[1]
    workspace = mla_decode.split_workspace(tokens, 8, splits, V_DIM, q.device)
    args = (q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    trace = trace_host(monkeypatch, mla_decode, ["_sparse_mla_split_kernel", "_merge_splits_kernel"],
                       lambda: sparse_mla_decode(*args, return_lse=True, out=out, lse=lse, num_splits=128,
                                                 workspace=workspace))  # fmt: skip
    assert trace.launches == [("_sparse_mla_split_kernel", (tokens, 1, splits)),
                              ("_merge_splits_kernel", (tokens, 8, V_DIM // mla_decode.MERGE_BLOCK_V))]  # fmt: skip
    assert not trace.syncs(), trace.ops
    assert not trace.allocations(), trace.ops
