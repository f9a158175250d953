"""The TileLang ops as a captured forward runs them (graph impl: dsa/tilelang/plans.py through
dsa/graph_plan.py), on CPU.

TileLang kernels cannot execute on a CPU, so this test builds each plan with the real argument checks, the real
tuning table (looked up as an H200: sm_90a knobs), the real split choice for its 132 SMs and the real buffers, and
replaces only the JIT-compiled kernels with recorders of their compilations and launches. It proves the wrappers'
per-call work, not the kernels' math (bench/gpu_check.sh checks that against the reference on a GPU): once planned, a
call does no check, no tuning or JIT-cache lookup and no allocation, only the launches, with the same buffers at
capture and replay; a plain call compiles and launches the same kernels with the same knobs.
"""


import pytest
import torch

from sglang_glm5.dsa.graph_plan import GraphArena, PlannedOp
from sglang_glm5.dsa.impls import DSA_IMPLS
from sglang_glm5.dsa.tilelang import indexer, mla_decode, mla_prefill, topk, tuning
from sglang_glm5.dsa.reference import quantize_fp8_rows
from tests.attention.cpu_graph import count_allocations, refuse_calls
from tests.dsa.cases import INDEX_DIM, QK_DIM, SM_SCALE, V_DIM, make_batch

H200 = ("NVIDIA H200", "sm_90a")  # device_arch of the card the plans are built for
H200_SMS = 132
HEADS, INDEX_HEADS, K = 8, 16, 32
BATCHES = {"decode-batch1": ([300], [1]), "decode-batch3": ([1, 64, 65], [1, 1, 1]), "prefill": ([70, 5], [9, 5])}
JIT_FACTORIES = {  # module -> its tilelang.jit factories, the only things replaced by recorders
    indexer: ("indexer_logits_kernel", "indexer_logits_fp8_kernel"),
    topk: ("topk_kernel",),
    mla_decode: ("sparse_mla_split_kernel", "merge_splits_kernel"),
}
# what a planned call must not reach: checks, tuning / SM-count / split lookups, buffers, JIT-cache lookups, plans
PER_CALL_WORK = {
    "sglang_glm5.dsa.tilelang.indexer": (
        "_check_indexer", "check_tensor", "check_size", "check_fp8_variant", "out_buffer", "require_gpu", "tuning",
        "plan_indexer_logits", "plan_indexer_logits_fp8", *JIT_FACTORIES[indexer],
    ),
    "sglang_glm5.dsa.tilelang.topk": (
        "check_tensor", "check_size", "check_out", "require_gpu", "tuning", "plan_topk_positions", "topk_kernel",
        "default_num_chunks", "multiprocessor_count", "workspace",
    ),
    "sglang_glm5.dsa.tilelang.mla_prefill": (
        "check_sparse_mla_args", "kernel_args", "prefill_factory", "out_buffer", "require_gpu", "tuning",
        "plan_sparse_mla_prefill",
    ),
    "sglang_glm5.dsa.tilelang.mla_decode": (
        "check_sparse_mla_args", "kernel_args", "decode_launch", "decode_split", "multiprocessor_count",
        "plan_sparse_mla_decode",
        *JIT_FACTORIES[mla_decode],
    ),
    "sglang_glm5.dsa.tilelang.tuning": ("tuning", "knobs_for", "device_arch", "table"),
}  # fmt: skip


