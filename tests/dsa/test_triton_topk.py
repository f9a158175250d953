"""Triton top-k selection against the reference, under the interpreter: index sets, canonical layout, ties."""

import pytest
import torch

from sglang_glm5.dsa.triton import topk, topk_positions
from sglang_glm5.dsa.triton.topk import default_num_chunks, default_num_programs
from sglang_glm5.dsa.reference import topk_positions as ref_topk_positions
from tests.dsa.triton_launches import trace_host

SENTINEL = -7  # pre-filled into the output: an unwritten element shows


def _q_pos(length, k, count, gen):
    """Edge rows (position 0, 1, k - 1, k, last) plus random ones."""
    edges = torch.tensor([0, 1, k - 1, k, length - 1]).clamp(0, length - 1)
    return torch.cat([edges, torch.randint(0, length, (count,), generator=gen)])


@pytest.fixture(params=[1, 4], ids=["one-program-per-row", "rows-in-4-chunks"])
def num_chunks(request):
    """Every case runs both ways: one program per row, and rows split across programs (few rows on a big GPU)."""
    return request.param


@pytest.fixture
def run(num_chunks):
    def _run(logits, q_pos, k):
        out = torch.full((logits.shape[0], k), SENTINEL, dtype=torch.int32)
        topk_positions(logits, q_pos, k, out=out, num_chunks=num_chunks)
        assert not (out == SENTINEL).any(), "output element left unwritten"
        return out

    return _run


def _assert_canonical(out, q_pos, k):
    """Per row: min(k, q_pos + 1) distinct valid positions ascending, then -1."""
    for row, pos in zip(out.tolist(), q_pos.tolist()):
        count = min(k, pos + 1)
        assert row[:count] == sorted(set(row[:count])) and all(0 <= p <= pos for p in row[:count])
        assert row[count:] == [-1] * (k - count)


TOPK_CASES = [(1, 16), (63, 16), (500, 16), (500, 64), (63, 200), (500, 2048)]  # the last two: k > length


@pytest.mark.parametrize("length,k", TOPK_CASES, ids=[f"T11-S{n}-topk{k}" for n, k in TOPK_CASES])
def test_topk_index_sets_match_reference(run, length, k):
    gen = torch.Generator().manual_seed(length * 7 + k)
    q_pos = _q_pos(length, k, 6, gen)
    logits = torch.randn(q_pos.shape[0], length, generator=gen)
    logits = torch.where(torch.arange(length) <= q_pos[:, None], logits, float("nan"))  # never read past q_pos
    out = run(logits, q_pos, k)
    ref = ref_topk_positions(logits, q_pos, k)
    assert [set(r) - {-1} for r in out.tolist()] == [set(r) - {-1} for r in ref.tolist()]
    _assert_canonical(out, q_pos, k)


@pytest.mark.parametrize("length,k,levels", [(500, 64, 3), (63, 16, 2), (500, 16, 1)], ids=["T11-S500-topk64-3levels",
                         "T11-S63-topk16-2levels", "T11-S500-topk16-all-equal"])  # fmt: skip
def test_ties_go_to_lower_positions(run, length, k, levels):
    gen = torch.Generator().manual_seed(levels)
    q_pos = _q_pos(length, k, 6, gen)
    logits = torch.randint(0, levels, (q_pos.shape[0], length), generator=gen).float()
    assert torch.equal(run(logits, q_pos, k), ref_topk_positions(logits, q_pos, k))


@pytest.mark.parametrize("levels", [None, 2], ids=["random", "2-levels"])
def test_rows_whose_candidates_overflow_the_list_are_refined_over_the_row(run, monkeypatch, levels):
    """A 48-entry list: the coarse pass leaves more entries at or above the threshold bin for most rows, so they
    are refined over the whole row (rows with few enough still use the list): same positions either way."""
    monkeypatch.setattr(topk, "CAPACITY", 48)
    gen = torch.Generator().manual_seed(5)
    q_pos = _q_pos(300, 32, 3, gen)
    logits = torch.randn(q_pos.shape[0], 300, generator=gen)
    if levels:
        logits = torch.randint(0, levels, logits.shape, generator=gen).float()
    assert torch.equal(run(logits, q_pos, 32), ref_topk_positions(logits, q_pos, 32))


