"""flashmla at start-up on a simulated Hopper (sm_90): picked first where flash_mla and deep_gemm import, skipped
(with the reason, when a flag names it) where they do not; the table's row agrees with what the module accepts."""

import pytest

from sglang_glm5.dsa import impls
from sglang_glm5.attention.capabilities import SIMULATE_ENV, DSACapabilityError, load_capabilities
from sglang_glm5.dsa.flashmla.layout import padded_heads
from sglang_glm5.serving.startup_check import StartupRequest, decide

SM_90 = {SIMULATE_ENV: "sm_90"}


def request(path, prefill=None, decode=None, kv=None, heads=8):
    return StartupRequest(str(path), None, kv, {"prefill": prefill, "decode": decode}, heads_per_gpu=heads, strict=False)


@pytest.fixture
def packages_import(monkeypatch):
    probed = []
    monkeypatch.setattr(impls, "import_error", lambda module: probed.append(module))
    return probed


@pytest.fixture
def packages_missing(monkeypatch):
    monkeypatch.setattr(impls, "import_error", lambda module: f"OSError: could not load {module}")


def test_picked_first_on_hopper_where_its_packages_import(tmp_path, packages_import):
    decision = decide(request(tmp_path, kv="fp8_e4m3"), env=SM_90)
    assert dict(decision.choice.backends) == {"prefill": "flashmla", "decode": "flashmla"}
    assert set(packages_import) == {"flash_mla", "deep_gemm"}
    auto = decide(request(tmp_path), env=SM_90)  # no calibrated k/v scales: the scaled 656 B layout needs none
    assert auto.kv_cache_dtype == "fp8_e4m3" and dict(auto.choice.backends) == dict(decision.choice.backends)


def test_bf16_kv_keeps_flashmla_for_prefill_only(tmp_path, packages_import):
    """FlashMLA's sparse decode has no bf16-KV kernel: decode falls to the next in the pick order."""
    decision = decide(request(tmp_path, kv="bfloat16"), env=SM_90)  # auto would pick the FP8 656 B latent here
    assert decision.kv_cache_dtype == "bfloat16"
    assert dict(decision.choice.backends) == {"prefill": "flashmla", "decode": "triton"}


def test_not_picked_where_its_packages_do_not_import(tmp_path, packages_missing):
    decision = decide(request(tmp_path), env=SM_90)
    assert "flashmla" not in decision.choice.supported["prefill"]
    assert dict(decision.choice.backends) == {"prefill": "triton", "decode": "triton"}
    with pytest.raises(DSACapabilityError, match=r"no DSA decode implementation .*use --kv-cache-dtype auto / bfloat16"):
        decide(request(tmp_path, kv="fp8_e4m3"), env=SM_90)  # only flashmla reads the FP8 pool on Hopper


def test_a_flag_naming_it_without_its_packages_is_refused_with_the_reason(tmp_path, packages_missing):
    with pytest.raises(DSACapabilityError) as err:
        decide(request(tmp_path, prefill="flashmla", kv="bfloat16"), env=SM_90)
    assert ("--dsa-prefill-backend flashmla: flashmla needs the flash_mla package importable "
            "(OSError: could not load flash_mla). Choices that work here: --dsa-prefill-backend triton") in str(err.value)  # fmt: skip


def test_its_packages_are_not_probed_where_the_table_does_not_list_it(tmp_path, monkeypatch):
    def fail(module):
        raise AssertionError(f"probed {module} on a device flashmla does not run on")

    monkeypatch.setattr(impls, "import_error", fail)
    for arch in ("cpu", "sm_100", "gfx942"):
        decide(request(tmp_path), env={SIMULATE_ENV: arch})


def test_this_cpu_machine_reports_why_flash_mla_is_unavailable():
    """The real probe, no monkeypatch: flash_mla's CUDA extension cannot load without a GPU runtime."""
    missing = impls.unavailable_impls(["flashmla", "reference"])
    assert set(missing) == {"flashmla"} and missing["flashmla"].startswith("flashmla needs the flash_mla package")


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_table_row_matches_the_module(phase):
    support = load_capabilities().impls["flashmla"][phase]
    assert support.archs == ("sm_90",)
    runs = []
    for heads in range(1, 129):
        try:
            padded_heads(heads)
            runs.append(heads)
        except ValueError:
            pass
    assert support.heads_per_gpu == tuple(runs)
    assert support.kv_cache_dtypes == (("bfloat16", "fp8_e4m3") if phase == "prefill" else ("fp8_e4m3",))
