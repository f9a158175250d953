"""Batches and pools shared by the flashmla conversion tests: ragged, across 64-slot page boundaries, k > length,
all -1 rows; caches NaN (every byte 0xFF in the FP8 pools) wherever the reference reads nothing."""

import torch

from sglang_glm5.dsa.flashmla.layout import BLOCK, pack_index_k
from sglang_glm5.dsa.triton.kv_layout import pack_fp8_kv
from sglang_glm5.dsa.reference import quantize_fp8_rows
from tests.dsa.trtllm_cases import Case, case_inputs
from tests.dsa.cases import INDEX_DIM, V_DIM

CASES = [
    Case((1, 63, 130), (1, 5, 7), 16),  # ragged prefill; 130 spans three 64-slot pages
    Case((5, 64, 65, 200), (1, 1, 1, 1), 32),  # decode; k > length for the first request; either side of 64
    Case((70, 9), (3, 2), 10, empty_rows=(0, 4)),  # all -1 rows; k not a multiple of FlashMLA's 64
    Case((33, 95), (2, 1), 130),  # k > every length, and past one 128-index block
    Case((7, 129), (1, 1), 8, empty_rows=(1,)),  # decode with an all -1 row
]
DECODE_CASES = [c for c in CASES if set(c.new_tokens) == {1}]
MLA_HEADS = (8, 16, 32, 64, 128)  # GLM-5's 64 heads at tp 8 / 4 / 2 / 1, and FlashMLA's other kernel width
INDEXER_HEADS = (4, 8, 16, 32, 64)  # below 32 the call pads to 32 (as SGLang does); GLM-5 has 32
POISON = 0xFF  # e4m3fn NaN, and a NaN fp32 scale / bf16 rope


def poison_rows(packed: torch.Tensor, keep) -> torch.Tensor:
    out = torch.full_like(packed, POISON)
    keep = sorted(keep)
    out[keep] = packed[keep]
    return out


def fp8_latent_pool(kv_cache: torch.Tensor, selected) -> torch.Tensor:
    """[S, 576] float -> the FP8 V32 pool [S, 656] uint8, rows outside `selected` all 0xFF (NaN)."""
    return poison_rows(pack_fp8_kv(kv_cache.float().nan_to_num(0.0), V_DIM), selected)


def selected_slots(batch, topk):
    return {int(batch.page_table[int(b), p]) for b, row in zip(batch.q_seq, topk.tolist()) for p in row if p >= 0}


def mla_inputs(case, heads, seed=0):
    batch, q, kv_cache, topk = case_inputs(case, heads, torch.bfloat16, seed=seed)
    return batch, q, kv_cache, topk, selected_slots(batch, topk)


def index_k_pool(batch, seed=0):
    """-> (pool [pages, 64 * 132] uint8 with every slot no query sees poisoned, k_fp8 [S, 128], k_scale [S])."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(batch.num_slots, INDEX_DIM, generator=gen)  # [S, 128]
    k_fp8, k_scale = quantize_fp8_rows(keys)
    assert batch.num_slots % BLOCK == 0
    pool = pack_index_k(k_fp8, k_scale)  # [pages, 64 * 132]
    seen = torch.zeros(batch.num_slots, dtype=torch.bool)
    seen[sorted(batch.referenced_slots())] = True
    poisoned = pack_index_k(
        torch.where(seen[:, None], k_fp8.view(torch.uint8), POISON).view(torch.float8_e4m3fn),
        torch.where(seen, k_scale, float("nan")),
    )
    return poisoned, k_fp8, k_scale
