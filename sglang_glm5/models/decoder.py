"""One GLM-5 decoder layer: DSA attention, then a dense MLP (first layers) or the routed MoE."""

from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.models.deepseek_v2 import DeepseekV2MLP, DeepseekV2MoE
from sglang.srt.utils import add_prefix
from torch import nn

from sglang_glm5.models.mla import Glm5DsaAttention


class Glm5DecoderLayer(nn.Module):
    def __init__(
        self, cfg, hf_config, layer_id: int, runs_indexer: bool, quant_config=None, prefix: str = "", is_nextn=False
    ):
        super().__init__()
        self.layer_id = layer_id
        self.self_attn = Glm5DsaAttention(
            cfg, layer_id, runs_indexer, quant_config, prefix=add_prefix("self_attn", prefix)
        )
        if cfg.is_dense_layer(layer_id) and not is_nextn:
            self.mlp = DeepseekV2MLP(
                cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act,
                quant_config=quant_config, prefix=add_prefix("mlp", prefix),
            )
        else:
            # SGLang's DeepSeek MoE block (router, FusedMoE experts, shared expert) reads the HF config.
            self.mlp = DeepseekV2MoE(
                hf_config, layer_id, quant_config=quant_config, prefix=add_prefix("mlp", prefix), is_nextn=is_nextn
            )
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, positions, hidden, residual, forward_batch, prev_topk):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden, topk = self.self_attn(positions, hidden, forward_batch, prev_topk)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        hidden = self.mlp(hidden, forward_batch)
        return hidden, residual, topk
