"""Our DSA metadata and caches -> the arguments of FlashMLA's sparse kernels and DeepGEMM's indexer (plain torch).

Ours (sglang_glm5.dsa.reference): query token t belongs to request q_seq[t] at position q_pos[t];
page_table[b, p] = pool slot of position p of request b; top-k rows hold positions, -1 padded, any order.
SGLang's DSA pool on CUDA is paged in blocks of 64 slots: position p of a request lives at slot
block[p // 64] * 64 + p % 64 (`DSATokenToKVPool` asserts 64-token physical pages).

Pools (the layouts SGLang's `DSATokenToKVPool` allocates):
- MLA latent, FP8 (FlashMLA's "V32" layout, 656 B per token): | 512 x e4m3 | 4 x fp32 scale | 64 x bf16 rope |,
  one scale per 128 latent values (sglang_glm5.dsa.triton.kv_layout defines it), or [S, 576] bf16.
- Indexer keys, FP8, paged (DeepGEMM's fused layout): per page of 64 slots, 64 x 128 e4m3 bytes, then 64 fp32
  scales; the pool buffer is [pages, 64 * 132] uint8, key ~= e4m3 * scale.

Theirs (sgl-flash-mla 1.0.0 legacy = SM90 kernels, sgl-deep-gemm 0.2.3):
- flash_mla_sparse_fwd: q [s_q, h_q, 576] bf16 with h_q 64 or 128; kv [s_kv, 1, 576] bf16; indices [s_q, 1, topk]
  int32 rows of kv, -1 (or >= s_kv) = skip; topk a multiple of the kernel's 64/128-index block.
- flash_mla_with_kvcache (sparse): q [b, 1, h_q, 576] bf16, h_q 64 or 128; k_cache [blocks, 64, 1, 656] FP8 V32;
  indices [b, 1, topk] = block * 64 + offset, exactly -1 = skip.
- fp8_mqa_logits: q [T, H, 128] e4m3 (H 32 or 64 on SM90), kv = (k [N, 128] e4m3, scale [N] fp32) contiguous rows,
  weights [T, H] fp32, ks/ke [T] int32: logits[t, n] = sum_h weights[t, h] * relu(q[t, h] . k[n]) * scale[n]
  for ks[t] <= n < ke[t].
- fp8_paged_mqa_logits: q [B, next_n, H, 128] e4m3, kv_cache [pages, 64, 1, 132] uint8 (the pool's bytes),
  context_lens [B, next_n] int32, block_table [B, pages] int32: row b scores positions p < context_lens[b].
Scales fold into the head weights: relu(s * x) = s * relu(x) for s > 0, so per-(token, head) q scales and the
indexer's D**-0.5 go into weights.
"""

from dataclasses import dataclass

import torch

from sglang_glm5.dsa.triton.kv_layout import check_fp8_kv, fp8_kv_width, unpack_fp8_kv
from sglang_glm5.dsa.reference import PAD, quantize_fp8_rows

BLOCK = 64  # slots per page of SGLang's DSA pool on CUDA = FlashMLA's page_block_size = DeepGEMM's block_kv
FLASHMLA_HEADS = (64, 128)  # FlashMLA's sparse kernels run these query-head counts; fewer heads are zero-padded
TOPK_ALIGN = 128  # FlashMLA reads indices in blocks of 64 (h_q 64) or 128 (h_q 128): pad rows with -1 to both
INDEX_DIM = 128  # DSATokenToKVPool asserts index_head_dim == 128
SCALE_BYTES = 4  # fp32
DEEPGEMM_INDEXER_HEADS = (32, 64)  # fp8_mqa_logits / fp8_paged_mqa_logits on SM90
INDEX_K_DTYPE = torch.float8_e4m3fn


# ---- heads ---------------------------------------------------------------------------------------------------


def padded_heads(num_heads: int, allowed=FLASHMLA_HEADS) -> int:
    """The smallest head count in `allowed` that num_heads divides (zero heads are appended), or ValueError."""
    for heads in allowed:
        if num_heads <= heads and heads % num_heads == 0:
            return heads
    raise ValueError(
        f"{num_heads} heads per GPU: the kernel runs {' or '.join(map(str, allowed))} heads and pads fewer heads "
        f"only when they divide it (1, 2, 4, ... 64, or 128); change --tp"
    )


