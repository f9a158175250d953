"""Every TileLang DSA kernel lowers to CUDA sm_90a and HIP gfx942 / gfx950 source, and builds to sm_90a cubins.

No GPU is needed: one subprocess per mode (`tests/dsa/tilelang_targets.py`) lowers or compiles them all, each
(kernel, target) is a test. Cubins are built in a fresh TileLang cache, so none is served from an earlier build.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_glm5.dsa.tilelang.tuning import knobs_for
from sglang_glm5.dsa.tilelang.common import head_tile
from sglang_glm5.dsa.tilelang.mla_decode import min_key_tile, num_splits_for
from tests.dsa.tilelang_targets import CUBIN_KERNELS, MULTIPROCESSORS, TARGETS, decode_batch1, kernel_specs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
QK_DIM, V_DIM = 576, 512
GEMM_INSTRUCTION = {"sm_90a": "mma", "gfx942": "mfma", "gfx950": "mfma"}  # tensor-core ops in the source
FP8_GEMM_INSTRUCTION = {"sm_90a": "kFloat8_e4m3", "gfx942": "fp8_fp8", "gfx950": "fp8_fp8"}  # e4m3 operands, no widening
SOURCE_HEADER = {"sm_90a": 'extern "C" __global__', "gfx942": "hip/hip_runtime.h", "gfx950": "hip/hip_runtime.h"}
SHARED_LIMIT = {"sm_90a": 232_448, "gfx942": 65_536, "gfx950": 163_840}  # bytes per block (Hopper: opt-in max)
KERNEL_IDS = [spec[0] for spec in kernel_specs("sm_90a")]

pytestmark = pytest.mark.slow


def _run(mode, env_extra):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-m", "tests.dsa.tilelang_targets", mode], cwd=REPO, env=env,
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
    if kernel.startswith("topk"):
        assert_topk_structure(target, source)
    if kernel.startswith("sparse_mla_decode-"):
        assert_decode_fills_the_gpu(kernel, target, source)
    if kernel.startswith("indexer"):
        assert_indexer_streams_keys(kernel, target, source)


def _shared_sizes(source):
    """{buffer: bytes} of the dynamic shared memory carve-up (offsets into buf_dyn_shmem; the last one open-ended)."""
    carve = r"void\* (\w+) = \(\(void\*\)\(\(char\*\)buf_dyn_shmem \+ (\d+)\)\)"
    offsets = sorted((int(o), name) for name, o in re.findall(carve, source))
    return {name: (nxt - off if nxt is not None else None)
            for (off, name), nxt in zip(offsets, [o for o, _ in offsets[1:]] + [None])}  # fmt: skip


def assert_topk_structure(target, source):
    """The top-k is the coarse-pass / shared-compaction / refine-in-shared kernel, with split rows across CTAs:
    - the candidate list lives in shared memory: positions and keys, `capacity` entries each;
    - histograms are built with atomics: shared ones (the coarse pass, the two refinement passes over the list and
      over the row), and the split rows' per-row global one;
    - global scores are read in exactly 4 places: the coarse pass, the compaction, and the overflow fallback's
      refinement and write over the row, the last two only where the list did not fit (`n_list <= capacity` else);
      the refinement and the write otherwise read the shared list;
    - split rows: the chunk is blockIdx.y, and the row's last CTA is found by a fenced atomic ticket;
    - block scans are warp shuffles over the target's whole warp."""
    knobs = knobs_for("topk_positions", "", target)
    capacity, warp = knobs["capacity"], knobs["warp_size"]
    sizes = _shared_sizes(source)
    assert sizes.get("lpos", 0) >= 4 * capacity and sizes.get("lkey", 0) >= 4 * capacity, sizes
    # the carve-up fits the target's shared memory / LDS per block (the last buffer is the 4-int scalar slots)
    assert sum(size or 16 for size in sizes.values()) <= SHARED_LIMIT[target], sizes
    assert source.count("AtomicAdd((&(((int*)hist)[") == 3, "shared histogram atomics: coarse + 2 refinement sources"
    assert source.count("AtomicAdd((&(Hist[") == 1, "split rows: one global atomic add per non-empty bin"
    assert source.count("AtomicAddRet((&(Arrived[") == 1 and source.count("__threadfence()") >= 2
    assert "blockIdx.y" in source, "rows are not split across CTAs"
    assert source.count("Logits[") == 4, f"{source.count('Logits[')} reads of the scores, expected 4"
    fallback = source.split(f"if (n_list <= {capacity})")
    assert len(fallback) >= 4, "compaction, refinement and write each branch on the list fitting"
    refine_and_write = source[source.index("prefix = (((uint)coarse)"):]
    assert refine_and_write.count("Logits[") == 2 and refine_and_write.count("lkey)[") >= 2
    assert re.search(rf"__shfl_up(_sync)?\([^;]*, {warp}\)", source), f"no {warp}-lane shuffle scan"


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