@pytest.mark.parametrize("step_exponent", [-20, -10], ids=["T11-S500-topk64-low-bits", "T11-S500-topk64-mid-bits"])
def test_keys_differing_only_in_later_radix_digits(run, step_exponent):
    """Scores 1 + n * 2**e share their high bytes, so the threshold is decided in the second to fourth pass."""
    gen = torch.Generator().manual_seed(-step_exponent)
    q_pos = _q_pos(500, 64, 6, gen)
    logits = 1.0 + torch.randint(0, 300, (q_pos.shape[0], 500), generator=gen).float() * 2.0**step_exponent
    assert torch.equal(run(logits, q_pos, 64), ref_topk_positions(logits, q_pos, 64))


def test_special_values(run):
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor(
        [
            [1.0, 5.0, 5.0, nan, inf],  # q_pos 2: NaN and +inf past it are not candidates
            [-0.0, 0.0, -0.0, 0.0, 1.0],  # -0.0 ties +0.0: lower positions win
            [-inf] * 5,  # valid -inf scores are still selected
            [-1.0, -3.0, -2.0, -inf, -0.5],  # negatives order correctly
            [nan, 1.0, 2.0, 3.0, 4.0],  # a valid NaN ranks above everything, as torch.sort has it
        ]
    )
    q_pos = torch.tensor([2, 4, 1, 4, 4])
    for k in (1, 2, 3, 7):
        assert torch.equal(run(logits, q_pos, k), ref_topk_positions(logits, q_pos, k)), f"k={k}"


def test_fp16_logits_and_int32_positions():
    gen = torch.Generator().manual_seed(4)
    q_pos = _q_pos(130, 16, 4, gen).to(torch.int32)
    logits = torch.randn(q_pos.shape[0], 130, generator=gen).half()
    assert torch.equal(topk_positions(logits, q_pos, 16), ref_topk_positions(logits, q_pos, 16))


BAD_ARGUMENTS = [
    ("logits", lambda lg, qp: topk_positions(lg[0], qp, 4)),
    ("q_pos", lambda lg, qp: topk_positions(lg, qp[1:], 4)),
    ("k", lambda lg, qp: topk_positions(lg, qp, 0)),
    ("out", lambda lg, qp: topk_positions(lg, qp, 4, out=torch.empty(2, 4, dtype=torch.int64))),
]


@pytest.mark.parametrize("argument,call", BAD_ARGUMENTS, ids=[case[0] for case in BAD_ARGUMENTS])
def test_bad_arguments_are_named(argument, call):
    with pytest.raises((TypeError, ValueError), match=argument):
        call(torch.randn(2, 9), torch.tensor([3, 8]))


CHUNK_CASES = [((1, 65536, 132), 16), ((1, 200_000, 132), 49), ((4, 65536, 132), 16), ((64, 65536, 132), 3),
               ((132, 65536, 132), 1), ((1, 2048, 132), 1), ((1, 65536, None), 1)]  # fmt: skip


@pytest.mark.parametrize("case,chunks", CHUNK_CASES, ids=[f"T{c[0]}-S{c[1]}-SM{c[2]}" for c, _ in CHUNK_CASES])
def test_default_num_chunks_split_few_long_rows(case, chunks):
    """Batch-1 decode at 64k keys on 132 SMs: 16 programs of 4096 logits instead of one; a full batch: one each."""
    assert default_num_chunks(*case) == chunks


PROGRAM_CASES = [((1, 132), 1), ((8192, 132), 528), ((300, 132), 300), ((11, None), 4), ((2, None), 2)]


@pytest.mark.parametrize("case,programs", PROGRAM_CASES, ids=[f"T{c[0]}-SM{c[1]}" for c, _ in PROGRAM_CASES])
def test_default_num_programs_bound_the_scratch(case, programs):
    """Persistent programs: a prefill of 8192 rows keeps 528 candidate lists (17 MB), not one per row."""
    assert default_num_programs(*case) == programs


LAUNCH_CASES = [(1, ["_topk_kernel"]), (4, ["_split_hist_kernel", "_split_compact_kernel", "_split_select_kernel"])]


@pytest.mark.parametrize("chunks,kernels", LAUNCH_CASES, ids=["one-program-per-row", "rows-in-4-chunks"])
def test_topk_launches_queue_without_host_sync(monkeypatch, chunks, kernels):
    """One launch, or three back to back for split rows; nothing read back on the host (q_pos stays on the device)."""
    logits, q_pos = torch.randn(3, 5000), torch.tensor([4999, 10, 2000])
    out = torch.empty(3, 64, dtype=torch.int32)
    trace = trace_host(monkeypatch, topk, kernels,
                       lambda: topk_positions(logits, q_pos, 64, out=out, num_chunks=chunks))  # fmt: skip
    assert [name for name, _ in trace.launches] == kernels
    assert not trace.syncs(), trace.ops
