"""`python -m tests.dsa.compile_targets [TARGET ...]`: triton.compile every DSA kernel for GPU targets, no GPU.

Prints one JSON line per (kernel, target): status "ok" with the binary's size and its resources (shared memory,
registers, spills, matrix instructions), or "error" with the message. Sparse MLA: one variant per head count.
Runs in its own process without TRITON_INTERPRET, so the kernels are decorated for the compiler.
GLM-5's shapes: 576/512 latent, indexer 32 heads x 128, bf16 (and e4m3 for the FP8 indexer and KV cache).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import triton

from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler import compile as triton_compile

from sglang_glm5.dsa.triton import indexer as indexer_mod
from sglang_glm5.dsa.triton import mla_decode as decode_mod
from sglang_glm5.dsa.triton import mla_prefill as prefill_mod
from sglang_glm5.dsa.triton import topk as topk_mod
from sglang_glm5.dsa.triton.kv_layout import fp8_kv_offsets

TARGETS = {
    "sm90": GPUTarget("cuda", 90, 32),  # Triton builds capability 90 as sm_90a (wgmma)
    "sm100": GPUTarget("cuda", 100, 32),
    "gfx942": GPUTarget("hip", "gfx942", 64),
    "gfx950": GPUTarget("hip", "gfx950", 64),
}
INDEX_HEADS, INDEX_DIM = 32, 128
KV_LORA_RANK, ROPE_DIM = 512, 64
FLOAT_ARGS = {"score_scale", "qk_scale_log2"}
HEADS_PER_GPU = (8, 16, 32, 64)  # TP 8 / 4 / 2 / 1 of GLM-5's 64 heads: every head count we claim
# sm_90 compiles every head count; the other targets the two tiles they map to (16 and 32 rows), to keep CI short
HEADS_BY_TARGET = {"sm90": HEADS_PER_GPU, "sm100": (8, 64), "gfx942": (8, 64), "gfx950": (8, 64)}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
MMA_PATTERN = re.compile(r"(wgmma\.mma_async\.\S+|mma\.sync\.\S+|tcgen05\.mma\.\S+|v_mfma\w+|v_wmma\w+)")
AMD_FIELDS = re.compile(
    r"\.(vgpr_count|agpr_count|vgpr_spill_count|sgpr_spill_count|private_segment_fixed_size):\s+(\d+)"
)


def _mla_tiles(heads, kv_fp8=False):
    """The wrapper's own tile choice (mla_prefill.tile_config) for GLM-5's dims, plus the KV layout constexprs."""
    scale_offset, rope_offset = fp8_kv_offsets(KV_LORA_RANK) if kv_fp8 else (0, KV_LORA_RANK)
    return dict(prefill_mod.tile_config(heads, KV_LORA_RANK + ROPE_DIM, KV_LORA_RANK), KV_FP8=kv_fp8,
                SCALE_OFFSET=scale_offset, ROPE_OFFSET=rope_offset)  # fmt: skip


def kernel_specs():
    """(id, jit function, pointer dtypes by argument, constexprs, num_warps, head count or None): each variant."""
    index_ptrs = dict(page_table_ptr="i32", q_seq_ptr="i64", q_pos_ptr="i64")
    indexer = dict(HEADS=INDEX_HEADS, HEAD_DIM=INDEX_DIM, BLOCK_H=INDEX_HEADS, BLOCK_Q=indexer_mod.query_block(INDEX_HEADS),
                   BLOCK_L=indexer_mod.BLOCK_L)  # NUM_STAGES: per backend, target_constexprs
    mla_ptrs = dict(q_ptr="bf16", kv_ptr="bf16", scale_ptr="bf16", rope_ptr="bf16", topk_ptr="i32",
                    page_table_ptr="i32", q_seq_ptr="i64")  # fmt: skip
    fp8_kv_ptrs = dict(mla_ptrs, kv_ptr="fp8e4nv", scale_ptr="fp32", rope_ptr="bf16")
    split_ptrs = dict(q_pos_ptr="i64", hist_ptr="i32", list_pos_ptr="i32", list_val_ptr="fp32")
    topk_blocks = dict(BLOCK_K=topk_mod.BLOCK_K, NUM_BINS=topk_mod.NUM_BINS, CAPACITY=topk_mod.CAPACITY)
    specs = [
        ("indexer_logits-bf16", indexer_mod._indexer_logits_kernel,
         dict(q_ptr="bf16", q_scale_ptr="bf16", weights_ptr="fp32", k_ptr="bf16", k_scale_ptr="bf16", out_ptr="fp32",
              **index_ptrs), dict(indexer, HAS_SCALES=False), indexer_mod.NUM_WARPS, None),
        ("indexer_logits-fp8", indexer_mod._indexer_logits_kernel,
         dict(q_ptr="fp8e4nv", q_scale_ptr="fp32", weights_ptr="fp32", k_ptr="fp8e4nv", k_scale_ptr="fp32",
              out_ptr="fp32", **index_ptrs), dict(indexer, HAS_SCALES=True), indexer_mod.NUM_WARPS, None),
        ("topk", topk_mod._topk_kernel,
         dict(logits_ptr="fp32", q_pos_ptr="i64", out_ptr="i32", list_pos_ptr="i32", list_val_ptr="fp32"),
         dict(topk_blocks, BLOCK_L=topk_mod.BLOCK_L), topk_mod.NUM_WARPS, None),
        # rows split across programs (batch-1 decode)
        ("topk_split_hist", topk_mod._split_hist_kernel, dict(logits_ptr="fp32", q_pos_ptr="i64", hist_ptr="i32"),
         dict(NUM_BINS=topk_mod.NUM_BINS, BLOCK_L=topk_mod.BLOCK_L), topk_mod.NUM_WARPS, None),
        ("topk_split_compact", topk_mod._split_compact_kernel, dict(split_ptrs, logits_ptr="fp32"),
         dict(NUM_BINS=topk_mod.NUM_BINS, CAPACITY=topk_mod.CAPACITY, BLOCK_L=topk_mod.BLOCK_L), topk_mod.NUM_WARPS,
         None),
        ("topk_split_select", topk_mod._split_select_kernel, dict(split_ptrs, logits_ptr="fp32", out_ptr="i32"),
         dict(topk_blocks, BLOCK_L=topk_mod.BLOCK_L), topk_mod.NUM_WARPS, None),
    ]  # fmt: skip
    for heads in HEADS_PER_GPU:
        for kv, ptrs in (("", mla_ptrs), ("-fp8kv", fp8_kv_ptrs)):
            tiles = _mla_tiles(heads, kv_fp8=bool(kv))
            specs += [
                (f"sparse_mla_prefill-H{heads}{kv}", prefill_mod._sparse_mla_prefill_kernel,
                 dict(ptrs, out_ptr="bf16", lse_ptr="fp32"), dict(tiles, WRITE_LSE=True), prefill_mod.NUM_WARPS, heads),
                (f"sparse_mla_decode-H{heads}{kv}", decode_mod._sparse_mla_split_kernel,
                 dict(ptrs, part_out_ptr="fp32", part_lse_ptr="fp32"), dict(tiles, NUM_SPLITS=128), decode_mod.NUM_WARPS,
                 heads),
            ]  # fmt: skip
    specs.append(
        ("sparse_mla_decode_merge-H8", decode_mod._merge_splits_kernel,
         dict(part_out_ptr="fp32", part_lse_ptr="fp32", out_ptr="bf16", lse_ptr="fp32"),
         dict(HEADS=8, V_DIM=KV_LORA_RANK, NUM_SPLITS=decode_mod.MAX_SPLITS, BLOCK_S=decode_mod.MAX_SPLITS,
              BLOCK_V=decode_mod.MERGE_BLOCK_V, WRITE_LSE=True),
         decode_mod.COMBINE_NUM_WARPS, None),
    )  # fmt: skip
    return specs


def target_constexprs(fn, target):
    """Constexprs the wrapper chooses by GPU backend: the indexer's pipeline depth (indexer.NUM_STAGES)."""
    return dict(NUM_STAGES=indexer_mod.NUM_STAGES[target.backend]) if fn is indexer_mod._indexer_logits_kernel else {}


