"""Every TileLang DSA kernel lowers to CUDA sm_90a and HIP gfx942 / gfx950 source, and builds to sm_90a cubins.

No GPU is needed: one subprocess per mode (`tests/kernels/tilelang_targets.py`) lowers or compiles them all, each
(kernel, target) is a test. Cubins are built in a fresh TileLang cache, so none is served from an earlier build.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_glm5.kernels.tilelang.tuning import knobs_for
from sglang_glm5.kernels.tilelang.common import head_tile
from sglang_glm5.kernels.tilelang.mla_decode import min_key_tile, num_splits_for
from tests.kernels.tilelang_targets import CUBIN_KERNELS, MULTIPROCESSORS, TARGETS, decode_batch1, kernel_specs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
QK_DIM, V_DIM = 576, 512
GEMM_INSTRUCTION = {"sm_90a": "mma", "gfx942": "mfma", "gfx950": "mfma"}  # tensor-core ops in the source
FP8_GEMM_INSTRUCTION = {"sm_90a": "kFloat8_e4m3", "gfx942": "fp8_fp8", "gfx950": "fp8_fp8"}  # e4m3 operands, no widening
SOURCE_HEADER = {"sm_90a": 'extern "C" __global__', "gfx942": "hip/hip_runtime.h", "gfx950": "hip/hip_runtime.h"}
KERNEL_IDS = [spec[0] for spec in kernel_specs("sm_90a")]

pytestmark = pytest.mark.slow


def _run(mode, env_extra):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-m", "tests.kernels.tilelang_targets", mode], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {(r["kernel"], r["target"]): r for r in records}


@pytest.fixture(scope="module")
def lowered():
    return _run("lower", {})


@pytest.fixture(scope="module")
def cubins(tmp_path_factory):
    return _run("cubin", {"TILELANG_CACHE_DIR": str(tmp_path_factory.mktemp("tilelang-cache"))})


def _ok(record):
    assert record["status"] == "ok", f"{record['kernel']} for {record['target']}: {record['detail']}\n{record['trace']}"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("kernel", KERNEL_IDS)
def test_kernel_lowers(lowered, kernel, target):
    record = lowered[(kernel, target)]
    _ok(record)
    source = record["source"]
    assert SOURCE_HEADER[target] in source
    if not kernel.startswith(("topk", "sparse_mla_decode_merge")):  # the rest are gemm kernels
        assert GEMM_INSTRUCTION[target] in source, f"{kernel} for {target}: no {GEMM_INSTRUCTION[target]} in source"
    if kernel.startswith("indexer") and target == "sm_90a":  # keys as M: a 64-row warpgroup MMA, not mma_sync
        assert "wgmma" in source, f"{kernel}: no wgmma in the sm_90a source"
    if "fp8" in kernel:
        assert FP8_GEMM_INSTRUCTION[target] in source, f"{kernel} for {target}: its gemm does not take fp8 operands"
    if kernel.startswith(("sparse_mla_prefill", "sparse_mla_decode-")):
        heads = int(kernel.rsplit("-H", 1)[1])
        # q is read with its own head count's token stride: 8 heads are not padded to a 64-head tensor
        assert str(heads * QK_DIM) in source, f"{kernel}: no token stride {heads} x {QK_DIM} in the source"
    if kernel.startswith("sparse_mla_prefill") and target == "sm_90a":
        assert_producer_consumer(kernel, source)
    if kernel.startswith("sparse_mla_decode-"):
        assert_decode_fills_the_gpu(kernel, target, source)


def assert_decode_fills_the_gpu(kernel, target, source):
    """Batch-1 decode launches (1, head tiles, NS): NS splits chosen so the grid fills the card's SMs in one wave
    (more than half of them, or the key tile already the narrowest its head tile's accumulator allows), and the kernel
    built for them: its partial output's token stride is H x NS x V, the split index is blockIdx.z, and its threads
    are what the tile feeds (8 key columns per warp)."""
    heads = int(kernel.rsplit("-H", 1)[1])
    knobs = decode_batch1(target, heads)
    block_h = head_tile(heads, knobs["max_block_h"])
    num_splits = num_splits_for(2048, knobs["block_n"], knobs["columns_per_split"])
    ctas = -(-heads // block_h) * num_splits
    sms = MULTIPROCESSORS[target]
    narrowest = knobs["block_n"] == min_key_tile(block_h, V_DIM)
    assert ctas <= sms and (2 * ctas > sms or narrowest), f"{kernel} on {target}: {ctas} CTAs, {sms} SMs"
    if target == "sm_90a":  # 132 SMs, K 2048: one head tile; 8-16 heads take 16-column tiles, 64 heads 64-column
        want = {8: (128, 16, 64), 16: (128, 16, 64), 32: (64, 32, 128), 64: (32, 64, 256)}[heads]
        assert (num_splits, knobs["block_n"], knobs["threads"]) == want, (num_splits, knobs)
    assert str(heads * num_splits * V_DIM) in source, f"{kernel}: no partial-output stride {heads} x {num_splits} x V"
    assert "blockIdx.z" in source, f"{kernel}: the split index is not the grid's z"
    assert f"__launch_bounds__({knobs['threads']}" in source or target != "sm_90a", f"{kernel}: threads"
