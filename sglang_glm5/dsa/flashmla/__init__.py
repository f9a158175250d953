"""The `flashmla` DSA implementation (Hopper): DeepGEMM's FP8 indexer, our top-k, FlashMLA's sparse MLA.

The indexer reads SGLang's paged FP8 index-K pool, sparse MLA the latent pool (FP8 656 B rows or bf16); every
conversion between our metadata and the libraries' arguments is plain torch in layout.py, tested on CPU against
torch references of the libraries' documented semantics. The kernels need an SM90 GPU with sgl-flash-mla and
sgl-deep-gemm importable (`pip install sglang` installs both).
"""

from sglang_glm5.dsa.flashmla.indexer import indexer_logits_decode, indexer_logits_prefill
from sglang_glm5.dsa.flashmla.mla import sparse_mla_decode, sparse_mla_prefill
from sglang_glm5.dsa.triton import topk_positions

REQUIRED_MODULES = ("flash_mla", "deep_gemm")  # the start-up check offers flashmla only where both import

__all__ = [
    "REQUIRED_MODULES",
    "indexer_logits_decode",
    "indexer_logits_prefill",
    "sparse_mla_decode",
    "sparse_mla_prefill",
    "topk_positions",
]
