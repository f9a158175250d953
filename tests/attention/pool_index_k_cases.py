"""`python -m tests.attention.pool_index_k_cases`: the FP8 index-K store on SGLang's real DSATokenToKVPool (CPU).

Runs in its own process: SGLang's pool module needs the CPU stub `sgl_kernel` on the path and TRITON_INTERPRET=1 for
its Triton writer and our Triton indexer. Prints one JSON object of measured facts; test_index_k_store.py asserts.
"""

import json

import torch
from flashinfer.experimental.b12x.attention.dsa_indexer.reference import _split_index_k_cache_reference
from sglang.kernels.ops.kvcache.dsa_index_k_cache import _set_k_and_s_triton
from sglang.srt.mem_cache.memory_pool import DSATokenToKVPool

from sglang_glm5.dsa.impls import DSA_IMPLS
from sglang_glm5.attention.index_k_store import (
    FP8_DTYPE,
    IndexKStoreError,
    ModelDtypeKeys,
    PoolFP8IndexKStore,
    hadamard_matrix,
)
from sglang_glm5.dsa.reference import quantize_fp8_rows
from tests.attention.cpu_graph import count_allocations
from tests.dsa.cases import make_batch

PAGE, DIM, HEADS = 64, 128, 32  # SGLang's DSA page, GLM-5's index head dim and indexer heads
LENGTHS, NEW = (130, 63, 200), (7, 63, 1)  # ragged: a decode row, a whole-prompt prefill, a chunk
SKIP = [False, True, False]  # layer 1 is an IndexCache S layer: SGLang gives it no pages


def make_pool(slots: int) -> DSATokenToKVPool:
    return DSATokenToKVPool(
        size=slots, page_size=PAGE, kv_lora_rank=512, dtype=torch.bfloat16, qk_rope_head_dim=64,
        layer_num=len(SKIP), device="cpu", index_head_dim=DIM, enable_memory_saver=False, kv_cache_dim=576,
        index_buf_size=slots, skip_topk_layers=SKIP,
    )  # fmt: skip


def by_hand(pool_pages, q, weights, page_table, q_seq, q_pos, rotation):
    """Logits from the raw page bytes, one (token, position) at a time: slot -> page, offset -> key bytes, scale."""
    q_fp8, q_scale = quantize_fp8_rows(q @ rotation, FP8_DTYPE)
    q_deq = q_fp8.float() * q_scale[..., None]  # [T, H, D]
    out = torch.full((q.shape[0], page_table.shape[1]), float("-inf"))
    for t in range(q.shape[0]):
        for p in range(int(q_pos[t]) + 1):
            slot = int(page_table[q_seq[t], p])
            page, off = divmod(slot, PAGE)
            key = pool_pages[page, off * DIM : (off + 1) * DIM].view(FP8_DTYPE).float()  # [D]
            scale = pool_pages[page, PAGE * DIM + off * 4 : PAGE * DIM + off * 4 + 4].view(torch.float32)
            score = (q_deq[t] @ (key * scale)) * DIM**-0.5  # [H]
            out[t, p] = (weights[t] * score.relu()).sum()
    return out


PLAN_CASES = {  # id -> (preset features, kv-cache dtype, index-K store)
    "all-F-bf16-pool": ((), "bfloat16", "pool-fp8"),
    "indexcache-bf16-pool": (("indexcache",), "bfloat16", "pool-fp8"),
    "indexcache-eagle-fp8-pool": (("indexcache", "eagle"), "fp8_e4m3", "pool-fp8"),
    "all-F-bf16-model": ((), "bfloat16", "model"),
}
KV_DTYPES = {"bfloat16": (torch.bfloat16, 576), "fp8_e4m3": (torch.float8_e4m3fn, 656)}  # SGLang's dim for DSA FP8


