"""GLM-5's lightning indexer: projections and RoPE here, cache and top-k in the DSA backend."""

import torch
from sglang.srt.layers.linear import ReplicatedLinear
from sglang.srt.model_executor.forward_context import get_attn_backend
from sglang.srt.utils import add_prefix
from torch import nn

from sglang_glm5.models.rope import glm5_rope

INDEXER_KEY_NORM_EPS = 1e-6  # GLM-5 / DeepSeek-V3.2 reference: LayerNorm(eps=1e-6) on indexer keys


class Glm5Indexer(nn.Module):
    def __init__(self, config, layer_id: int, quant_config=None, prefix: str = ""):
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = config.index_n_heads
        self.head_dim = config.index_head_dim
        self.wq_b = ReplicatedLinear(
            config.q_lora_rank, self.n_heads * self.head_dim, bias=False,
            quant_config=quant_config, prefix=add_prefix("wq_b", prefix),
        )
        self.wk = ReplicatedLinear(
            config.hidden_size, self.head_dim, bias=False, quant_config=quant_config, prefix=add_prefix("wk", prefix)
        )
        self.k_norm = nn.LayerNorm(self.head_dim, eps=INDEXER_KEY_NORM_EPS)
        # The released FP8 checkpoint keeps weights_proj in BF16: never quantized.
        self.weights_proj = ReplicatedLinear(
            config.hidden_size, self.n_heads, bias=False, quant_config=None, prefix=add_prefix("weights_proj", prefix)
        )
        self.rotary_emb = glm5_rope(config, self.head_dim, config.indexer_rope_interleave)

    def forward(self, x: torch.Tensor, q_latent: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[0]
        q, _ = self.wq_b(q_latent)
        q = q.view(tokens, self.n_heads, self.head_dim)  # [T, Hi, D]
        k, _ = self.wk(x)
        k = self.k_norm(k).unsqueeze(1)  # [T, 1, D]
        q, k = self.rotary_emb(positions, q, k)
        weights, _ = self.weights_proj(x)
        weights = weights.float() * self.n_heads**-0.5  # [T, Hi]
        return get_attn_backend().select_topk(self.layer_id, q, k.view(tokens, self.head_dim), weights)
