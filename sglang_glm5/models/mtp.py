"""GLM-5's multi-token-prediction layer as SGLang's EAGLE draft model (`GlmMoeDsaForCausalLMNextN`).

SGLang renames the draft architecture `GlmMoeDsaForCausalLM` -> `GlmMoeDsaForCausalLMNextN` when EAGLE is on
and gives the draft its own model runner: a one-layer KV cache (the decoder below is layer 0 there) and its own
DSA backend with its own index-K store. The draft reads checkpoint layer `num_hidden_layers`; the token
embedding and LM head are the target's (the EAGLE worker hands them over through `set_embed_and_head`).

    h_draft = eh_proj([enorm(embed(token_{t+1})), hnorm(h_target_t)])   # [T, 2H] -> [T, H]
    logits  = lm_head(shared_head.norm(decoder(h_draft)))
"""

import torch
from sglang.srt.layers.dp_attention import is_dp_attention_enabled
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import ReplicatedLinear
from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding, get_embedding_tp_kwargs
from sglang.srt.utils import add_prefix
from torch import nn

from sglang_glm5.models.decoder import Glm5DecoderLayer
from sglang_glm5.models.glm5 import GlmMoeDsaForCausalLM
from sglang_glm5.models.weights import load_weights, mtp_weights

DRAFT_LAYER_ID = 0  # the draft runner's KV pool holds one layer


class Glm5MTPModel(nn.Module):
    def __init__(self, cfg, hf_config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(
            cfg.vocab_size, cfg.hidden_size, prefix=add_prefix("embed_tokens", prefix), **get_embedding_tp_kwargs()
        )
        self.enorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.eh_proj = ReplicatedLinear(
            2 * cfg.hidden_size, cfg.hidden_size, bias=False, quant_config=quant_config,
            prefix=add_prefix("eh_proj", prefix),
        )
        self.decoder = Glm5DecoderLayer(
            cfg, hf_config, DRAFT_LAYER_ID, True, quant_config, prefix=add_prefix("decoder", prefix), is_nextn=True
        )
        self.shared_head = nn.Module()
        self.shared_head.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, input_ids, positions, forward_batch, input_embeds=None) -> torch.Tensor:
        embeds = self.embed_tokens(input_ids) if input_embeds is None else input_embeds  # [T, H]
        if embeds.shape[0] == 0:
            return embeds
        target_hidden = forward_batch.spec_info.hidden_states  # [T, H] the target's last hidden state
        eh = torch.cat([self.enorm(embeds), self.hnorm(target_hidden.to(embeds.dtype))], dim=-1)  # [T, 2H]
        hidden, _ = self.eh_proj(eh)
        hidden, residual, _ = self.decoder(positions, hidden, None, forward_batch, None)
        hidden, _ = self.shared_head.norm(hidden, residual)
        return hidden


class GlmMoeDsaForCausalLMNextN(GlmMoeDsaForCausalLM):
    """The draft: the MTP layer only; shares config parsing, weight validation and FP8 handling with the target."""

    REQUIRES_MTP = True  # a checkpoint without the MTP layer is refused, naming the missing tensors

    def _build_body(self, config, quant_config, prefix):
        return Glm5MTPModel(self.glm5_config, config, quant_config, prefix=add_prefix("model", prefix))

    def __init__(self, config, quant_config=None, prefix: str = ""):
        if is_dp_attention_enabled():
            # An idle DP rank's draft returns before the MoE (Glm5MTPModel.forward) and would leave the other ranks'
            # collectives waiting: refused at start-up until the draft joins them (untested combination).
            raise ValueError(
                "EAGLE with attention DP (--attn-dp-size > 1) is not supported for GLM-5 yet: "
                "drop --attn-dp-size (tensor parallel EAGLE works) or drop --speculative-algorithm"
            )
        super().__init__(config, quant_config, prefix)
        assert self.glm5_config.has_mtp, (
            "EAGLE with GLM-5 needs the checkpoint's MTP layer: config.json has num_nextn_predict_layers = 0"
        )

    @torch.no_grad()
    def forward(self, input_ids, positions, forward_batch, input_embeds=None, **kwargs):
        hidden = self.model(input_ids, positions, forward_batch, input_embeds)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch)

    def set_embed_and_head(self, embed: torch.Tensor, head: torch.Tensor) -> None:
        del self.model.embed_tokens.weight
        del self.lm_head.weight
        self.model.embed_tokens.weight = embed
        self.lm_head.weight = head

    def _load(self, weights, locate) -> None:
        cfg = self.glm5_config
        load_weights(self, mtp_weights(weights, cfg.mtp_layer_index), cfg.n_routed_experts, None, locate=locate)

    def _attention_layers(self):
        return [self.model.decoder]


EntryClass = [GlmMoeDsaForCausalLMNextN]
