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
from tests.kernels.tilelang_targets import CUBIN_KERNELS, TARGETS, kernel_specs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
QK_DIM = 576
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
    if kernel.startswith("indexer"):
        assert_indexer_streams_keys(kernel, target, source)


def assert_indexer_streams_keys(kernel, target, source):
    """The indexer streams key blocks for a block of query tokens and skips keys past their positions: no -inf is
    stored (positions past q_pos are not written). On sm_90a the key rows are gathered with 16-byte cp.async a stage
    ahead of the gemm: a wait that leaves groups in flight means more than one buffer."""
    assert "INF" not in source.upper().replace("INFO", ""), f"{kernel} for {target}: stores -inf"
    if target == "sm_90a":
        assert "cp_async_gs_conditional<16>" in source, f"{kernel}: key rows not gathered with cp.async"
        assert re.search(r"cp_async_wait<[1-9]>", source), f"{kernel}: no copy in flight across the gemm"


def _warpgroup_branches(source):
    """The source cut at each warpgroup's setmaxnreg: [consumer 0, consumer 1, producer] in branch order."""
    cuts = [m.start() for m in re.finditer(r"tl::warpgroup_reg_(alloc|dealloc)<\d+>", source)]
    assert len(cuts) == 3, f"{len(cuts)} setmaxnreg branches, expected 3 warpgroups"
    return [source[a:b] for a, b in zip(cuts, [*cuts[1:], len(source)])]


def assert_producer_consumer(kernel, source):
    """sm_90a prefill is the warp-specialized pipeline: 3 warpgroups with their own register limits; the producer
    gathers rows with zero-filling cp.async into two stages, each completion arriving on the stage's mbarrier; the
    consumers wait on them. The producer never waits on its own copies nor joins a named barrier, and no named
    barrier id is shared by two warpgroups (bar.sync counts arrivals by id: mixed warpgroups would release it)."""
    knobs = knobs_for("sparse_mla_prefill", "", "sm_90a")
    assert "__launch_bounds__(384" in source, f"{kernel}: not 3 warpgroups"
    consumer0, consumer1, producer = _warpgroup_branches(source)
    assert f"warpgroup_reg_alloc<{knobs['score_regs']}>" in consumer0
    assert f"warpgroup_reg_alloc<{knobs['value_regs']}>" in consumer1
    assert f"warpgroup_reg_dealloc<{knobs['producer_regs']}>" in producer
    for stage in (0, 1):  # two stage buffers, each filled by cp.async and released by mbarriers
        assert f"mbarrier_cp_async_arrive_noinc(kv_ready[{stage}])" in producer, f"{kernel}: stage {stage}"
        assert f"kv_free[{stage}].wait" in producer and f"kv_ready[{stage}].wait" in consumer0, f"{kernel}: {stage}"
        assert f"kv_free[{stage}].arrive" in consumer0 and f"kv_free[{stage}].arrive" in consumer1
    copies = producer.count("cp_async_gs_conditional<16>")  # 16-byte chunks, zero-filled where the position is -1
    assert copies >= 6 and "cp_async_gs_conditional" not in consumer0 + consumer1, f"{kernel}: {copies} copies"
    assert not re.search(r"cp_async_wait|__syncthreads|__sync_thread_partial|bar\.sync", producer), kernel
    ids = [set(re.findall(r"__sync_thread_partial\((\d+),", branch)) for branch in (consumer0, consumer1, producer)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]), f"{kernel}: named barrier ids {ids}"
    if int(kernel.rsplit("-H", 1)[1]) >= 64:  # a 64-row head tile: score wgmmas issued together, one wait
        assert "wgmma" in consumer0 and "wgmma" in consumer1 and "wait_wgmma<0>" in consumer0, kernel


@pytest.mark.parametrize("kernel", CUBIN_KERNELS)
def test_kernel_builds_sm90a_cubin(cubins, kernel):
    record = cubins[(kernel, "sm_90a")]
    _ok(record)
    assert record["cubins"] >= 1 and record["bytes"] > 0 and record["cuda_elf"], record


@pytest.mark.parametrize("kernel", CUBIN_KERNELS)
def test_sm90a_cubin_fits_without_spills(cubins, kernel):
    """Resource contract on Hopper, read from the cubin by cuobjdump: at most 255 registers per thread and no stack or
    local memory (spills) in any kernel function; static + dynamic shared memory (the launch's bytes in TileLang's
    host code) within the 227 KB opt-in maximum per block."""
    record = cubins[(kernel, "sm_90a")]
    _ok(record)
    assert record["resources"], f"{kernel}: cuobjdump found no kernel function"
    assert len(record["dynamic_shared"]) == len(record["resources"]), record
    for usage, dynamic in zip(record["resources"], record["dynamic_shared"]):
        assert usage["regs"] <= 255 and usage["spill_bytes"] == 0, f"{kernel}: {usage}"
        assert usage["static_shared"] + dynamic <= 232_448, f"{kernel}: {usage}, {dynamic} B dynamic"
