"""The DSA reference ops against per-token brute force and against HF transformers' GLM-MoE-DSA modules."""

import math
from dataclasses import dataclass

import pytest
import torch
from transformers import GlmMoeDsaConfig
from transformers.models.glm_moe_dsa import modeling_glm_moe_dsa as hf

from sglang_glm5.dsa.reference import (
    FP8_E4M3_MAX,
    dense_mla,
    gather_kv,
    indexer_logits,
    indexer_logits_fp8,
    quantize_fp8_rows,
    sparse_mla,
    sparse_mla_decode,
    sparse_mla_prefill,
    topk_positions,
)
from tests.dsa.cases import nan_except, random_topk

PAGE_SIZE = 64
KV_LORA_RANK, ROPE_DIM, QK_NOPE_DIM = 512, 64, 192
QK_DIM, V_DIM = KV_LORA_RANK + ROPE_DIM, KV_LORA_RANK  # 576-d absorbed query / key, 512-d latent value
SM_SCALE = (QK_NOPE_DIM + ROPE_DIM) ** -0.5
INDEX_HEADS, INDEX_DIM = 32, 128
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=1e-3, rtol=8e-3)}
DTYPE_ID = {torch.float32: "fp32", torch.bfloat16: "bf16"}

# (id, cached length per request, new query tokens per request)
BATCHES = [
    ("B3-L130-prefill", [1, 63, 130], [1, 63, 130]),
    ("B2-L200-chunk", [100, 200], [37, 64]),
    ("B4-L200-decode", [1, 64, 65, 200], [1, 1, 1, 1]),
]


@dataclass
class Batch:
    page_table: torch.Tensor  # [B, L]
    q_seq: torch.Tensor  # [T]
    q_pos: torch.Tensor  # [T]
    num_slots: int
    lengths: list

    @property
    def num_tokens(self):
        return self.q_seq.shape[0]

    def slot(self, t, p):
        return int(self.page_table[int(self.q_seq[t]), p])


