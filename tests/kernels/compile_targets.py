"""`python -m tests.kernels.compile_targets`: triton.compile every DSA kernel for GPU targets without a GPU.

Prints one JSON line per (kernel, target): status "ok" (with the binary's size), or "error" with the message.
Runs in its own process without TRITON_INTERPRET, so the kernels are decorated for the compiler.
GLM-5's shapes: 576/512 latent, indexer 32 heads x 128, bf16 (and e4m3 for the FP8 indexer and KV cache).
"""

import json
import os
import sys
import traceback

from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler import compile as triton_compile

from sglang_glm5.kernels.triton import indexer as indexer_mod
from sglang_glm5.kernels.triton import mla_decode as decode_mod
from sglang_glm5.kernels.triton import mla_prefill as prefill_mod
from sglang_glm5.kernels.triton import topk as topk_mod
from sglang_glm5.kernels.triton.kv_layout import fp8_kv_offsets

TARGETS = {
    "sm90": GPUTarget("cuda", 90, 32),
    "sm100": GPUTarget("cuda", 100, 32),
    "gfx942": GPUTarget("hip", "gfx942", 64),
}
INDEX_HEADS, INDEX_DIM = 32, 128
KV_LORA_RANK, ROPE_DIM = 512, 64
FLOAT_ARGS = {"score_scale", "qk_scale_log2"}


def _mla_tiles(heads, kv_fp8=False):
    scale_offset, rope_offset = fp8_kv_offsets(KV_LORA_RANK) if kv_fp8 else (0, KV_LORA_RANK)
    return dict(HEADS=heads, V_DIM=KV_LORA_RANK, ROPE_DIM=ROPE_DIM, BLOCK_H=max(16, heads), BLOCK_V=KV_LORA_RANK,
                BLOCK_R=ROPE_DIM, BLOCK_N=prefill_mod.BLOCK_N, KV_FP8=kv_fp8, SCALE_OFFSET=scale_offset,
                ROPE_OFFSET=rope_offset, DOT_PRECISION="tf32")  # fmt: skip


def kernel_specs():
    """(id, jit function, pointer dtypes by argument, constexprs, num_warps): one entry per kernel variant."""
    index_ptrs = dict(page_table_ptr="i32", q_seq_ptr="i64", q_pos_ptr="i64")
    indexer = dict(HEADS=INDEX_HEADS, HEAD_DIM=INDEX_DIM, BLOCK_H=INDEX_HEADS, BLOCK_L=indexer_mod.BLOCK_L,
                   DOT_PRECISION="tf32")  # fmt: skip
    mla_ptrs = dict(q_ptr="bf16", kv_ptr="bf16", scale_ptr="bf16", rope_ptr="bf16", topk_ptr="i32",
                    page_table_ptr="i32", q_seq_ptr="i64")  # fmt: skip
    fp8_kv_ptrs = dict(mla_ptrs, kv_ptr="fp8e4nv", scale_ptr="fp32", rope_ptr="bf16")
    specs = [
        ("indexer_logits-bf16", indexer_mod._indexer_logits_kernel,
         dict(q_ptr="bf16", q_scale_ptr="bf16", weights_ptr="fp32", k_ptr="bf16", k_scale_ptr="bf16", out_ptr="fp32",
              **index_ptrs), dict(indexer, HAS_SCALES=False), indexer_mod.NUM_WARPS),
        ("indexer_logits-fp8", indexer_mod._indexer_logits_kernel,
         dict(q_ptr="fp8e4nv", q_scale_ptr="fp32", weights_ptr="fp32", k_ptr="fp8e4nv", k_scale_ptr="fp32",
              out_ptr="fp32", **index_ptrs), dict(indexer, HAS_SCALES=True), indexer_mod.NUM_WARPS),
        ("topk", topk_mod._topk_kernel, dict(logits_ptr="fp32", q_pos_ptr="i64", out_ptr="i32"),
         dict(BLOCK_L=topk_mod.BLOCK_L, BLOCK_K=topk_mod.BLOCK_K, RADIX_BITS=topk_mod.RADIX_BITS,
              NUM_BINS=1 << topk_mod.RADIX_BITS), topk_mod.NUM_WARPS),
    ]  # fmt: skip
    # prefill at TP 1 (64 heads: the largest tile), decode at TP 8 (8 heads: the latency case)
    specs += [
        ("sparse_mla_prefill-H64", prefill_mod._sparse_mla_prefill_kernel,
         dict(mla_ptrs, out_ptr="bf16", lse_ptr="fp32"), dict(_mla_tiles(64), WRITE_LSE=True), prefill_mod.NUM_WARPS),
        ("sparse_mla_decode-H8", decode_mod._sparse_mla_split_kernel,
         dict(mla_ptrs, part_out_ptr="fp32", part_lse_ptr="fp32"), dict(_mla_tiles(8), NUM_SPLITS=8),
         decode_mod.NUM_WARPS),
        ("sparse_mla_decode-H8-fp8kv", decode_mod._sparse_mla_split_kernel,
         dict(fp8_kv_ptrs, part_out_ptr="fp32", part_lse_ptr="fp32"), dict(_mla_tiles(8, kv_fp8=True), NUM_SPLITS=8),
         decode_mod.NUM_WARPS),
        ("sparse_mla_decode_merge-H8", decode_mod._merge_splits_kernel,
         dict(part_out_ptr="fp32", part_lse_ptr="fp32", out_ptr="bf16", lse_ptr="fp32"),
         dict(HEADS=8, V_DIM=KV_LORA_RANK, NUM_SPLITS=8, BLOCK_S=8, BLOCK_V=KV_LORA_RANK, WRITE_LSE=True),
         decode_mod.COMBINE_NUM_WARPS),
    ]  # fmt: skip
    return specs


def signature(fn, pointers, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = "*" + pointers[name]
        else:
            sig[name] = "fp32" if name in FLOAT_ARGS else "i32"
    return sig


def main():
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "compile checks need kernels decorated for the compiler"
    wanted = set(sys.argv[1:])
    for kernel_id, fn, pointers, constexprs, num_warps in kernel_specs():
        for target_id, target in TARGETS.items():
            if wanted and target_id not in wanted:
                continue
            record = dict(kernel=kernel_id, target=target_id)
            try:
                src = ASTSource(fn, signature(fn, pointers, constexprs), constexprs)
                binary = triton_compile(src, target=target, options=dict(num_warps=num_warps))
                record.update(status="ok", bytes=len(binary.asm.get("cubin", binary.asm.get("hsaco", b""))))
            except Exception as exc:  # noqa: BLE001 - every failure is reported to the test, with its message
                record.update(status="error", detail=f"{type(exc).__name__}: {exc}"[-2000:],
                              trace=traceback.format_exc()[-3000:])  # fmt: skip
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