def allocated_bytes_per_slot(features, kv_cache_dtype: str, store: str) -> dict:
    """GLM-5's real layer count and IndexCache plan in SGLang's real pools (the target's, and the EAGLE draft's one
    MTP layer), plus the model-dtype store when used: bytes per KV slot, and the planner's figure."""
    from sglang_glm5.attention.index_k_store import ModelDtypeIndexKStore
    from sglang_glm5.presets.catalog import load_catalog
    from sglang_glm5.presets.compose import compose
    from sglang_glm5.datafiles import configs_dir
    from sglang_glm5.presets.layout import load_layout
    from sglang_glm5.presets.planner import indexer_layers, kv_items, planned_model

    catalog = load_catalog(configs_dir())
    cfg, model_dtype = planned_model(catalog, compose(catalog, "h200-fp8", features))
    mtp = "eagle" in features
    dtype, dim = KV_DTYPES[kv_cache_dtype]
    size = 2 * PAGE
    skip = [not cfg.indexer_plan.runs_indexer(layer) for layer in range(cfg.num_hidden_layers)]
    layer_sets = [(cfg.num_hidden_layers, skip)] + ([(1, [False])] if mtp else [])  # the draft pool: the MTP layer
    total = 0
    for layer_num, skips in layer_sets:
        pool = DSATokenToKVPool(
            size=size, page_size=PAGE, kv_lora_rank=cfg.kv_lora_rank, dtype=dtype, qk_rope_head_dim=cfg.qk_rope_head_dim,
            layer_num=layer_num, device="cpu", index_head_dim=cfg.index_head_dim, enable_memory_saver=False,
            kv_cache_dim=dim, index_buf_size=size, skip_topk_layers=skips,
        )  # fmt: skip
        total += pool.get_kv_size_bytes()
        if store == "model":
            layers = [i for i, s in enumerate(skips) if not s]
            total += ModelDtypeIndexKStore(layers, size + PAGE, cfg.index_head_dim, getattr(torch, model_dtype), "cpu").private_bytes()
        del pool
    planned = kv_items(cfg, load_layout(configs_dir()), kv_cache_dtype, mtp, model_dtype, store)
    return {
        "allocated_per_slot": total / (size + PAGE),  # every pool buffer has size + page_size slots
        "planned_per_token": sum(item.bytes for item in planned),
        "indexer_layers": len(indexer_layers(cfg, mtp)),
    }


def flashmla_vs_reference(store, batch, q, weights, gen) -> dict:
    import types

    from sglang_glm5.dsa.flashmla import indexer
    from tests.dsa import flashmla_refs

    indexer.deep_gemm = lambda: types.SimpleNamespace(
        fp8_mqa_logits=flashmla_refs.fp8_mqa_logits, fp8_paged_mqa_logits=flashmla_refs.fp8_paged_mqa_logits,
        get_paged_mqa_logits_metadata=lambda lens, block, sms: torch.zeros(sms + 1, 2, dtype=torch.int32),
        get_num_sms=lambda: 132,
    )  # fmt: skip
    indexer._check_device = lambda q, phase: None
    reference = DSA_IMPLS["reference"].load("reference", "prefill")
    decode = make_batch(list(LENGTHS), [1] * len(LENGTHS), gen, page_size=PAGE)  # one query per request
    decode_table = batch.page_table[:, : decode.page_table.shape[1]]  # the same requests' slots
    decode_q_pos = torch.tensor([n - 1 for n in LENGTHS])
    out = {}
    for phase, table, rows, q_pos in (("prefill", batch.page_table, slice(None), batch.q_pos),
                                      ("decode", decode_table, [int(i) for i in torch.cumsum(torch.tensor(NEW), 0) - 1],
                                       decode_q_pos)):  # fmt: skip
        q_seq = batch.q_seq[rows] if phase == "prefill" else torch.arange(len(LENGTHS))
        impl = DSA_IMPLS["flashmla"].load("flashmla", phase)
        keys = store.read(0, table)
        theirs = keys.logits(impl, q[rows], weights[rows], q_seq, q_pos)
        ours = keys.logits(reference, q[rows], weights[rows], q_seq, q_pos)
        finite = torch.isfinite(ours)
        out[phase] = {
            "max_abs": float((theirs[finite] - ours[finite]).abs().max()),
            "scale": float(ours[finite].abs().max()),
            "inf_same": torch.equal(torch.isinf(ours), torch.isinf(theirs[:, : ours.shape[1]])),
        }
    return out