class Recorder:
    """Stands in for one tilelang.jit factory: a call is a compilation / JIT-cache lookup (its knobs logged) and
    returns a launcher; a launch logs each tensor argument's address and shape, and runs nothing."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, **knobs):
        self.log.append(("compile", self.name, knobs))

        def launch(*args):  # tensors, and scalars (the top-k's phase)
            self.log.append(("launch", self.name, tuple(
                (t.data_ptr(), tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else t for t in args)))

        return launch


@pytest.fixture
def as_h200(monkeypatch):
    """The real wrappers on CPU tensors as if on an H200: its arch for the tuning table, its SM count, the CPU
    refusal lifted; every JIT factory (both prefill schedules included) a Recorder. Returns the shared log."""
    log = []
    monkeypatch.setattr(tuning, "device_arch", lambda device: H200)
    for module in (mla_decode, topk):
        monkeypatch.setattr(module, "multiprocessor_count", lambda device: H200_SMS)
    for module in (indexer, topk, mla_prefill):
        monkeypatch.setattr(module, "require_gpu", lambda *args: None)
    for module, names in JIT_FACTORIES.items():
        for name in names:
            monkeypatch.setattr(module, name, Recorder(name, log))
    for schedule in mla_prefill.PREFILL_SCHEDULES:
        monkeypatch.setitem(mla_prefill.PREFILL_SCHEDULES, schedule, Recorder(f"sparse_mla_prefill.{schedule}", log))
    return log


def forbid_per_call_work(monkeypatch):
    refuse_calls(monkeypatch, PER_CALL_WORK)
    for schedule in mla_prefill.PREFILL_SCHEDULES:
        monkeypatch.setitem(mla_prefill.PREFILL_SCHEDULES, schedule, lambda **knobs: (_ for _ in ()).throw(
            AssertionError("a planned call looked up the prefill kernel")))  # fmt: skip


def inputs(batch_id, seed, fp8):
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(*BATCHES[batch_id], gen)
    t = batch.num_tokens
    q_index = torch.randn(t, INDEX_HEADS, INDEX_DIM, generator=gen).bfloat16()
    weights = torch.randn(t, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    k_cache = torch.randn(batch.num_slots, INDEX_DIM, generator=gen).bfloat16()
    index_args = (q_index, weights, k_cache)
    if fp8:
        (q_fp8, q_scale), (k_fp8, k_scale) = quantize_fp8_rows(q_index.float()), quantize_fp8_rows(k_cache.float())
        index_args = (q_fp8, q_scale, weights, k_fp8, k_scale)
    q = torch.randn(t, HEADS, QK_DIM, generator=gen).bfloat16()
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen).bfloat16()
    return batch, index_args, q, kv_cache


def core(impl, case, fp8, topk_out=None):
    """One layer's DSA core as the backend runs it: indexer -> top-k (into the layer's buffer) -> sparse MLA."""
    batch, index_args, q, kv_cache = case
    logits = (impl.indexer_logits_fp8 if fp8 else impl.indexer_logits)(*index_args, batch.page_table, batch.q_seq,
                                                                          batch.q_pos)  # fmt: skip
    topk_ids = impl.topk_positions(logits, batch.q_pos, K, **({} if topk_out is None else {"out": topk_out}))
    return logits, topk_ids, impl.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, topk_ids, SM_SCALE, V_DIM)


def refill(static, fresh):
    """New values into the captured inputs, as SGLang's graph runner copies a batch into its static buffers."""
    for a, b in zip(static, fresh):
        if isinstance(a, torch.Tensor):
            a.copy_(b)
        elif isinstance(a, tuple):
            refill(a, b)


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-index-k", "fp8-index-k"])
@pytest.mark.parametrize("batch_id", list(BATCHES))
def test_planned_call_only_launches_with_the_captured_buffers(as_h200, monkeypatch, batch_id, fp8):
    phase = batch_id.split("-")[0]
    log, arena = as_h200, GraphArena()
    planned = DSA_IMPLS["tilelang"].load("tilelang", phase, graph=True, arena=arena)
    plain = DSA_IMPLS["tilelang"].load("tilelang", phase)
    assert isinstance(planned.sparse_mla, PlannedOp) and not isinstance(plain.sparse_mla, PlannedOp)

    case = inputs(batch_id, 1, fp8)
    tokens = case[0].num_tokens
    topk_out = torch.full((tokens, K), -7, dtype=torch.int32)  # the layer's buffer in the graph state
    capture = core(planned, case, fp8, topk_out)  # plans made here, as at SGLang's warmup / capture
    captured, log[:] = list(log), []
    core(plain, case, fp8)  # control: the plain wrappers compile (look up) and launch the same, per call
    assert [e for e in log if e[0] == "compile"] == [e for e in captured if e[0] == "compile"]
    assert len(count_allocations(lambda: core(plain, case, fp8))) >= 3, "control: plain calls allocate outputs"

    compiles = {name: knobs for kind, name, knobs in captured if kind == "compile"}
    launches = [entry for entry in captured if entry[0] == "launch"]
    if phase == "decode":  # the split that fills the H200's 132 SMs, partials planned, merge right behind
        split_knobs, splits = compiles["sparse_mla_split_kernel"], compiles["merge_splits_kernel"]["num_splits"]
        assert (split_knobs["block_n"], split_knobs["columns_per_split"], split_knobs["threads"]) == (16, 16, 64)
        assert splits == K // 16, "K 32 at batch <= 3 on 132 SMs: the narrowest tiles, every split one tile"
        split, merge = launches[-2:]
        assert (split[1], merge[1]) == ("sparse_mla_split_kernel", "merge_splits_kernel")
        assert split[2][-2:] == merge[2][:2], "the merge reads the split kernel's partial buffers"
        assert split[2][-2][1] == (tokens, HEADS, splits, V_DIM)
    else:
        assert "sparse_mla_prefill.warp_specialized" in compiles, "sm_90a's tuning picks the warp-specialized kernel"

    forbid_per_call_work(monkeypatch)
    log[:] = []
    refill(case, inputs(batch_id, 2, fp8))
    replay = []
    assert count_allocations(lambda: replay.append(core(planned, case, fp8, topk_out))) == []
    assert log == launches, "a replay launches the captured kernels on the captured buffers, nothing else"
    assert [len(op.plans) for op in (planned.indexer_logits_fp8 if fp8 else planned.indexer_logits,
                                     planned.topk_positions, planned.sparse_mla)] == [1, 1, 1]  # fmt: skip
    for got, want in zip(replay[0], capture):
        assert got.data_ptr() == want.data_ptr(), "outputs at the captured addresses"
    assert replay[0][1].data_ptr() == topk_out.data_ptr(), "the top-k written into the layer's own buffer"
    slots = {b.untyped_storage().data_ptr() for b in arena._slots.values()}
    assert {replay[0][0].untyped_storage().data_ptr(), replay[0][2].untyped_storage().data_ptr()} <= slots