def make_batch(lengths, new_tokens, gen, layout="paged", index_dtype=torch.int32):
    """Pool slots for each request, either whole 64-slot pages in shuffled order or a per-token shuffle.

    page_table entries past a request's length hold out-of-range slot ids: reading them would raise.
    """
    width = max(lengths)
    if layout == "paged":
        pages = [math.ceil(n / PAGE_SIZE) for n in lengths]
        num_slots = (sum(pages) + 1) * PAGE_SIZE
        page_ids = torch.randperm(num_slots // PAGE_SIZE, generator=gen)
        slots, offset = [], 0
        for n, count in zip(lengths, pages):
            runs = page_ids[offset : offset + count, None] * PAGE_SIZE + torch.arange(PAGE_SIZE)  # [pages, 64]
            slots.append(runs.flatten()[:n])
            offset += count
    else:
        num_slots = sum(lengths) + PAGE_SIZE
        perm = torch.randperm(num_slots, generator=gen)
        bounds = [0] + torch.tensor(lengths).cumsum(0).tolist()
        slots = [perm[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    page_table = torch.full((len(lengths), width), 1000 * num_slots, dtype=index_dtype)
    for b, s in enumerate(slots):
        page_table[b, : len(s)] = s.to(index_dtype)
    q_seq = torch.cat([torch.full((q,), b) for b, q in enumerate(new_tokens)]).to(index_dtype)
    q_pos = torch.cat([torch.arange(n - q, n) for n, q in zip(lengths, new_tokens)]).to(index_dtype)
    return Batch(page_table, q_seq, q_pos, num_slots, list(lengths))


def brute_indexer_logits(q, weights, k_cache, batch):
    T, _, D = q.shape
    out = torch.full((T, batch.page_table.shape[1]), float("-inf"))
    for t in range(T):
        keys = torch.stack([k_cache[batch.slot(t, p)].float() for p in range(int(batch.q_pos[t]) + 1)])  # [n, D]
        out[t, : keys.shape[0]] = (weights[t].float()[:, None] * torch.relu(q[t].float() @ keys.T / math.sqrt(D))).sum(0)
    return out


def brute_topk(logits, q_pos, k):
    rows = []
    for t in range(logits.shape[0]):
        valid = range(int(q_pos[t]) + 1)
        best = sorted(valid, key=lambda p: (-float(logits[t, p]), p))[:k]
        rows.append(sorted(best) + [-1] * (k - len(best)))
    return torch.tensor(rows, dtype=torch.int32)


def brute_sparse_mla(q, kv_cache, batch, topk, sm_scale, v_dim):
    T, H, _ = q.shape
    out, lse = torch.zeros(T, H, v_dim), torch.full((T, H), float("-inf"))
    for t in range(T):
        chosen = [p for p in topk[t].tolist() if p >= 0]
        if not chosen:
            continue
        kv = torch.stack([kv_cache[batch.slot(t, p)].float() for p in chosen])  # [n, Dqk]
        scores = q[t].float() @ kv.T * sm_scale  # [H, n]
        out[t] = torch.softmax(scores, dim=-1) @ kv[:, :v_dim]
        lse[t] = torch.logsumexp(scores, dim=-1)
    return out, lse


def mla_inputs(batch, heads, dtype, gen):
    q = torch.randn(batch.num_tokens, heads, QK_DIM, generator=gen).to(dtype)  # [T, H, 576]
    kv_cache = torch.randn(batch.num_slots, QK_DIM, generator=gen).to(dtype)  # [S, 576]
    return q, kv_cache


def referenced_slots(batch):
    return {batch.slot(t, p) for t in range(batch.num_tokens) for p in range(int(batch.q_pos[t]) + 1)}


def causal_mask(batch):
    return torch.arange(batch.page_table.shape[1]) <= batch.q_pos[:, None]  # [T, L]


# ---- indexer_logits ----


@pytest.mark.parametrize("layout", ["paged", "scattered"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_ID.get)
@pytest.mark.parametrize("name,lengths,new", BATCHES, ids=[b[0] for b in BATCHES])
def test_indexer_logits_vs_brute_force(name, lengths, new, dtype, layout):
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(lengths, new, gen, layout)
    q = torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen).to(dtype)
    weights = (torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5).to(dtype)
    k_cache = torch.randn(batch.num_slots, INDEX_DIM, generator=gen).to(dtype)

    ours = indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    assert ours.dtype == torch.float32 and ours.shape == (batch.num_tokens, max(lengths))
    # both sides compute in fp32 from the same (possibly bf16) inputs
    torch.testing.assert_close(ours, brute_indexer_logits(q, weights, k_cache, batch), **TOL[torch.float32])


FP8_IDS = {torch.float8_e4m3fn: "e4m3fn", torch.float8_e4m3fnuz: "e4m3fnuz"}


@pytest.mark.parametrize("dtype", list(FP8_IDS), ids=list(FP8_IDS.values()))
def test_quantize_fp8_rows_error_bound(dtype):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 7, INDEX_DIM, generator=gen) * torch.logspace(-3, 3, 7)[:, None]
    x[0, 0] = 0.0  # an all-zero row gets scale 1, not 0/0
    x_fp8, scale = quantize_fp8_rows(x, dtype)
    assert x_fp8.dtype == dtype and scale.shape == (5, 7) and scale[0, 0] == 1.0
    back = x_fp8.float() * scale[..., None]
    info = torch.finfo(dtype)
    # e4m3: 3 mantissa bits (relative error <= 2**-4); below the smallest normal the spacing is smallest_normal / 8
    assert ((back - x).abs() <= x.abs() * 2**-4 + scale[..., None] * info.smallest_normal / 8).all()
    assert torch.equal(x_fp8.float().abs().amax(-1)[1:], torch.full((4, 7), info.max))
    assert info.max == (FP8_E4M3_MAX if dtype == torch.float8_e4m3fn else 240.0)


@pytest.mark.parametrize("dtype", list(FP8_IDS), ids=list(FP8_IDS.values()))
@pytest.mark.parametrize("name,lengths,new", BATCHES, ids=[b[0] for b in BATCHES])
def test_indexer_logits_fp8_is_the_dequantized_indexer(name, lengths, new, dtype):
    gen = torch.Generator().manual_seed(12)
    batch = make_batch(lengths, new, gen, "paged")
    q_fp8, q_scale = quantize_fp8_rows(torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen), dtype)
    k_fp8, k_scale = quantize_fp8_rows(torch.randn(batch.num_slots, INDEX_DIM, generator=gen), dtype)
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    k_scale = nan_except(k_scale[:, None], referenced_slots(batch))[:, 0]  # unreferenced scales never read

    ours = indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
    k_deq = torch.nan_to_num(k_fp8.float() * k_scale[:, None])
    brute = brute_indexer_logits(q_fp8.float() * q_scale[..., None], weights, k_deq, batch)
    torch.testing.assert_close(ours, brute, **TOL[torch.float32])


def _hf_index_scores(q, k, weights, attention_mask):
    """HF GlmMoeDsaIndexer.forward's scoring lines, verbatim. q [B,S,H,D], k [B,S,D], weights [B,S,H]."""
    scores = torch.matmul(q.float(), k.transpose(-1, -2).float().unsqueeze(1)) * q.shape[-1] ** -0.5
    scores = torch.relu(scores)
    index_scores = torch.matmul(weights.unsqueeze(-2), scores).squeeze(-2)
    return index_scores.masked_fill(~attention_mask, float("-inf"))


def test_indexer_logits_equal_hf_formula():
    gen = torch.Generator().manual_seed(1)
    lengths = [5, 70]
    batch = make_batch(lengths, lengths, gen, "scattered")
    q = torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen)
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    k_cache = torch.randn(batch.num_slots, INDEX_DIM, generator=gen)
    ours = indexer_logits(q, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)

    start = 0
    for b, n in enumerate(lengths):
        k = k_cache[batch.page_table[b, :n].long()]  # [n, D] in position order
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        hf_scores = _hf_index_scores(q[None, start : start + n], k[None], weights[None, start : start + n], causal[None])
        torch.testing.assert_close(ours[start : start + n, :n], hf_scores[0], **TOL[torch.float32])
        assert torch.isneginf(ours[start : start + n, n:]).all()
        start += n


