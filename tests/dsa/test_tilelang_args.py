"""The TileLang wrappers' argument checks (run on CPU: they fire before any kernel is compiled), head tiling, and the
per-architecture tuning table."""

import inspect
import json

import pytest
import torch

from sglang_glm5.dsa.tilelang import (
    indexer_logits,
    indexer_logits_fp8,
    sparse_mla_decode,
    sparse_mla_prefill,
    topk_positions,
)
from sglang_glm5.dsa.tilelang.common import head_tile
from sglang_glm5.dsa.tilelang.indexer import check_fp8_variant, indexer_logits_fp8_kernel, indexer_logits_kernel
from sglang_glm5.dsa.tilelang.mla_prefill import PREFILL_SCHEDULES, prefill_factory
from sglang_glm5.datafiles import DataFileError
from sglang_glm5.dsa.tilelang.tuning import OPS, TuningError, knobs_for, table
from sglang_glm5.datafiles import configs_dir
from tests.dsa.cases import QK_DIM, SM_SCALE, V_DIM

TUNING = configs_dir() / "tilelang-tuning.json"


def _mla(heads=8, tokens=3, dtype=torch.bfloat16, k=16):
    return dict(q=torch.zeros(tokens, heads, QK_DIM, dtype=dtype), kv_cache=torch.zeros(50, QK_DIM, dtype=dtype),
                page_table=torch.zeros(2, 40, dtype=torch.int32), q_seq=torch.zeros(tokens, dtype=torch.int64),
                topk=torch.zeros(tokens, k, dtype=torch.int32), sm_scale=SM_SCALE, v_dim=V_DIM)  # fmt: skip


BAD_MLA = {
    "q-fp32": (dict(q=torch.zeros(3, 8, QK_DIM)), TypeError, "q must have dtype"),
    "kv-dtype": (dict(kv_cache=torch.zeros(50, QK_DIM, dtype=torch.float16)), TypeError, "kv_cache must have dtype"),
    "kv-width": (dict(kv_cache=torch.zeros(50, 512, dtype=torch.bfloat16)), ValueError, "kv_cache: head dim is 512"),
    "topk-int64": (dict(topk=torch.zeros(3, 16, dtype=torch.int64)), TypeError, "topk must have dtype"),
    "topk-rows": (dict(topk=torch.zeros(2, 16, dtype=torch.int32)), ValueError, "topk: number of query tokens is 2"),
    "q_seq-rows": (dict(q_seq=torch.zeros(4, dtype=torch.int64)), ValueError, "q_seq: number of query tokens is 4"),
    "page_table-float": (dict(page_table=torch.zeros(2, 40)), TypeError, "page_table must have dtype"),
    "v_dim": (dict(v_dim=QK_DIM), ValueError, "v_dim must be in"),
    "out-noncontiguous": (dict(out=torch.zeros(8, 3, V_DIM, dtype=torch.bfloat16).transpose(0, 1)), ValueError,
                          "out must be contiguous"),
    "out-shape": (dict(out=torch.zeros(3, 8, 511, dtype=torch.bfloat16)), ValueError, r"out: shape is \(3, 8, 511\)"),
}  # fmt: skip


@pytest.mark.parametrize("entry", [sparse_mla_prefill, sparse_mla_decode], ids=["prefill", "decode"])
@pytest.mark.parametrize("change,error,message", BAD_MLA.values(), ids=list(BAD_MLA))
def test_sparse_mla_names_the_bad_argument(entry, change, error, message):
    with pytest.raises(error, match=message):
        entry(**{**_mla(), **change})


@pytest.mark.parametrize("entry", [sparse_mla_prefill, sparse_mla_decode], ids=["prefill", "decode"])
def test_cpu_tensors_are_refused_after_the_checks(entry):
    with pytest.raises(ValueError, match="run on a CUDA or ROCm GPU only"):
        entry(**_mla())


