"""Plans of the TileLang DSA ops for CUDA graphs (sglang_glm5/dsa/graph_plan.py): per shape key, once.

Each op module's plan_* function has its op's signature plus `empty(name, shape, dtype, device)` (the graph state's
arena) and does what the op would do per call before its launches: the argument checks, the tuning-table lookup,
the split choice for the device's SM count (decode), the JIT-cache lookup of the compiled kernels and the
allocation of outputs and decode partials. It returns the op's keyword arguments for its launch-only path
(`checked=True`): a planned call then only launches kernels. The wrappers run the same functions per call, so
planned and plain calls launch the same kernels on the same knobs. The top-k output is the caller's (the graph
state's buffer of the layer), never an arena slot: IndexCache layers read it after later ops ran.
"""

from sglang_glm5.dsa.tilelang.indexer import plan_indexer_logits as indexer_logits
from sglang_glm5.dsa.tilelang.indexer import plan_indexer_logits_fp8 as indexer_logits_fp8
from sglang_glm5.dsa.tilelang.mla_decode import plan_sparse_mla_decode as sparse_mla_decode
from sglang_glm5.dsa.tilelang.mla_prefill import plan_sparse_mla_prefill as sparse_mla_prefill
from sglang_glm5.dsa.tilelang.topk import plan_topk_positions as topk_positions

__all__ = ["indexer_logits", "indexer_logits_fp8", "sparse_mla_decode", "sparse_mla_prefill", "topk_positions"]