def pad_heads(x: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    """x with zero heads appended along `dim` up to `heads` (x itself when it has them already)."""
    missing = heads - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


# ---- positions -> slots --------------------------------------------------------------------------------------


def topk_to_slots(topk: torch.Tensor, page_table: torch.Tensor, q_seq: torch.Tensor) -> torch.Tensor:
    """Top-k positions -> pool slots, -1 kept, width padded with -1 to a multiple of TOPK_ALIGN.

    topk [T, K] (-1 = none), page_table [B, L], q_seq [T] -> [T, K128] int32. FlashMLA's decode index
    (block * 64 + offset) of a paged pool is exactly the slot. -1 entries look up position 0 (always valid), so no
    page_table entry past a request's length is read.
    """
    if topk.dim() != 2 or topk.is_floating_point():
        raise ValueError(f"topk must be an integer [tokens, k] tensor, got {topk.dtype} {tuple(topk.shape)}")
    if q_seq.shape != (topk.shape[0],):
        raise ValueError(f"q_seq must be [{topk.shape[0]}] (one request per topk row), got {tuple(q_seq.shape)}")
    if topk.numel() and (topk.min() < PAD or topk.max() >= page_table.shape[1]):
        raise ValueError(f"topk values must be -1 or in [0, {page_table.shape[1]}) (columns of page_table)")
    valid = topk >= 0  # [T, K]
    slots = page_table[q_seq.long()[:, None], torch.where(valid, topk, 0).long()]  # [T, K]
    slots = torch.where(valid, slots, PAD).to(torch.int32)
    width = -(-topk.shape[1] // TOPK_ALIGN) * TOPK_ALIGN
    return torch.nn.functional.pad(slots, (0, width - topk.shape[1]), value=PAD)  # [T, K128]


def request_lengths(num_requests: int, q_seq: torch.Tensor, last_pos: torch.Tensor) -> torch.Tensor:
    """[B] int64: per request, the largest last_pos of its query tokens + 1 (0 if absent or all -1)."""
    lengths = torch.zeros(num_requests, dtype=torch.int64, device=last_pos.device)
    return lengths.scatter_reduce(0, q_seq.long(), last_pos.long() + 1, reduce="amax")


@dataclass(frozen=True)
class RaggedKeys:
    """Each request's positions 0..length-1 laid end to end: what DeepGEMM's fp8_mqa_logits and FlashMLA's sparse
    prefill read as contiguous rows."""

    slots: torch.Tensor  # [N] int64: pool slot of each ragged row (request by request, by position)
    start: torch.Tensor  # [B] int64: first ragged row of each request
    ks: torch.Tensor  # [T] int32: first row query token t may see (its request's position 0)
    ke: torch.Tensor  # [T] int32: one past the last (position last_pos[t])


def ragged_keys(page_table: torch.Tensor, q_seq: torch.Tensor, last_pos: torch.Tensor) -> RaggedKeys:
    """page_table [B, L], q_seq [T], last_pos [T] (q_pos for the indexer; the largest top-k position for sparse
    MLA, -1 for none) -> RaggedKeys over positions 0..max(last_pos of the request), all of them valid positions.
    One host sync: the total row count."""
    lengths = request_lengths(page_table.shape[0], q_seq, last_pos)  # [B]
    start = torch.cumsum(lengths, 0) - lengths  # [B]
    request = torch.repeat_interleave(torch.arange(page_table.shape[0], device=lengths.device), lengths)  # [N]
    position = torch.arange(request.shape[0], device=lengths.device) - start[request]  # [N]
    slots = page_table[request, position].long()  # [N]
    ks = start[q_seq.long()]  # [T]
    return RaggedKeys(slots, start, ks.to(torch.int32), (ks + last_pos.long() + 1).to(torch.int32))


def topk_to_ragged_rows(topk: torch.Tensor, ragged: RaggedKeys, q_seq: torch.Tensor) -> torch.Tensor:
    """Top-k positions -> rows of the ragged keys (ragged.start[request] + position), -1 kept, padded to TOPK_ALIGN."""
    rows = torch.where(topk >= 0, ragged.start[q_seq.long()][:, None] + topk.long(), PAD).to(torch.int32)
    width = -(-topk.shape[1] // TOPK_ALIGN) * TOPK_ALIGN
    return torch.nn.functional.pad(rows, (0, width - topk.shape[1]), value=PAD)


def block_table(page_table: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """page_table [B, L] slots per position -> [B, ceil(L / block)] int32 page ids (a page's first slot // block)."""
    return torch.div(page_table[:, ::block], block, rounding_mode="floor").to(torch.int32)


def check_paged(page_table: torch.Tensor, q_seq: torch.Tensor, q_pos: torch.Tensor, block: int = BLOCK) -> None:
    """ValueError unless every position a query token sees sits at block_table[p // block] * block + p % block.

    The paged kernels (DeepGEMM's paged indexer, FlashMLA's decode) address keys by page; SGLang's pool on CUDA is
    paged in 64-slot blocks (--page-size 64). One host sync; skipped while a CUDA graph is being captured.
    """
    if page_table.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    lengths = request_lengths(page_table.shape[0], q_seq, q_pos)  # [B]
    positions = torch.arange(page_table.shape[1], device=page_table.device)  # [L]
    seen = positions < lengths[:, None]  # [B, L]
    pages = block_table(page_table, block).long().repeat_interleave(block, dim=1)[:, : page_table.shape[1]]  # [B, L]
    expected = pages * block + positions % block
    if not bool((~seen | (page_table.long() == expected)).all()):
        raise ValueError(
            f"page_table: the FlashMLA/DeepGEMM kernels read the KV pool in pages of {block} slots, but a request's "
            f"positions do not sit on whole pages; launch with --page-size {block} (SGLang's default for DSA on CUDA)"
        )


# ---- MLA latent pool ---------------------------------------------------------------------------------------------


def fp8_kv_blocks(kv_cache: torch.Tensor, v_dim: int, rope_dim: int, block: int = BLOCK) -> torch.Tensor:
    """[S, 656] uint8 FP8 pool -> [S // block, block, 1, 656] (a view): FlashMLA's k_cache; index = slot."""
    check_fp8_kv("kv_cache", kv_cache, v_dim, rope_dim)
    slots, width = kv_cache.shape
    if slots % block:
        raise ValueError(f"kv_cache: FlashMLA reads the pool in pages of {block} slots, but it has {slots} slots; "
                         f"launch with --page-size {block}")  # fmt: skip
    return kv_cache.view(slots // block, block, 1, width)


def dequantize_fp8_kv(kv_cache: torch.Tensor, slots: torch.Tensor, v_dim: int, rope_dim: int) -> torch.Tensor:
    """Rows `slots` [N] of the [S, 656] FP8 pool -> [N, 576] bf16 (what flash_mla_sparse_fwd reads)."""
    return unpack_fp8_kv(kv_cache.index_select(0, slots.long()), v_dim, rope_dim).to(torch.bfloat16)


# ---- indexer keys pool -------------------------------------------------------------------------------------------


def index_k_page_bytes(block: int = BLOCK, dim: int = INDEX_DIM) -> int:
    return block * (dim + SCALE_BYTES)


def check_index_k_pool(index_k: torch.Tensor, block: int = BLOCK, dim: int = INDEX_DIM) -> None:
    width = index_k_page_bytes(block, dim)
    if index_k.dim() != 2 or index_k.dtype != torch.uint8 or index_k.shape[1] != width:
        raise ValueError(f"k_cache: the FP8 indexer reads SGLang's paged index-K pool, [pages, {width}] uint8 "
                         f"({block} x {dim} e4m3 + {block} fp32 scales per page); got {index_k.dtype} "
                         f"{tuple(index_k.shape)}")  # fmt: skip
    if index_k.stride() != (width, 1):
        raise ValueError(f"k_cache: index-K pages must be contiguous and dense (strides {index_k.stride()})")


def index_k_blocks(index_k: torch.Tensor, block: int = BLOCK, dim: int = INDEX_DIM) -> torch.Tensor:
    """[pages, block * 132] uint8 pool -> [pages, block, 1, 132] (a view): DeepGEMM's fused kv_cache."""
    check_index_k_pool(index_k, block, dim)
    return index_k.view(index_k.shape[0], block, 1, dim + SCALE_BYTES)


def gather_index_k(index_k: torch.Tensor, slots: torch.Tensor, block: int = BLOCK, dim: int = INDEX_DIM):
    """Slots [N] of the paged pool -> (k [N, 128] e4m3, scale [N] fp32), contiguous: fp8_mqa_logits' kv."""
    check_index_k_pool(index_k, block, dim)
    slots = slots.long()
    page, offset = slots // block, slots % block
    keys = index_k[:, : block * dim].view(-1, block, dim)[page, offset]  # [N, 128] uint8
    scales = index_k[:, block * dim :].view(-1, block, SCALE_BYTES)[page, offset]  # [N, 4] uint8
    return keys.contiguous().view(INDEX_K_DTYPE), scales.contiguous().view(torch.float32)[:, 0]


def unpack_index_k(index_k: torch.Tensor, block: int = BLOCK, dim: int = INDEX_DIM):
    """The whole pool -> (k [S, 128] e4m3, scale [S] fp32) by slot: what the reference indexer_logits_fp8 takes."""
    slots = torch.arange(index_k.shape[0] * block, device=index_k.device)
    return gather_index_k(index_k, slots, block, dim)


def pack_index_k(keys: torch.Tensor, scales: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """(k [S, D] e4m3, scale [S] fp32) by slot, S a multiple of block -> the paged pool [S // block, block * (D + 4)]."""
    slots, dim = keys.shape
    if slots % block:
        raise ValueError(f"pack_index_k: {slots} slots is not a whole number of {block}-slot pages")
    pages = slots // block
    key_bytes = keys.contiguous().view(torch.uint8).view(pages, block * dim)
    scale_bytes = scales.float().contiguous().view(torch.uint8).view(pages, block * SCALE_BYTES)
    return torch.cat([key_bytes, scale_bytes], dim=1)


# ---- indexer queries -----------------------------------------------------------------------------------------


def indexer_q_and_weights(q: torch.Tensor, weights: torch.Tensor, fp8_dtype=INDEX_K_DTYPE):
    """q [T, H, D] float, weights [T, H] (already * H**-0.5) -> (q_fp8 [T, H', D], weights [T, H'] fp32), H' in
    DEEPGEMM_INDEXER_HEADS (zero heads appended, as SGLang does below 32).

    q ~= q_fp8 * q_scale per (token, head) row; weights' = weights * q_scale * D**-0.5, so that
    sum_h weights'[t, h] * relu(q_fp8[t, h] . k) = sum_h weights[t, h] * relu(q[t, h] . k * D**-0.5).
    """
    q_fp8, q_scale = quantize_fp8_rows(q, fp8_dtype)  # [T, H, D], [T, H]
    folded = weights.float() * q_scale * q.shape[-1] ** -0.5  # [T, H]
    heads = padded_heads(q.shape[1], DEEPGEMM_INDEXER_HEADS)
    return pad_heads(q_fp8, heads, 1).contiguous(), pad_heads(folded, heads, 1).contiguous()


def causal_logits(logits: torch.Tensor, q_pos: torch.Tensor) -> torch.Tensor:
    """[T, L] logits by position -> -inf past each token's own position (the kernels leave those unspecified)."""
    positions = torch.arange(logits.shape[1], device=logits.device)
    return logits.masked_fill(positions > q_pos.long()[:, None], float("-inf"))


def ragged_logits_to_positions(logits: torch.Tensor, ragged: RaggedKeys, q_pos: torch.Tensor, length: int):
    """fp8_mqa_logits' [T, N] (column = ragged row) -> ours [T, L] by position, -inf past q_pos."""
    columns = ragged.ks.long()[:, None] + torch.arange(length, device=logits.device)  # [T, L]
    gathered = logits.gather(1, columns.clamp_max(max(logits.shape[1] - 1, 0)))
    return causal_logits(gathered, q_pos)


# ---- outputs -------------------------------------------------------------------------------------------------


def mla_output(out, lse, num_heads, empty, out_dtype, return_lse):
    """Kernel out [T, H', v] / lse [T, H'] -> ours: the first num_heads heads; empty rows (no valid top-k entry)
    get out 0 and lse -inf (FlashMLA writes +inf there)."""
    out = out[:, :num_heads]
    out = torch.where(empty[:, None, None], 0.0, out.float()).to(out_dtype)
    if not return_lse:
        return out
    lse = lse[:, :num_heads].float()
    return out, torch.where(empty[:, None], float("-inf"), lse)


def pool_bytes(kv_cache: torch.Tensor, qk_dim: int, v_dim: int) -> torch.Tensor:
    """A packed FP8 pool typed float8_e4m3fn (SGLang's pool dtype for it) as the uint8 rows it is; else as is."""
    packed = kv_cache.dim() == 2 and kv_cache.shape[1] == fp8_kv_width(v_dim, qk_dim - v_dim)
    return kv_cache.view(torch.uint8) if packed and kv_cache.dtype == torch.float8_e4m3fn else kv_cache


def latent_dims(kv_cache: torch.Tensor, qk_dim: int, v_dim: int):
    """(is_fp8, rope_dim) of a pool: [S, 656] uint8 FP8 rows or [S, qk_dim] bf16."""
    rope_dim = qk_dim - v_dim
    if kv_cache.dtype == torch.uint8:
        if kv_cache.dim() != 2 or kv_cache.shape[1] != fp8_kv_width(v_dim, rope_dim):
            raise ValueError(f"kv_cache: FP8 pool rows are {fp8_kv_width(v_dim, rope_dim)} bytes "
                             f"(FlashMLA's V32 layout), got shape {tuple(kv_cache.shape)}")  # fmt: skip
        return True, rope_dim
    if kv_cache.dtype != torch.bfloat16 or kv_cache.dim() != 2 or kv_cache.shape[1] != qk_dim:
        raise TypeError(f"kv_cache: FlashMLA reads a [slots, {qk_dim}] bfloat16 pool or the [slots, "
                        f"{fp8_kv_width(v_dim, rope_dim)}] uint8 FP8 pool, got {kv_cache.dtype} "
                        f"{tuple(kv_cache.shape)}")  # fmt: skip
    return False, rope_dim
