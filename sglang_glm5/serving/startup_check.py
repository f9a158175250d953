"""The start-up decision for GLM-5, before any weight loads: PD disaggregation / HiCache (refused until verified:
attention/index_k_policy.py), the MTP layer when EAGLE drafts with it, KV-cache dtype policy, then DSA backends x
device.

A plain module (no SGLang import): every start-up path calls `decide` on a `request_from_args`: `launch_server` (and
so `sglang-glm5 serve`) through the hooks on the two SGLang server-args passes it takes over for GLM-5
(hooks/startup.py), and `sglang-glm5 launch` before it runs anything.
"""

from __future__ import annotations

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
from sglang_glm5.dsa.impls import DSA_IMPLS, PHASES, unavailable_impls
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


def request_from_args(
    args, num_attention_heads: int, env: Mapping[str, str] = os.environ, latent_dims: tuple[int, int] | None = None
) -> StartupRequest:
    """The request from anything carrying SGLang's server-args names: the server's resolving view (the start-up
    hooks) or launch_server's parsed flags (`sglang-glm5 launch`), so both check the same thing."""
    dp = getattr(args, "attn_dp_size", 1) or 1
    return StartupRequest(
        model_path=args.model_path,
        device_type=getattr(args, "device", None),
        kv_cache_dtype=getattr(args, "kv_cache_dtype", None),
        flags={phase: getattr(args, f"dsa_{phase}_backend", None) for phase in PHASES},
        heads_per_gpu=heads_per_gpu(num_attention_heads, args.tp_size, dp, getattr(args, "attn_cp_size", 1) or 1),
        strict=strict_from_env(env),
        disaggregation_mode=getattr(args, "disaggregation_mode", None),
        hierarchical_cache=bool(getattr(args, "enable_hierarchical_cache", False)),
        speculative_algorithm=getattr(args, "speculative_algorithm", None),
        attn_dp_size=dp,
        latent_dims=latent_dims,
    )


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
