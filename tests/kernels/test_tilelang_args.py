"""The TileLang wrappers' argument checks (run on CPU: they fire before any kernel is compiled), head tiling, and the
per-architecture tuning table."""

import json

import pytest
import torch

from sglang_glm5.kernels.tilelang import indexer_logits, sparse_mla_decode, sparse_mla_prefill, topk_positions
from sglang_glm5.kernels.tilelang.common import head_tile
from sglang_glm5.kernels.tilelang.tuning import OPS, TuningError, knobs_for, table
from sglang_glm5.presets.files import configs_dir
from tests.kernels.cases import QK_DIM, SM_SCALE, V_DIM

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


def test_topk_names_the_bad_argument():
    logits, q_pos = torch.zeros(3, 40), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        topk_positions(logits, q_pos, 0)
    with pytest.raises(ValueError, match="q_pos: number of query tokens is 2"):
        topk_positions(logits, q_pos[:2], 16)
    with pytest.raises(ValueError, match="GPU only"):
        topk_positions(logits, q_pos, 16)


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
