"""TileLang DSA kernels (CUDA sm_90a, ROCm gfx942 / gfx950), each with the signature of its reference op in
sglang_glm5.dsa.reference. Compiled for every target in CI; not yet run on a GPU. Importing them warns when the
installed TileLang is not the tested one (`version.py`)."""

from sglang_glm5.dsa.tilelang.indexer import indexer_logits, indexer_logits_fp8
from sglang_glm5.dsa.tilelang.mla_decode import sparse_mla_decode
from sglang_glm5.dsa.tilelang.mla_prefill import sparse_mla_prefill
from sglang_glm5.dsa.tilelang.topk import topk_positions
from sglang_glm5.dsa.tilelang.version import warn_if_untested

warn_if_untested()

__all__ = [
    "indexer_logits",
    "indexer_logits_fp8",
    "sparse_mla_decode",
    "sparse_mla_prefill",
    "topk_positions",
]
