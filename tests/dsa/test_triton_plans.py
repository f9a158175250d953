"""The Triton ops as a captured forward runs them (graph impl: dsa/triton/plans.py through
dsa/graph_plan.py), under the interpreter. A planned call equals the plain wrapper's, bit for bit; once planned,
a call with new values of the same shapes reaches no argument check, no SM-count / split lookup and no allocation
(the top-k output is the caller's: the graph state's buffer of the layer, as IndexCache layers keep it), and still
equals the wrapper (workspaces reused correctly).
"""


import pytest
import torch

from sglang_glm5.dsa.graph_plan import GraphArena, PlannedOp
from sglang_glm5.dsa.impls import DSA_IMPLS
from sglang_glm5.dsa.reference import quantize_fp8_rows
from tests.attention.cpu_graph import count_allocations, refuse_calls
from tests.dsa.cases import INDEX_DIM, QK_DIM, SM_SCALE, V_DIM, make_batch

LENGTHS = [1, 64, 65, 300]  # decode: one token per request, either side of a page boundary
HEADS, INDEX_HEADS, K = 8, 16, 32
# what a planned call must not reach: checks, device lookups (SM count -> splits / chunks), workspace allocation
PER_CALL_WORK = {
    "sglang_glm5.dsa.triton.indexer": ("_check_common", "check_fp8_args", "check_out"),
    "sglang_glm5.dsa.triton.topk": (
        "check_topk_args", "default_num_chunks", "multiprocessor_count", "check_out", "split_workspace",
    ),
    "sglang_glm5.dsa.triton.mla_decode": (
        "check_decode_args", "check_sparse_mla_args", "default_num_splits", "multiprocessor_count", "check_out",
        "split_workspace",
    ),
    "sglang_glm5.dsa.triton.mla_prefill": ("check_sparse_mla_args", "check_out"),
}  # fmt: skip


def inputs(seed, fp8=False):
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(LENGTHS, [1] * len(LENGTHS), gen)
    t = batch.num_tokens
    q_index = torch.randn(t, INDEX_HEADS, INDEX_DIM, generator=gen)
    weights = torch.randn(t, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    k_cache = torch.randn(batch.num_slots, INDEX_DIM, generator=gen)
    index_args = (q_index, weights, k_cache)
    if fp8:
        (q_fp8, q_scale), (k_fp8, k_scale) = quantize_fp8_rows(q_index), quantize_fp8_rows(k_cache)
        index_args = (q_fp8, q_scale, weights, k_fp8, k_scale)
    q = torch.randn(t, HEADS, QK_DIM, generator=gen)
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen)
    return batch, index_args, q, kv_cache


def decode_core(impl, case, fp8, topk_kwargs, mla_kwargs, topk_out=None):
    """One layer's DSA decode core as the backend runs it: indexer -> top-k (into the layer's `topk_out` under
    graphs) -> sparse MLA."""
    batch, index_args, q, kv_cache = case
    indexer = impl.indexer_logits_fp8 if fp8 else impl.indexer_logits
    logits = indexer(*index_args, batch.page_table, batch.q_seq, batch.q_pos)  # [T, L]
    out = {} if topk_out is None else {"out": topk_out}
    topk = impl.topk_positions(logits, batch.q_pos, K, **topk_kwargs, **out)  # [T, K]
    out = impl.sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, **mla_kwargs)
    return logits, topk, out


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-index-k", "fp8-index-k"])
@pytest.mark.parametrize(
    "topk_kwargs,mla_kwargs", [({}, {}), ({"num_chunks": 3}, {"num_splits": 4})], ids=["device-defaults", "split"]
)
def test_planned_call_equals_wrapper_and_does_no_per_call_work(monkeypatch, fp8, topk_kwargs, mla_kwargs):
    source = DSA_IMPLS["triton"]
    arena = GraphArena()
    planned = source.load("triton", "decode", graph=True, arena=arena)
    plain = source.load("triton", "decode")
    assert isinstance(planned.sparse_mla, PlannedOp) and not isinstance(plain.sparse_mla, PlannedOp)

    first = inputs(1, fp8)
    topk_out = torch.full((first[0].num_tokens, K), -7, dtype=torch.int32)  # the layer's graph-state buffer
    got = [x.clone() for x in decode_core(planned, first, fp8, topk_kwargs, mla_kwargs, topk_out)]  # plans made here
    want = decode_core(plain, first, fp8, topk_kwargs, mla_kwargs)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    # control: the plain wrappers allocate their outputs and the decode partials per call
    assert len(count_allocations(lambda: decode_core(plain, first, fp8, topk_kwargs, mla_kwargs))) >= 4

    second = inputs(2, fp8)  # same shapes, new values
    refuse_calls(monkeypatch, PER_CALL_WORK)
    results = []
    allocations = count_allocations(
        lambda: results.append(decode_core(planned, second, fp8, topk_kwargs, mla_kwargs, topk_out))
    )
    assert allocations == [], allocations  # not even the top-k output: it is the layer's buffer
    monkeypatch.undo()
    want = decode_core(plain, second, fp8, topk_kwargs, mla_kwargs)
    assert all(torch.equal(a, b) for a, b in zip(results[0], want))
    assert not torch.equal(results[0][2], got[2]), "new values: a stale output would show"
    ops = (planned.indexer_logits_fp8 if fp8 else planned.indexer_logits, planned.topk_positions, planned.sparse_mla)
    assert [len(op.plans) for op in ops] == [1, 1, 1]
    logits, topk, out = results[0]
    assert all(x.untyped_storage().data_ptr() in arena_ptrs(arena) for x in (logits, out)), "outputs in the arena"
    assert topk.data_ptr() == topk_out.data_ptr(), "the top-k written into the layer's buffer"


def arena_ptrs(arena):
    return {b.untyped_storage().data_ptr() for b in arena._slots.values()}


def test_arena_shares_a_slot_across_smaller_shapes_and_keeps_outgrown_buffers():
    """Largest capture first (SGLang's order): one buffer per slot; a later larger shape gets a new one and the old
    stays alive for graphs captured with it."""
    arena = GraphArena()
    big = arena.empty("x.out", (8, 5), torch.float32, "cpu")
    small = arena.empty("x.out", (3, 5), torch.float32, "cpu")
    assert small.untyped_storage().data_ptr() == big.untyped_storage().data_ptr() and small.is_contiguous()
    other = arena.empty("y.out", (3, 5), torch.float32, "cpu")
    assert other.untyped_storage().data_ptr() != big.untyped_storage().data_ptr()
    bigger = arena.empty("x.out", (9, 5), torch.float32, "cpu")
    assert bigger.untyped_storage().data_ptr() != big.untyped_storage().data_ptr()
    assert arena.nbytes() == (8 * 5 + 3 * 5 + 9 * 5) * 4


def test_planned_op_plans_once_per_shape_key_and_still_refuses_bad_arguments():
    planned = DSA_IMPLS["triton"].load("triton", "decode", graph=True)
    batch, (q, weights, k_cache), _, _ = inputs(3)
    with pytest.raises(ValueError, match="q_seq"):  # the plan runs the wrapper's checks
        planned.indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq[:-1], batch.q_pos)
    planned.indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    planned.indexer_logits(q[:2], weights[:2], k_cache, batch.page_table, batch.q_seq[:2], batch.q_pos[:2])
    assert len(planned.indexer_logits.plans) == 2