def graph_read_vs_eager(store, batch, q, weights, eager_logits) -> dict:
    width = batch.page_table.shape[1]
    garbage = torch.full((batch.page_table.shape[0], 29), 10**9, dtype=batch.page_table.dtype)
    wide = torch.cat([batch.page_table, garbage], dim=1)  # [B, W]: SGLang's req_to_token width in a graph state
    key_rows = torch.zeros(wide.shape, dtype=torch.int64)
    translate_allocs = count_allocations(lambda: store.key_rows(wide, out=key_rows))
    read_allocs = count_allocations(lambda: store.read(0, wide, key_rows))
    static = DSA_IMPLS["reference"].load("reference", "decode", graph=True)
    logits = store.read(0, wide, key_rows).logits(static, q, weights, batch.q_seq, batch.q_pos)  # [T, W]
    part = logits[:, :width]
    return {
        "translate_allocations": translate_allocs,
        "read_allocations": read_allocs,
        "key_rows_equal": torch.equal(key_rows, store.key_rows(wide.long())),
        "past_width_masked": bool(torch.isneginf(logits[:, width:]).all()),
        "inf_same": torch.equal(torch.isinf(part), torch.isinf(eager_logits)),
        "max_abs": float((part - eager_logits).nan_to_num(posinf=0, neginf=0).abs().max()),
    }


