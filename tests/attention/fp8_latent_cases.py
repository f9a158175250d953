"""`python -m tests.attention.fp8_latent_cases`: the FP8 MLA latent (656 B rows) in SGLang's real DSATokenToKVPool.

Runs in its own process: SGLang's pool module needs the CPU stub `sgl_kernel` on the path and TRITON_INTERPRET=1 for
SGLang's Triton writer and our Triton sparse MLA. Prints one JSON object of measured facts; test_fp8_latent.py asserts.
"""

import json
import types

import torch
from sglang.srt.mem_cache.memory_pool import DSATokenToKVPool
from sglang.srt.runtime_context import get_parallel

from sglang_glm5.dsa.impls import DSA_IMPLS
from sglang_glm5.attention.latent_cache import read_latent, write_latent
from sglang_glm5.dsa.fp8_latent import quantize_latent
from tests.dsa.flashmla_refs import dequantize_v32
from tests.dsa.cases import make_batch

PAGE, V_DIM, ROPE, HEADS, TOPK = 64, 512, 64, 8, 24
LENGTHS, NEW = (130, 41, 77), (5, 41, 1)  # ragged: a chunk, a whole-prompt prefill, a decode row


def make_pool(slots: int) -> DSATokenToKVPool:
    return DSATokenToKVPool(
        size=slots, page_size=PAGE, kv_lora_rank=V_DIM, dtype=torch.float8_e4m3fn, qk_rope_head_dim=ROPE,
        layer_num=1, device="cpu", index_head_dim=128, enable_memory_saver=False, kv_cache_dim=656,
        index_buf_size=slots,
    )  # fmt: skip


