"""`python -m tests.dsa.tilelang_targets [lower|cubin] [KERNEL_ID ...]`: TileLang DSA kernels for GPU targets, no GPU.

`lower`: every kernel to CUDA source for sm_90a and HIP source for gfx942 / gfx950, with that architecture's knobs
from configs/tilelang-tuning.json. `cubin`: the sm_90a kernels built by tilelang.compile (nvcc) into cubins, in the
TileLang cache folder TILELANG_CACHE_DIR (a fresh folder: nothing is served from an earlier build).
Prints one JSON line per (kernel, target): status "ok" with the output's facts, or "error" with the message.
GLM-5's shapes: 576/512 latent, indexer 32 heads x 128, top-k 2048, bf16; heads per GPU from TP 8 (8) to TP 1 (64).
"""

import json
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import tilelang
from tilelang import tvm

from sglang_glm5.dsa.tilelang.indexer import indexer_logits_fp8_kernel, indexer_logits_kernel
from sglang_glm5.dsa.tilelang.mla_decode import decode_launch, merge_splits_kernel, num_splits_for, sparse_mla_split_kernel
from sglang_glm5.dsa.tilelang.mla_prefill import prefill_factory
from sglang_glm5.dsa.tilelang.topk import topk_kernel
from sglang_glm5.dsa.tilelang.tuning import knobs_for

TARGETS = {
    "sm_90a": {"kind": "cuda", "arch": "sm_90a"},  # sm_90 without `a` has no setmaxnreg / wgmma
    "gfx942": {"kind": "hip", "mcpu": "gfx942"},
    "gfx950": {"kind": "hip", "mcpu": "gfx950"},
}
# SMs / CUs of the cards each target is tuned for (H100 SXM / H200, MI300X, MI355X): decode splits fill them
MULTIPROCESSORS = {"sm_90a": 132, "gfx942": 304, "gfx950": 256}
INDEX_HEADS, INDEX_DIM, TOPK, V_DIM = 32, 128, 2048, 512
SM_SCALE = 256**-0.5  # (qk_nope 192 + rope 64) ** -0.5
CUBIN_KERNELS = ("indexer_logits-H32", "indexer_logits_fp8-H32", "topk-k2048", "sparse_mla_prefill-H64", "sparse_mla_decode-H8",
                 "sparse_mla_decode_merge-H8")  # fmt: skip
ELF_MAGIC = b"\x7fELF"
EM_CUDA = 190  # ELF e_machine of NVIDIA cubins


def kernel_specs(arch):
    """(id, jit factory, keyword arguments) with `arch`'s tuning knobs: every op, and every head count for MLA."""
    decode = knobs_for("sparse_mla_decode", "", arch)
    specs = [
        ("indexer_logits-H32", indexer_logits_kernel,
         dict(heads=INDEX_HEADS, head_dim=INDEX_DIM, **knobs_for("indexer_logits", "", arch))),
        ("indexer_logits_fp8-H32", indexer_logits_fp8_kernel,
         dict(heads=INDEX_HEADS, head_dim=INDEX_DIM, **knobs_for("indexer_logits_fp8", "", arch))),
        ("topk-k2048", topk_kernel, dict(k=TOPK, **knobs_for("topk_positions", "", arch))),
    ]  # fmt: skip
    for heads in (8, 16, 32, 64):  # TP 8 / 4 / 2 / 1 of GLM-5's 64 heads
        mla = dict(heads=heads, topk=TOPK, sm_scale=SM_SCALE)
        factory, knobs = prefill_factory(knobs_for("sparse_mla_prefill", "", arch))  # the arch's schedule
        specs.append((f"sparse_mla_prefill-H{heads}", factory, dict(mla, **knobs)))
        # batch-1 decode: the knobs of the split that fills the GPU
        specs.append((f"sparse_mla_decode-H{heads}", sparse_mla_split_kernel, dict(mla, **decode_batch1(arch, heads))))
    batch1 = decode_batch1(arch, 8)
    num_splits = num_splits_for(TOPK, batch1["block_n"], batch1["columns_per_split"])
    specs.append(("sparse_mla_decode_merge-H8", merge_splits_kernel, dict(heads=8, num_splits=num_splits)))
    return specs


