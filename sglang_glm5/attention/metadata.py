"""Per-batch DSA metadata, built once per forward from SGLang's ForwardBatch."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DSAMetadata:
    page_table: torch.Tensor  # [B, L] int: KV-pool slot of position p of request b (SGLang's req_to_token rows)
    seq_lens: torch.Tensor  # [B] int: cached + new tokens per request
    q_seq: torch.Tensor  # [T] int64: request of each query token
    q_pos: torch.Tensor  # [T] int64: absolute position of each query token (causal bound)
    out_cache_loc: torch.Tensor  # [T] int64: slot each new token writes
    is_decode: bool

    @property
    def phase(self) -> str:
        return "decode" if self.is_decode else "prefill"

    @classmethod
    def from_forward_batch(cls, forward_batch, req_to_token: torch.Tensor) -> "DSAMetadata":
        mode = forward_batch.forward_mode
        seq_lens = forward_batch.seq_lens
        batch = seq_lens.shape[0]
        max_len = int(forward_batch.seq_lens_cpu.max()) if batch else 0
        page_table = req_to_token[forward_batch.req_pool_indices, :max_len]  # [B, L]
        requests = torch.arange(batch, device=seq_lens.device)
        if mode.is_decode():
            q_seq = requests  # [B]
        else:
            q_seq = torch.repeat_interleave(requests, forward_batch.extend_seq_lens)  # [T]
        return cls(
            page_table=page_table,
            seq_lens=seq_lens,
            q_seq=q_seq.long(),
            q_pos=forward_batch.positions.long(),
            out_cache_loc=forward_batch.out_cache_loc.long(),
            is_decode=mode.is_decode(),
        )
