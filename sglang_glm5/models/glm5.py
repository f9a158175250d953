"""GLM-5 (`GlmMoeDsaForCausalLM`): embedding, decoder layers, final norm, LM head — SGLang's model interface."""

import logging
from pathlib import Path

import torch
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
    get_embedding_tp_kwargs,
)
from sglang.srt.runtime_context import get_parallel, get_server_args
from sglang.srt.utils import add_prefix
from torch import nn

from sglang_glm5.checkpoint.locate import CheckpointNotCached, checkpoint_dir
from sglang_glm5.checkpoint.validate import describe_missing_mtp, missing_mtp_tensors, validate_checkpoint
from sglang_glm5.config import Glm5Config, parse_override_args
from sglang_glm5.models.decoder import Glm5DecoderLayer
from sglang_glm5.models.weights import load_weights
from sglang_glm5.quant.cpu_fp8 import plan_weight_format
from sglang_glm5.quant.fp8_block import dequantize_fp8_blocks

logger = logging.getLogger(__name__)

# config.json may omit these; SGLang's DeepSeek MoE block reads them, and GLM-5's values are fixed.
GLM5_ROUTER_FIELDS = {"scoring_func": "sigmoid", "topk_method": "noaux_tc"}


class GlmMoeDsaModel(nn.Module):
    def __init__(self, cfg: Glm5Config, hf_config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(
            cfg.vocab_size, cfg.hidden_size, prefix=add_prefix("embed_tokens", prefix), **get_embedding_tp_kwargs()
        )
        plan = cfg.indexer_plan
        logger.info("%s", plan.summary())
        # transformers filled `indexer_types` before any override applied; SGLang reads it (dsa_layer_skips_topk).
        hf_config.indexer_types = plan.indexer_types
        self.layers = nn.ModuleList(
            Glm5DecoderLayer(
                cfg, hf_config, i, plan.runs_indexer(i), quant_config, prefix=add_prefix(f"layers.{i}", prefix)
            )
            for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, input_ids, positions, forward_batch, input_embeds=None) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
        residual, topk = None, None
        for layer in self.layers:
            hidden, residual, topk = layer(positions, hidden, residual, forward_batch, topk)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class GlmMoeDsaForCausalLM(nn.Module):
    REQUIRES_MTP = False  # the target serves a checkpoint without MTP tensors (HF save_pretrained writes none)

    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.glm5_config = glm5_config_of(config)
        for field, value in GLM5_ROUTER_FIELDS.items():
            if getattr(config, field, None) is None:
                setattr(config, field, value)
        self.config = config
        self._weight_transform = plan_weight_format(quant_config, self.glm5_config.quant)
        self.quant_config = quant_config
        self.model = self._build_body(config, quant_config, prefix)
        self.lm_head = ParallelLMHead(
            config.vocab_size, config.hidden_size, quant_config=quant_config, prefix=add_prefix("lm_head", prefix),
            use_attn_tp_group=get_parallel().enable_dp_lm_head,
        )
        self.logits_processor = LogitsProcessor(config)
        logger.info("GLM-5 model: %s.%s", type(self).__module__, type(self).__qualname__)

    def _build_body(self, config, quant_config, prefix) -> nn.Module:
        return GlmMoeDsaModel(self.glm5_config, config, quant_config, prefix=add_prefix("model", prefix))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_embed_and_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared with the MTP draft model by SGLang's EAGLE worker."""
        return self.model.embed_tokens.weight, self.lm_head.weight

    @torch.no_grad()
    def forward(self, input_ids, positions, forward_batch, input_embeds=None, **kwargs):
        hidden = self.model(input_ids, positions, forward_batch, input_embeds)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch)

    def load_weights(self, weights):
        headers = {}
        try:
            checkpoint = _checkpoint_dir(self.config)
            headers = validate_checkpoint(checkpoint, self.glm5_config, require_mtp=self.REQUIRES_MTP)
        except CheckpointNotCached as err:
            checkpoint = _name_or_path(self.config)
            logger.warning("GLM-5 checkpoint headers not checked: %s; tensors are checked as they load", err)
        missing = missing_mtp_tensors(headers, self.glm5_config) if headers else ()
        if missing:
            logger.warning(
                "GLM-5: %s; serving without speculative decoding (--speculative-algorithm EAGLE needs them)",
                describe_missing_mtp(checkpoint, missing, self.glm5_config),
            )

        def locate(name: str) -> str:
            return str(headers[name].file if name in headers else checkpoint)

        self._load(self._weight_transform(weights, locate=locate), locate)
        for layer in self._attention_layers():
            attn = layer.self_attn
            attn.absorb_kv_b(_dense_weight(attn.kv_b_proj, self.glm5_config))

    def _load(self, weights, locate) -> None:
        cfg = self.glm5_config
        load_weights(self, weights, cfg.n_routed_experts, cfg.num_hidden_layers, locate=locate)

    def _attention_layers(self):
        return self.model.layers


def glm5_config_of(hf_config) -> Glm5Config:
    """The checkpoint's config.json as written (transformers silently fills defaults for missing fields, which must
    fail here instead) plus `--json-model-override-args`; the HF config object when there is no local file."""
    overrides = parse_override_args(getattr(get_server_args(), "json_model_override_args", None) or "{}")
    try:
        path = _checkpoint_dir(hf_config) / "config.json"
    except CheckpointNotCached as err:
        logger.warning("GLM-5 config.json not read as written (transformers' defaults fill missing fields): %s", err)
        path = Path(_name_or_path(hf_config)) / "config.json"
    if not path.is_file():
        # The overrides stay a source of their own: SGLang applied them to hf_config, whose `indexer_types`
        # transformers derived before, so only they say which IndexCache plan the user asked for.
        return Glm5Config.from_dict(hf_config.to_dict(), source=str(path), overrides=overrides)
    return Glm5Config.from_pretrained(path.parent, overrides=overrides)


def _dense_weight(linear, cfg: Glm5Config) -> torch.Tensor:
    scale = getattr(linear, "weight_scale_inv", None)
    if scale is None:
        return linear.weight.data
    return dequantize_fp8_blocks(linear.weight.data, scale.data, cfg.quant.block, torch.get_default_dtype())


def _name_or_path(config) -> str:
    return getattr(config, "_name_or_path", "") or "."


def _checkpoint_dir(config) -> Path:
    """The checkpoint's local directory: `--model-path` itself, or a hub id's snapshot in the HF cache (SGLang's
    `--download-dir` if given), where SGLang downloaded it."""
    args = get_server_args()
    return checkpoint_dir(
        _name_or_path(config), revision=getattr(args, "revision", None), cache_dir=getattr(args, "download_dir", None)
    )


EntryClass = [GlmMoeDsaForCausalLM]
