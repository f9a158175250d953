"""Per-batch DSA metadata, built once per forward from SGLang's ForwardBatch.

Every forward mode reduces to the same ragged form: query token t belongs to request `q_seq[t]`, sits at position
`q_pos[t]`, attends causally to positions 0..q_pos[t] of its request's page-table row, and writes its own latent
and indexer key at `out_cache_loc[t]`. EAGLE's modes fit it because SGLang puts the draft tokens' slots into
`req_to_token` before they run, and a chain draft (topk 1) is causal by position:
- target verify: `num_draft_tokens` queries per request at positions seq_len .. seq_len + n - 1;
- draft extend: the verified tokens per request (ragged `extend_seq_lens`, or a fixed number per request);
- multi-step draft decode: one backend per step, metadata built once before step 0, so step s shifts the
  positions by s and takes its own column of the step-major draft slots.
"""

from dataclasses import dataclass

import torch
from sglang.srt.speculative.eagle_utils import per_step_draft_out_cache_loc


@dataclass(frozen=True)
class DraftStep:
    index: int  # 0-based step of the multi-step draft decode
    num_steps: int  # --speculative-num-steps
    topk: int  # --speculative-eagle-topk


@dataclass(frozen=True)
class DSAMetadata:
    page_table: torch.Tensor  # [B, L] int: KV-pool slot of position p of request b (SGLang's req_to_token rows)
    seq_lens: torch.Tensor  # [B] int: cached tokens per request (SGLang's seq_lens for this mode)
    q_seq: torch.Tensor  # [T] int64: request of each query token
    q_pos: torch.Tensor  # [T] int64: absolute position of each query token (causal bound)
    out_cache_loc: torch.Tensor  # [T] int64: slot each new token writes
    is_decode: bool  # one query token per request
    static: bool = False  # views of the CUDA graph state (graph_state.py): page_table has the static width

    @property
    def phase(self) -> str:
        return "decode" if self.is_decode else "prefill"

    @classmethod
    def from_forward_batch(
        cls, forward_batch, req_to_token: torch.Tensor, draft_step: DraftStep | None = None
    ) -> "DSAMetadata":
        seq_lens = forward_batch.seq_lens
        batch = seq_lens.shape[0]
        q_pos = forward_batch.positions.long()  # [T]
        out_cache_loc = forward_batch.out_cache_loc.long()  # [T]
        if draft_step is not None:
            q_pos = q_pos + draft_step.index
            out_cache_loc = per_step_draft_out_cache_loc(
                out_cache_loc, batch, draft_step.topk, draft_step.num_steps
            )[draft_step.index]
        tokens = q_pos.shape[0]
        requests = torch.arange(batch, device=seq_lens.device)
        extend_seq_lens = forward_batch.extend_seq_lens
        if forward_batch.forward_mode.is_extend() and extend_seq_lens is not None and draft_step is None:
            q_seq = torch.repeat_interleave(requests, extend_seq_lens)  # [T] ragged
        else:
            assert batch == 0 or tokens % batch == 0, (
                f"{forward_batch.forward_mode}: {tokens} query tokens do not split evenly over {batch} requests"
            )
            q_seq = torch.repeat_interleave(requests, tokens // max(batch, 1))  # [T] same count per request
        # Positions past seq_lens (verify, draft steps) are already mapped in req_to_token.
        max_len = int(q_pos.max()) + 1 if tokens else 0  # host sync, once per forward
        page_table = req_to_token[forward_batch.req_pool_indices, :max_len]  # [B, L]
        return cls(
            page_table=page_table,
            seq_lens=seq_lens,
            q_seq=q_seq.long(),
            q_pos=q_pos,
            out_cache_loc=out_cache_loc,
            is_decode=tokens == batch,
        )