def _small_config(index_topk):
    cfg = GlmMoeDsaConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16,
        qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10, index_n_heads=16, index_head_dim=24,
        index_topk=index_topk, num_hidden_layers=1, vocab_size=128,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    return cfg


def _causal_float_mask(n):
    return torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]  # [1, 1, n, n]


def _hf_indexer_qkw(indexer, hidden, q_resid, cos, sin):
    """q [S, H, D], k [S, D], weights [S, H] exactly as GlmMoeDsaIndexer.forward builds them (batch 1)."""
    rope = indexer.qk_rope_head_dim
    q = indexer.wq_b(q_resid).view(hidden.shape[0], indexer.n_heads, indexer.head_dim)
    k = indexer.k_norm(indexer.wk(hidden))[:, None]  # [S, 1, D]
    q_rot, k_rot = hf.apply_rotary_pos_emb_interleave(q[..., :rope], k[..., :rope], cos, sin, unsqueeze_dim=1)
    q = torch.cat([q_rot, q[..., rope:]], dim=-1)
    k = torch.cat([k_rot, k[..., rope:]], dim=-1)[:, 0]
    return q, k, indexer.weights_proj(hidden) * indexer.n_heads**-0.5


def _hf_topk_sets(hf_topk, q_pos):
    """HF pads short rows with masked positions; keep only the causal ones."""
    return [{p for p in row.tolist() if p <= int(t)} for row, t in zip(hf_topk, q_pos)]


def _our_sets(topk):
    return [{p for p in row.tolist() if p >= 0} for row in topk]