def test_indexer_names_the_bad_argument():
    q = torch.zeros(3, 32, 128, dtype=torch.bfloat16)
    args = dict(q=q, weights=torch.zeros(3, 32), k_cache=torch.zeros(50, 128, dtype=torch.bfloat16),
                page_table=torch.zeros(2, 40, dtype=torch.int32), q_seq=torch.zeros(3, dtype=torch.int64),
                q_pos=torch.zeros(3, dtype=torch.int64))  # fmt: skip
    with pytest.raises(ValueError, match=r"weights: shape is \(3, 31\)"):
        indexer_logits(**{**args, "weights": torch.zeros(3, 31)})
    with pytest.raises(ValueError, match="q_pos: number of query tokens is 2"):
        indexer_logits(**{**args, "q_pos": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(ValueError, match="GPU only"):
        indexer_logits(**args)


def _fp8_indexer(dtype=torch.float8_e4m3fn, tokens=3, heads=32):
    return dict(q_fp8=torch.zeros(tokens, heads, 128, dtype=dtype), q_scale=torch.ones(tokens, heads),
                weights=torch.zeros(tokens, heads), k_fp8=torch.zeros(50, 128, dtype=dtype), k_scale=torch.ones(50),
                page_table=torch.zeros(2, 40, dtype=torch.int32), q_seq=torch.zeros(tokens, dtype=torch.int64),
                q_pos=torch.zeros(tokens, dtype=torch.int64))  # fmt: skip


BAD_FP8_INDEXER = {
    "q-bf16": (dict(q_fp8=torch.zeros(3, 32, 128, dtype=torch.bfloat16)), TypeError, "q_fp8 must have dtype"),
    "k-other-variant": (dict(k_fp8=torch.zeros(50, 128, dtype=torch.float8_e4m3fnuz)), TypeError,
                        "k_fp8 must have dtype"),
    "k-width": (dict(k_fp8=torch.zeros(50, 64, dtype=torch.float8_e4m3fn)), ValueError, "k_fp8: head dim is 64"),
    "q_scale-shape": (dict(q_scale=torch.ones(3, 31)), ValueError, r"q_scale: shape is \(3, 31\)"),
    "k_scale-int": (dict(k_scale=torch.ones(50, dtype=torch.int32)), TypeError, "k_scale must have dtype"),
    "k_scale-slots": (dict(k_scale=torch.ones(49)), ValueError, "k_scale: number of cache slots is 49"),
    "out-shape": (dict(out=torch.zeros(3, 41)), ValueError, r"out: shape is \(3, 41\)"),
}  # fmt: skip


@pytest.mark.parametrize("change,error,message", BAD_FP8_INDEXER.values(), ids=list(BAD_FP8_INDEXER))
def test_fp8_indexer_names_the_bad_argument(change, error, message):
    with pytest.raises(error, match=message):
        indexer_logits_fp8(**{**_fp8_indexer(), **change})


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e4m3fnuz], ids=["e4m3fn", "e4m3fnuz"])
def test_fp8_indexer_refuses_cpu_tensors_after_the_checks(dtype):
    with pytest.raises(ValueError, match="q_fp8 is on cpu: the tilelang DSA kernels run on a CUDA or ROCm GPU only"):
        indexer_logits_fp8(**_fp8_indexer(dtype))


@pytest.mark.parametrize("arch", ["sm_90a", "gfx942", "gfx950"])
def test_fp8_indexer_takes_the_e4m3_variant_its_mma_reads(arch):
    """gfx942's fp8 mfma reads fnuz, sm_90a's and gfx950's OCP e4m3fn: the other variant is refused by name."""
    fp8_dtype = knobs_for("indexer_logits_fp8", "", arch)["fp8_dtype"]
    assert fp8_dtype == ("float8_e4m3fnuz" if arch == "gfx942" else "float8_e4m3fn")
    right, wrong = (torch.float8_e4m3fnuz, torch.float8_e4m3fn)[:: 1 if arch == "gfx942" else -1]
    check_fp8_variant(right, fp8_dtype, arch)
    with pytest.raises(TypeError, match=f"q_fp8 / k_fp8 are {wrong}, but the fp8 mma of {arch} reads {fp8_dtype}"):
        check_fp8_variant(wrong, fp8_dtype, arch)


def test_topk_names_the_bad_argument():
    logits, q_pos = torch.zeros(3, 40), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        topk_positions(logits, q_pos, 0)
    with pytest.raises(ValueError, match="q_pos: number of query tokens is 2"):
        topk_positions(logits, q_pos[:2], 16)
    with pytest.raises(ValueError, match="GPU only"):
        topk_positions(logits, q_pos, 16)
    with pytest.raises(ValueError, match="num_chunks must be an int >= 1"):
        topk_positions(logits, q_pos, 16, num_chunks=0)
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        topk_positions(logits, q_pos, 16, capacity=1.5)


@pytest.mark.parametrize("rows,length,sms,chunks", [(1, 65536, 132, 16), (1, 200_000, 132, 49), (4, 65536, 132, 16),
                                                    (8, 65536, 132, 16), (66, 65536, 132, 2), (132, 200_000, 132, 1),
                                                    (1, 3000, 132, 1), (1, 65536, 78, 16)])  # fmt: skip