def test_plan_still_refuses_bad_arguments_and_cpu_tensors():
    """The plan runs the wrapper's checks: a bad argument is named at the first call (here also the CPU refusal)."""
    planned = DSA_IMPLS["tilelang"].load("tilelang", "decode", graph=True)
    batch, (q, weights, k_cache), _, _ = inputs("decode-batch3", 3, False)
    with pytest.raises(ValueError, match="q_seq"):
        planned.indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq[:-1], batch.q_pos)
    with pytest.raises(ValueError, match="run on a CUDA or ROCm GPU only"):
        planned.indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    assert planned.indexer_logits.plans == {}, "a failed plan is not cached"


@pytest.mark.parametrize(
    "tokens,heads,want",
    [(1, 8, (16, 16, 64, 128)), (2, 8, (32, 32, 128, 64)), (8, 8, (64, 128, 256, 16)), (3, 8, (32, 64, 128, 32)),
     (12, 8, (64, 256, 256, 8)), (132, 8, (64, 2048, 256, 1)), (1, 32, (32, 32, 128, 64)),
     (1, 64, (64, 64, 256, 32))],
    ids=["batch1", "batch2", "batch8", "batch3", "batch12", "batch132", "batch1-H32", "batch1-H64"],
)  # fmt: skip
def test_decode_launch_fills_the_sms_in_one_wave(tokens, heads, want):
    """K 2048 on 132 SMs with sm_90a's knobs (block_n 64, 256 threads, head tiles up to 64): the grid T x head tiles
    x NS stays within one wave and fills more than half of it, or the key tile is already the narrowest the head
    tile's accumulator allows (64 heads: 8 warps of 8 key columns); threads follow the tile (8 key columns a warp)."""
    knobs = mla_decode.decode_launch(tokens, heads, 2048, V_DIM, H200_SMS, tuning.knobs_for("sparse_mla_decode", "",
                                                                                           "sm_90a"))  # fmt: skip
    block_n, columns, threads = knobs["block_n"], knobs["columns_per_split"], knobs["threads"]
    splits = mla_decode.num_splits_for(2048, block_n, columns)
    assert (block_n, columns, threads, splits) == want
    block_h = mla_decode.head_tile(heads, knobs["max_block_h"])
    ctas = tokens * -(-heads // block_h) * splits
    assert splits * columns >= 2048 > (splits - 1) * columns
    narrowest = block_n == mla_decode.min_key_tile(block_h, V_DIM)
    assert ctas <= max(H200_SMS, tokens) and (2 * ctas > H200_SMS or narrowest)
    assert block_h * V_DIM // threads <= mla_decode.ACC_REGS, "the accumulator fits its registers per thread"


def test_decode_compiles_few_kernel_variants_over_all_batch_sizes():
    """Each split size is its own compiled kernel (planned at warmup, once per captured batch size): tiles per split
    are a power of two, so batch sizes 1..256 at 8 heads on 132 SMs need 8 variants (16 to 2048 columns a split),
    not one per batch size."""
    knobs = tuning.knobs_for("sparse_mla_decode", "", "sm_90a")
    launches = [mla_decode.decode_launch(b, 8, 2048, V_DIM, H200_SMS, knobs) for b in range(1, 257)]
    assert sorted({k["columns_per_split"] for k in launches}) == [16 << i for i in range(8)]
    assert len({tuple(sorted(k.items())) for k in launches}) == 8


def test_split_topk_zero_state_is_not_shared_with_the_triton_top_k_in_one_arena():
    """One backend's arena serves both phases (e.g. --dsa-prefill-backend triton --dsa-decode-backend tilelang under
    EAGLE graphs): the Triton split top-k writes its histogram scratch, so the TileLang top-k's histogram and ticket,
    which must stay zeroed between launches, may not be views of the same buffers."""
    from sglang_glm5.dsa.triton import plans as triton_plans

    arena = GraphArena()
    logits, q_pos = torch.randn(2, 8192), torch.tensor([8191, 5000])
    hist, arrived, *_ = topk.workspace(2, 2, 64, "cpu", arena.empty)  # the larger slot first: Triton's would view it
    triton_ws = triton_plans.topk_positions(logits, q_pos, K, num_chunks=2, empty=arena.empty)["workspace"]
    triton_ptrs = {t.untyped_storage().data_ptr() for t in triton_ws}
    assert hist.untyped_storage().data_ptr() not in triton_ptrs and arrived.untyped_storage().data_ptr() not in triton_ptrs
    assert not hist.any() and not arrived.any()
