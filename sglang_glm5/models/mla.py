"""GLM-5 attention: MLA in the absorbed 576-d latent space over the DSA-selected tokens."""

import torch
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.runtime_context import get_parallel
from sglang.srt.utils import add_prefix
from torch import nn

from sglang_glm5.models.indexer import Glm5Indexer
from sglang_glm5.models.rope import glm5_rope

LATENT_NORM_EPS = 1e-6  # q_a_layernorm / kv_a_layernorm use the reference RMSNorm default, not rms_norm_eps


class Glm5DsaAttention(nn.Module):
    """Heads split over the attention-TP group (`parallel_group="attn_tp"`, as upstream's DeepSeek MLA): the whole TP
    group without attention DP, each attention-DP group's ranks with it. The latent down-projections and the
    indexer are replicated."""

    def __init__(self, config, layer_id: int, runs_indexer: bool = True, quant_config=None, prefix: str = ""):
        super().__init__()
        tp_size = get_parallel().attn_tp_size
        assert config.num_attention_heads % tp_size == 0, (
            f"num_attention_heads {config.num_attention_heads} is not divisible by attention TP size {tp_size}"
        )
        self.layer_id = layer_id
        self.num_local_heads = config.num_attention_heads // tp_size
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.v_head_dim = config.v_head_dim
        self.kv_lora_rank = config.kv_lora_rank
        qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim

        self.q_a_proj = ReplicatedLinear(
            config.hidden_size, config.q_lora_rank, bias=False,
            quant_config=quant_config, prefix=add_prefix("q_a_proj", prefix),
        )
        self.q_a_layernorm = RMSNorm(config.q_lora_rank, eps=LATENT_NORM_EPS)
        self.q_b_proj = ColumnParallelLinear(
            config.q_lora_rank, config.num_attention_heads * qk_head_dim, bias=False,
            quant_config=quant_config, prefix=add_prefix("q_b_proj", prefix), parallel_group="attn_tp",
        )
        self.kv_a_proj_with_mqa = ReplicatedLinear(
            config.hidden_size, self.kv_lora_rank + self.qk_rope_head_dim, bias=False,
            quant_config=quant_config, prefix=add_prefix("kv_a_proj_with_mqa", prefix),
        )
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank, eps=LATENT_NORM_EPS)
        self.kv_b_proj = ColumnParallelLinear(
            self.kv_lora_rank, config.num_attention_heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False,
            quant_config=quant_config, prefix=add_prefix("kv_b_proj", prefix), parallel_group="attn_tp",
        )
        self.o_proj = RowParallelLinear(
            config.num_attention_heads * self.v_head_dim, config.hidden_size, bias=False,
            quant_config=quant_config, prefix=add_prefix("o_proj", prefix), parallel_group="attn_tp",
        )
        self.rotary_emb = glm5_rope(config, self.qk_rope_head_dim, config.rope_interleave)
        # IndexCache: a layer that runs no indexer attends with the previous indexer layer's top-k.
        self.runs_indexer = runs_indexer
        self.index_topk = config.index_topk
        self.indexer = (
            Glm5Indexer(config, layer_id, quant_config, prefix=add_prefix("indexer", prefix))
            if self.runs_indexer
            else None
        )
        self.attn = RadixAttention(
            self.num_local_heads,
            self.kv_lora_rank + self.qk_rope_head_dim,
            qk_head_dim**-0.5,
            num_kv_heads=1,
            layer_id=layer_id,
            v_head_dim=self.kv_lora_rank,
            quant_config=quant_config,
            prefix=add_prefix("attn", prefix),
        )
        self.w_kc: torch.Tensor | None = None  # [H, nope, kv_lora]
        self.w_vc: torch.Tensor | None = None  # [H, v, kv_lora]

    def absorb_kv_b(self, kv_b_weight: torch.Tensor) -> None:
        w = kv_b_weight.view(self.num_local_heads, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank)
        self.w_kc = w[:, : self.qk_nope_head_dim].contiguous()
        self.w_vc = w[:, self.qk_nope_head_dim :].contiguous()

    def forward(self, positions, x, forward_batch, prev_topk=None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = x.shape[0]
        if tokens == 0:
            # An idle attention-DP rank (no request this step): nothing to attend, and o_proj's attention-TP sum
            # has no partner either (every rank of this attention-TP group is idle alike). The MoE still runs.
            return x, x.new_empty((0, self.index_topk), dtype=torch.int32)
        q_latent = self.q_a_layernorm(self.q_a_proj(x)[0])  # [T, q_lora]
        q, _ = self.q_b_proj(q_latent)
        q = q.view(tokens, self.num_local_heads, -1)  # [T, H, 256]
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        kv, _ = self.kv_a_proj_with_mqa(x)
        latent, k_pe = kv.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        latent = self.kv_a_layernorm(latent.contiguous())  # [T, 512]
        q_pe, k_pe = self.rotary_emb(positions, q_pe.contiguous(), k_pe.unsqueeze(1).contiguous())
        q_abs = torch.bmm(q_nope.transpose(0, 1), self.w_kc).transpose(0, 1)  # [T, H, 512]
        q_full = torch.cat([q_abs, q_pe], dim=-1)  # [T, H, 576]
        if self.runs_indexer:
            topk = self.indexer(x, q_latent, positions)  # [T, index_topk]
        else:
            assert prev_topk is not None, f"layer {self.layer_id} reuses top-k but no earlier layer computed one"
            topk = prev_topk
        out = self.attn(q_full, latent, latent, forward_batch, k_rope=k_pe.view(tokens, -1), topk=topk)
        out = out.view(tokens, self.num_local_heads, self.kv_lora_rank)  # [T, H, 512]
        out = torch.bmm(out.transpose(0, 1), self.w_vc.transpose(1, 2)).transpose(0, 1)  # [T, H, 256]
        return self.o_proj(out.reshape(tokens, -1))[0], topk