@pytest.mark.parametrize("chunk_start", [0, 23], ids=lambda s: f"chunk{s}")
def test_topk_matches_hf_indexer_module(chunk_start):
    torch.manual_seed(2)
    seq_len, index_topk = 40, 8
    cfg = _small_config(index_topk)
    indexer = hf.GlmMoeDsaIndexer(cfg, 0).eval()
    hidden = torch.randn(1, seq_len, cfg.hidden_size)
    q_resid = torch.randn(1, seq_len, cfg.q_lora_rank)
    cos, sin = hf.GlmMoeDsaRotaryEmbedding(cfg)(hidden, torch.arange(seq_len)[None])
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()[None]
    with torch.no_grad():
        hf_topk = indexer(hidden, q_resid, (cos, sin), causal, None)[0]  # [S, topk]
        q, k, weights = _hf_indexer_qkw(indexer, hidden[0], q_resid[0], cos[0], sin[0])

    gen = torch.Generator().manual_seed(2)
    batch = make_batch([seq_len], [seq_len - chunk_start], gen, "scattered")
    k_cache = torch.zeros(batch.num_slots, cfg.index_head_dim)
    k_cache[batch.page_table[0].long()] = k
    rows = slice(chunk_start, seq_len)
    logits = indexer_logits(q[rows], weights[rows], k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    ours = topk_positions(logits, batch.q_pos, index_topk)
    assert _our_sets(ours) == _hf_topk_sets(hf_topk[rows], batch.q_pos)


# ---- topk_positions ----


@pytest.mark.parametrize(
    "length,k,score_range",
    [(130, 16, None), (130, 200, None), (70, 16, 3), (10, 16, 2)],
    ids=["L130-topk16", "L130-topk200", "L70-topk16-ties", "L10-topk16-ties"],
)
def test_topk_positions_vs_brute_force(length, k, score_range):
    gen = torch.Generator().manual_seed(3)
    q_pos = torch.cat([torch.tensor([0, 1, k - 1, length - 1]), torch.randint(0, length, (12,), generator=gen)])
    q_pos = q_pos.clamp(max=length - 1).to(torch.int32)
    if score_range is None:
        logits = torch.randn(q_pos.shape[0], length, generator=gen)
    else:  # few distinct values: many exact ties, resolved to lower positions
        logits = torch.randint(0, score_range, (q_pos.shape[0], length), generator=gen).float()
    ours = topk_positions(logits, q_pos, k)
    assert ours.dtype == torch.int32 and ours.shape == (q_pos.shape[0], k)
    assert torch.equal(ours, brute_topk(logits, q_pos, k))



@pytest.mark.parametrize("k", [1, 7, 40, 90], ids=lambda k: f"topk{k}")
def test_topk_positions_mixed_specials_vs_brute_force(k):
    """Ties, NaN, +-inf and rows of both kinds in one batch: a tie cut at the k-th score (resolved to lower
    positions) next to rows whose top-k set is tie-free, so both of topk_positions' paths meet brute force."""
    gen = torch.Generator().manual_seed(k)
    logits = torch.randint(-3, 3, (24, 63), generator=gen).float()  # [T, L], many exact ties
    logits[::2] = torch.randn(12, 63, generator=gen)  # even rows: no ties
    special = torch.rand(logits.shape, generator=gen)
    logits[(special < 0.05)] = float("nan")
    logits[(special > 0.95)] = float("inf")
    logits[(special > 0.45) & (special < 0.5)] = float("-inf")
    q_pos = torch.randint(0, 63, (24,), generator=gen)
    want = []  # brute_topk's rule with torch.sort's order, in which NaN ranks above +inf
    for row, last in zip(logits, q_pos.tolist()):
        best = torch.sort(row[: last + 1], descending=True, stable=True).indices[:k].sort().values.tolist()
        want.append(best + [-1] * (k - len(best)))
    assert torch.equal(topk_positions(logits, q_pos, k), torch.tensor(want, dtype=torch.int32))
    no_special = torch.randn(3, 63, generator=gen)  # the tie-free shortcut on its own
    q_pos = torch.tensor([62, 30, 0])
    assert torch.equal(topk_positions(no_special, q_pos, k), brute_topk(no_special, q_pos, k))

def test_topk_positions_padding_ties_and_invalid_scores():
    logits = torch.tensor(
        [
            [1.0, 5.0, 5.0, float("nan"), float("inf")],  # q_pos 2: invalid NaN / +inf ignored
            [2.0, 2.0, 2.0, 2.0, 2.0],  # exact ties -> lowest positions
            [float("-inf")] * 5,  # valid positions still selected when all scores are -inf
            [0.0, 9.0, 1.0, 8.0, 7.0],
        ]
    )
    q_pos = torch.tensor([2, 4, 1, 4])
    top2 = torch.tensor([[1, 2], [0, 1], [0, 1], [1, 3]], dtype=torch.int32)
    assert torch.equal(topk_positions(logits, q_pos, 2), top2)
    top3 = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, -1], [1, 3, 4]], dtype=torch.int32)
    assert torch.equal(topk_positions(logits, q_pos, 3), top3)
    wide = topk_positions(logits, q_pos, 7)  # k > L
    assert torch.equal(wide[0], torch.tensor([0, 1, 2, -1, -1, -1, -1], dtype=torch.int32))
    assert torch.equal(wide[1], torch.tensor([0, 1, 2, 3, 4, -1, -1], dtype=torch.int32))


