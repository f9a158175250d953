"""One GLM-5 decoder layer: DSA attention, then a dense MLP (first layers) or the routed MoE.

With attention DP (`--attn-dp-size`), each attention-DP group attends its own requests while the MLP/MoE stays
tensor parallel over all ranks: the layer moves the hidden rows from the attention layout (sharded over attention
DP) to the FFN layout (every rank holds every row) and back with SGLang's layer-boundary transport (`move_rows`:
a DP gather into SGLang's global DP buffer, then a DP scatter of this rank's slot). Without attention DP both
layouts are the same and nothing moves.
"""

from sglang.srt.layers.layer_boundary import Layout, TokenAxis, move_rows
from sglang.srt.layers.layer_boundary.layout import token_axis_sizes
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
        # Built once (the parallel groups exist before the model): a Layout constructed inside the forward would be
        # a graph break under torch.compile / CUDA-graph capture (tests/attention/test_graph_capture.py).
        self.attn_rows, self.ffn_rows = attention_rows(), Layout(frozenset())

    def forward(self, positions, hidden, residual, forward_batch, prev_topk):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden, topk = self.self_attn(positions, hidden, forward_batch, prev_topk)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        attn_rows, ffn_rows = self.attn_rows, self.ffn_rows
        hidden = move_rows(hidden, attn_rows, ffn_rows, forward_batch)  # [T_all_dp, H]: every DP group's rows
        hidden = self.mlp(hidden, forward_batch)  # summed over TP inside the MLP/MoE
        hidden = move_rows(hidden, ffn_rows, attn_rows, forward_batch)  # [T, H]: this DP group's rows
        return hidden, residual, topk


def attention_rows() -> Layout:
    """Rows after attention: each attention-DP group holds its own requests' rows, complete on every attention-TP
    rank (o_proj summed them); size-one axes drop out, so without attention DP this is the FFN layout."""
    return Layout.sharded_over(TokenAxis.ATTN_DP, axis_sizes=token_axis_sizes())
