"""Hooks only for `SGLANG_GLM5_MODEL=upstream` (SGLang's own GLM-5 model and DSA backend): the start-up check after
SGLang's own KV-dtype pass (GLM-5's config.json as written plus `--json-model-override-args` through our validation:
missing fields, IndexCache patterns; then our KV-scale policy on the KV dtype SGLang picked: FP8 KV without calibrated
scales warned, or refused with `SGLANG_GLM5_STRICT=1`), and a log line naming SGLang's class."""

import logging

from sglang_glm5.architectures import ARCHITECTURES, is_glm5
from sglang_glm5.attention.kv_policy import check_requested, find_kv_scales, normalize, strict_from_env
from sglang_glm5.hooks.model_choice import MODEL_ENV, UPSTREAM

logger = logging.getLogger(__name__)


def check_config(view) -> None:
    """Glm5ConfigError (naming the file and field) for a config.json + overrides our model would refuse."""
    from sglang_glm5.checkpoint.locate import CheckpointNotCached, checkpoint_dir
    from sglang_glm5.config import Glm5Config, parse_override_args

    try:
        model_dir = checkpoint_dir(
            view.model_path, revision=getattr(view, "revision", None), cache_dir=getattr(view, "download_dir", None)
        )
    except CheckpointNotCached as err:
        logger.warning("GLM-5: config.json not checked: %s", err)
        return
    overrides = getattr(view, "json_model_override_args", None)
    Glm5Config.from_pretrained(model_dir, overrides=parse_override_args(overrides) if overrides else {})


def start_up_check(result, view):
    """AFTER SGLang's `_dsa_kv_cache_dtype_default(view) -> {field: new value}`: config, then the KV dtype it leaves."""
    from sglang.srt.arg_groups.model_override_base import model_config_of

    if not is_glm5(model_config_of(view)):
        return None
    check_config(view)
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
