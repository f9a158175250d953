"""DSA sparse MLA through FlashInfer's TRT-LLM-gen kernel (SM100/SM103), with the reference op's signature.

FlashInfer 0.7.2 has no separate sparse MLA prefill kernel: `trtllm_prefill_with_kv_cache_mla` shares the decode
implementation. Both phases run one kernel row per query token (q_len_per_request 1), as SGLang 0.5.23's own DSA
backend does (`_forward_trtllm`). The conversions are plain torch (layout.py) and tested on CPU against FlashInfer's
torch references; the kernel itself needs a Blackwell GPU.
"""

import functools
import importlib

import torch

from sglang_glm5.dsa.trtllm.layout import (
    fill_empty_rows,
    paged_kv_view,
    topk_to_kv_rows,
)
from sglang_glm5.dsa.reference import FP8_E4M3_MAX

FLASHINFER_MODULE = "flashinfer.mla"
KERNEL_BY_PHASE = {
    "prefill": "trtllm_prefill_with_kv_cache_mla",
    "decode": "trtllm_batch_decode_with_kv_cache_mla",
}
MLA_DIMS = (
    (512, 64),
    (256, 64),
)  # (kv_lora_rank, rope dim) with trtllm-gen sparse cubins; GLM-5 is 512 + 64
KV_DTYPES = (
    torch.bfloat16,
    torch.float8_e4m3fn,
)  # the kernel computes in the cache dtype; its output is bf16
HEADS_WITHOUT_CUBINS = range(65, 128)  # trtllm-gen MLA has no kernels for 64 < heads < 128
WORKSPACE_BYTES = 128 * 1024 * 1024  # FlashInfer's own trtllm-gen MLA tests use 128 MiB


def flashinfer_kernel(phase: str):
    """The installed FlashInfer function each phase calls (imported on first use: FlashInfer takes seconds to import)."""
    return getattr(importlib.import_module(FLASHINFER_MODULE), KERNEL_BY_PHASE[phase])


@functools.cache
def _workspace(device: torch.device) -> torch.Tensor:
    # zeroed once: the kernel keeps semaphore counters here and resets them after each call
    return torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=device)


def _check_inputs(q, kv_cache, q_seq, topk, v_dim):
    if not isinstance(q, torch.Tensor) or q.dim() != 3 or not q.is_floating_point():
        raise ValueError(f"q must be a floating [tokens, heads, head_dim] tensor, got {q!r:.80}")
    num_tokens, num_heads, qk_dim = q.shape
    if kv_cache.dim() != 2 or kv_cache.shape[1] != qk_dim:
        raise ValueError(f"kv_cache must be [slots, {qk_dim}] (q's head dim), got shape {tuple(kv_cache.shape)}")
    if kv_cache.dtype not in KV_DTYPES:
        raise TypeError(
            f"kv_cache: the TRT-LLM sparse MLA kernel reads {', '.join(map(str, KV_DTYPES))} caches, got {kv_cache.dtype}"
        )
    if (v_dim, qk_dim - v_dim) not in MLA_DIMS:
        raise ValueError(
            f"v_dim {v_dim} with head dim {qk_dim}: the TRT-LLM sparse MLA kernel supports (kv_lora_rank, rope dim) "
            f"in {MLA_DIMS}, got ({v_dim}, {qk_dim - v_dim})"
        )
    if num_heads in HEADS_WITHOUT_CUBINS:
        raise ValueError(
            f"q has {num_heads} heads per GPU; trtllm-gen MLA has no kernels for 64 < heads < 128 (change --tp)"
        )
    if topk.dim() != 2 or topk.shape[0] != num_tokens:
        raise ValueError(f"topk must be [{num_tokens}, k] (one row per query token), got shape {tuple(topk.shape)}")


