"""Resource contracts of the Triton DSA kernels, read from the binaries compiled here for each GPU target (no GPU).

For every kernel variant and head count the capability table (configs/dsa-capabilities.json) offers on an
architecture, the compiled kernel must fit that architecture: shared memory per block, registers per thread and
per block, and no spills to local / scratch memory (every DSA kernel is on the hot path). A variant that does not
fit must not be offered there, so the start-up check refuses it and names what works instead.
Also read from the assembly: the matrix instructions, so "bf16 / e4m3 straight into the tensor cores" is checked.
"""

import pytest

from sglang_glm5.attention.capabilities import Device, DSACapabilityError, Target, load_capabilities
from sglang_glm5.dsa.triton import mla_prefill
from tests.dsa.compile_targets import HEADS_BY_TARGET, HEADS_PER_GPU, KV_LORA_RANK, ROPE_DIM, TARGETS

pytestmark = pytest.mark.slow

# Per block: shared memory opt-in maximum (CUDA programming guide, compute capability tables: 227 KB on 9.0 and
# 10.0; LDS 64 KB on CDNA3, 160 KB on CDNA4); registers: 255 per thread and a 64 K register file per SM (CUDA),
# 512 VGPRs (256 arch + 256 acc) per lane (CDNA3/4).
LIMITS = {
    "sm90": dict(shared=232_448, regs=255, register_file=65_536, warp=32),
    "sm100": dict(shared=232_448, regs=255, register_file=65_536, warp=32),
    "gfx942": dict(shared=65_536, regs=512, register_file=None, warp=64),
    "gfx950": dict(shared=163_840, regs=512, register_file=None, warp=64),
}
TABLE_ARCH = {"sm90": "sm_90", "sm100": "sm_100", "gfx942": "gfx942", "gfx950": "gfx950"}
KV_VARIANT = {"": "bfloat16", "-fp8kv": "fp8_e4m3"}  # kernel id suffix -> --kv-cache-dtype
TOPK = ("topk", "topk_split_hist", "topk_split_compact", "topk_split_select")
PHASE_KERNELS = {  # what one phase of the triton implementation launches
    "prefill": ("indexer_logits-bf16", "indexer_logits-fp8", *TOPK, "sparse_mla_prefill-H{heads}{kv}"),
    "decode": ("indexer_logits-bf16", "indexer_logits-fp8", *TOPK, "sparse_mla_decode-H{heads}{kv}",
               "sparse_mla_decode_merge-H8"),
}  # fmt: skip
TABLE = load_capabilities()


def _compiled_heads(target, heads):
    """The compiled head count standing for `heads` on `target`: the one with the same tile (wrapper's config)."""
    qk_dim = KV_LORA_RANK + ROPE_DIM

    def tile(h):
        return {k: v for k, v in mla_prefill.tile_config(h, qk_dim, KV_LORA_RANK).items() if k != "HEADS"}

    same = [h for h in HEADS_BY_TARGET[target] if tile(h) == tile(heads)]
    assert same, f"no compiled variant on {target} has the tile of {heads} heads"
    return heads if heads in same else same[0]


def misfits(record, target):
    """Every way the compiled kernel exceeds `target`'s limits (empty: it fits)."""
    limit = LIMITS[target]
    assert record["status"] == "ok", f"{record['kernel']} for {target}: {record.get('detail')}"
    problems = []
    if record["shared"] > limit["shared"]:
        problems.append(f"{record['shared']} B shared memory > {limit['shared']}")
    if record["regs"] > limit["regs"]:
        problems.append(f"{record['regs']} registers per thread > {limit['regs']}")
    threads = record["num_warps"] * limit["warp"]
    if limit["register_file"] and record["regs"] * threads > limit["register_file"]:
        problems.append(f"{record['regs']} registers x {threads} threads > {limit['register_file']}")
    if record["spill_bytes"] or record.get("spills"):
        spilled = record.get("spills", "?")
        problems.append(f"spills ({record['spill_bytes']} B of stack/scratch, {spilled} spilled registers)")
    return problems


def _phase_misfits(compiled, target, phase, heads, kv):
    found = {}
    for pattern in PHASE_KERNELS[phase]:
        kernel = pattern.format(heads=_compiled_heads(target, heads), kv=kv)
        problems = misfits(compiled[(kernel, target)], target)
        if problems:
            found[kernel] = problems
    return found


