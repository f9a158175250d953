"""Which index-K store (attention/index_k_store.py) the GLM-5 DSA backend uses; the planner asks the same question.

- NVIDIA GPUs (`cuda`): SGLang's pool in FP8 (`pool-fp8`), so SGLang's radix cache, retraction, PD transfer and
  HiCache carry the keys and no second copy is allocated; both phase implementations must have an FP8 indexer.
- AMD GPUs (`hip`): the model-dtype store. SGLang 0.5.23's HIP DSA pool keeps index keys in 1-slot pages (or
  aiter's preshuffled 64-slot tiles), which the FP8 store does not read; SGLang's own buffer stays allocated, unread.
- CPU: the model-dtype store (`model`), so the indexer equals HF transformers' unquantized one (parity tests).
- `SGLANG_GLM5_INDEX_K_STORE=pool-fp8|model` chooses explicitly (CPU tests of the pool path; `model` on a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sglang_glm5.attention.capabilities import DSACapabilityError

STORE_ENV = "SGLANG_GLM5_INDEX_K_STORE"
POOL_FP8 = "pool-fp8"
MODEL = "model"
STORES = (POOL_FP8, MODEL)
PLATFORMS = ("cpu", "cuda", "hip")
PLATFORM_OF_VENDOR = {"nvidia": "cuda", "amd": "hip", "cpu": "cpu"}  # configs/gpus.json vendors


class IndexKPolicyError(DSACapabilityError):
    pass


@dataclass(frozen=True)
class IndexKChoice:
    store: str
    why: str


def default_store(platform: str, fp8_indexer_missing: str = "") -> IndexKChoice:
    """fp8_indexer_missing: the implementations without an FP8 indexer ("" when all have one)."""
    if platform not in PLATFORMS:
        raise IndexKPolicyError(f"platform {platform!r}: one of {', '.join(PLATFORMS)}")
    if platform == "cpu":
        return IndexKChoice(MODEL, "CPU default: model-dtype keys, HF transformers' unquantized indexer")
    if platform == "hip":
        return IndexKChoice(MODEL, "AMD: SGLang's HIP DSA pool pages are not the 64-slot FP8 layout this store reads")
    if fp8_indexer_missing:
        return IndexKChoice(MODEL, f"{fp8_indexer_missing} has no FP8 indexer")
    return IndexKChoice(POOL_FP8, "GPU default: FP8 keys in SGLang's DSA pool")


def choose_index_k_store(platform: str, impls, env: Mapping[str, str] = os.environ) -> IndexKChoice:
    """platform: cpu / cuda / hip; impls: the phase implementations (DSAPhaseImpl) the backend runs."""
    without_fp8 = sorted({impl.name for impl in impls if impl.indexer_logits_fp8 is None and not impl.index_k_pages})
    asked = env.get(STORE_ENV, "")
    if asked:
        if asked not in STORES:
            raise IndexKPolicyError(f"{STORE_ENV}={asked}: choose one of {', '.join(STORES)}")
        if asked == POOL_FP8 and without_fp8:
            raise IndexKPolicyError(
                f"{STORE_ENV}={POOL_FP8}: DSA implementation {', '.join(without_fp8)} has no FP8 indexer; "
                f"use {STORE_ENV}={MODEL} or an implementation with one (reference, triton, tilelang)"
            )
        return IndexKChoice(asked, f"{STORE_ENV}={asked}")
    return default_store(platform, ", ".join(without_fp8))


def refuse_unverified_pool_features(disaggregation_mode: str | None, hierarchical_cache: bool) -> None:
    """PD disaggregation and HiCache move or back up SGLang's pool buffers. With the model-dtype store the indexer
    keys are not among them (a transferred or reloaded request would run on stale keys); with `pool-fp8` they are,
    but no run has shown a transferred request giving the tokens of a local one (SGLang's `fake` transfer backend
    moves nothing, the real ones need GPUs/RDMA). Until then both are refused, naming the flag."""
    why = (
        "not verified with GLM-5's DSA backend: the indexer keys are carried only where they live in SGLang's pool "
        f"({POOL_FP8} store, NVIDIA), and no run has yet shown a {{what}} request giving the tokens of one that was not"
    )
    if disaggregation_mode not in (None, "null"):
        raise IndexKPolicyError(
            f"--disaggregation-mode {disaggregation_mode}: {why.format(what='transferred')}; serve GLM-5 without PD "
            f"disaggregation (one server runs prefill and decode)"
        )
    if hierarchical_cache:
        raise IndexKPolicyError(
            f"--enable-hierarchical-cache: {why.format(what='reloaded (host-offloaded)')}; serve GLM-5 without "
            f"HiCache (the device radix cache still reuses prefixes)"
        )
