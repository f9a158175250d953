"""DeepSeek Sparse Attention ops, every implementation side by side with the reference it is tested against.

- `reference.py`: the DSA spec in plain torch (indexer logits, top-k positions, sparse MLA prefill/decode); every
  implementation below has these signatures. `static.py`: the same ops with static shapes (the graph-safe reference).
- `triton/`, `tilelang/`: our kernels; `trtllm/`, `flashmla/`: wrappers of vendor kernels (FlashInfer's TRT-LLM-gen,
  FlashMLA + DeepGEMM) converting to and from the reference's arguments.
- `impls.py`: the implementation table (name -> ops); `graph_plan.py`: ops planned once per shape under CUDA graphs;
  `checks.py`: the argument checks the kernel wrappers share; `fp8_latent.py`: SGLang's FP8 656 B latent layout.
Which implementation runs where is decided in `attention/capabilities.py` from `configs/dsa-capabilities.json`.
"""

from .reference import (
    causal_positions,
    dense_mla,
    gather_kv,
    indexer_logits,
    sparse_mla,
    sparse_mla_decode,
    sparse_mla_prefill,
    topk_positions,
)

__all__ = [
    "causal_positions",
    "dense_mla",
    "gather_kv",
    "indexer_logits",
    "sparse_mla",
    "sparse_mla_decode",
    "sparse_mla_prefill",
    "topk_positions",
]
