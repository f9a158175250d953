"""Reference (plain torch) ops; kernels are tested against these."""

from .dsa_reference import (
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
