"""The start-up check for GLM-5, before any weight loads: PD disaggregation / HiCache (refused until verified:
attention/index_k_policy.py), the MTP layer when EAGLE drafts with it, KV-cache dtype policy, then DSA backends x
device.

Every start-up path runs it: `launch_server` (and so `sglang-glm5 serve`) through the two SGLang server-args passes
it takes over for GLM-5 (`_dsa_kv_cache_dtype_default`, `_dsa_split_backend_resolution`: SGLang's versions pick
its own kernels, FlashMLA / DeepGEMM / fa3, which are not ours), and `sglang-glm5 launch` before it runs anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from sglang_glm5.attention.capabilities import (
    CPU,
    CapabilityTable,
    DSACapabilityError,
    DSAChoice,
    Target,
    detect_device,
    load_capabilities,
)
from sglang_glm5.attention.impls import DSA_IMPLS, PHASES, unavailable_impls
from sglang_glm5.attention.index_k_policy import refuse_unverified_pool_features
from sglang_glm5.attention.kv_policy import (
    AUTO,
    FP8_KV_DTYPES,
    RAW,
    SCALED,
    fp8_layout,
    check_fp8_latent_dims,
    check_requested,
    default_kv_cache_dtype,
    find_kv_scales,
    normalize,
    strict_from_env,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartupRequest:
    model_path: str
    device_type: str | None  # --device
    kv_cache_dtype: str | None  # --kv-cache-dtype
    flags: Mapping[str, str | None]  # phase -> --dsa-<phase>-backend
    heads_per_gpu: int
    strict: bool
    disaggregation_mode: str | None = None  # --disaggregation-mode
    hierarchical_cache: bool = False  # --enable-hierarchical-cache
    speculative_algorithm: str | None = None  # --speculative-algorithm
    attn_dp_size: int = 1  # --attn-dp-size (attention DP groups)
    latent_dims: tuple[int, int] | None = None  # (kv_lora_rank, qk_rope_head_dim); None: not checked


@dataclass(frozen=True)
class StartupDecision:
    target: Target
    choice: DSAChoice
    warnings: tuple[str, ...]
    graphs_off: tuple[str, ...] = ()  # why CUDA graphs cannot capture these picks (capabilities.why_not_graph)

    @property
    def kv_cache_dtype(self) -> str:
        return self.target.kv_cache_dtype


def decide(
    request: StartupRequest,
    table: CapabilityTable | None = None,
    available: Collection[str] | None = None,  # None: ours, less those whose vendor packages do not import here
    env: Mapping[str, str] = os.environ,
    warn: Callable[[str], None] = lambda message: None,  # called before any refusal, so a refused start shows it
) -> StartupDecision:
    """The KV dtype and both DSA implementations, or DSACapabilityError (KVDtypeError, IndexKPolicyError) naming what
    does not work."""
    refuse_unverified_pool_features(request.disaggregation_mode, request.hierarchical_cache)
    refuse_speculation_with_attention_dp(request.speculative_algorithm, request.attn_dp_size)
    table = table or load_capabilities()
    device = detect_device(request.device_type, env)
    unavailable = {}
    if available is None:
        # vendor imports are probed only for implementations the table lists on this device (none on CPU)
        unavailable = unavailable_impls([n for n in DSA_IMPLS if table.runs_on(n, device.arch)])
        available = tuple(n for n in DSA_IMPLS if n not in unavailable)
    scales = find_kv_scales(request.model_path)
    kv = normalize(request.kv_cache_dtype)
    hip = device.arch.startswith("gfx")
    if kv == AUTO:
        candidates = table.kv_cache_dtype_candidates(device, scales.calibrated is True)
        kv = default_kv_cache_dtype(
            candidates, lambda d: _default_fits(table, request, Target(device, d, request.heads_per_gpu), available, env, scales, hip)
        )  # fmt: skip
    target = Target(device, kv, request.heads_per_gpu)
    choice = _choice_or_none(table, request, target, available, env)
    warning = check_requested(kv, scales, request.strict, fp8_layout(choice.backends, hip) if choice else RAW)
    if warning:
        warn(warning)
    choice = choice or table.choose(request.flags, target, available, env, unavailable)  # raises, naming what fails
    if kv in FP8_KV_DTYPES and fp8_layout(choice.backends, hip) == SCALED and request.latent_dims:
        check_fp8_latent_dims(kv, *request.latent_dims)
    return StartupDecision(target, choice, (warning,) if warning else (), table.why_not_graph(choice.backends))


class ParallelChoiceError(DSACapabilityError):
    pass


def refuse_speculation_with_attention_dp(speculative_algorithm: str | None, attn_dp_size: int) -> None:
    """EAGLE's MTP draft on an idle attention-DP rank returns before the MoE and would leave the other ranks'
    collectives waiting (models/mtp.py refuses it too, at model construction): refused before anything loads."""
    if speculative_algorithm not in (None, "NONE") and attn_dp_size > 1:
        raise ParallelChoiceError(
            f"--speculative-algorithm {speculative_algorithm} with --attn-dp-size {attn_dp_size}: EAGLE with attention "
            "DP is not supported for GLM-5 yet; drop --attn-dp-size (tensor-parallel EAGLE works) or drop the "
            "speculative flags (launch: --with eagle or --with dp-attention, not both)"
        )


def _choice_or_none(table, request, target, available, env) -> DSAChoice | None:
    try:
        return table.choose(request.flags, target, available, env)
    except DSACapabilityError:
        return None


def _default_fits(table, request, target, available, env, scales, hip) -> bool:
    """Whether `--kv-cache-dtype auto` may become target.kv_cache_dtype: the picks run it, and an FP8 default needs
    scales that hold (the scaled layout, or calibrated k/v scales for the raw one) and a kernel to read it (the torch
    reference is a correctness fallback on a GPU, never a reason to pick a KV dtype)."""
    choice = _choice_or_none(table, request, target, available, env)
    if choice is None or target.kv_cache_dtype not in FP8_KV_DTYPES:
        return choice is not None
    if target.device.arch != CPU and "reference" in choice.backends.values():
        return False
    return scales.calibrated is True or fp8_layout(choice.backends, hip) == SCALED


def heads_per_gpu(num_attention_heads: int, tp_size: int, attn_dp_size: int = 1, attn_cp_size: int = 1) -> int:
    """Attention heads on one GPU: heads split over the attention-TP width (SGLang's derive_attn_tp_size)."""
    return num_attention_heads // max(1, tp_size // max(1, attn_dp_size) // max(1, attn_cp_size))


def request_from_view(view) -> StartupRequest:
    from sglang.srt.arg_groups.model_override_base import model_config_of

    hf_config = model_config_of(view).hf_config
    return StartupRequest(
        model_path=view.model_path,
        device_type=view.device,
        kv_cache_dtype=view.kv_cache_dtype,
        flags={phase: getattr(view, f"dsa_{phase}_backend") for phase in PHASES},
        heads_per_gpu=heads_per_gpu(
            hf_config.num_attention_heads, view.tp_size, getattr(view, "attn_dp_size", 1) or 1,
            getattr(view, "attn_cp_size", 1) or 1,
        ),
        strict=strict_from_env(),
        disaggregation_mode=getattr(view, "disaggregation_mode", None),
        hierarchical_cache=bool(getattr(view, "enable_hierarchical_cache", False)),
        speculative_algorithm=getattr(view, "speculative_algorithm", None),
        attn_dp_size=getattr(view, "attn_dp_size", 1) or 1,
        latent_dims=(hf_config.kv_lora_rank, hf_config.qk_rope_head_dim),
    )  # fmt: skip


def _is_glm5(view) -> bool:
    from sglang.srt.arg_groups.model_override_base import model_config_of

    from sglang_glm5.architectures import is_glm5

    return is_glm5(model_config_of(view))


def check_speculative_draft(view) -> None:
    """EAGLE / NEXTN draft with the checkpoint's MTP layer: refused when its tensors are missing (HF save_pretrained)."""
    import json
    from pathlib import Path

    from sglang_glm5.checkpoint.validate import check_mtp_for_speculative
    from sglang_glm5.config import Glm5Config

    algorithm = getattr(view, "speculative_algorithm", None)
    if algorithm is None:
        return
    draft = Path(getattr(view, "speculative_draft_model_path", None) or view.model_path)
    if not (draft / "config.json").is_file():
        return
    overrides = json.loads(getattr(view, "json_model_override_args", None) or "{}")
    check_mtp_for_speculative(algorithm, draft, Glm5Config.from_pretrained(draft, overrides=overrides))


def kv_cache_dtype_pass(original, view) -> dict:
    if not _is_glm5(view):
        return original(view)
    check_speculative_draft(view)
    decision = decide(request_from_view(view), warn=lambda message: logger.warning("GLM-5: %s", message))
    if decision.kv_cache_dtype != view.kv_cache_dtype:
        logger.info("GLM-5: KV cache dtype %s on %s", decision.kv_cache_dtype, decision.target.device)
        return {"kv_cache_dtype": decision.kv_cache_dtype}
    return {}


def backend_pass(original, view) -> dict:
    if not _is_glm5(view):
        return original(view)
    decision = decide(request_from_view(view))
    logger.info(decision.choice.describe(decision.target))
    return {f"dsa_{phase}_backend": decision.choice.backends[phase] for phase in decision.choice.picked}


PREFILL_GRAPHS_OFF = (
    "the GLM-5 DSA backend captures decode, EAGLE target-verify and draft-decode graphs; prefill (extend) batches "
    "run eagerly"
)


def graph_changes(decision: StartupDecision, decode_graphs: bool, prefill_graphs: bool) -> dict[str, str]:
    """Graph phases to turn off ("decode" / "prefill" -> why) for this decision and SGLang's resolved graph config."""
    off = {}
    if decode_graphs and decision.graphs_off:
        off["decode"] = "; ".join(decision.graphs_off)
    if prefill_graphs:
        off["prefill"] = PREFILL_GRAPHS_OFF
    return off


def graph_safety_step(server_args, previous) -> None:
    """SGLang resolution step `handle_model_capability_adjustments` (after the DSA picks and the graph config):
    CUDA graphs off where the picks cannot be captured, each with its reason logged (as --disable-cuda-graph /
    --cuda-graph-backend-prefill disabled would)."""
    previous(server_args)
    from sglang.srt.arg_groups.model_override_base import resolving_view
    from sglang.srt.arg_groups.overrides import declare_resolution
    from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, with_phase

    view = resolving_view(server_args)
    if not _is_glm5(view):
        return
    config = view.cuda_graph_config
    off = graph_changes(
        decide(request_from_view(view)),
        decode_graphs=config.decode.backend != Backend.DISABLED,
        prefill_graphs=config.prefill.backend != Backend.DISABLED,
    )
    for phase, why in off.items():
        flag = "--disable-cuda-graph" if phase == "decode" else "--cuda-graph-backend-prefill disabled"
        logger.warning("GLM-5: CUDA graphs off for %s (as %s): %s", phase, flag, why)
        config = with_phase(config, Phase.DECODE if phase == "decode" else Phase.PREFILL, backend=Backend.DISABLED)
    if off:
        declare_resolution(server_args, "glm5_graph_safety", cuda_graph_config=config)

