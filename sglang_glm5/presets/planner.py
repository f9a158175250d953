"""Per-GPU memory of a preset from GLM-5's real config: weights by tensor, KV cache per token, what remains."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

from sglang_glm5.attention.index_k_policy import PLATFORM_OF_VENDOR, POOL_FP8, default_store
from sglang_glm5.attention.indexer_workspace import IndexerWorkspace
from sglang_glm5.checkpoint.schema import tensor_specs
from sglang_glm5.config import Glm5Config
from sglang_glm5.indexcache.plan import PLAN_KEYS
from sglang_glm5.presets.catalog import MODEL_CONFIG_FILE, Catalog
from sglang_glm5.presets.compose import DP_ATTENTION, LaunchSpec, Refusal, compose, tp_choices
from sglang_glm5.presets.files import read_json
from sglang_glm5.presets.layout import MemoryLayout, load_layout

MIB = 1 << 20
GIB = 1 << 30
MTP_LABEL = "MTP layer (EAGLE draft)"
SCALES_LABEL = "FP8 block scales"
EAGLE = "eagle"


@dataclass(frozen=True)
class PlanItem:
    label: str
    bytes: float


@dataclass(frozen=True)
class MemoryPlan:
    preset: str
    gpu: str
    tp: int
    nnodes: int
    attention_dp: int
    kv_cache_dtype: str
    gpu_bytes: int
    mem_fraction_static: float
    weights: tuple[PlanItem, ...]  # per GPU
    workspace: tuple[PlanItem, ...]  # per GPU, inside the static fraction besides weights and KV
    kv_per_token: tuple[PlanItem, ...]  # per GPU, all layers
    context: int
    concurrency: int | None
    indexer_logits_budget: int  # bytes: the indexer scores query rows in chunks within it
    prefill_chunk: int  # the largest prefill chunk (rows)

    @property
    def indexer_rows_per_pass(self) -> int:
        return IndexerWorkspace(self.indexer_logits_budget).rows_per_pass(self.context)

    @property
    def indexer_fits(self) -> bool:
        return IndexerWorkspace(self.indexer_logits_budget).fits(self.context)

    @property
    def weight_bytes(self) -> float:
        return sum(item.bytes for item in self.weights)

    @property
    def static_bytes(self) -> float:
        return self.gpu_bytes * self.mem_fraction_static

    @property
    def kv_budget_bytes(self) -> float:
        return self.static_bytes - self.weight_bytes - sum(item.bytes for item in self.workspace)

    @property
    def weights_fit(self) -> bool:
        return self.kv_budget_bytes > 0

    @property
    def kv_bytes_per_token(self) -> int:
        return int(sum(item.bytes for item in self.kv_per_token))

    @property
    def kv_tokens(self) -> int:
        return max(0, math.floor(self.kv_budget_bytes / self.kv_bytes_per_token))

    @property
    def max_concurrency(self) -> int:
        """Requests of `context` tokens the KV caches hold: every attention-DP rank has its own pool."""
        return self.kv_tokens // self.context * self.attention_dp


def weight_items(cfg: Glm5Config, layout: MemoryLayout, dtype: str, tp: int, attention_dp: int, ep: int, mtp: bool) -> tuple[PlanItem, ...]:
    """Bytes per GPU by component, from every tensor of the checkpoint (FP8: weights + fp32 scale per 128x128 block)."""
    quant = cfg.quant if dtype == "fp8" else None
    splits = {"tp": tp, "attention_tp": tp // attention_dp, "moe_tp": tp // ep, "replicated": 1}
    mtp_prefix = f"model.layers.{cfg.mtp_layer_index}."
    totals: dict[str, float] = {}
    for spec in tensor_specs(dataclasses.replace(cfg, quant=quant)):
        if spec.name.startswith(mtp_prefix) and not mtp:
            continue
        rule = layout.rule_for(spec.name)
        label = MTP_LABEL if spec.name.startswith(mtp_prefix) else rule.label
        numel = math.prod(spec.shape)
        fp8 = quant is not None and spec.fp8
        totals[label] = totals.get(label, 0) + numel * layout.weight_bytes["fp8" if fp8 else "bf16"] / splits[rule.split]
        if fp8:
            blocks = math.ceil(spec.shape[0] / quant.block_n) * math.ceil(spec.shape[1] / quant.block_k)
            scale_label = MTP_LABEL if label == MTP_LABEL else SCALES_LABEL
            totals[scale_label] = totals.get(scale_label, 0) + blocks * layout.fp8_block_scale_bytes / splits[rule.split]
    return tuple(PlanItem(label, b) for label, b in totals.items())


def indexer_layers(cfg: Glm5Config, mtp: bool) -> list[int]:
    """The layers that run their own indexer under the IndexCache plan (the EAGLE draft's MTP layer always does)."""
    layers = cfg.num_hidden_layers + (cfg.num_nextn_predict_layers if mtp else 0)
    return [layer for layer in range(layers) if cfg.indexer_plan.runs_indexer(layer)]


def indexer_key_items(cfg: Glm5Config, layout: MemoryLayout, model_dtype: str, mtp: bool, store: str) -> tuple[PlanItem, ...]:
    """The indexer keys per token for the index-K store the backend uses there (attention/index_k_policy.py), each
    buffer once: `pool-fp8` is SGLang's pool index-K (index_head_dim FP8 + one fp32 scale per 128: 132 B for GLM-5);
    `model` is our model-dtype store beside it, and SGLang's pool still allocates its (unread) FP8 buffer. SGLang's
    pool has pages only for the layers that run an indexer (IndexCache F layers; the draft pool's MTP layer)."""
    n = len(indexer_layers(cfg, mtp))
    pool = PlanItem(f"indexer keys FP8 in pool x {n} layers", n * layout.sglang_index_k_bytes_per_token_layer(cfg))
    if store == POOL_FP8:
        return (pool,)
    own = PlanItem(f"indexer keys {model_dtype} x {n} layers", n * layout.indexer_key_bytes_per_token_layer(cfg, model_dtype))
    return own, dataclasses.replace(pool, label=f"SGLang FP8 index-K, unread x {n} layers")


def kv_items(cfg: Glm5Config, layout: MemoryLayout, kv_cache_dtype: str, mtp: bool, model_dtype: str, store: str) -> tuple[PlanItem, ...]:
    """KV bytes per token per GPU: MLA latent for every layer (the EAGLE draft's pool adds the MTP layer) and the
    indexer keys of the store in use."""
    layers = cfg.num_hidden_layers + (cfg.num_nextn_predict_layers if mtp else 0)
    return (
        PlanItem(f"MLA KV {kv_cache_dtype} x {layers} layers", layers * layout.kv_bytes_per_token_layer(cfg, kv_cache_dtype)),
        *indexer_key_items(cfg, layout, model_dtype, mtp, store),
    )


def planned_model(catalog: Catalog, spec: LaunchSpec) -> tuple[Glm5Config, str]:
    """GLM-5's config with the preset's IndexCache override (if any) applied, and its model dtype (torch_dtype)."""
    path = catalog.root / MODEL_CONFIG_FILE
    raw = read_json(path)
    overrides = {k: v for k, v in spec.options.get("model_override_args", {}).items() if k in PLAN_KEYS}
    cfg = Glm5Config.from_dict(raw, source=str(path), overrides=overrides) if overrides else catalog.model
    return cfg, raw["torch_dtype"]


def indexer_workspace_items(cfg: Glm5Config, layout: MemoryLayout, context: int, prefill_chunk: int) -> tuple[PlanItem, ...]:
    """The indexer's transient buffers at the largest prefill chunk and the longest context (attention/indexer_workspace.py)."""
    ws = IndexerWorkspace(int(layout.indexer_logits_budget_mib * MIB))
    rows = min(prefill_chunk, ws.rows_per_pass(context))  # query rows per pass
    return (
        PlanItem(f"indexer logits {rows}x{context} fp32", ws.logits_bytes(prefill_chunk, context)),
        PlanItem(f"indexer top-k {prefill_chunk}x{cfg.index_topk} int32", ws.topk_bytes(prefill_chunk, cfg.index_topk)),
    )


def plan(
    catalog: Catalog,
    preset_name: str,
    features: Iterable[str] = (),
    tp: int | None = None,
    context: int | None = None,
    concurrency: int | None = None,
    mem_fraction_static: float | None = None,
    kv_cache_dtype: str | None = None,
    index_k_store: str | None = None,  # None: the store the backend picks on the preset's GPU
) -> MemoryPlan:
    preset = catalog.preset(preset_name)
    cfg = catalog.model
    if preset.hardware.memory_mib is None:
        gpu_presets = [n for n, p in catalog.presets.items() if p.hardware.memory_mib is not None]
        raise Refusal(f"preset {preset.name} has no GPU memory to plan: use {' / '.join(gpu_presets)} instead")
    spec = compose(catalog, preset.name, features, tp)
    context = cfg.max_position_embeddings if context is None else context
    if not 0 < context <= cfg.max_position_embeddings:
        raise Refusal(f"context {context} is outside GLM-5's 1..{cfg.max_position_embeddings} tokens")
    mem_fraction_static = spec.options.get("mem_fraction_static") if mem_fraction_static is None else mem_fraction_static
    kv_cache_dtype = kv_cache_dtype or spec.options.get("kv_cache_dtype")
    for name, value in (("mem_fraction_static", mem_fraction_static), ("kv_cache_dtype", kv_cache_dtype)):
        if value is None:
            raise Refusal(f"preset {preset.name} sets no {name}: pass --{name.replace('_', '-')}")
    if not 0 < mem_fraction_static < 1:
        raise Refusal(f"mem_fraction_static {mem_fraction_static} must be between 0 and 1")
    layout = load_layout(catalog.root)
    prefill_chunk = spec.options.get("chunked_prefill_size") or layout.default_chunked_prefill_size
    mtp = EAGLE in spec.features
    planned_cfg, model_dtype = planned_model(catalog, spec)
    attention_dp = spec.tp if DP_ATTENTION in spec.features else 1
    ep = spec.options.get("ep", 1)
    return MemoryPlan(
        preset=preset.name,
        gpu=preset.hardware.title,
        tp=spec.tp,
        nnodes=spec.nnodes,
        attention_dp=attention_dp,
        kv_cache_dtype=kv_cache_dtype,
        gpu_bytes=preset.hardware.memory_mib * MIB,
        mem_fraction_static=mem_fraction_static,
        weights=weight_items(cfg, layout, preset.dtype, spec.tp, attention_dp, ep, mtp),
        workspace=indexer_workspace_items(cfg, layout, context, prefill_chunk),
        indexer_logits_budget=int(layout.indexer_logits_budget_mib * MIB),
        prefill_chunk=prefill_chunk,
        kv_per_token=kv_items(planned_cfg, layout, kv_cache_dtype, mtp, model_dtype, index_k_store or default_index_k_store(preset)),
        context=context,
        concurrency=concurrency,
    )


def default_index_k_store(preset) -> str:
    """The store the backend picks on the preset's GPU (every DSA implementation has an FP8 indexer)."""
    return default_store(PLATFORM_OF_VENDOR[preset.hardware.vendor]).store


def largest_context(catalog: Catalog, memory_plan: MemoryPlan) -> int:
    """The longest request (tokens) that fits beside the weights: its KV on one rank's pool, its indexer logits row
    within the budget, with the workspace sized for that context; 0 if none does. Bisection: each condition only
    gets harder as the context grows."""
    layout = load_layout(catalog.root)

    def fits(context: int) -> bool:
        workspace = indexer_workspace_items(catalog.model, layout, context, memory_plan.prefill_chunk)
        p = dataclasses.replace(memory_plan, context=context, workspace=workspace)
        return p.weights_fit and p.indexer_fits and p.kv_tokens >= context

    lo, hi = 0, catalog.model.max_position_embeddings  # fits(lo) by convention; find the largest c <= hi with fits(c)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def smallest_fitting_tp(catalog: Catalog, memory_plan: MemoryPlan, **kwargs) -> int | None:
    """The smallest larger tp (a divisor of the heads) at which the weights fit, or None."""
    for tp in tp_choices(catalog):
        if tp > memory_plan.tp and plan(catalog, memory_plan.preset, tp=tp, **kwargs).weights_fit:
            return tp
    return None


def check_weights_fit(catalog: Catalog, spec: LaunchSpec, mem_fraction_static: float | None = None) -> None:
    """Refuse a GPU launch whose weights cannot fit the static memory fraction, naming the tp that would."""
    if spec.preset.hardware.memory_mib is None:
        return
    p = plan(catalog, spec.preset.name, spec.features, tp=spec.tp, mem_fraction_static=mem_fraction_static)
    if p.weights_fit:
        return
    fitting_tp = smallest_fitting_tp(catalog, p, features=spec.features, mem_fraction_static=mem_fraction_static)
    instead = f": use --tp {fitting_tp} instead" if fitting_tp else ""
    raise Refusal(
        f"preset {p.preset} at tp {p.tp} does not fit: the weights need {p.weight_bytes / GIB:.2f} GiB per GPU,"
        f" mem-fraction-static {p.mem_fraction_static} of {p.gpu} holds {p.static_bytes / GIB:.2f} GiB{instead}"
        " (details: sglang-glm5 plan)"
    )
