"""EAGLE draft attention hooks: SGLang's `DraftBackendFactory` maps `--attention-backend dsa` to its own DSA backends
(FlashMLA / DeepGEMM, GPU only); for a GLM-5 draft runner it builds ours (attention/draft.py) instead."""

from sglang_glm5.architectures import is_glm5
from sglang_glm5.attention.draft import DSA_STAMP, Glm5DSAMultiStepBackend, check_topk, shared_backend


def _is_glm5_draft(factory) -> bool:
    return is_glm5(factory.draft_model_runner.model_config)


def dsa_decode_backend(original, factory):
    if not _is_glm5_draft(factory):
        return original(factory)
    runner = factory.draft_model_runner
    return DSA_STAMP, Glm5DSAMultiStepBackend(runner, factory.topk, factory.speculative_num_steps)


def dsa_prefill_backend(original, factory):
    if not _is_glm5_draft(factory):
        return original(factory)
    check_topk(factory.topk)
    return DSA_STAMP, shared_backend(factory.draft_model_runner)