def main() -> dict:
    gen = torch.Generator().manual_seed(7)
    batch = make_batch(list(LENGTHS), list(NEW), gen, page_size=PAGE)
    slots = batch.num_slots
    k = torch.randn(slots, DIM, generator=gen) * torch.rand(slots, 1, generator=gen) * 4  # [S, D], per-row magnitude
    q = torch.randn(batch.num_tokens, HEADS, DIM, generator=gen)  # [T, Hi, D]
    weights = torch.randn(batch.num_tokens, HEADS, generator=gen) * HEADS**-0.5  # [T, Hi]
    # page_table entries past a request's length are out of range: the store must not read them
    written = torch.unique(torch.cat([batch.page_table[b, :n] for b, n in enumerate(LENGTHS)]).long())
    facts: dict = {}

    pool = make_pool(slots)
    store = PoolFP8IndexKStore(pool, [0, 2])
    store.write(0, written, k[written])
    buf = pool.index_k_with_scale_buffer[0]
    facts["layer_buffers_rows"] = [b.shape[0] for b in pool.index_k_with_scale_buffer]

    # 1. the bytes SGLang's own Triton writer puts in its pool for the same quantized keys
    rotation = hadamard_matrix(DIM)
    k_fp8, k_scale = quantize_fp8_rows(k[written] @ rotation, FP8_DTYPE)
    theirs = make_pool(slots)
    _set_k_and_s_triton(buf=theirs.get_index_k_with_scale_buffer(0), loc=written, index_k=k_fp8,
                        index_k_scale=k_scale, page_size=PAGE)  # fmt: skip
    facts["bytes_equal_sglang_writer"] = torch.equal(buf, theirs.index_k_with_scale_buffer[0])
    facts["bytes_written"] = int((buf != 0).sum())

    # 2. FlashInfer's reader of the paged layout sees our keys and scales at the written slots
    fi_k, fi_scale = _split_index_k_cache_reference(buf, page_size=PAGE)  # [pages, 64, 128], [pages, 64]
    page, off = written // PAGE, written % PAGE
    facts["flashinfer_reads_keys"] = torch.equal(fi_k[page, off], k_fp8.float())
    facts["flashinfer_reads_scales"] = torch.equal(fi_scale[page, off], k_scale)

    # 3. the store read through reference and Triton (interpreter) == the same math by hand on the same bytes
    hand = by_hand(buf, q, weights, batch.page_table, batch.q_seq, batch.q_pos, rotation)
    keys = store.read(0, batch.page_table)
    facts["keys_are_a_view_of_the_pool"] = keys.keys.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
    for name in ("reference", "triton"):
        impl = DSA_IMPLS[name].load(name, "prefill")
        logits = keys.logits(impl, q, weights, batch.q_seq, batch.q_pos)
        facts[f"{name}_vs_hand_max_abs"] = float((logits - hand).nan_to_num(posinf=0, neginf=0).abs().max())
        facts[f"{name}_vs_hand_inf_same"] = torch.equal(torch.isinf(logits), torch.isinf(hand))

    # 4. FP8 keys vs the unquantized indexer (HF's math): how far the logits move, and the top-k kept
    reference = DSA_IMPLS["reference"].load("reference", "prefill")
    exact = ModelDtypeKeys(k, batch.page_table).logits(reference, q, weights, batch.q_seq, batch.q_pos)
    fp8 = keys.logits(reference, q, weights, batch.q_seq, batch.q_pos)
    finite = torch.isfinite(exact)
    facts["fp8_vs_exact_max_abs_over_max"] = float((fp8 - exact)[finite].abs().max() / exact[finite].abs().max())
    topk = 16
    a = reference.topk_positions(exact, batch.q_pos, topk)
    b = reference.topk_positions(fp8, batch.q_pos, topk)
    kept = [len(set(x.tolist()) & set(y.tolist()) - {-1}) / max(1, len(set(x.tolist()) - {-1})) for x, y in zip(a, b)]
    facts["fp8_topk16_overlap_min"] = min(kept)
    facts["fp8_topk16_overlap_mean"] = sum(kept) / len(kept)

    # 5. poison the pool's pages: the store's logits follow (they are read from nowhere else)
    saved = buf.clone()
    buf[:, : PAGE * DIM] = torch.randint(0, 0x70, buf[:, : PAGE * DIM].shape, dtype=torch.uint8, generator=gen)
    facts["poisoned_pool_changes_logits"] = not torch.equal(store.read(0, batch.page_table).logits(
        reference, q, weights, batch.q_seq, batch.q_pos), fp8)  # fmt: skip
    buf.copy_(saved)

    # 6. SGLang's move_kv_cache carries the keys: moved slots read as the originals
    free = torch.tensor(sorted(set(range(PAGE, slots)) - set(written.tolist())))
    src = written[: free.shape[0]]
    tgt = free[: src.shape[0]]
    pool.move_kv_cache(tgt, src)
    remap = torch.arange(slots + PAGE)
    remap[src] = tgt
    valid = batch.page_table.long() < slots
    moved_table = torch.where(valid, remap[batch.page_table.long().clamp(max=slots - 1)], batch.page_table.long())
    moved = store.read(0, moved_table).logits(reference, q, weights, batch.q_seq, batch.q_pos)
    facts["moved_slots"] = int(src.shape[0])
    facts["move_kv_cache_keeps_logits"] = torch.equal(moved, fp8)

    # 7. a layer SGLang gave no pages (IndexCache S) cannot hold keys
    try:
        PoolFP8IndexKStore(pool, [0, 1])
        facts["skip_layer_refused"] = ""
    except IndexKStoreError as e:
        facts["skip_layer_refused"] = str(e)

    # 8. flashmla (index_k_pages: DeepGEMM's FP8 indexer reading the pages in place), its vendor kernels stood in by
    #    the torch references of their documented semantics, == the reference FP8 indexer on the same pool bytes
    facts["flashmla_vs_reference_max_abs"] = flashmla_vs_reference(store, batch, q, weights, gen)

    # 9. under CUDA graphs (reference's graph-safe ops, dsa_static): the graph state's page table is wider than any
    #    request (garbage past it), translated once into key rows (out=); the read allocates nothing; the logits
    #    equal the eager FP8 indexer's on the request's columns, -inf past them
    facts["graph"] = graph_read_vs_eager(store, batch, q, weights, fp8)

    # 10. the planner's KV bytes per token == what SGLang's pools (and the model-dtype store) allocate per slot
    facts["plan"] = {name: allocated_bytes_per_slot(*case) for name, case in PLAN_CASES.items()}
    return facts


if __name__ == "__main__":
    print(json.dumps(main()))
