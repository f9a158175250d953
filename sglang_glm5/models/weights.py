"""Table-driven checkpoint -> parameter mapping for GLM-5 (GLM-5's tensor names, SGLang's fused params)."""

import re
from dataclasses import dataclass
from typing import Iterable

import torch
from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
from sglang.srt.model_loader.weight_utils import default_weight_loader

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"experts\.\d+\.[a-z]+_proj\.")
_INDEXER = ".self_attn.indexer."


@dataclass(frozen=True)
class StackedRule:
    param: str  # fragment of the fused parameter name
    ckpt: str  # fragment of the checkpoint tensor name
    shard: int | str


# MTP-layer tensors that sit beside its decoder block in the draft model (everything else goes under `decoder`).
MTP_SIDE_MODULES = ("enorm", "hnorm", "eh_proj", "shared_head.norm")

# gate/up projections are fused into one gate_up_proj (dense MLP and shared experts).
STACKED_RULES = (
    StackedRule("gate_up_proj", "gate_proj", 0),
    StackedRule("gate_up_proj", "up_proj", 1),
)


class CheckpointTensorError(ValueError):
    pass


def layer_of(name: str) -> int | None:
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def expert_rules(num_experts: int) -> dict[str, tuple[str, int, str]]:
    """`experts.{e}.{proj}.` -> (fused param fragment, expert id, shard id), from SGLang's own FusedMoE table."""
    mapping = FusedMoE.make_expert_params_mapping(
        ckpt_gate_proj_name="gate_proj", ckpt_down_proj_name="down_proj", ckpt_up_proj_name="up_proj",
        num_experts=num_experts,
    )
    return {ckpt: (param, expert, shard) for param, ckpt, expert, shard in mapping}


def mtp_weights(
    weights: Iterable[tuple[str, torch.Tensor]], mtp_layer: int
) -> Iterable[tuple[str, torch.Tensor]]:
    """The MTP layer's tensors under the draft model's names; the target's tensors are dropped.

    `model.layers.{mtp_layer}.enorm.weight` -> `model.enorm.weight`,
    `model.layers.{mtp_layer}.self_attn.q_a_proj.weight` -> `model.decoder.self_attn.q_a_proj.weight`.
    The draft's embedding and LM head are the target's (shared by SGLang's EAGLE worker), so not loaded here.
    """
    prefix = f"model.layers.{mtp_layer}."
    for name, tensor in weights:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        side = any(rest.startswith(module + ".") for module in MTP_SIDE_MODULES)
        yield ("model." if side else "model.decoder.") + rest, tensor


def load_weights(
    model,
    weights: Iterable[tuple[str, torch.Tensor]],
    num_experts: int,
    num_layers: int | None,
    locate=lambda name: "checkpoint",
) -> set[str]:
    """Feed checkpoint tensors to the parameters' own SGLang weight loaders; returns the loaded parameter names.

    Layers >= num_layers (the MTP layer) belong to the draft model and are skipped here (`None`: skip nothing,
    for the draft's renamed tensors). `locate(name)` names the file holding a tensor, for error messages.
    """
    params = dict(model.named_parameters())
    experts = expert_rules(num_experts)
    indexer_layers = {layer_of(p) for p in params if _INDEXER in p}
    loaded: set[str] = set()
    for name, tensor in weights:
        layer = layer_of(name)
        if _INDEXER in name and layer not in indexer_layers:
            continue  # an IndexCache "S" layer builds no indexer: its checkpoint indexer weights are never read
        if layer is not None and num_layers is not None and layer >= num_layers:
            continue
        if "rotary_emb.inv_freq" in name:
            continue
        try:
            target = _route(name, tensor, params, experts)
        except (AssertionError, RuntimeError, ValueError) as err:
            raise CheckpointTensorError(
                f"{locate(name)}: tensor '{name}' {tuple(tensor.shape)} {tensor.dtype} does not load: {err}"
            ) from err
        if target is None:
            raise CheckpointTensorError(f"{locate(name)}: tensor '{name}' matches no GLM-5 parameter")
        loaded.add(target)
    return loaded


def _route(name, tensor, params, experts) -> str | None:
    match = _EXPERT.search(name)
    if match:
        if match.group(0) not in experts:
            return None
        param_frag, expert_id, shard = experts[match.group(0)]
        target = name.replace(match.group(0), param_frag)
        if target not in params:
            return None
        param = params[target]
        param.weight_loader(param, tensor, target, shard_id=shard, expert_id=expert_id)
        return target
    for rule in STACKED_RULES:
        if rule.ckpt in name:
            target = name.replace(rule.ckpt, rule.param)
            if target not in params:
                return None
            param = params[target]
            param.weight_loader(param, tensor, rule.shard)
            return target
    if name not in params:
        return None
    param = params[name]
    getattr(param, "weight_loader", default_weight_loader)(param, tensor)
    return name