def trtllm_sparse_mla_kwargs(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, workspace, return_lse=False):
    """The keyword arguments of the FlashInfer call, built from the reference op's arguments.

    q [T, H, Dqk], kv_cache [S, Dqk], page_table [B, L], q_seq [T], topk [T, K] positions (-1 = none)
    -> (kwargs, empty [T] bool: rows without a valid entry, whose outputs trtllm_output zeroes).
    1. query = q in the cache dtype (FP8 cache: e4m3 with unit scale, as SGLang's trtllm path)   # [T, 1, H, Dqk]
    2. kv = paged_kv_view(kv_cache)                                                              # [P, 1, block, Dqk]
    3. rows = topk_to_kv_rows(topk, page_table, q_seq), valid entries first, -1 after; empty rows get a dummy
       entry                                                                                      # [T, 1, K4]
    4. seq_lens / max_seq_len: physical KV lengths, as FlashInfer's docstring asks for the TRT-LLM-gen path ("per-
       request physical KV sequence lengths"; "maximum physical KV sequence length used for scheduling") and as
       SGLang 0.5.23's _forward_trtllm passes them (cache_seqlens_int32, max_seq_len_k), not the count of valid
       top-k entries. The reference op's arguments carry no per-request length, so every row gets L = columns of
       page_table = the batch's longest physical length (>= each row's own). Valid entries come first and -1 after,
       so reading min(seq_len, K4) entries and skipping -1 selects the same set as the reference.
       sparse_mla_top_k_lens is for no-rope MLA only (FlashInfer refuses it for rope 64): not passed.
    5. bmm1_scale = sm_scale, bmm2_scale = 1; backend "trtllm-gen" (SM120's "sparse" backend reads another layout)
    """
    _check_inputs(q, kv_cache, q_seq, topk, v_dim)
    num_tokens, num_heads, qk_dim = q.shape
    query = q
    if kv_cache.dtype == torch.float8_e4m3fn:
        # casting to e4m3 does not saturate: out-of-range values would become NaN
        query = q.float().clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    query = query.to(kv_cache.dtype).reshape(num_tokens, 1, num_heads, qk_dim).contiguous()  # [T, 1, H, Dqk]
    rows, lens = topk_to_kv_rows(topk, page_table, q_seq)  # [T, K4], [T]
    rows, _, empty = fill_empty_rows(rows, lens, page_table, q_seq)
    physical = torch.full((num_tokens,), page_table.shape[1], dtype=torch.int32, device=q.device)  # [T]
    kwargs = {
        "query": query,
        "kv_cache": paged_kv_view(kv_cache),  # [P, 1, block, Dqk]
        "workspace_buffer": workspace,
        "qk_nope_head_dim": v_dim,  # unused by trtllm-gen ("TODO: remove in 1.0?" in FlashInfer)
        "kv_lora_rank": v_dim,
        "qk_rope_head_dim": qk_dim - v_dim,
        "block_tables": rows.unsqueeze(1),  # [T, 1, K4]
        "seq_lens": physical,  # [T] int32
        "max_seq_len": page_table.shape[1],
        "sparse_mla_top_k": rows.shape[1],
        "bmm1_scale": float(sm_scale),
        "bmm2_scale": 1.0,
        "backend": "trtllm-gen",
    }
    if return_lse:
        kwargs.update(return_lse=True, return_lse_base="basee")
    return kwargs, empty


def trtllm_output(result, empty, out_dtype, return_lse=False):
    """The kernel's result -> the reference op's: out [T, 1, H, v] -> [T, H, v] in out_dtype, 0 where empty;
    with return_lse, lse [T, H] natural log (asked for with return_lse_base="basee"), -inf where empty."""
    out, lse = result if return_lse else (result, None)
    out = out.reshape(out.shape[0], out.shape[2], out.shape[3])  # [T, H, v]
    out = torch.where(empty[:, None, None], 0.0, out.float()).to(out_dtype)
    if not return_lse:
        return out
    lse = lse.reshape(out.shape[0], out.shape[1]).float()  # [T, H]
    return out, torch.where(empty[:, None], float("-inf"), lse)


def _sparse_mla(phase, q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse):
    if q.device.type != "cuda":
        raise RuntimeError(f"the trtllm DSA {phase} implementation runs FlashInfer's TRT-LLM kernel on an SM100/SM103 GPU; "
                           f"got tensors on {q.device}")  # fmt: skip
    kwargs, empty = trtllm_sparse_mla_kwargs(
        q,
        kv_cache,
        page_table,
        q_seq,
        topk,
        sm_scale,
        v_dim,
        _workspace(q.device),
        return_lse,
    )
    return trtllm_output(flashinfer_kernel(phase)(**kwargs), empty, q.dtype, return_lse)


def sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Any number of query tokens per request: see dsa_reference.sparse_mla."""
    return _sparse_mla("prefill", q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse)


def sparse_mla_decode(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Exactly one query token per request: see dsa_reference.sparse_mla_decode."""
    if torch.unique(q_seq).numel() != q_seq.numel():
        raise ValueError("q_seq: decode takes one query token per request, but q_seq has repeated requests")
    return _sparse_mla("decode", q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse)
