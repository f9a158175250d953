"""The capability table against simulated devices: every automatic pick and every refusal, with their messages."""

import json

import pytest

from sglang_glm5.attention.capabilities import (
    SIMULATE_ENV,
    Device,
    DSACapabilityError,
    Target,
    detect_device,
    load_capabilities,
)
from sglang_glm5.dsa.impls import (
    DSA_IMPLS,
    PHASES,
    DSABackendChoiceError,
    resolve_impl,
)
from sglang_glm5.serving.startup_check import StartupRequest, decide, heads_per_gpu

TABLE = load_capabilities()
SHIPPED = ("reference", "triton", "tilelang", "trtllm", "flashmla")  # every implementation the table describes
GLM5_HEADS = 64


def request(model_path, prefill=None, decode=None, kv=None, tp=8, dp=1, strict=False):
    return StartupRequest(
        model_path=str(model_path), device_type=None, kv_cache_dtype=kv, flags={"prefill": prefill, "decode": decode},
        heads_per_gpu=heads_per_gpu(GLM5_HEADS, tp, dp), strict=strict,
    )  # fmt: skip


def simulate(arch, **extra):
    return {SIMULATE_ENV: arch, **extra}


@pytest.fixture(scope="module")
def bf16_checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")  # no calibrated k/v scales


def test_every_shipped_implementation_has_a_row():
    assert set(TABLE.impls) == set(SHIPPED)
    assert set(DSA_IMPLS) <= set(TABLE.impls), "an implementation in impls.DSA_IMPLS has no row in dsa-capabilities.json"


# device -> (prefill, decode, KV dtype) picked with no flags, tp 8 (8 heads per GPU), a checkpoint without k/v scales
AUTO_PICKS = {
    "sm_80": ("reference", "reference", "bfloat16"),
    # FP8 in SGLang's scaled 656 B layout where flashmla reads it (kv_policy.py: measured, no calibrated scales needed)
    "sm_90": ("flashmla", "flashmla", "fp8_e4m3"),
    "sm_100": ("trtllm", "trtllm", "bfloat16"),
    "sm_103": ("trtllm", "trtllm", "bfloat16"),
    "sm_120": ("reference", "reference", "bfloat16"),
    "sm_121": ("reference", "reference", "bfloat16"),
    "gfx942": ("tilelang", "tilelang", "bfloat16"),  # triton's sparse MLA spills on CDNA (test_resources.py)
    "gfx950": ("tilelang", "tilelang", "bfloat16"),
    "cpu": ("reference", "reference", "auto"),
}
KV_TEXT = {"bfloat16": "bfloat16", "fp8_e4m3": "fp8_e4m3", "auto": "auto (model dtype)"}
SUPPORTED = {  # what the message lists as supported, best first (a pair: prefill, decode)
    "sm_80": "reference",
    "sm_90": "flashmla",
    "sm_100": "trtllm, triton, reference",
    "sm_103": "trtllm, reference",
    "sm_120": "reference",
    "sm_121": "reference",
    "gfx942": "tilelang, reference",
    "gfx950": "tilelang, reference",
    "cpu": "reference",
}


@pytest.mark.parametrize("arch", list(AUTO_PICKS))
def test_automatic_pick(arch, bf16_checkpoint):
    decision = decide(request(bf16_checkpoint), available=SHIPPED, env=simulate(arch))
    prefill, decode, kv = AUTO_PICKS[arch]
    supported = SUPPORTED[arch] if isinstance(SUPPORTED[arch], tuple) else (SUPPORTED[arch],) * 2
    assert dict(decision.choice.backends) == {"prefill": prefill, "decode": decode}
    assert decision.choice.picked == PHASES and decision.kv_cache_dtype == kv and decision.warnings == ()
    assert str(decision.target) == f"simulated device ({SIMULATE_ENV}={arch}) ({arch}) with kv-cache {KV_TEXT[kv]} and 8 heads per GPU"
    assert decision.choice.describe(decision.target) == (
        f"GLM-5 DSA on {decision.target}: "
        f"prefill={prefill} (picked; supported: {supported[0]}), decode={decode} (picked; supported: {supported[1]})"
    )


def test_given_choice_is_kept_and_the_other_phase_picked(bf16_checkpoint):
    decision = decide(request(bf16_checkpoint, decode="tilelang"), available=SHIPPED, env=simulate("sm_90"))
    assert dict(decision.choice.backends) == {"prefill": "flashmla", "decode": "tilelang"}
    assert decision.choice.picked == ("prefill",)


