"""Batches, inputs, tolerances and readable ids shared by the kernel tests (sized for the Triton interpreter)."""

import math
from dataclasses import dataclass

import torch

KV_LORA_RANK, ROPE_DIM = 512, 64
QK_DIM, V_DIM = KV_LORA_RANK + ROPE_DIM, KV_LORA_RANK  # GLM-5's 576-d absorbed query / key, 512-d latent value
SM_SCALE = (192 + ROPE_DIM) ** -0.5
INDEX_DIM = 128
OUT_OF_RANGE = 1000  # page_table entries past a request's length: slot ids this many pools away

# kernel vs reference, both computing in fp32 from the same inputs; fp16 outputs add one fp16 rounding
TOL = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    # one bf16 ulp (2**-7 relative): the interpreter truncates fp32 -> bf16 stores where a GPU rounds to nearest
    torch.bfloat16: dict(atol=1e-3, rtol=8e-3),
    torch.float8_e4m3fn: dict(atol=1e-4, rtol=2e-5),  # scales applied after the dot instead of before
}
# sparse MLA output: the kernels feed the tensor cores q.dtype tiles, so P = exp2(s - m) in [0, 1] is rounded to
# q.dtype before P @ V (as FlashMLA does): up to 2**-9 (bf16) / 2**-12 (fp16) relative per weight, plus the store
MLA_OUT_TOL = {**TOL, torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2)}
DTYPE_ID = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float8_e4m3fn: "fp8"}


@dataclass
class Batch:
    page_table: torch.Tensor  # [B, L] int32
    q_seq: torch.Tensor  # [T]
    q_pos: torch.Tensor  # [T]
    num_slots: int

    @property
    def num_tokens(self):
        return self.q_seq.shape[0]

    def referenced_slots(self):
        return {int(self.page_table[int(b), p]) for b, n in zip(self.q_seq, self.q_pos) for p in range(int(n) + 1)}


def make_batch(lengths, new_tokens, gen, page_size=64):
    """Each request's positions on whole pages of `page_size` slots, pages shuffled over the pool (1 = per token).

    page_table entries past a request's length hold out-of-range slot ids: reading one fails.
    """
    pages = [math.ceil(n / page_size) for n in lengths]
    num_slots = (sum(pages) + 1) * page_size
    page_ids = torch.randperm(num_slots // page_size, generator=gen)
    page_table = torch.full((len(lengths), max(lengths)), OUT_OF_RANGE * num_slots, dtype=torch.int32)
    offset = 0
    for b, (n, count) in enumerate(zip(lengths, pages)):
        runs = page_ids[offset : offset + count, None] * page_size + torch.arange(page_size)  # [pages, page_size]
        page_table[b, :n] = runs.flatten()[:n].to(torch.int32)
        offset += count
    q_seq = torch.cat([torch.full((q,), b) for b, q in enumerate(new_tokens)])
    q_pos = torch.cat([torch.arange(n - q, n) for n, q in zip(lengths, new_tokens)])
    return Batch(page_table, q_seq, q_pos, num_slots)


def nan_except(cache, slots):
    """The cache with every row outside `slots` set to NaN: a kernel reading one shows it."""
    keep = torch.zeros(cache.shape[0], dtype=torch.bool)
    keep[sorted(slots)] = True
    return torch.where(keep.view(-1, *[1] * (cache.dim() - 1)), cache.float(), float("nan")).to(cache.dtype)


def random_topk(batch, k, gen, empty_rows=()):
    """Random distinct valid positions per token, -1 padded, shuffled (kernels must not rely on order)."""
    rows = []
    for t in range(batch.num_tokens):
        n = int(batch.q_pos[t]) + 1
        chosen = [] if t in empty_rows else torch.randperm(n, generator=gen)[: min(k, n)].tolist()
        row = torch.tensor(chosen + [-1] * (k - len(chosen)), dtype=torch.int32)
        rows.append(row[torch.randperm(k, generator=gen)])
    return torch.stack(rows)


def sparse_mla_inputs(lengths, new, heads, dtype, topk, seed):
    """(batch, q [T, H, 576], kv_cache [S, 576] NaN outside the selected slots, topk [T, K] with the last row all -1)."""
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(lengths, new, gen)
    q = torch.randn(batch.num_tokens, heads, QK_DIM, generator=gen).to(dtype)  # [T, H, 576]
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen).to(dtype)  # [S, 576]
    sel = random_topk(batch, topk, gen, empty_rows={batch.num_tokens - 1})  # [T, K], last row all -1
    selected = {int(batch.page_table[int(b), p]) for b, row in zip(batch.q_seq, sel.tolist()) for p in row if p >= 0}
    return batch, q, nan_except(kv_cache, selected), sel


def batch_id(lengths, new_tokens):
    kind = "decode" if set(new_tokens) == {1} else "prefill"
    return f"B{len(lengths)}-S{'.'.join(map(str, lengths))}-{kind}"
