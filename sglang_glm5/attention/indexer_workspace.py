"""The DSA indexer's transient memory: fp32 logits [query rows, context] and int32 top-k [query rows, k].

A prefill chunk of T rows at context L needs T x L x 4 bytes of logits (16384 x 202752 rows: 12 GiB), which SGLang's
static memory fraction does not count. The backend therefore scores query rows in chunks that keep the logits
within a budget (`configs/memory-layout.json`: indexer_workspace); the planner counts the same figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOGIT_BYTES = 4  # fp32 logits, every implementation's indexer_logits output
TOPK_INDEX_BYTES = 4  # int32 positions
MIB = 1 << 20


@dataclass(frozen=True)
class IndexerWorkspace:
    budget_bytes: int  # the most fp32 logits bytes one pass may hold

    def rows_per_pass(self, context: int) -> int:
        """Query rows scored at once at `context` keys (at least one: a row is never split)."""
        return max(1, self.budget_bytes // (LOGIT_BYTES * context))

    def fits(self, context: int) -> bool:
        return LOGIT_BYTES * context <= self.budget_bytes

    def logits_bytes(self, rows: int, context: int) -> int:
        """The largest logits buffer of a prefill of `rows` query rows at `context` keys."""
        return min(rows, self.rows_per_pass(context)) * context * LOGIT_BYTES

    @staticmethod
    def topk_bytes(rows: int, k: int) -> int:
        return rows * k * TOPK_INDEX_BYTES


def chunked_topk(
    impl,  # DSAPhaseImpl
    workspace: IndexerWorkspace,
    q: torch.Tensor,  # [T, Hi, D]
    weights: torch.Tensor,  # [T, Hi]
    keys,  # IndexKeys (attention/index_k_store.py): one layer's keys and the page table into them ([B, L])
    q_seq: torch.Tensor,  # [T]
    q_pos: torch.Tensor,  # [T]
    k: int,
    out: torch.Tensor | None = None,  # [T, k] int32: under CUDA graphs the graph state's buffer of the layer
) -> torch.Tensor:  # [T, k] int32, -1 padded
    """impl.topk_positions(keys.logits(impl, ...)) over query-row chunks of `workspace.rows_per_pass(L)` rows,
    each chunk written into its rows of `out` when given (then nothing is allocated for the result).

    Rows are independent (each scores its own request's keys), so the result equals the unchunked one.
    """
    rows = workspace.rows_per_pass(keys.page_table.shape[1])
    parts = []
    for start in range(0, q.shape[0], rows):
        part = slice(start, start + rows)
        logits = keys.logits(impl, q[part], weights[part], q_seq[part], q_pos[part])  # [r, L]
        parts.append(impl.topk_positions(logits, q_pos[part], k, **({} if out is None else {"out": out[part]})))
    if out is not None:
        return out
    return torch.cat(parts) if len(parts) != 1 else parts[0]


def load_indexer_workspace(root=None) -> IndexerWorkspace:
    from sglang_glm5.datafiles import configs_dir
    from sglang_glm5.presets.layout import load_layout

    layout = load_layout(root if root is not None else configs_dir())
    return IndexerWorkspace(int(layout.indexer_logits_budget_mib * MIB))
