"""Our DSA cache and top-k lists -> the index and KV form of FlashInfer's TRT-LLM-gen sparse MLA kernel (plain torch).

Ours (sglang_glm5.dsa.reference): kv_cache [S, 576], one row per pool slot; page_table[b, p] = slot of position
p of request b; topk [T, K] positions per query token, -1 padded, any order.
Theirs (FlashInfer 0.7.2 `trtllm_batch_decode_with_kv_cache_mla`, sparse_mla_top_k > 0, SM100/SM103): kv_cache
[P, 1, block, 576] with block 32 or 64, and per query row a list of flat token rows of that cache (row r is page
r // block, offset r % block), -1 padded. FlashInfer's own GPU test builds them as
`block_tables[b, pos // block] * block + pos % block`; a pool slot of SGLang's paged allocator is exactly that number.
"""

import torch

from sglang_glm5.dsa.reference import PAD

TRTLLM_BLOCK_SIZES = (
    64,
    32,
)  # trtllm-gen MLA cubins exist for these KV block sizes only
ROW_ALIGN = (
    4  # SGLang 0.5.23 pads sparse index rows to a multiple of 4 before this kernel (_pad_trtllm_sparse_page_table)
)


def paged_kv_view(kv_cache: torch.Tensor) -> torch.Tensor:
    """kv_cache [S, D] -> [S // block, 1, block, D], a view (no copy): the largest block in TRTLLM_BLOCK_SIZES dividing S.

    Flat row r of the view is pool slot r, so converted indices need no page arithmetic.
    """
    if kv_cache.dim() != 2:
        raise ValueError(f"kv_cache must be [slots, head_dim], got shape {tuple(kv_cache.shape)}")
    slots, head_dim = kv_cache.shape
    if kv_cache.stride() != (head_dim, 1):
        raise ValueError(
            f"kv_cache rows must be contiguous and dense for the TRT-LLM kernel (strides {kv_cache.stride()})"
        )
    for block in TRTLLM_BLOCK_SIZES:
        if slots % block == 0:
            return kv_cache.view(slots // block, 1, block, head_dim)
    raise ValueError(
        f"kv_cache: the TRT-LLM sparse MLA kernel reads the pool in blocks of {' or '.join(map(str, TRTLLM_BLOCK_SIZES))} "
        f"slots, but the pool has {slots} slots; launch with --page-size 64 (SGLang's default for DSA on CUDA)"
    )


def topk_to_kv_rows(topk: torch.Tensor, page_table: torch.Tensor, q_seq: torch.Tensor):
    """Top-k positions -> flat KV rows of paged_kv_view(kv_cache), valid entries first.

    topk [T, K] positions (-1 = none), page_table [B, L], q_seq [T] -> rows [T, K4] int32, lens [T] int32
    (K4 = K rounded up to ROW_ALIGN; rows[t, :lens[t]] valid in their topk order, the rest -1).
    1. valid = topk >= 0; -1 entries look up position 0 (always valid) so no unreferenced page_table entry is read
    2. slot = page_table[q_seq[t], topk[t, j]] where valid, else -1                      # [T, K]
    3. stable sort by ~valid: valid entries first, order kept                           # [T, K]
    4. pad with -1 to K4 columns; lens = number of valid entries                        # [T, K4], [T]
    """
    if topk.dim() != 2 or topk.is_floating_point():
        raise ValueError(f"topk must be an integer [tokens, k] tensor, got {topk.dtype} {tuple(topk.shape)}")
    num_tokens, k = topk.shape
    if q_seq.shape != (num_tokens,):
        raise ValueError(f"q_seq must be [{num_tokens}] (one request per topk row), got {tuple(q_seq.shape)}")
    if topk.numel() and (topk.min() < PAD or topk.max() >= page_table.shape[1]):
        raise ValueError(f"topk values must be -1 or in [0, {page_table.shape[1]}) (columns of page_table)")
    valid = topk >= 0  # [T, K]
    safe_pos = torch.where(valid, topk, 0).long()
    slots = page_table[q_seq.long()[:, None], safe_pos]  # [T, K]
    slots = torch.where(valid, slots, PAD).to(torch.int32)
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices  # [T, K]
    rows = torch.gather(slots, 1, order)
    width = -(-k // ROW_ALIGN) * ROW_ALIGN
    rows = torch.nn.functional.pad(rows, (0, width - k), value=PAD)  # [T, K4]
    return rows, valid.sum(dim=1, dtype=torch.int32)


def fill_empty_rows(
    rows: torch.Tensor,
    lens: torch.Tensor,
    page_table: torch.Tensor,
    q_seq: torch.Tensor,
):
    """Rows with no valid entry get one dummy entry (the request's position-0 slot) and length 1.

    rows [T, K4], lens [T] -> rows [T, K4], lens [T], empty [T] bool. FlashInfer documents zero-length sparse rows
    as unsupported and asks for one valid dummy index; the caller zeroes those rows' outputs afterwards.
    """
    empty = lens == 0  # [T]
    dummy = page_table[q_seq.long(), 0].to(rows.dtype)  # [T]
    rows = rows.clone()
    rows[:, 0] = torch.where(empty, dummy, rows[:, 0])
    return rows, torch.where(empty, 1, lens).to(torch.int32), empty
