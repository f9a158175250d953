"""Plans of the Triton DSA ops for CUDA graphs (sglang_glm5/dsa/graph_plan.py): per shape key, once.

Each function has its op's signature plus `empty(name, shape, dtype, device)` (the graph state's arena) and does
what the op would do per call before its launches: the argument checks, the device lookups (SM count -> split
counts) and the allocations of outputs and workspaces. It returns the op's keyword arguments for its fast path
(`checked=True`), which then only launches kernels. The top-k output is the caller's `out` (the graph state's
buffer of the layer; see graph_plan.py), else allocated by the op.
"""

import torch

from sglang_glm5.dsa.checks import fresh_buffer
from sglang_glm5.dsa.triton import mla_decode, topk
from sglang_glm5.dsa.triton.indexer import _check_common, check_fp8_args
from sglang_glm5.dsa.triton.common import FLOAT_DTYPES, multiprocessor_count
from sglang_glm5.dsa.triton.mla_prefill import check_sparse_mla_args


def indexer_logits(q, weights, k_cache, page_table, q_seq, q_pos, *, empty=fresh_buffer):
    _check_common(q, weights, k_cache, page_table, q_seq, q_pos, FLOAT_DTYPES, FLOAT_DTYPES)
    return {"out": empty("indexer_logits.out", (q.shape[0], page_table.shape[1]), torch.float32, q.device),
            "checked": True}  # fmt: skip


def indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos, *, empty=fresh_buffer):
    check_fp8_args(q_fp8, q_scale, weights, k_fp8, k_scale, page_table, q_seq, q_pos)
    return {"out": empty("indexer_logits.out", (q_fp8.shape[0], page_table.shape[1]), torch.float32, q_fp8.device),
            "checked": True}  # fmt: skip


def topk_positions(logits, q_pos, k, *, out=None, num_chunks=None, empty=fresh_buffer):
    # out: the caller's (the graph state's buffer of the layer), checked here; without one the op allocates it
    _, num_chunks = topk.check_topk_args(logits, q_pos, k, out, num_chunks)  # a fresh output: plan time only
    num_tokens, length = logits.shape
    workspace = None
    if num_tokens and length:  # the candidate lists (and split rows' chunk histograms): topk.workspace_shapes
        shapes = topk.workspace_shapes(num_tokens, length, num_chunks, multiprocessor_count(logits.device))
        workspace = tuple(
            empty(f"topk_positions.{part}", shape, dtype, logits.device) for part, (shape, dtype) in shapes.items()
        )  # split_workspace's buffers
    return {"num_chunks": num_chunks, "workspace": workspace, "checked": True}


def _sparse_mla_outputs(q, v_dim, return_lse, empty):
    num_tokens, num_heads, _ = q.shape
    out = empty("sparse_mla.out", (num_tokens, num_heads, v_dim), q.dtype, q.device)
    lse = empty("sparse_mla.lse", (num_tokens, num_heads), torch.float32, q.device) if return_lse else None
    return out, lse


def sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk_, sm_scale, v_dim, return_lse=False, *, empty=fresh_buffer):
    check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk_, sm_scale, v_dim)
    out, lse = _sparse_mla_outputs(q, v_dim, return_lse, empty)
    return {"out": out, "lse": lse, "checked": True}


def sparse_mla_decode(
    q, kv_cache, page_table, q_seq, topk_, sm_scale, v_dim, return_lse=False, *, num_splits=None, empty=fresh_buffer
):
    check_sparse_mla_args(q, kv_cache, page_table, q_seq, topk_, sm_scale, v_dim)  # before reading q's shape
    out, lse = _sparse_mla_outputs(q, v_dim, return_lse, empty)
    _, _, num_splits = mla_decode.check_decode_args(
        q, kv_cache, page_table, q_seq, topk_, sm_scale, v_dim, return_lse, out, lse, num_splits
    )
    num_tokens, num_heads, _ = q.shape
    part_out = empty("sparse_mla.part_out", (num_tokens, num_heads, num_splits, v_dim), torch.float32, q.device)
    part_lse = empty("sparse_mla.part_lse", (num_tokens, num_heads, num_splits), torch.float32, q.device)
    return {"out": out, "lse": lse, "num_splits": num_splits, "workspace": (part_out, part_lse), "checked": True}