def _target(arch, kv_dtype, heads):
    return Target(Device(arch, f"simulated {arch}"), kv_dtype, heads)


VARIANTS = [(t, p, h, kv) for t in TARGETS for p in PHASE_KERNELS for h in HEADS_PER_GPU for kv in KV_VARIANT]
VARIANT_IDS = [f"{t}-{p}-H{h}{kv or '-bf16'}" for t, p, h, kv in VARIANTS]


@pytest.mark.parametrize("target,phase,heads,kv", VARIANTS, ids=VARIANT_IDS)
def test_offered_variants_fit_and_unfit_ones_are_refused(triton_compiled, target, phase, heads, kv):
    """The table offers triton for (arch, phase, heads, kv dtype) exactly when it claims it and it fits."""
    problems = _phase_misfits(triton_compiled, target, phase, heads, kv)
    offered = TABLE.why_not("triton", phase, _target(TABLE_ARCH[target], KV_VARIANT[kv], heads), env={}) is None
    where = f"{target} at {heads} heads, {KV_VARIANT[kv]} KV"
    assert not (offered and problems), f"triton {phase} is offered on {where}, but {problems}"
    if problems:  # the refusal a user gets names the flag and what works
        flags = {"prefill": None, "decode": None, phase: "triton"}
        with pytest.raises(DSACapabilityError, match=f"--dsa-{phase}-backend triton: .*Choices that work here"):
            TABLE.choose(flags, _target(TABLE_ARCH[target], KV_VARIANT[kv], heads), env={})


@pytest.mark.parametrize("target", ["sm90", "sm100"])
@pytest.mark.parametrize("heads", HEADS_PER_GPU)
def test_bf16_sparse_mla_fits_nvidia_at_every_head_count(triton_compiled, target, heads):
    """What the table offers on Hopper / Blackwell: every head count per GPU, bf16 cache, prefill and decode."""
    for phase in PHASE_KERNELS:
        assert not _phase_misfits(triton_compiled, target, phase, heads, ""), (target, phase, heads)
        assert TABLE.why_not("triton", phase, _target(TABLE_ARCH[target], "bfloat16", heads), env={}) is None


def _bf16_wgmma(instruction):
    return instruction.startswith("wgmma") and instruction.endswith("bf16.bf16")


def test_sm90_dots_take_bf16_and_e4m3_operands(triton_compiled):
    """Hopper: wgmma with bf16 operands in sparse MLA (P @ V, M = 512 latent rows) and the bf16 indexer, wgmma
    with e4m3 x e4m3 in the FP8 indexer; no tf32 (an fp32 upcast of the tiles) anywhere."""
    for (kernel, target), record in triton_compiled.items():
        if target != "sm90" or record["status"] != "ok":
            continue
        assert not any("tf32" in m for m in record["mma"]), f"{kernel}: tf32 MMA {record['mma']}"
        if kernel.startswith("sparse_mla_") and "merge" not in kernel:
            assert any(map(_bf16_wgmma, record["mma"])), (kernel, record["mma"])
    assert any(map(_bf16_wgmma, triton_compiled[("indexer_logits-bf16", "sm90")]["mma"]))
    fp8 = triton_compiled[("indexer_logits-fp8", "sm90")]["mma"]
    assert fp8 and all(m.startswith("wgmma") and m.endswith(".e4m3.e4m3") for m in fp8), fp8


@pytest.mark.parametrize("target,instruction", [("sm100", "tcgen05.mma.cta_group::1.kind::f8f6f4"),
                                                ("gfx950", "v_mfma_f32_32x32x64_f8f6f4")])  # fmt: skip
def test_fp8_indexer_uses_fp8_mma(triton_compiled, target, instruction):
    """Blackwell and CDNA4 multiply e4m3 natively (CDNA3 takes only the fnuz variant: there e4m3fn widens to f16)."""
    assert instruction in triton_compiled[("indexer_logits-fp8", target)]["mma"]


@pytest.mark.parametrize("target", ["sm90", "sm100"])
def test_indexer_key_loop_is_pipelined(triton_compiled, target):
    """The indexer gathers the next key block with cp.async while the current one is multiplied (NUM_STAGES 2 on
    NVIDIA; one stage, no cp.async, is what a plain loop compiles to)."""
    for kernel in ("indexer_logits-bf16", "indexer_logits-fp8"):
        assert triton_compiled[(kernel, target)]["cp_async"], kernel
