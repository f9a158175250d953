"""Train a tiny GLM-5 checkpoint (main model and MTP layer together) on a built-in synthetic corpus, on CPU.

Any other corpus with `training_batch(batch, seq_len) -> (ids, labels)` trains the same way (labels -100 are not
learned: padding); the demo's chats (`checkpoint/chat_corpus.py`) are one.

A random tiny checkpoint's MTP layer drafts noise (EAGLE accept length ~1). A few hundred AdamW steps on a corpus
with a learnable rule give both heads something to agree on, so acceptance means something. The corpus is a
fixed random cycle over ordinary token ids: every sequence follows `next = cycle[token]` from a random start.

The model is HF transformers' `GlmMoeDsaForCausalLM` (the project's oracle) plus `MTPHead`, GLM-5's MTP layer
built from transformers' own decoder layer:

    h_t   = main model's last hidden state (after the final norm: what SGLang hands the draft)   # [B, S, H]
    loss  = CE(lm_head(h_t), x_{t+1}) + CE(lm_head(MTP(embed(x_{t+1}), h_t)), x_{t+2})

The trained weights are written back into the checkpoint's own shards under GLM-5 names (FP8 weights are
re-quantized with their block scales).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from sglang_glm5.checkpoint.schema import SCALE_SUFFIX
from sglang_glm5.checkpoint.tiny import SAFETENSORS_METADATA, SHARD_GLOB
from sglang_glm5.quant import quantize_fp8_blocks

_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
MTP_SIDE = ("enorm", "hnorm", "eh_proj", "shared_head.norm")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    batch: int = 8
    seq_len: int = 32
    lr: float = 3e-3
    cycle_tokens: int = 128  # distinct token ids on the corpus cycle
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch", "seq_len", "cycle_tokens"):
            if getattr(self, name) < (3 if name == "seq_len" else 1):
                raise ValueError(f"train {name} must be >= {3 if name == 'seq_len' else 1}, got {getattr(self, name)}")


class SyntheticCorpus:
    """`next = cycle[token]` over `cycle_tokens` ordinary ids (special tokens excluded), seeded."""

    def __init__(self, vocab_size: int, special_ids: set[int], cycle_tokens: int, seed: int):
        ordinary = [i for i in range(vocab_size) if i not in special_ids]
        if cycle_tokens > len(ordinary):
            raise ValueError(f"cycle_tokens {cycle_tokens} exceeds the {len(ordinary)} ordinary token ids")
        self.generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(ordinary), generator=self.generator)[:cycle_tokens]
        self.tokens = torch.tensor(ordinary)[pick]  # cycle order
        self.next_of = {int(a): int(b) for a, b in zip(self.tokens, self.tokens.roll(-1))}

    def sequence(self, start: int, length: int) -> list[int]:
        out = [start]
        while len(out) < length:
            out.append(self.next_of[out[-1]])
        return out

    def batch(self, batch: int, length: int) -> torch.Tensor:  # [B, S]
        starts = self.tokens[torch.randint(len(self.tokens), (batch,), generator=self.generator)]
        return torch.tensor([self.sequence(int(s), length) for s in starts])

    def training_batch(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:  # ids, labels [B, S]
        ids = self.batch(batch, length)
        return ids, ids


class MTPHead(nn.Module):
    """GLM-5's MTP layer on transformers' decoder layer (index `num_hidden_layers`: a routed-MoE layer)."""

    def __init__(self, config):
        from transformers.models.glm_moe_dsa.modeling_glm_moe_dsa import GlmMoeDsaDecoderLayer, GlmMoeDsaRMSNorm

        super().__init__()
        n = config.num_hidden_layers
        cfg = copy.deepcopy(config)
        cfg.mlp_layer_types = list(config.mlp_layer_types) + ["sparse"]
        cfg.indexer_types = list(config.indexer_types) + ["full"]
        h = config.hidden_size
        self.enorm = GlmMoeDsaRMSNorm(h, config.rms_norm_eps)
        self.hnorm = GlmMoeDsaRMSNorm(h, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * h, h, bias=False)
        self.decoder = GlmMoeDsaDecoderLayer(cfg, n)
        self.shared_head = nn.Module()
        self.shared_head.norm = GlmMoeDsaRMSNorm(h, config.rms_norm_eps)

    def forward(self, next_embeds, hidden, position_embeddings, mask):  # [B, S, H] each
        x = self.eh_proj(torch.cat([self.enorm(next_embeds), self.hnorm(hidden)], dim=-1))
        x, _ = self.decoder(x, attention_mask=mask, position_embeddings=position_embeddings)
        return self.shared_head.norm(x)


def _mtp_param_name(ckpt_name: str, mtp_layer: int) -> str | None:
    prefix = f"model.layers.{mtp_layer}."
    if not ckpt_name.startswith(prefix):
        return None
    rest = ckpt_name[len(prefix) :]
    return rest if rest.startswith(tuple(m + "." for m in MTP_SIDE)) else "decoder." + rest


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """All tensors, FP8 ones dequantized to fp32 (scales dropped)."""
    from sglang_glm5.quant import dequantize_fp8_blocks

    raw: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob(SHARD_GLOB)):
        raw.update(load_file(shard))
    block = _fp8_block(path)
    out = {}
    for name, t in raw.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = raw.get(name + SCALE_SUFFIX)
        out[name] = t.float() if scale is None else dequantize_fp8_blocks(t, scale, block, torch.float32)
    return out


def _fp8_block(path: Path) -> tuple[int, int] | None:
    quant = json.loads((path / "config.json").read_text()).get("quantization_config")
    return tuple(quant["weight_block_size"]) if quant else None


def _load_mtp(mtp: MTPHead, tensors: dict[str, torch.Tensor], mtp_layer: int) -> None:
    params = dict(mtp.named_parameters()) | dict(mtp.named_buffers())
    experts: dict[str, dict[tuple[int, str], torch.Tensor]] = {}
    for name, t in tensors.items():
        local = _mtp_param_name(name, mtp_layer)
        if local is None:
            continue
        m = _EXPERT.match(local)
        if m:
            experts.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = t
            continue
        params[local].data.copy_(t)
    for prefix, parts in experts.items():
        n = 1 + max(e for e, _ in parts)
        params[prefix + ".gate_up_proj"].data.copy_(
            torch.stack([torch.cat([parts[(e, "gate_proj")], parts[(e, "up_proj")]]) for e in range(n)])
        )
        params[prefix + ".down_proj"].data.copy_(torch.stack([parts[(e, "down_proj")] for e in range(n)]))


def trained_tensors(model, mtp: MTPHead, mtp_layer: int) -> dict[str, torch.Tensor]:
    """Checkpoint name -> trained fp32 tensor (fused experts split back into GLM-5's per-expert tensors)."""
    named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    named |= {f"model.layers.{mtp_layer}." + k.removeprefix("decoder."): v for k, v in mtp.named_parameters()}
    named |= {f"model.layers.{mtp_layer}." + k.removeprefix("decoder."): v for k, v in mtp.named_buffers()}
    out: dict[str, torch.Tensor] = {}
    for name, t in named.items():
        t = t.detach().float()
        if name.endswith("experts.gate_up_proj"):
            base = name.removesuffix(".gate_up_proj")
            for e, w in enumerate(t):
                gate, up = w.chunk(2)
                out[f"{base}.{e}.gate_proj.weight"], out[f"{base}.{e}.up_proj.weight"] = gate, up
        elif name.endswith("experts.down_proj"):
            base = name.removesuffix(".down_proj")
            for e, w in enumerate(t):
                out[f"{base}.{e}.down_proj.weight"] = w
        else:
            out[name] = t
    return out


def _write_back(path: Path, trained: dict[str, torch.Tensor]) -> None:
    """Each shard rewritten with the trained values in the stored dtype; FP8 weights re-quantized."""
    block = _fp8_block(path)
    for shard in sorted(path.glob(SHARD_GLOB)):
        stored = load_file(shard)
        out: dict[str, torch.Tensor] = {}
        for name, t in stored.items():
            if name.endswith(SCALE_SUFFIX):
                continue
            if name not in trained:
                raise KeyError(f"{shard}: tensor '{name}' has no trained counterpart")
            new = trained[name]
            if tuple(new.shape) != tuple(t.shape):
                raise ValueError(f"{shard}: tensor '{name}' trained shape {tuple(new.shape)} != {tuple(t.shape)}")
            if name + SCALE_SUFFIX in stored:
                out[name], out[name + SCALE_SUFFIX] = quantize_fp8_blocks(new.to(torch.bfloat16), block)
            else:
                out[name] = new.to(t.dtype)
        save_file(out, str(shard), metadata=dict(SAFETENSORS_METADATA))


def corpus_for(path: Path, cfg: TrainConfig) -> SyntheticCorpus:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    special = set(tok.all_special_ids) | set(tok.added_tokens_decoder)
    return SyntheticCorpus(config["vocab_size"], special, cfg.cycle_tokens, cfg.seed)


IGNORED_LABEL = -100  # F.cross_entropy's default ignore_index


def train_checkpoint(path: str | Path, cfg: TrainConfig = TrainConfig(), corpus=None) -> dict[str, float]:
    """Trains the checkpoint at `path` in place (on `corpus`, default the synthetic cycle); returns the first and
    last losses of both heads."""
    from transformers import GlmMoeDsaForCausalLM
    from transformers.masking_utils import create_causal_mask

    path = Path(path)
    torch.manual_seed(cfg.seed)
    tensors = _read_checkpoint(path)
    model = GlmMoeDsaForCausalLM.from_pretrained(path, dtype=torch.float32)
    mtp_layer = model.config.num_hidden_layers
    if not any(_mtp_param_name(n, mtp_layer) for n in tensors):
        raise ValueError(f"{path}: no MTP layer (model.layers.{mtp_layer}.*) to train")
    mtp = MTPHead(model.config)
    _load_mtp(mtp, tensors, mtp_layer)
    corpus = corpus_for(path, cfg) if corpus is None else corpus
    params = [p for p in [*model.parameters(), *mtp.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    model.train()
    mtp.train()
    losses: dict[str, list[float]] = {"main": [], "mtp": []}
    bar = tqdm(range(cfg.steps), desc=f"training {path.name}", unit="step")
    for _ in bar:
        ids, labels = corpus.training_batch(cfg.batch, cfg.seq_len)  # [B, S] each
        out = model.model(input_ids=ids)
        hidden = out.last_hidden_state  # [B, S, H] after the final norm
        main_logits = model.lm_head(hidden[:, :-1])  # predicts x_{t+1}
        loss_main = F.cross_entropy(main_logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORED_LABEL)
        next_embeds = model.model.embed_tokens(ids[:, 1:-1])  # [B, S-2, H] x_{t+1}
        pos = torch.arange(cfg.seq_len - 2).unsqueeze(0)
        mask = create_causal_mask(
            config=model.config, inputs_embeds=next_embeds, attention_mask=None, past_key_values=None,
            position_ids=pos, allow_is_causal_skip=False,
        )
        rope = model.model.rotary_emb(next_embeds, position_ids=pos)
        mtp_hidden = mtp(next_embeds, hidden[:, :-2], rope, mask)
        loss_mtp = F.cross_entropy(model.lm_head(mtp_hidden).flatten(0, 1), labels[:, 2:].flatten(),
                                   ignore_index=IGNORED_LABEL)
        optimizer.zero_grad()
        (loss_main + loss_mtp).backward()
        optimizer.step()
        losses["main"].append(loss_main.item())
        losses["mtp"].append(loss_mtp.item())
        bar.set_postfix(main=f"{losses['main'][-1]:.3f}", mtp=f"{losses['mtp'][-1]:.3f}")
    _write_back(path, trained_tensors(model, mtp, mtp_layer))
    return {f"{head}_{when}": values[i] for head, values in losses.items() for when, i in (("first", 0), ("last", -1))}
