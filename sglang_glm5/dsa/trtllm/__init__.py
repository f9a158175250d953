"""The `trtllm` DSA implementation: FlashInfer's TRT-LLM-gen sparse MLA (SM100/SM103) for prefill and decode.

The indexer and top-k are the Triton kernels (FlashInfer's TRT-LLM path has no GLM-5 indexer of ours to call);
sparse MLA converts our top-k positions and KV pool to the kernel's form (layout.py) and calls FlashInfer (mla.py).
"""

from sglang_glm5.dsa.trtllm.mla import sparse_mla_decode, sparse_mla_prefill
from sglang_glm5.dsa.triton import indexer_logits, indexer_logits_fp8, topk_positions

__all__ = [
    "indexer_logits",
    "indexer_logits_fp8",
    "sparse_mla_decode",
    "sparse_mla_prefill",
    "topk_positions",
]