def test_tilelang_is_not_picked_for_heads_it_does_not_run(bf16_checkpoint):
    decision = decide(request(bf16_checkpoint, tp=16), available=SHIPPED, env=simulate("gfx950"))  # 4 heads per GPU
    assert dict(decision.choice.backends) == {"prefill": "reference", "decode": "reference"}
    assert decision.choice.supported["decode"] == ("reference",)


def test_pick_only_among_installed_implementations(bf16_checkpoint):
    decision = decide(request(bf16_checkpoint), available=("reference", "tilelang"), env=simulate("sm_90"))
    assert dict(decision.choice.backends) == {"prefill": "tilelang", "decode": "tilelang"}


# (device, prefill flag, decode flag, KV dtype, tp) -> the refusal's lines after the header
REFUSALS = {
    "trtllm-on-sm_90": (
        "sm_90", "trtllm", None, None, 8,
        [("--dsa-prefill-backend trtllm: trtllm does not run on {device}: it supports sm_100, sm_103. "
         "Choices that work here: --dsa-prefill-backend flashmla / triton / tilelang / reference")],
    ),
    "trtllm-decode-on-sm_80": (
        "sm_80", None, "trtllm", None, 8,
        [("--dsa-decode-backend trtllm: trtllm does not run on {device}: it supports sm_100, sm_103. "
         "Choices that work here: --dsa-decode-backend reference")],
    ),
    "trtllm-on-sm_120": (
        "sm_120", "trtllm", "trtllm", None, 8,
        [f"--dsa-{p}-backend trtllm: trtllm does not run on {{device}}: it supports sm_100, sm_103. "
         f"Choices that work here: --dsa-{p}-backend reference" for p in PHASES],
    ),
    "trtllm-on-gfx942": (
        "gfx942", None, "trtllm", None, 8,
        [("--dsa-decode-backend trtllm: trtllm does not run on {device}: it supports sm_100, sm_103. "
         "Choices that work here: --dsa-decode-backend tilelang / reference")],
    ),
    "trtllm-on-gfx950": (
        "gfx950", "trtllm", None, None, 8,
        [("--dsa-prefill-backend trtllm: trtllm does not run on {device}: it supports sm_100, sm_103. "
         "Choices that work here: --dsa-prefill-backend tilelang / reference")],
    ),
    "trtllm-on-cpu": (
        "cpu", None, "trtllm", None, 8,
        [("--dsa-decode-backend trtllm: trtllm does not run on {device}: it supports sm_100, sm_103. "
         "Choices that work here: --dsa-decode-backend reference")],
    ),
    "tilelang-on-sm_100": (
        "sm_100", "tilelang", None, None, 8,
        [("--dsa-prefill-backend tilelang: tilelang does not run on {device}: it supports sm_90, gfx942, gfx950. "
         "Choices that work here: --dsa-prefill-backend trtllm / triton / reference")],
    ),
    "tilelang-on-sm_120": (
        "sm_120", "tilelang", "tilelang", None, 8,
        [f"--dsa-{p}-backend tilelang: tilelang does not run on {{device}}: it supports sm_90, gfx942, gfx950. "
         f"Choices that work here: --dsa-{p}-backend reference" for p in PHASES],
    ),
    "tilelang-4-heads": (
        "sm_90", "tilelang", None, None, 16,
        [("--dsa-prefill-backend tilelang: tilelang prefill does not run 4 heads per GPU: it runs 8, 16, 32, 64. "
         "Choices that work here: --dsa-prefill-backend flashmla / triton / reference")],
    ),
    "tilelang-fp8-kv": (
        "sm_90", None, "tilelang", "fp8_e4m3", 8,
        [("--dsa-decode-backend tilelang: tilelang decode does not take kv-cache fp8_e4m3: it takes bfloat16. "
         "Choices that work here: --dsa-decode-backend flashmla")],
    ),
    "triton-on-sm_80": (
        "sm_80", "triton", None, None, 8,
        [("--dsa-prefill-backend triton: triton does not run on {device}: it supports sm_90, sm_100, cpu. "
         "Choices that work here: --dsa-prefill-backend reference")],
    ),
    "triton-on-gfx950": (
        "gfx950", None, "triton", None, 8,
        [("--dsa-decode-backend triton: triton does not run on {device}: it supports sm_90, sm_100, cpu. "
         "Choices that work here: --dsa-decode-backend tilelang / reference")],
    ),
    "triton-on-cpu-without-interpreter": (
        "cpu", "triton", None, None, 8,
        [("--dsa-prefill-backend triton: triton on cpu needs TRITON_INTERPRET=1. "
         "Choices that work here: --dsa-prefill-backend reference")],
    ),
    "sglang-name-on-sm_90": (
        "sm_90", None, "flashmla_kv", None, 8,
        [("--dsa-decode-backend flashmla_kv: flashmla_kv is not a DSA implementation of sglang_glm5 "
         "(ours: reference, triton, tilelang, trtllm, flashmla). Choices that work here: --dsa-decode-backend triton / tilelang / reference")],
    ),
    "fp8-kv-on-sm_120": (
        "sm_120", None, None, "fp8_e4m3", 8,
        [f"no DSA {p} implementation of sglang_glm5 runs on {{target}}; use --kv-cache-dtype auto / bfloat16" for p in PHASES],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal(case, bf16_checkpoint):
    arch, prefill, decode, kv, tp, lines = REFUSALS[case]
    req = request(bf16_checkpoint, prefill, decode, kv, tp)
    with pytest.raises(DSACapabilityError) as err:
        decide(req, available=SHIPPED, env=simulate(arch))
    device = Device(arch, f"simulated device ({SIMULATE_ENV}={arch})")
    # auto with a refused flag: no candidate runs, so the last one (bfloat16 on a GPU) is what the refusal names
    target = Target(device, kv or ("bfloat16" if arch == "sm_90" else AUTO_PICKS[arch][2]), req.heads_per_gpu)
    expected = [f"GLM-5 DSA cannot start on {target}:"] + ["  " + line.format(device=device, target=target) for line in lines]
    assert str(err.value).splitlines() == expected


def test_triton_runs_on_cpu_in_the_interpreter(bf16_checkpoint):
    env = simulate("cpu", TRITON_INTERPRET="1")
    decision = decide(request(bf16_checkpoint, "triton", "triton"), available=SHIPPED, env=env)
    assert dict(decision.choice.backends) == {"prefill": "triton", "decode": "triton"}


def test_a_choice_not_installed_is_refused_by_name(bf16_checkpoint):
    with pytest.raises(DSACapabilityError, match=r"tilelang is not installed in this sglang_glm5 \(installed: reference, triton\)"):
        decide(request(bf16_checkpoint, "tilelang"), available=("reference", "triton"), env=simulate("sm_90"))


def test_this_machine_is_detected_as_cpu():
    assert detect_device("cpu", env={}) == Device("cpu", "CPU")
    assert detect_device(None, env=simulate("gfx942")).arch == "gfx942"


@pytest.mark.parametrize("tp,dp,heads", [(8, 1, 8), (16, 1, 4), (8, 8, 64), (1, 1, 64)], ids=["tp8", "tp16", "tp8-dp8", "tp1"])
def test_heads_per_gpu(tp, dp, heads):
    assert heads_per_gpu(GLM5_HEADS, tp, dp) == heads


def test_unresolved_flag_names_the_check():
    with pytest.raises(DSABackendChoiceError, match="--dsa-decode-backend not resolved: the start-up check"):
        resolve_impl(None, "decode")


@pytest.mark.parametrize("breakage,message", [
    (lambda d: d.pop("auto_pick_order"), "top level: missing field 'auto_pick_order'"),
    (lambda d: d["implementations"]["triton"]["decode"].update(archs="sm_90"),
     "implementations.triton.decode: field 'archs' must be list, got 'sm_90'"),
    (lambda d: d["implementations"]["triton"]["prefill"].pop("kv_cache_dtypes"),
     "implementations.triton.prefill: missing field 'kv_cache_dtypes'"),
], ids=["no-pick-order", "archs-not-a-list", "no-kv-dtypes"])  # fmt: skip
def test_a_malformed_table_is_refused_naming_the_file_and_field(tmp_path, breakage, message):
    """The table is read through sglang_glm5/datafiles.py's field check (its own error type), never a KeyError."""
    data = json.loads((TABLE.path).read_text())
    breakage(data)
    (tmp_path / TABLE.path.name).write_text(json.dumps(data))
    with pytest.raises(DSACapabilityError) as raised:
        load_capabilities(tmp_path)
    assert str(raised.value) == f"{tmp_path / TABLE.path.name}: {message}"
