"""CUDA graph state of the GLM-5 DSA backend: static metadata buffers and SGLang 0.5.23's graph hooks.

SGLang's graph runners (model_executor/runner/decode_cuda_graph_runner.py, speculative/eagle_draft_cuda_graph_runner.py)
call, per backend:
1. `init_cuda_graph_state(max_bs, max_num_tokens)` once: every buffer below is allocated here and never again;
2. per captured batch size: `init_forward_metadata_out_graph(fb, in_capture=True)` (host), then inside the capture
   `init_forward_metadata_in_graph(fb)` and the model forward, both reading the runner's static input buffers;
3. per replay: the runner copies the real batch into its static buffers (padded rows: request row 0, position 0,
   write slot 0 = SGLang's padding slot, seq_len `SEQ_LEN_FILL`), calls `init_forward_metadata_out_graph(view)` and
   replays the graph, which reruns the recorded `in_graph` copies and the forward.

The metadata a captured forward reads is `DSAMetadata` over views of these buffers, the same ragged form as the eager
path (metadata.py) with one difference: the page table has the static width of SGLang's `req_to_token` (context
length plus its spare columns), so no shape depends on a sequence length. The captured ops are the implementation's
graph-safe variant (impls.resolve_graph_impl: the reference's is dsa/static.py).
Graph modes have the same number of query tokens per request (decode: 1, target verify and draft extend v2:
`num_draft_tokens`, draft decode steps: topk), so the request of token t is t // tokens_per_request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from sglang_glm5.dsa.graph_plan import GraphArena
from sglang_glm5.dsa.impls import DSAPhaseImpl, resolve_graph_impl
from sglang_glm5.attention.metadata import DraftStep, DSAMetadata

logger = logging.getLogger(__name__)

SEQ_LEN_FILL = 1  # a padded request has one cached token (position 0): its row reads column 0 only


class DSAGraphError(ValueError):
    pass


@dataclass(frozen=True)
class GraphLayout:
    batch: int  # requests in the captured graph (padded)
    tokens: int  # query tokens (padded)

    @property
    def per_request(self) -> int:
        return self.tokens // self.batch

    @classmethod
    def of(cls, forward_batch) -> "GraphLayout":
        batch, tokens = int(forward_batch.batch_size), int(forward_batch.positions.shape[0])
        if batch < 1 or tokens % batch:
            raise DSAGraphError(
                f"{forward_batch.forward_mode}: a GLM-5 DSA graph needs the same number of query tokens per request; "
                f"got {tokens} tokens for {batch} requests"
            )
        return cls(batch, tokens)


class DSAGraphState:
    """Static buffers sized once from SGLang's largest capture (max_bs requests, max_num_tokens query tokens)."""

    def __init__(
        self,
        max_bs: int,
        max_num_tokens: int,
        req_to_token: torch.Tensor,
        draft_step: DraftStep | None,
        index_k_store=None,  # IndexKStore: one that translates slots (pool-fp8) gets its key rows filled here
        topk_layers=(),  # the layers that compute a top-k (IndexCache: the others reuse the previous one's)
        index_topk: int = 0,
    ):
        device = req_to_token.device
        self.max_bs, self.max_num_tokens = max_bs, max_num_tokens
        self.req_to_token = req_to_token  # [R, W] SGLang's pool: a graph gathers from it in place
        self.draft_step = draft_step
        self.page_table = torch.zeros(max_bs, req_to_token.shape[1], dtype=req_to_token.dtype, device=device)  # [B, W]
        self.seq_lens = torch.full((max_bs,), SEQ_LEN_FILL, dtype=torch.int64, device=device)  # [B]
        self.q_seq = torch.zeros(max_num_tokens, dtype=torch.int64, device=device)  # [T]
        self.q_pos = torch.zeros(max_num_tokens, dtype=torch.int64, device=device)  # [T]
        self.out_cache_loc = torch.zeros(max_num_tokens, dtype=torch.int64, device=device)  # [T]
        self.token_index = torch.arange(max_num_tokens, dtype=torch.int64, device=device)  # [T] constant
        # a store that reads keys at translated rows (pool-fp8): the page table translated once per forward, in fill
        self.index_k_store = index_k_store if getattr(index_k_store, "translates_slots", False) else None
        self.key_rows = (
            torch.zeros(max_bs, req_to_token.shape[1], dtype=torch.int64, device=device)  # [B, W]
            if self.index_k_store is not None
            else None
        )
        # one top-k output per top-k layer: IndexCache layers read the previous top-k layer's after later ops ran,
        # so no two layers may share one; a captured forward writes them in place (select_topk) and allocates none
        self.topk = {
            layer: torch.full((max_num_tokens, index_topk), -1, dtype=torch.int32, device=device)  # [T, K]
            for layer in sorted(topk_layers)
        }
        self._metadata: dict[GraphLayout, DSAMetadata] = {}

    def buffers(self) -> dict[str, torch.Tensor]:
        buffers = {
            "page_table": self.page_table, "seq_lens": self.seq_lens, "q_seq": self.q_seq, "q_pos": self.q_pos,
            "out_cache_loc": self.out_cache_loc, "token_index": self.token_index,
        }  # fmt: skip
        if self.key_rows is not None:
            buffers["key_rows"] = self.key_rows
        buffers.update({f"topk.{layer}": buf for layer, buf in self.topk.items()})
        return buffers

    def topk_out(self, layer_id: int, tokens: int) -> torch.Tensor:
        """Layer `layer_id`'s top-k output for a graph forward of `tokens` query tokens: [tokens, index_topk]."""
        if layer_id not in self.topk:
            raise DSAGraphError(f"layer {layer_id} computes a top-k but the graph state has no buffer for it "
                                f"(top-k layers: {sorted(self.topk)})")  # fmt: skip
        return self.topk[layer_id][:tokens]

    def index_key_rows(self, page_table: torch.Tensor) -> torch.Tensor | None:
        """The translated page table of the store for a graph forward with `page_table` (a view of ours), or None."""
        return None if self.key_rows is None else self.key_rows[: page_table.shape[0]]

    def metadata(self, layout: GraphLayout) -> DSAMetadata:
        """Host side: the metadata over buffer views for this layout (made once per layout, then reused)."""
        if layout.batch > self.max_bs or layout.tokens > self.max_num_tokens:
            raise DSAGraphError(
                f"graph batch {layout.batch} requests / {layout.tokens} tokens exceeds the graph state "
                f"({self.max_bs} / {self.max_num_tokens}) sized by init_cuda_graph_state"
            )
        if layout not in self._metadata:
            b, t = layout.batch, layout.tokens
            self._metadata[layout] = DSAMetadata(
                page_table=self.page_table[:b], seq_lens=self.seq_lens[:b], q_seq=self.q_seq[:t],
                q_pos=self.q_pos[:t], out_cache_loc=self.out_cache_loc[:t], is_decode=t == b, static=True,
            )  # fmt: skip
        return self._metadata[layout]

    def fill(self, forward_batch, layout: GraphLayout) -> None:
        """Graph-recordable: copies into the buffers, shapes from `layout` only, no host read, no allocation
        (except the draft-step slot column, SGLang's per_step_draft_out_cache_loc)."""
        b, t = layout.batch, layout.tokens
        torch.index_select(self.req_to_token, 0, forward_batch.req_pool_indices[:b], out=self.page_table[:b])
        if self.key_rows is not None:
            self.index_k_store.key_rows(self.page_table[:b], out=self.key_rows[:b])
        self.seq_lens[:b].copy_(forward_batch.seq_lens[:b])
        torch.div(self.token_index[:t], layout.per_request, rounding_mode="floor", out=self.q_seq[:t])
        step = self.draft_step
        positions = forward_batch.positions[:t]
        if step is None:
            self.q_pos[:t].copy_(positions)
            self.out_cache_loc[:t].copy_(forward_batch.out_cache_loc[:t])
            return
        from sglang.srt.speculative.eagle_utils import per_step_draft_out_cache_loc

        torch.add(positions, step.index, out=self.q_pos[:t])
        slots = forward_batch.out_cache_loc[: b * step.topk * step.num_steps]
        self.out_cache_loc[:t].copy_(per_step_draft_out_cache_loc(slots, b, step.topk, step.num_steps)[step.index])


