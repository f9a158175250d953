"""The start-up check kept with `SGLANG_GLM5_MODEL=upstream`: SGLang's own DSA passes pick the KV dtype and its
kernels, then our KV-scale policy runs on what they picked (FP8 KV without calibrated scales warned, or refused
with `--strict`), for GLM-5 only."""

import logging

from sglang_glm5.architectures import is_glm5
from sglang_glm5.attention.kv_policy import check_requested, find_kv_scales, normalize, strict_from_env

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
