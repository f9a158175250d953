"""Where the DSA indexer's keys live: one interface, two stores.

- `PoolFP8IndexKStore` (GPU default): SGLang's own `DSATokenToKVPool` index-K buffer. Per indexer layer, pages of
  `page` slots, each page | page x index_head_dim e4m3 key bytes | page x fp32 scales | (SGLang's, FlashInfer's and
  DeepGEMM's paged layout: 132 B per token for GLM-5). Keys are written Hadamard-rotated and quantized per token, as
  DeepSeek's indexer does (the rotation is orthogonal, so every q . k is unchanged; it spreads outliers before e4m3),
  read by the implementation's `indexer_logits_fp8` with the query rotated and quantized per (token, head) the same
  way. Everything SGLang does to its pool (radix reuse, `move_kv_cache`, retraction's CPU copy, PD transfer, HiCache)
  carries these keys; the backend holds no tensor of its own.
- `ModelDtypeIndexKStore` (CPU default, parity with HF transformers, which computes the indexer unquantized): one
  private model-dtype row per KV slot and indexer layer, read by `indexer_logits`.

A store writes a layer's new keys (`write`) and hands the indexer what it reads (`read` -> `IndexKeys`); `IndexKeys`
scores queries with a phase implementation (`logits`). A new implementation that reads the pool's pages itself (a
paged FP8 indexer kernel, flashmla's) sets `index_k_pages` in the table: its `indexer_logits` then gets
`FP8PoolKeys.pool_pages` (the raw buffer), `slots` (SGLang's slot table) and q multiplied by `rotation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from sglang_glm5.dsa.reference import quantize_fp8_rows

SCALE_BYTES = 4  # fp32 per-token scale
FP8_DTYPE = torch.float8_e4m3fn  # what SGLang's DSA pool stores on CUDA (kernels/ops/kvcache/dsa_index_k_cache.py)


class IndexKStoreError(ValueError):
    pass


def hadamard_matrix(dim: int, device=None) -> torch.Tensor:
    """Orthonormal Sylvester-Hadamard matrix [dim, dim] fp32 (dim a power of two): H @ H.T == I."""
    if dim < 1 or dim & (dim - 1):
        raise IndexKStoreError(f"index_head_dim {dim}: the FP8 index-K store's Hadamard rotation needs a power of two")
    h = torch.ones(1, 1, device=device)
    while h.shape[0] < dim:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(dim)


class IndexKeys(Protocol):
    page_table: torch.Tensor  # [B, L] int: the row of position p of request b in what the keys are read from

    def logits(self, impl, q, weights, q_seq, q_pos) -> torch.Tensor:  # [t, L] fp32
        ...


@dataclass(frozen=True)
class ModelDtypeKeys:
    keys: torch.Tensor  # [S, D] model dtype
    page_table: torch.Tensor  # [B, L]

    def logits(self, impl, q, weights, q_seq, q_pos):
        return impl.indexer_logits(q, weights, self.keys, self.page_table, q_seq, q_pos)


@dataclass(frozen=True)
class FP8PoolKeys:
    """One layer's page buffer of SGLang's pool, as the [rows, D] e4m3 keys + [rows] scales an FP8 indexer takes.

    A page of P slots is P*(D+4) bytes = P + 4P/D rows of D bytes: key rows first, then the scale rows. So the keys
    are a zero-copy [pages * (P + 4P/D), D] view and slot s is row (s // P) * (P + 4P/D) + s % P; the scales are
    copied into a table indexed by the same rows (4 B per slot, 3% of the buffer), the store's preallocated one.
    """

    pool_pages: torch.Tensor  # [pages, P * (D + 4)] uint8, SGLang's buffer for the layer
    keys: torch.Tensor  # [pages * rows_per_page, D] e4m3, a view of pool_pages
    scale: torch.Tensor  # [pages * rows_per_page] fp32, scale of each key row (1 on scale rows)
    page_table: torch.Tensor  # [B, L] key rows (slots translated)
    rotation: torch.Tensor  # [D, D] Hadamard, applied to q as it was to the keys
    slots: torch.Tensor  # [B, L] SGLang's slot table (req_to_token rows), for implementations that read the pages

    def logits(self, impl, q, weights, q_seq, q_pos):
        if impl.index_k_pages:  # e.g. flashmla (DeepGEMM's paged FP8 indexer): the pages as they are, q rotated
            return impl.indexer_logits(q.float() @ self.rotation, weights, self.pool_pages, self.slots, q_seq, q_pos)
        if impl.indexer_logits_fp8 is None:
            raise IndexKStoreError(f"DSA implementation {impl.name} has no indexer_logits_fp8 for the FP8 index-K store")
        q_fp8, q_scale = quantize_fp8_rows(q.float() @ self.rotation, self.keys.dtype)  # [t, H, D], [t, H]
        return impl.indexer_logits_fp8(q_fp8, q_scale, weights, self.keys, self.scale, self.page_table, q_seq, q_pos)


class IndexKStore(Protocol):
    name: str
    layers: tuple[int, ...]  # the layers that hold keys (IndexCache F layers, the MTP layer)

    def write(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor) -> None:  # loc [T], k [T, D]
        ...

    def read(self, layer_id: int, page_table: torch.Tensor, key_rows: torch.Tensor | None = None) -> IndexKeys:
        """key_rows: `page_table` already translated by `key_rows` (CUDA graphs: once per forward, not per layer)."""
        ...

    def private_bytes(self) -> int:  # bytes held beside SGLang's pool
        ...


class ModelDtypeIndexKStore:
    name = "model"
    translates_slots = False  # reads the keys at the page table's slots as they are

    def __init__(self, layers, slots: int, index_head_dim: int, dtype: torch.dtype, device):
        self.layers = tuple(sorted(layers))
        self.row = {layer: row for row, layer in enumerate(self.layers)}
        # Keys stay in the model dtype: the reference matches HF's unquantized indexer exactly.
        self.cache = torch.zeros((len(self.layers), slots, index_head_dim), dtype=dtype, device=device)  # [N, S, D]

    def _layer(self, layer_id: int) -> torch.Tensor:
        if layer_id not in self.row:
            raise IndexKStoreError(f"layer {layer_id} holds no indexer keys (an IndexCache S layer runs no indexer)")
        return self.cache[self.row[layer_id]]  # [S, D]

    def write(self, layer_id, loc, k):
        cache = self._layer(layer_id)
        cache[loc] = k.to(cache.dtype)

    def read(self, layer_id, page_table, key_rows=None):
        return ModelDtypeKeys(self._layer(layer_id), page_table)

    def private_bytes(self) -> int:
        return self.cache.nbytes


class PoolFP8IndexKStore:
    name = "pool-fp8"
    translates_slots = True  # reads keys at key_rows(slots): a graph state translates its page table once per forward

    def __init__(self, pool, layers):
        self.pool = pool
        self.layers = tuple(sorted(layers))
        self.dim = pool.index_head_dim
        self.page = pool.index_page_size
        if getattr(pool, "index_kpool", 1) != 1 or getattr(pool, "kpool_use_compress", False):
            raise IndexKStoreError("SGLang's DSA pool groups index keys (index_kpool > 1): not the per-token layout")
        if (self.page * SCALE_BYTES) % self.dim:
            raise IndexKStoreError(
                f"SGLang's DSA pool pages hold {self.page} slots: {self.page} fp32 scales are not whole "
                f"{self.dim}-byte rows; the FP8 index-K store reads 64-slot pages (CUDA)"
            )
        self.rows_per_page = self.page + self.page * SCALE_BYTES // self.dim  # 66 for 64 slots of 128 + 4 B
        missing = [layer for layer in self.layers if self._buffer(layer).shape[0] == 0]
        if missing:
            raise IndexKStoreError(
                f"SGLang's DSA pool allocated no index-K pages for layers {missing}, which run an indexer "
                f"(hf_config.indexer_types disagrees with the model's IndexCache plan)"
            )
        self.rotation = hadamard_matrix(self.dim, pool.device)
        # the per-row scale table `read` hands the indexer, allocated once (a read inside a CUDA graph allocates
        # nothing): 1 on the scale rows (never selected by a key row), the layer's scales copied in per read
        pages = max(self._buffer(layer).shape[0] for layer in self.layers)
        self.row_scale = torch.ones(pages, self.rows_per_page, dtype=torch.float32, device=pool.device)

    def _buffer(self, layer_id: int) -> torch.Tensor:
        return self.pool.index_k_with_scale_buffer[layer_id - self.pool.start_layer]  # [pages, P * (D + 4)] uint8

    def _checked_buffer(self, layer_id: int) -> torch.Tensor:
        if layer_id not in self.layers:
            raise IndexKStoreError(f"layer {layer_id} holds no indexer keys (an IndexCache S layer runs no indexer)")
        return self.pool.get_index_k_with_scale_buffer(layer_id)  # waits for a layer-wise transfer (HiCache, PD)

    def key_rows(self, slots: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Slot -> row of the [pages * rows_per_page, D] key view; written into `out` (int64, slots' shape) if given,
        allocating nothing."""
        if out is None:
            return slots + (slots // self.page) * (self.rows_per_page - self.page)
        torch.div(slots, self.page, rounding_mode="floor", out=out)
        return out.mul_(self.rows_per_page - self.page).add_(slots)

    def _views(self, buf: torch.Tensor):
        pages = buf.shape[0]
        keys = buf.view(pages * self.rows_per_page, self.dim)  # [rows, D] uint8, zero copy
        scales = buf[:, self.page * self.dim :].view(torch.float32)  # [pages, P] fp32 (strided view)
        return keys, scales

    def write(self, layer_id, loc, k):
        buf = self._checked_buffer(layer_id)
        k_fp8, k_scale = quantize_fp8_rows(k.float() @ self.rotation, FP8_DTYPE)  # [T, D], [T]
        keys, scales = self._views(buf)
        loc = loc.long()
        keys[self.key_rows(loc)] = k_fp8.view(torch.uint8)
        scales[loc // self.page, loc % self.page] = k_scale

    def read(self, layer_id, page_table, key_rows=None):
        buf = self._checked_buffer(layer_id)
        keys, scales = self._views(buf)
        row_scale = self.row_scale[: buf.shape[0]]  # [pages, P + 4P/D], valid until the next read
        row_scale[:, : self.page].copy_(scales)
        return FP8PoolKeys(
            pool_pages=buf,
            keys=keys.view(FP8_DTYPE),
            scale=row_scale.view(-1),
            page_table=self.key_rows(page_table.long()) if key_rows is None else key_rows,
            rotation=self.rotation,
            slots=page_table,
        )

    def private_bytes(self) -> int:
        return 0
