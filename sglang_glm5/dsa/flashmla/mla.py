"""DSA sparse MLA through FlashMLA's sparse kernels (SM90: sgl-flash-mla's legacy side), with the reference op's
signature.

Prefill: flash_mla_sparse_fwd over a bf16 KV (the bf16 pool itself, or the rows of the FP8 pool the batch's
top-k can reach, dequantized, as SGLang does). Decode: flash_mla_with_kvcache over the FP8 pool in FlashMLA's V32
layout (656 B per token) read in place; FlashMLA's sparse decode has no bf16-KV kernel. Conversions: layout.py.
"""

import importlib

import torch

from sglang_glm5.dsa.flashmla.layout import (
    dequantize_fp8_kv,
    fp8_kv_blocks,
    latent_dims,
    mla_output,
    pool_bytes,
    pad_heads,
    padded_heads,
    ragged_keys,
    topk_to_ragged_rows,
    topk_to_slots,
)

FLASHMLA_MODULE = "flash_mla"
KERNEL_BY_PHASE = {"prefill": "flash_mla_sparse_fwd", "decode": "flash_mla_with_kvcache"}
USE_LEGACY = True  # sgl-flash-mla keeps the SM90 kernels and the V32 (656 B) layout on its legacy side
KV_FORMAT = "V32"  # 512 e4m3 + 4 fp32 scales + 64 bf16 rope; SGLang passes the same for a rope model
MLA_DIMS = ((512, 64),)  # (kv_lora_rank, rope dim) of FlashMLA's V32 kernels: d_qk 576, d_v 512


def flash_mla():
    return importlib.import_module(FLASHMLA_MODULE)


def _check(q, kv_cache, q_seq, topk, v_dim):
    if not isinstance(q, torch.Tensor) or q.dim() != 3 or not q.is_floating_point():
        raise ValueError(f"q must be a floating [tokens, heads, head_dim] tensor, got {q!r:.80}")
    num_tokens, num_heads, qk_dim = q.shape
    if (v_dim, qk_dim - v_dim) not in MLA_DIMS:
        raise ValueError(f"v_dim {v_dim} with head dim {qk_dim}: FlashMLA's V32 sparse kernels take (kv_lora_rank, "
                         f"rope dim) {MLA_DIMS[0]}, got ({v_dim}, {qk_dim - v_dim})")  # fmt: skip
    padded_heads(num_heads)  # ValueError naming the head counts it runs
    if topk.dim() != 2 or topk.shape[0] != num_tokens:
        raise ValueError(f"topk must be [{num_tokens}, k] (one row per query token), got shape {tuple(topk.shape)}")
    if q_seq.shape != (num_tokens,):
        raise ValueError(f"q_seq must be [{num_tokens}], got {tuple(q_seq.shape)}")
    return latent_dims(kv_cache, qk_dim, v_dim)


def prefill_kwargs(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim):
    """flash_mla_sparse_fwd's keyword arguments -> (kwargs, empty [T] rows without a valid top-k entry).

    1. q in bf16 with zero heads appended up to 64 or 128                                       # [T, H', 576]
    2. bf16 pool: kv = the pool [S, 1, 576], indices = slots (topk_to_slots)
       FP8 pool: the request spans the top-k reaches (ragged_keys over the largest selected position) dequantized
       to bf16 [N, 1, 576], indices = rows of that span (topk_to_ragged_rows)
    3. indices [T, 1, K128] int32, -1 = skip; sm_scale; d_v = v_dim; natural-log lse (return_log2_lse None)
    """
    kv_cache = pool_bytes(kv_cache, q.shape[-1], v_dim)
    is_fp8, rope_dim = _check(q, kv_cache, q_seq, topk, v_dim)
    num_tokens, num_heads, qk_dim = q.shape
    if is_fp8:
        last = topk.max(dim=1).values if topk.shape[1] else topk.new_full((num_tokens,), -1)  # [T], -1: none
        ragged = ragged_keys(page_table, q_seq, last)  # the positions 0..last of each request, end to end
        kv = dequantize_fp8_kv(kv_cache, ragged.slots, v_dim, rope_dim)  # [N, 576] bf16
        if kv.shape[0] == 0:  # every row empty: one zero row keeps the kernel's shapes valid, nothing selects it
            kv = kv.new_zeros(1, qk_dim)
        indices = topk_to_ragged_rows(topk, ragged, q_seq)  # [T, K128]
    else:
        kv, indices = kv_cache, topk_to_slots(topk, page_table, q_seq)
    kwargs = {
        "q": pad_heads(q.to(torch.bfloat16), padded_heads(num_heads), 1).contiguous(),  # [T, H', 576]
        "kv": kv.view(kv.shape[0], 1, qk_dim),  # [S or N, 1, 576] bf16
        "indices": indices.unsqueeze(1),  # [T, 1, K128]
        "sm_scale": float(sm_scale),
        "d_v": v_dim,
        "use_legacy": USE_LEGACY,
    }
    return kwargs, (topk < 0).all(dim=1)


