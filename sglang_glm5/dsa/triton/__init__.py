"""Triton DSA kernels, each with the signature of its reference op in sglang_glm5.dsa.reference."""

from sglang_glm5.dsa.triton.indexer import indexer_logits, indexer_logits_fp8
from sglang_glm5.dsa.triton.mla_decode import sparse_mla_decode
from sglang_glm5.dsa.triton.mla_prefill import sparse_mla_prefill
from sglang_glm5.dsa.triton.topk import topk_positions

__all__ = ["indexer_logits", "indexer_logits_fp8", "sparse_mla_decode", "sparse_mla_prefill", "topk_positions"]
