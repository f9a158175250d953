"""The start-up hooks for GLM-5: SGLang's two DSA server-args passes (`_dsa_kv_cache_dtype_default`,
`_dsa_split_backend_resolution`: SGLang's versions pick its own kernels, FlashMLA / DeepGEMM / fa3, which are not
ours) and its graph resolution step answer from the decision in `serving/startup_check.py`; other models fall
through to SGLang."""

from __future__ import annotations

import logging
from pathlib import Path

from sglang_glm5.architectures import is_glm5
from sglang_glm5.config import parse_override_args
from sglang_glm5.serving.startup_check import decide, graph_changes, request_from_args

logger = logging.getLogger(__name__)


def request_from_view(view):
    from sglang.srt.arg_groups.model_override_base import model_config_of

    hf_config = model_config_of(view).hf_config
    return request_from_args(
        view, hf_config.num_attention_heads, latent_dims=(hf_config.kv_lora_rank, hf_config.qk_rope_head_dim)
    )


def _is_glm5(view) -> bool:
    from sglang.srt.arg_groups.model_override_base import model_config_of

    return is_glm5(model_config_of(view))


def check_speculative_draft(view) -> None:
    """EAGLE / NEXTN draft with the checkpoint's MTP layer: refused when its tensors are missing (HF save_pretrained)."""
    from sglang_glm5.checkpoint.validate import check_mtp_for_speculative
    from sglang_glm5.config import Glm5Config

    algorithm = getattr(view, "speculative_algorithm", None)
    if algorithm is None:
        return
    draft = Path(getattr(view, "speculative_draft_model_path", None) or view.model_path)
    if not (draft / "config.json").is_file():
        return
    overrides = parse_override_args(getattr(view, "json_model_override_args", None) or "{}")
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