def e4m3_by_hand(code: int) -> float:
    """One OCP e4m3 byte from its bits: 1 sign, 4 exponent (bias 7), 3 mantissa; 0x7F / 0xFF are NaN."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent, mantissa = (code >> 3) & 0xF, code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa / 8 * 2.0**-6
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


E4M3_TABLE = torch.tensor([e4m3_by_hand(c) for c in range(256)], dtype=torch.float64)


FINITE = ~torch.isnan(E4M3_TABLE)


def rne_by_hand(values: torch.Tensor) -> torch.Tensor:
    """Values (|v| <= 448) -> e4m3 codes: the nearest finite e4m3 value, ties to the even code (mantissa bit 0 clear);
    +0 for zero. Chunked over values: a [n, 256] distance table each."""
    out = torch.empty(values.shape, dtype=torch.long)
    flat, codes = values.flatten(), out.view(-1)
    table = torch.where(FINITE, E4M3_TABLE, float("inf"))
    for start in range(0, flat.shape[0], 4096):
        v = flat[start : start + 4096, None]
        dist = (table[None, :] - v).abs()  # [n, 256]
        best = dist.min(-1, keepdim=True).values
        tied = dist == best  # the nearest codes (1, or 2 at a tie; +0 and -0 both at zero)
        odd = torch.arange(256) & 1
        # prefer an even mantissa, then the code with v's sign (so 0 -> 0x00 and -0.0 stays 0x80 only for v < 0)
        rank = tied.long() * 4 + (odd == 0).long()[None, :] * 2 + ((torch.arange(256) >= 128) == (v < 0)).long()
        codes[start : start + 4096] = rank.argmax(-1)
    return out


def row_by_hand(row: torch.Tensor) -> torch.Tensor:
    """One pool row's 656 bytes -> [576] float64: codes from their bits times the little-endian fp32 scale of each
    128-value tile, then the bf16 rope (the top half of an fp32)."""
    codes = E4M3_TABLE[row[:V_DIM].long()]  # [512]
    scale_bytes = row[V_DIM : V_DIM + 16].long().view(4, 4)
    scale_bits = (scale_bytes * torch.tensor([1, 1 << 8, 1 << 16, 1 << 24])).sum(-1)  # little endian
    scales = scale_bits.to(torch.int32).view(torch.float32).double()  # [4]
    rope_bytes = row[V_DIM + 16 :].long().view(ROPE, 2)
    rope_bits = (rope_bytes[:, 0] + (rope_bytes[:, 1] << 8)) << 16  # bf16 = the high 16 bits of an fp32
    rope = rope_bits.to(torch.int32).view(torch.float32).double()
    return torch.cat([(codes.view(4, 128) * scales[:, None]).view(-1), rope])


def attention_by_hand(rows, q, page_table, q_seq, topk, sm_scale):
    """Sparse MLA from the raw bytes, one token at a time, in float64."""
    out = torch.zeros(q.shape[0], q.shape[1], V_DIM, dtype=torch.float64)
    for t in range(q.shape[0]):
        positions = [int(p) for p in topk[t] if p >= 0]
        if not positions:
            continue
        kv = torch.stack([row_by_hand(rows[int(page_table[q_seq[t], p])]) for p in positions])  # [k, 576]
        probs = torch.softmax(q[t].double() @ kv.T * sm_scale, dim=-1)  # [H, k]
        out[t] = probs @ kv[:, :V_DIM]
    return out


def random_topk(q_seq, q_pos, gen):
    """[T, TOPK] distinct causal positions per token, -1 padded (k > length for the short rows)."""
    rows = []
    for pos in q_pos.tolist():
        picked = torch.randperm(pos + 1, generator=gen)[:TOPK].tolist()
        rows.append(picked + [-1] * (TOPK - len(picked)))
    return torch.tensor(rows, dtype=torch.int32)


def main() -> dict:
    gen = torch.Generator().manual_seed(19)
    batch = make_batch(list(LENGTHS), list(NEW), gen, page_size=PAGE)
    slots = batch.num_slots
    written = torch.unique(torch.cat([batch.page_table[b, :n] for b, n in enumerate(LENGTHS)]).long())
    written = written[written != 0]  # slot 0 is SGLang's padding slot: its writer skips it, its allocator never gives it
    # per-row magnitudes over 4 decades and one outlier per row: each 128-value tile gets its own scale
    latent = torch.randn(slots, V_DIM + ROPE, generator=gen) * 10.0 ** torch.randint(-2, 2, (slots, 1), generator=gen)
    latent[:, 200] *= 30
    latent = latent.to(torch.bfloat16)  # the GPU's model dtype: what SGLang's writer takes
    nope, rope = latent[written, :V_DIM], latent[written, V_DIM:]
    layer = types.SimpleNamespace(layer_id=0)
    facts: dict = {}

    # 1. our writer (the CPU path of write_latent) vs SGLang's own writer on the same latent. Scales and rope: the
    # same bytes. Codes: ours are e4m3 rounded to nearest, ties to even (as the GPU's cvt.rn.satfinite.e4m3x2.f32
    # does), checked by hand; SGLang's Triton writer run in Triton's interpreter rounds some values differently
    # (numpy's conversion: ties away, and a mantissa round-up that does not carry into the exponent, e.g. -1.97 ->
    # -1.0), so where its codes differ, ours must be at least as close to the value.
    ours, theirs = make_pool(slots), make_pool(slots)
    write_latent(ours, layer, written, nope, rope)
    with get_parallel().override(attn_dcp_size=1, attn_dcp_rank=0):  # no decode context parallel (a server publishes it)
        theirs.set_mla_kv_buffer(layer, written, nope, rope)  # quantize_k_cache_separate + set_mla_kv_buffer_triton
    a, b = ours.kv_buffer[0][written, 0], theirs.kv_buffer[0][written, 0]  # [N, 656]
    facts["pool_row_bytes"] = list(ours.kv_buffer[0].shape[1:])
    facts["scales_equal_sglang_writer"] = torch.equal(a[:, V_DIM : V_DIM + 16], b[:, V_DIM : V_DIM + 16])
    facts["rope_equal_sglang_writer"] = torch.equal(a[:, V_DIM + 16 :], b[:, V_DIM + 16 :])
    facts["unwritten_rows_untouched"] = int(ours.kv_buffer[0].count_nonzero() - a.count_nonzero()) == 0
    scale = a[:, V_DIM : V_DIM + 16].contiguous().view(torch.float32)  # [N, 4]
    scaled = (nope.float().view(-1, 4, 128) * (1.0 / scale)[..., None]).double().view(-1, V_DIM)  # fp32, as written
    hand = rne_by_hand(scaled)  # [N, 512] codes
    facts["codes_rne_by_hand"] = torch.equal(a[:, :V_DIM].long(), hand)
    differ = a[:, :V_DIM] != b[:, :V_DIM]
    facts["codes_equal_sglang_writer_fraction"] = float(1 - differ.float().mean())
    ours_err = (E4M3_TABLE[a[:, :V_DIM].long()] - scaled).abs()[differ]
    theirs_err = (E4M3_TABLE[b[:, :V_DIM].long()] - scaled).abs()[differ]
    facts["codes_differing_ours_not_farther"] = bool((ours_err <= theirs_err).all())

    # 2. what the backend reads is the pool itself, and FlashMLA's documented V32 dequantization of it is ours
    pool_rows = read_latent(ours, 0, V_DIM + ROPE)  # [S, 656]
    facts["read_is_the_pool"] = pool_rows.data_ptr() == ours.kv_buffer[0].data_ptr()
    facts["read_shape"] = list(pool_rows.shape)
    by_hand = torch.stack([row_by_hand(pool_rows[s]) for s in written.tolist()])
    v32 = dequantize_v32(pool_rows[written].view(-1, 1, 1, pool_rows.shape[1])).double()
    facts["flashmla_v32_vs_hand_max_abs"] = float((v32 - by_hand).abs().max())
    rel = ((by_hand[:, :V_DIM] - latent[written, :V_DIM].double()).abs() / latent[written, :V_DIM].double().abs().view(-1, 4, 128).amax(-1).repeat_interleave(128, -1))  # fmt: skip
    facts["quantization_error_over_tile_amax"] = float(rel.max())
    facts["rope_exact"] = torch.equal(by_hand[:, V_DIM:], latent[written, V_DIM:].double())

    # 3. sparse MLA on the pool's bytes (reference, Triton interpreter) == the same math by hand on the same bytes
    q = torch.randn(batch.num_tokens, HEADS, V_DIM + ROPE, generator=gen) * 0.1  # [T, H, 576] fp32
    topk = random_topk(batch.q_seq, batch.q_pos, gen)
    topk[1] = -1  # a row with no entry: output 0
    sm_scale = (V_DIM + ROPE) ** -0.5
    hand = attention_by_hand(pool_rows, q, batch.page_table, batch.q_seq, topk, sm_scale)
    facts["hand_scale"] = float(hand.abs().max())
    decode_rows = [int(i) for i in torch.cumsum(torch.tensor(NEW), 0) - 1]  # the last token of each request
    for name in ("reference", "triton"):
        for phase, rows in (("prefill", slice(None)), ("decode", decode_rows)):
            impl = DSA_IMPLS[name].load(name, phase)
            out = impl.sparse_mla(q[rows], pool_rows, batch.page_table, batch.q_seq[rows], topk[rows], sm_scale, V_DIM)
            facts[f"{name}_{phase}_vs_hand_max_abs"] = float((out.double() - hand[rows]).abs().max())

    # 4. poison every slot the top-k lists do not reach: the outputs do not move
    reached = {int(batch.page_table[s, p]) for s, row in zip(batch.q_seq.tolist(), topk.tolist()) for p in row if p >= 0}
    unread = torch.tensor(sorted(set(range(pool_rows.shape[0])) - reached))
    pool_rows[unread] = 0x7F  # e4m3 NaN codes and NaN scales
    out = DSA_IMPLS["reference"].load("reference", "prefill").sparse_mla(q, pool_rows, batch.page_table, batch.q_seq, topk, sm_scale, V_DIM)  # fmt: skip
    facts["poisoned_unread_slots_max_abs"] = float((out.double() - hand).abs().max())
    return facts


if __name__ == "__main__":
    print(json.dumps(main()))