def test_topk_splits_few_long_rows_across_ctas(rows, length, sms, chunks):
    """Batch-1 decode over 64k-200k keys runs on many SMs (at least 4096 keys per CTA); one CTA per row from as
    many rows as SMs up, and for short rows."""
    from sglang_glm5.dsa.tilelang.topk import default_num_chunks

    assert default_num_chunks(rows, length, sms) == chunks


def test_topk_workspace_shapes():
    from sglang_glm5.dsa.tilelang.topk import NUM_COARSE, workspace

    hist, arrived, counts, list_pos, list_key = workspace(3, 16, 8192, "cpu")
    assert hist.shape == (3, NUM_COARSE) and not hist.any() and not arrived.any() and arrived.shape == (3,)
    assert counts.shape == (3, 16) and list_pos.shape == list_key.shape == (3, 16, 8192)
    assert list_key.dtype == torch.uint32 and list_pos.dtype == torch.int32
    assert [t.shape[0] for t in workspace(300, 1, 4096, "cpu")] == [1] * 5  # one CTA per row: stand-ins only


@pytest.mark.parametrize("heads,cap,tile", [(8, 64, 16), (16, 64, 16), (32, 64, 32), (64, 64, 64), (128, 64, 64),
                                             (64, 16, 16), (5, 64, 16)])  # fmt: skip
def test_head_tile_is_never_padded_to_64_below_it(heads, cap, tile):
    assert head_tile(heads, cap) == tile


@pytest.mark.parametrize("name,arch,expected", [("NVIDIA H200", "sm_90a", "sm_90a"),
                                                ("AMD Instinct MI300X", "gfx942", "gfx942"),
                                                ("AMD Instinct MI355X", "gfx950", "gfx950"),
                                                ("some Hopper", "sm_90a", "sm_90a")])  # fmt: skip
def test_tuning_by_name_then_arch(name, arch, expected):
    data = table(TUNING)
    for op in OPS:
        assert knobs_for(op, name, arch) == data["arch"][expected][op]


def test_tuning_unknown_device_names_the_file_and_arch():
    with pytest.raises(TuningError, match=r"tilelang-tuning.json: no tuning for device 'NVIDIA A100' \(arch sm_80\)"):
        knobs_for("indexer_logits", "NVIDIA A100", "sm_80")


def test_tuning_file_errors_name_the_field(tmp_path):
    data = json.loads(TUNING.read_text())
    del data["arch"]["gfx942"]["topk_positions"]
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TuningError, match="arch 'gfx942' has no knobs for topk_positions"):
        table(path)
    data["arch"]["gfx942"] = ["not", "an", "object"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFileError, match=r"tuning.json: arch: field 'gfx942' must be dict"):
        table(path)  # the one data-file error type (sglang_glm5/datafiles.py), TuningError a kind of it


@pytest.mark.parametrize("arch,schedule", [("sm_90a", "warp_specialized"), ("gfx942", "pipelined"),
                                           ("gfx950", "pipelined")])  # fmt: skip
def test_prefill_schedule_comes_from_the_tuning_data(arch, schedule):
    """Hopper gets the producer/consumer kernel (cp.async, mbarrier, setmaxnreg); CDNA the single-block one. Every
    knob left after `schedule` is a keyword of the chosen factory, so none is silently dropped."""
    factory, knobs = prefill_factory(knobs_for("sparse_mla_prefill", "", arch))
    assert factory is PREFILL_SCHEDULES[schedule]
    assert set(knobs) <= set(inspect.signature(factory.func).parameters), (arch, knobs)


@pytest.mark.parametrize("arch", ["sm_90a", "gfx942", "gfx950"])
def test_indexer_knobs_are_factory_keywords(arch):
    """The indexers' block of query tokens, key blocks per program and pipeline depth are tuning data."""
    for op, factory in (("indexer_logits", indexer_logits_kernel), ("indexer_logits_fp8", indexer_logits_fp8_kernel)):
        knobs = knobs_for(op, "", arch)
        assert {"block_q", "key_blocks", "num_stages"} <= set(knobs) <= set(inspect.signature(factory.func).parameters)


def test_unknown_prefill_schedule_is_refused_by_name():
    with pytest.raises(TuningError, match="sparse_mla_prefill schedule 'tma' is unknown; known: pipelined, warp_"):
        prefill_factory({"schedule": "tma"})
