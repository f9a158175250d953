"""Indexer logits in query-row chunks: a prefill longer than the budget allows runs chunked with the same top-k as
unchunked, its largest logits buffer is the planner's indexer workspace figure, and both respect the budget."""

import dataclasses
import json
import shutil

import pytest
import torch

from sglang_glm5.dsa.impls import DSA_IMPLS, DSAPhaseImpl
from sglang_glm5.attention.index_k_store import ModelDtypeKeys
from sglang_glm5.attention.indexer_workspace import (
    LOGIT_BYTES,
    IndexerWorkspace,
    chunked_topk,
)
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.datafiles import configs_dir
from sglang_glm5.presets.planner import plan

HEADS, DIM, TOPK = 4, 32, 16


def recording(impl: DSAPhaseImpl, sizes: list[int]) -> DSAPhaseImpl:
    """The same implementation, noting the bytes of every logits buffer it returns."""

    def indexer_logits(*args):
        logits = impl.indexer_logits(*args)
        sizes.append(logits.nbytes)
        return logits

    return dataclasses.replace(impl, indexer_logits=indexer_logits)


def keyed(args):
    """(q, weights, k_cache, page_table, q_seq, q_pos) -> chunked_topk's (q, weights, keys, q_seq, q_pos)."""
    q, weights, k_cache, page_table, q_seq, q_pos = args
    return q, weights, ModelDtypeKeys(k_cache, page_table), q_seq, q_pos


def prefill_batch(seq_lens: list[int], new_tokens: list[int], seed: int = 0):
    """Ragged prefill: request b has seq_lens[b] tokens of which the last new_tokens[b] are queries."""
    g = torch.Generator().manual_seed(seed)
    slots = sum(seq_lens)
    length = max(seq_lens)
    page_table = torch.full((len(seq_lens), length), -1, dtype=torch.int32)  # [B, L]
    perm = torch.randperm(slots, generator=g).int()  # scattered slots
    start = 0
    for b, n in enumerate(seq_lens):
        page_table[b, :n] = perm[start : start + n]
        start += n
    q_seq = torch.cat([torch.full((t,), b) for b, t in enumerate(new_tokens)]).long()  # [T]
    q_pos = torch.cat([torch.arange(n - t, n) for n, t in zip(seq_lens, new_tokens)]).long()  # [T]
    tokens = q_seq.shape[0]
    q = torch.randn(tokens, HEADS, DIM, generator=g)  # [T, Hi, D]
    weights = torch.randn(tokens, HEADS, generator=g) * HEADS**-0.5  # [T, Hi]
    k_cache = torch.randn(slots, DIM, generator=g)  # [S, D]
    return q, weights, k_cache, page_table, q_seq, q_pos


@pytest.mark.parametrize(
    "seq_lens,new_tokens,rows",
    [([301], [301], 37), ([301, 97], [120, 97], 8), ([65, 200, 3], [65, 57, 3], 1)],
    ids=["B1-L301-rows37", "B2-L301-rows8", "B3-L200-rows1"],
)
def test_chunked_equals_unchunked(seq_lens, new_tokens, rows):
    impl = DSA_IMPLS["reference"].load("reference", "prefill")
    args = prefill_batch(seq_lens, new_tokens)
    length = args[3].shape[1]
    budget = IndexerWorkspace(rows * length * LOGIT_BYTES + LOGIT_BYTES * length - 1)  # just under rows + 1
    assert budget.rows_per_pass(length) == rows < sum(new_tokens)
    sizes: list[int] = []
    chunked = chunked_topk(recording(impl, sizes), budget, *keyed(args), TOPK)
    whole = IndexerWorkspace(1 << 40)
    unchunked = chunked_topk(impl, whole, *keyed(args), TOPK)
    assert len(sizes) == -(-sum(new_tokens) // rows)  # ceil: the prefill really ran in chunks
    assert max(sizes) <= budget.budget_bytes
    assert torch.equal(chunked, unchunked)  # canonical form: ascending positions then -1
    assert torch.equal(unchunked, impl.topk_positions(impl.indexer_logits(*args), args[5], TOPK))
    # into a caller's buffer (a CUDA graph's per-layer top-k): each chunk writes its rows, nothing else is returned
    out = torch.full_like(unchunked, -7)
    assert chunked_topk(impl, budget, *keyed(args), TOPK, out) is out and torch.equal(out, unchunked)


@pytest.fixture
def small_budget_configs(tmp_path):
    """configs/ with a 1 MiB indexer logits budget."""
    root = tmp_path / "configs"
    shutil.copytree(configs_dir(), root)
    layout = json.loads((root / "memory-layout.json").read_text())
    layout["indexer_workspace"]["logits_budget_mib"] = 1
    (root / "memory-layout.json").write_text(json.dumps(layout))
    return root


def test_planner_workspace_is_the_buffer_allocated(small_budget_configs):
    catalog = load_catalog(small_budget_configs)
    context = 1531  # 1 MiB // (4 B x 1531) = 171 query rows per pass
    p = plan(catalog, "h200-fp8", context=context)
    planned = {item.label: item.bytes for item in p.workspace}
    logits_label = f"indexer logits 171x{context} fp32"
    assert planned[logits_label] == 171 * context * LOGIT_BYTES
    assert planned[f"indexer top-k 8192x{catalog.model.index_topk} int32"] == 8192 * catalog.model.index_topk * 4

    impl = DSA_IMPLS["reference"].load("reference", "prefill")
    args = prefill_batch([context], [400])  # 400 query rows at the full context: 3 passes
    sizes: list[int] = []
    chunked_topk(recording(impl, sizes), IndexerWorkspace(p.indexer_logits_budget), *keyed(args), TOPK)
    assert sizes == [171 * context * LOGIT_BYTES] * 2 + [58 * context * LOGIT_BYTES]
    assert max(sizes) == planned[logits_label] <= p.indexer_logits_budget


def test_plan_cli_says_how_many_rows_fit(capsys):
    from sglang_glm5.cli import main

    assert main(["plan", "--preset", "h200-fp8", "--context", "131072"]) == 0
    out = capsys.readouterr().out
    # 1 GiB // (4 B x 131072) = 2048 rows
    assert "2048 query rows per pass of the 8192-row prefill chunk at 131072 tokens (budget 1.00 GiB)" in out
    line = next(line for line in out.splitlines() if line.startswith("workspace: indexer logits"))
    assert line.split() == ["workspace:", "indexer", "logits", "2048x131072", "fp32", "1.00", "GiB"]