# ---- sparse_mla / dense_mla ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_ID.get)
@pytest.mark.parametrize("topk", [16, 256], ids=lambda k: f"topk{k}")
@pytest.mark.parametrize("heads", [8, 16, 32, 64], ids=lambda h: f"H{h}")
@pytest.mark.parametrize("name,lengths,new", BATCHES, ids=[b[0] for b in BATCHES])
def test_sparse_mla_vs_brute_force(name, lengths, new, heads, topk, dtype):
    gen = torch.Generator().manual_seed(4)
    batch = make_batch(lengths, new, gen, "paged" if heads % 16 else "scattered")
    q, kv_cache = mla_inputs(batch, heads, dtype, gen)
    sel = random_topk(batch, topk, gen, empty_rows={batch.num_tokens - 1})
    entry = sparse_mla_decode if name.endswith("decode") else sparse_mla_prefill

    out, lse = entry(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM, return_lse=True)
    ref_out, ref_lse = brute_sparse_mla(q, kv_cache, batch, sel, SM_SCALE, V_DIM)
    assert out.dtype == dtype and out.shape == (batch.num_tokens, heads, V_DIM)
    torch.testing.assert_close(out.float(), ref_out, **TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, **TOL[torch.float32])
    assert torch.equal(out[-1], torch.zeros_like(out[-1])) and torch.isneginf(lse[-1]).all()  # all -1 row
    assert torch.equal(out, sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_ID.get)
@pytest.mark.parametrize("name,lengths,new", BATCHES, ids=[b[0] for b in BATCHES])
def test_sparse_mla_with_all_positions_equals_dense(name, lengths, new, dtype):
    gen = torch.Generator().manual_seed(5)
    batch = make_batch(lengths, new, gen, "paged", index_dtype=torch.int64)
    q, kv_cache = mla_inputs(batch, 16, dtype, gen)
    logits = torch.randn(batch.num_tokens, max(lengths), generator=gen)
    sel = topk_positions(logits, batch.q_pos, max(lengths) + 5)  # k >= length: everything selected
    sparse = sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    dense, lse = dense_mla(q, kv_cache, batch.page_table, batch.q_seq, batch.q_pos, SM_SCALE, V_DIM, return_lse=True)
    ref_out, ref_lse = brute_sparse_mla(q, kv_cache, batch, sel, SM_SCALE, V_DIM)
    torch.testing.assert_close(sparse, dense, **TOL[dtype])
    torch.testing.assert_close(dense.float(), ref_out, **TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, **TOL[torch.float32])