def decode_batch1(arch, heads):
    """The split kernel's knobs the decode wrapper picks at batch 1 on `arch`'s card (mla_decode.decode_launch)."""
    return decode_launch(1, heads, TOPK, V_DIM, MULTIPROCESSORS[arch], knobs_for("sparse_mla_decode", "", arch))


def lower(factory, kwargs, target):
    """Device source of one kernel; lowering needs the pass context and the target entered."""
    tvm_target = tvm.target.Target(target)
    with tvm.transform.PassContext(opt_level=3), tvm_target:
        return tilelang.lower(factory.get_tir(**kwargs), target=tvm_target).kernel_source


def build_cubin(factory, kwargs, cache_dir: Path):
    """tilelang.compile for sm_90a runs nvcc without a GPU; returns the cubins and host sources it left in the cache."""
    before = set(cache_dir.rglob("*.cubin")) | set(cache_dir.rglob("host_kernel.cu"))
    tilelang.compile(factory.get_tir(**kwargs), target=TARGETS["sm_90a"], execution_backend="tvm_ffi")
    return sorted(set(cache_dir.rglob("*.cubin")) - before), sorted(set(cache_dir.rglob("host_kernel.cu")) - before)


def cubin_resources(paths):
    """Per kernel function in the cubins: registers, stack + local bytes (spills) and static shared memory, read by
    cuobjdump (Triton ships one). TileLang's dynamic shared memory is in the source: `dynamic_smem_buf` sizes."""
    import triton

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    found = []
    for path in paths:
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(path)], capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
        for regs, stack, shared, local in re.findall(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage):
            found.append(dict(regs=int(regs), spill_bytes=int(stack) + int(local), static_shared=int(shared)))
    return found


def dynamic_shared_bytes(host_sources):
    """Dynamic shared memory per launch, from the host code TileLang wrote (beside the device source): the launch's
    argument slots are grid x, y, z, block x, y, z (block x = __launch_bounds__), then the dynamic shared bytes when
    the kernel has any (no slot: none)."""
    found = []
    for path in host_sources:
        threads = int(re.search(r"__launch_bounds__\((\d+)", (path.parent / "device_kernel.cu").read_text()).group(1))
        slots = {}  # argument slot -> its literal value; symbolic ones (num_tokens) are absent
        for slot, value in re.findall(r"\[(\d+)\]\.v_int64\) = \(\(int64_t\)(\d+)\)", path.read_text()):
            slots[int(slot)] = int(value)
        block = [i for i in slots if slots[i] == threads and slots.get(i + 1) == 1 and slots.get(i + 2) == 1]
        assert block, f"{path}: no launch with block ({threads}, 1, 1) in the host code"
        found.append(slots.get(block[-1] + 3, 0))
    return found


def cubin_facts(paths, host_sources):
    data = [p.read_bytes() for p in paths]
    return dict(cubins=len(data), bytes=sum(map(len, data)), resources=cubin_resources(paths),
                dynamic_shared=dynamic_shared_bytes(host_sources),
                cuda_elf=all(d[:4] == ELF_MAGIC and int.from_bytes(d[18:20], "little") == EM_CUDA for d in data))  # fmt: skip


def main():
    mode, *wanted = sys.argv[1:] or ["lower"]
    assert mode in ("lower", "cubin"), f"mode must be lower or cubin, got {mode}"
    cache_dir = Path(tilelang.env.TILELANG_CACHE_DIR)
    for target_id, target in TARGETS.items():
        if mode == "cubin" and target_id != "sm_90a":
            continue
        for kernel_id, factory, kwargs in kernel_specs(target_id):
            if (wanted and kernel_id not in wanted) or (mode == "cubin" and kernel_id not in CUBIN_KERNELS):
                continue
            record = dict(mode=mode, kernel=kernel_id, target=target_id)
            start = time.perf_counter()
            try:
                if mode == "lower":
                    source = lower(factory, kwargs, target)
                    record.update(status="ok", source=source)
                else:
                    record.update(status="ok", **cubin_facts(*build_cubin(factory, kwargs, cache_dir)))
            except Exception as exc:  # noqa: BLE001 - every failure is reported to the test, with its message
                record.update(status="error", detail=f"{type(exc).__name__}: {exc}"[-2000:],
                              trace=traceback.format_exc()[-3000:])  # fmt: skip
            record["seconds"] = round(time.perf_counter() - start, 2)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