def wanted(target_id, heads):
    return heads is None or heads in HEADS_BY_TARGET[target_id]


def resources(binary):
    """What the compiled kernel asks of the hardware, read from its artifacts: shared memory (bytes), registers
    and spills per thread, and the matrix instructions in its assembly."""
    facts = dict(shared=binary.metadata.shared)
    if "cubin" in binary.asm:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(binary.asm["cubin"])
            cubin.flush()
            usage = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", cubin.name], capture_output=True,
                                   text=True, check=True).stdout  # fmt: skip
        regs, stack, local = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage).groups()
        mma = sorted(set(MMA_PATTERN.findall(binary.asm["ptx"])))
        facts.update(regs=int(regs), spill_bytes=int(stack) + int(local), mma=mma,
                     cp_async="cp.async.commit_group" in binary.asm["ptx"])  # a software-pipelined gather
    else:
        fields = {k: int(v) for k, v in AMD_FIELDS.findall(binary.asm["amdgcn"])}
        facts.update(regs=fields["vgpr_count"] + fields.get("agpr_count", 0),
                     spill_bytes=fields["private_segment_fixed_size"],
                     spills=fields["vgpr_spill_count"] + fields["sgpr_spill_count"],
                     mma=sorted(set(MMA_PATTERN.findall(binary.asm["amdgcn"]))))  # fmt: skip
    return facts


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
    only = set(sys.argv[1:])
    for kernel_id, fn, pointers, constexprs, num_warps, heads in kernel_specs():
        for target_id, target in TARGETS.items():
            if (only and target_id not in only) or not wanted(target_id, heads):
                continue
            record = dict(kernel=kernel_id, target=target_id)
            constexprs_here = dict(constexprs, **target_constexprs(fn, target))
            try:
                src = ASTSource(fn, signature(fn, pointers, constexprs_here), constexprs_here)
                binary = triton_compile(src, target=target, options=dict(num_warps=num_warps))
                record.update(status="ok", bytes=len(binary.asm.get("cubin", binary.asm.get("hsaco", b""))),
                              num_warps=num_warps, **resources(binary))
            except Exception as exc:  # noqa: BLE001 - every failure is reported to the test, with its message
                record.update(status="error", detail=f"{type(exc).__name__}: {exc}"[-2000:],
                              trace=traceback.format_exc()[-3000:])  # fmt: skip
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