def test_sparsity_is_real():
    gen = torch.Generator().manual_seed(6)
    batch = make_batch([130, 90], [130, 90], gen, "paged")
    q, kv_cache = mla_inputs(batch, 8, torch.float32, gen)
    sel = random_topk(batch, 16, gen)
    base = sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)

    position = 40
    touched = kv_cache.clone()
    touched[batch.page_table[0, position]] += 1.0
    changed = sparse_mla(q, touched, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    uses = (batch.q_seq == 0) & (sel == position).any(-1)  # [T]
    assert uses.any() and (~uses).any()
    assert torch.equal(changed[~uses], base[~uses])
    assert (changed[uses] != base[uses]).flatten(1).any(-1).all()


def test_nan_in_unused_slots_does_not_leak():
    gen = torch.Generator().manual_seed(7)
    batch = make_batch([1, 63, 130], [1, 20, 130], gen, "scattered")
    q, kv_cache = mla_inputs(batch, 8, torch.bfloat16, gen)
    sel = random_topk(batch, 16, gen, empty_rows={0, 5})
    selected = {batch.slot(t, p) for t in range(batch.num_tokens) for p in sel[t].tolist() if p >= 0}
    sparse = sparse_mla(q, nan_except(kv_cache, selected), batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM)
    assert torch.isfinite(sparse).all()
    torch.testing.assert_close(sparse, sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM))

    used = referenced_slots(batch)
    dense = dense_mla(q, nan_except(kv_cache, used), batch.page_table, batch.q_seq, batch.q_pos, SM_SCALE, V_DIM)
    assert torch.isfinite(dense).all()
    k_cache = nan_except(torch.randn(batch.num_slots, INDEX_DIM, generator=gen), used)
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen)
    q_idx = torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen)
    logits = indexer_logits(q_idx, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    assert not logits.isnan().any() and torch.isfinite(logits[causal_mask(batch)]).all()


def test_gather_kv_zero_for_padding():
    gen = torch.Generator().manual_seed(8)
    batch = make_batch([70], [3], gen, "paged")
    cache = torch.randn(batch.num_slots, 4, generator=gen)
    positions = torch.tensor([[69, -1], [0, 64], [-1, -1]])
    rows = gather_kv(cache, batch.page_table, batch.q_seq, positions)
    assert torch.equal(rows[0, 0], cache[batch.page_table[0, 69]])
    assert torch.equal(rows[1, 1], cache[batch.page_table[0, 64]])
    assert torch.equal(rows[positions < 0], torch.zeros(3, 4))


# ---- HF attention end to end ----


def test_absorbed_dsa_pipeline_matches_hf_attention():
    """Indexer -> top-k -> sparse MLA in the absorbed latent space reproduces GlmMoeDsaAttention.forward."""
    torch.manual_seed(9)
    seq_len, index_topk = 12, 5
    cfg = _small_config(index_topk)
    attn = hf.GlmMoeDsaAttention(cfg, 0).eval()
    hidden = torch.randn(1, seq_len, cfg.hidden_size)
    cos, sin = hf.GlmMoeDsaRotaryEmbedding(cfg)(hidden, torch.arange(seq_len)[None])
    with torch.no_grad():
        hf_out, _, hf_topk = attn(hidden, (cos, sin), _causal_float_mask(seq_len))

        h, heads, nope, rope = hidden[0], cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        q_resid = attn.q_a_layernorm(attn.q_a_proj(h))
        q = attn.q_b_proj(q_resid).view(seq_len, heads, nope + rope)
        latent, k_rot = attn.kv_a_proj_with_mqa(h).split([cfg.kv_lora_rank, rope], dim=-1)
        q_rot, k_rot = hf.apply_rotary_pos_emb_interleave(q[..., nope:], k_rot[:, None], cos[0], sin[0])
        w_kv = attn.kv_b_proj.weight.view(heads, nope + cfg.v_head_dim, cfg.kv_lora_rank)
        q_abs = torch.cat([torch.einsum("shn,hnr->shr", q[..., :nope], w_kv[:, :nope]), q_rot], -1)  # [S, H, R+r]
        kv_rows = torch.cat([attn.kv_a_layernorm(latent), k_rot[:, 0]], -1)  # [S, R+r]
        qi, ki, wi = _hf_indexer_qkw(attn.indexer, h, q_resid, cos[0], sin[0])

        gen = torch.Generator().manual_seed(9)
        batch = make_batch([seq_len], [seq_len], gen, "scattered")
        kv_cache = torch.zeros(batch.num_slots, kv_rows.shape[-1])
        kv_cache[batch.page_table[0].long()] = kv_rows
        k_cache = torch.zeros(batch.num_slots, cfg.index_head_dim)
        k_cache[batch.page_table[0].long()] = ki
        logits = indexer_logits(qi, wi, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
        sel = topk_positions(logits, batch.q_pos, index_topk)
        out_latent = sparse_mla(q_abs, kv_cache, batch.page_table, batch.q_seq, sel, attn.scaling, cfg.kv_lora_rank)
        out_v = torch.einsum("shr,hvr->shv", out_latent, w_kv[:, nope:])  # [S, H, v]
        ours = attn.o_proj(out_v.reshape(seq_len, -1))

    assert _our_sets(sel) == _hf_topk_sets(hf_topk[0], batch.q_pos)
    torch.testing.assert_close(ours, hf_out[0], **TOL[torch.float32])


# ---- argument validation ----


def _valid_args():
    gen = torch.Generator().manual_seed(10)
    batch = make_batch([5, 9], [5, 1], gen, "scattered")
    q, kv_cache = mla_inputs(batch, 8, torch.float32, gen)
    return batch, q, kv_cache, random_topk(batch, 4, gen)


def _bad(argument, op, call):
    return pytest.param(argument, call, id=f"{op}-{argument}")


@pytest.mark.parametrize(
    "argument,call",
    [
        _bad("q", "sparse_mla", lambda b, q, kv, s: sparse_mla(q[0], kv, b.page_table, b.q_seq, s, SM_SCALE, V_DIM)),
        _bad("kv_cache", "sparse_mla", lambda b, q, kv, s: sparse_mla(q, kv[:, 1:], b.page_table, b.q_seq, s, SM_SCALE, V_DIM)),
        _bad("page_table", "sparse_mla", lambda b, q, kv, s: sparse_mla(q, kv, b.page_table.float(), b.q_seq, s, SM_SCALE, V_DIM)),
        _bad("q_seq", "sparse_mla", lambda b, q, kv, s: sparse_mla(q, kv, b.page_table, b.q_seq + 5, s, SM_SCALE, V_DIM)),
        _bad("topk", "sparse_mla", lambda b, q, kv, s: sparse_mla(q, kv, b.page_table, b.q_seq, s + 100, SM_SCALE, V_DIM)),
        _bad("v_dim", "sparse_mla", lambda b, q, kv, s: sparse_mla(q, kv, b.page_table, b.q_seq, s, SM_SCALE, QK_DIM + 1)),
        _bad("q_seq", "sparse_mla_decode", lambda b, q, kv, s: sparse_mla_decode(q, kv, b.page_table, b.q_seq, s, SM_SCALE, V_DIM)),
        _bad("q_pos", "dense_mla", lambda b, q, kv, s: dense_mla(q, kv, b.page_table, b.q_seq, b.q_pos + 9, SM_SCALE, V_DIM)),
        _bad("weights", "indexer_logits", lambda b, q, kv, s: indexer_logits(q, q[:, 1:, 0], kv, b.page_table, b.q_seq, b.q_pos)),
        _bad("k_cache", "indexer_logits", lambda b, q, kv, s: indexer_logits(q, q[..., 0], kv[:, 1:], b.page_table, b.q_seq, b.q_pos)),
        _bad("k_fp8", "indexer_logits_fp8", lambda b, q, kv, s: indexer_logits_fp8(
            q.to(torch.float8_e4m3fn), q[..., 0], q[..., 0], kv, kv[:, 0], b.page_table, b.q_seq, b.q_pos)),
        _bad("k_fp8", "indexer_logits_fp8", lambda b, q, kv, s: indexer_logits_fp8(
            q.to(torch.float8_e4m3fn), q[..., 0], q[..., 0], kv.to(torch.float8_e4m3fnuz), kv[:, 0],
            b.page_table, b.q_seq, b.q_pos)),
        _bad("q_scale", "indexer_logits_fp8", lambda b, q, kv, s: indexer_logits_fp8(
            q.to(torch.float8_e4m3fn), q[:, 1:, 0], q[..., 0], kv.to(torch.float8_e4m3fn), kv[:, 0],
            b.page_table, b.q_seq, b.q_pos)),
        _bad("logits", "topk_positions", lambda b, q, kv, s: topk_positions(s, b.q_pos, 4)),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(argument, call):
    with pytest.raises((ValueError, TypeError), match=argument):
        call(*_valid_args())


# ---- chunking (the ops read keys in KEY_CHUNK slices and tokens in CHUNK_ELEMENTS groups) ----


@pytest.mark.parametrize("key_chunk,chunk_elements", [(7, 1), (64, 5000)], ids=["K7-E1", "K64-E5000"])
@pytest.mark.parametrize("name,lengths,new", BATCHES[1:], ids=[b[0] for b in BATCHES[1:]])
def test_chunked_ops_equal_brute_force(name, lengths, new, key_chunk, chunk_elements, monkeypatch):
    """Chunk sizes smaller than the problem (odd, crossing page boundaries) give the same results as brute force."""
    from sglang_glm5.dsa import reference as dsa_reference

    monkeypatch.setattr(dsa_reference, "KEY_CHUNK", key_chunk)
    monkeypatch.setattr(dsa_reference, "CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(13)
    batch = make_batch(lengths, new, gen, "paged")
    q_idx = torch.randn(batch.num_tokens, INDEX_HEADS, INDEX_DIM, generator=gen)
    weights = torch.randn(batch.num_tokens, INDEX_HEADS, generator=gen) * INDEX_HEADS**-0.5
    k_cache = nan_except(torch.randn(batch.num_slots, INDEX_DIM, generator=gen), referenced_slots(batch))
    logits = indexer_logits(q_idx, weights, k_cache, batch.page_table, batch.q_seq, batch.q_pos)
    torch.testing.assert_close(logits, brute_indexer_logits(q_idx, weights, k_cache, batch), **TOL[torch.float32])

    k_fp8, k_scale = quantize_fp8_rows(k_cache.nan_to_num())
    q_fp8, q_scale = quantize_fp8_rows(q_idx)
    ours_fp8 = indexer_logits_fp8(q_fp8, q_scale, weights, k_fp8, k_scale, batch.page_table, batch.q_seq, batch.q_pos)
    brute_fp8 = brute_indexer_logits(q_fp8.float() * q_scale[..., None], weights, k_fp8.float() * k_scale[:, None], batch)
    torch.testing.assert_close(ours_fp8, brute_fp8, **TOL[torch.float32])

    q, kv_cache = mla_inputs(batch, 8, torch.float32, gen)
    kv_cache = nan_except(kv_cache, referenced_slots(batch))
    sel = random_topk(batch, 16, gen, empty_rows={0})
    out, lse = sparse_mla(q, kv_cache, batch.page_table, batch.q_seq, sel, SM_SCALE, V_DIM, return_lse=True)
    ref_out, ref_lse = brute_sparse_mla(q, kv_cache, batch, sel, SM_SCALE, V_DIM)
    torch.testing.assert_close(out, ref_out, **TOL[torch.float32])
    torch.testing.assert_close(lse, ref_lse, **TOL[torch.float32])

    every = causal_mask(batch).long() * (torch.arange(max(lengths)) + 1) - 1  # [T, L]: causal positions, else -1
    dense, dense_lse = dense_mla(q, kv_cache, batch.page_table, batch.q_seq, batch.q_pos, SM_SCALE, V_DIM, return_lse=True)
    ref_out, ref_lse = brute_sparse_mla(q, kv_cache, batch, every, SM_SCALE, V_DIM)
    torch.testing.assert_close(dense, ref_out, **TOL[torch.float32])
    torch.testing.assert_close(dense_lse, ref_lse, **TOL[torch.float32])


def test_topk_positions_nan_ranks_above_inf():
    """NaN at a valid position ranks above +inf (torch.sort's order); ties among NaNs go to lower positions."""
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[1.0, nan, inf, nan, 3.0, nan], [nan, 2.0, nan, nan, nan, 0.0]])
    q_pos = torch.tensor([4, 5])
    top2 = torch.tensor([[1, 3], [0, 2]], dtype=torch.int32)
    assert torch.equal(topk_positions(logits, q_pos, 2), top2)
    top3 = torch.tensor([[1, 2, 3], [0, 2, 3]], dtype=torch.int32)
    assert torch.equal(topk_positions(logits, q_pos, 3), top3)
    masked = logits.masked_fill(~(torch.arange(6) <= q_pos[:, None]), -inf)
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[:, :4]  # the documented ranking
    assert torch.equal(topk_positions(logits, q_pos, 4), order.sort(-1).values.int())