class DSAGraphHooks:
    """SGLang's graph hooks for Glm5DSABackend (mixed in before AttentionBackend)."""

    graph_state: DSAGraphState | None = None
    graph_impls: dict[str, DSAPhaseImpl] | None = None
    graph_arena: GraphArena | None = None

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int):
        self.graph_state = DSAGraphState(
            max_bs, max_num_tokens, self.req_to_token_pool.req_to_token, self.draft_step, self.index_k_store,
            topk_layers=self.index_k_store.layers, index_topk=self.index_topk,
        )  # fmt: skip
        topk_bytes = sum(b.nbytes for b in self.graph_state.topk.values())
        logger.info("GLM-5 DSA graph state: %d requests / %d tokens; top-k buffers for layers %s, %.1f MiB",
                    max_bs, max_num_tokens, sorted(self.graph_state.topk), topk_bytes / 2**20)  # fmt: skip
        self.graph_arena = GraphArena()  # planned ops' outputs and workspaces (graph_plan.py), owned here
        self.graph_impls = {
            phase: resolve_graph_impl(impl.name, phase, self.graph_arena) for phase, impl in self.impls.items()
        }

    def get_cuda_graph_seq_len_fill_value(self):
        return SEQ_LEN_FILL

    def get_cpu_graph_seq_len_fill_value(self):
        """The same for the requests SGLang pads a batch with outside CUDA graphs (attention DP pads every DP rank's
        decode batch to one size): one cached token, so a padded row attends a non-empty set; its output is dropped."""
        return SEQ_LEN_FILL

    def init_forward_metadata_out_graph(self, forward_batch, in_capture: bool = False):
        if self.graph_state is None:
            raise DSAGraphError("GLM-5 DSA: graph metadata requested before init_cuda_graph_state")
        self.forward_metadata = self.graph_state.metadata(GraphLayout.of(forward_batch))

    def init_forward_metadata_in_graph(self, forward_batch):
        layout = GraphLayout.of(forward_batch)
        self.forward_metadata = self.graph_state.metadata(layout)  # host-only; the same object out_graph picked
        self.graph_state.fill(forward_batch, layout)

    def phase_impl(self, meta: DSAMetadata) -> DSAPhaseImpl:
        """The implementation a forward with `meta` runs: the graph-safe variant for graph metadata."""
        return (self.graph_impls if meta.static else self.impls)[meta.phase]

    def glue_target_verify_metadata(self) -> str:
        return ""  # in_graph reads only the runner's slots, req_to_token and our buffers

    def glue_draft_metadata(self) -> str:
        return ""
