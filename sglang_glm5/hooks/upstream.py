"""Hooks only for `SGLANG_GLM5_MODEL=upstream` (SGLang's own GLM-5 model and DSA backend): the start-up KV-scale check
(SGLang's own DSA passes pick the KV dtype and its kernels, then our policy runs on what they picked: FP8 KV without
calibrated scales warned, or refused with `--strict` / SGLANG_GLM5_STRICT=1), and a log line naming SGLang's class."""

import logging

from sglang_glm5.architectures import ARCHITECTURES, is_glm5
from sglang_glm5.attention.kv_policy import check_requested, find_kv_scales, normalize, strict_from_env
from sglang_glm5.hooks.model_choice import MODEL_ENV, UPSTREAM

logger = logging.getLogger(__name__)


def kv_scale_check(result, view):
    """AFTER SGLang's `_dsa_kv_cache_dtype_default(view) -> {field: new value}`: checks the KV dtype it leaves."""
    from sglang.srt.arg_groups.model_override_base import model_config_of

    if not is_glm5(model_config_of(view)):
        return None
    kv = normalize((result or {}).get("kv_cache_dtype", view.kv_cache_dtype))
    warning = check_requested(kv, find_kv_scales(view.model_path), strict_from_env())
    if warning:
        logger.warning("GLM-5: %s", warning)
    return None


def log_model_class(result, registry, architectures):
    """AFTER SGLang's `resolve_model_cls -> (class, architecture)`: names SGLang's own GLM-5 class in the log."""
    cls, arch = result
    if arch in ARCHITECTURES:
        logger.info("GLM-5 model: %s.%s (SGLang's own: %s=%s)", cls.__module__, cls.__qualname__, MODEL_ENV, UPSTREAM)
    return None