def decode_kwargs(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, sched_meta):
    """flash_mla_with_kvcache's keyword arguments (sparse decode over the FP8 pool) -> (kwargs, empty [T]).

    q [T, 1, H', 576] bf16 (heads padded to 64/128); k_cache = the pool viewed [S / 64, 64, 1, 656];
    indices [T, 1, K128] = slots (block * 64 + offset), exactly -1 = skip. block_table and cache_seqlens are
    documented as ignored by the sparse path (block_table must still be a tensor: SGLang passes an empty one).
    """
    kv_cache = pool_bytes(kv_cache, q.shape[-1], v_dim)
    is_fp8, rope_dim = _check(q, kv_cache, q_seq, topk, v_dim)
    if not is_fp8:
        raise TypeError(f"kv_cache: FlashMLA's sparse decode reads only the FP8 pool ([slots, 656] uint8, "
                        f"--kv-cache-dtype fp8_e4m3), got {kv_cache.dtype} {tuple(kv_cache.shape)}")  # fmt: skip
    num_tokens, num_heads, qk_dim = q.shape
    heads = padded_heads(num_heads)
    kwargs = {
        "q": pad_heads(q.to(torch.bfloat16), heads, 1).view(num_tokens, 1, heads, qk_dim),  # [T, 1, H', 576]
        "k_cache": fp8_kv_blocks(kv_cache, v_dim, rope_dim),  # [S / 64, 64, 1, 656] uint8
        "block_table": torch.empty(num_tokens, 0, dtype=torch.int32, device=q.device),
        "cache_seqlens": None,
        "head_dim_v": v_dim,
        "tile_scheduler_metadata": sched_meta,
        "num_splits": None,
        "softmax_scale": float(sm_scale),
        "causal": False,
        "is_fp8_kvcache": True,
        "indices": topk_to_slots(topk, page_table, q_seq).unsqueeze(1),  # [T, 1, K128]
        "use_legacy": USE_LEGACY,
        "kv_format": KV_FORMAT,
    }
    return kwargs, (topk < 0).all(dim=1)


def _check_device(q, phase):
    if q.device.type != "cuda":
        raise RuntimeError(f"the flashmla DSA {phase} implementation runs FlashMLA on an SM90 GPU; got tensors on {q.device}")


def sparse_mla_prefill(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """Any number of query tokens per request: see dsa_reference.sparse_mla (kv_cache bf16 [S, 576] or FP8 [S, 656])."""
    _check_device(q, "prefill")
    kwargs, empty = prefill_kwargs(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim)
    out, _max_logits, lse = flash_mla().flash_mla_sparse_fwd(**kwargs)  # [T, H', v], _, [T, H']
    return mla_output(out, lse, q.shape[1], empty, q.dtype, return_lse)


def sparse_mla_decode(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, return_lse=False):
    """One query token per request: see dsa_reference.sparse_mla_decode (kv_cache: the FP8 pool [S, 656] uint8)."""
    _check_device(q, "decode")
    if torch.unique(q_seq).numel() != q_seq.numel():
        raise ValueError("q_seq: decode takes one query token per request, but q_seq has repeated requests")
    fm = flash_mla()
    kwargs, empty = decode_kwargs(q, kv_cache, page_table, q_seq, topk, sm_scale, v_dim, fm.get_mla_metadata()[0])
    out, lse = fm.flash_mla_with_kvcache(**kwargs)  # [T, 1, H', v], [T, H', 1]
    return mla_output(out[:, 0], lse[..., 0], q.shape[1], empty, q.dtype, return_lse)
