"""KV-cache dtype policy: FP8 KV on the tiny FP8 checkpoint (no calibrated k/v scales) warns, or is refused with
--strict; a checkpoint with k/v scales gets FP8 KV by default where the implementations take it."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from sglang_glm5.attention.capabilities import SIMULATE_ENV
from sglang_glm5.attention.kv_policy import KVDtypeError, find_kv_scales
from sglang_glm5.serving.startup_check import StartupRequest, decide

SHIPPED = ("reference", "triton", "tilelang", "trtllm")
BLACKWELL = {SIMULATE_ENV: "sm_100"}
HEADS_PER_GPU = 8


def request(model_path, kv, strict=False):
    flags = {"prefill": None, "decode": None}
    return StartupRequest(str(model_path), None, kv, flags, HEADS_PER_GPU, strict)


@pytest.fixture(scope="module")
def fp8_checkpoint(tiny_checkpoint):
    return tiny_checkpoint("fp8")


@pytest.fixture(scope="module")
def calibrated_checkpoint(fp8_checkpoint, tmp_path_factory):
    """The tiny FP8 checkpoint plus one shard of per-layer k/v scales, listed in the index."""
    out = tmp_path_factory.mktemp("calibrated") / "ckpt"
    shutil.copytree(fp8_checkpoint, out)
    config = json.loads((out / "config.json").read_text())
    scales = {
        f"model.layers.{i}.self_attn.{name}": torch.tensor(0.02)
        for i in range(config["num_hidden_layers"])
        for name in ("k_scale", "v_scale")
    }
    save_file(scales, out / "kv-scales.safetensors")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    index["weight_map"].update(dict.fromkeys(scales, "kv-scales.safetensors"))
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return out


def test_tiny_fp8_checkpoint_has_no_kv_scales(fp8_checkpoint):
    scales = find_kv_scales(fp8_checkpoint)
    assert scales.calibrated is False
    assert scales.where == f"{fp8_checkpoint}: 0 tensors named *.k_scale/*.v_scale/*.kv_scale"


def test_fp8_kv_on_the_tiny_fp8_checkpoint_warns(fp8_checkpoint):
    decision = decide(request(fp8_checkpoint, "fp8_e4m3"), available=SHIPPED, env=BLACKWELL)
    assert decision.kv_cache_dtype == "fp8_e4m3" and dict(decision.choice.backends) == {"prefill": "trtllm", "decode": "trtllm"}
    assert decision.warnings == (
        (f"--kv-cache-dtype fp8_e4m3: the checkpoint has no calibrated k/v scales ({fp8_checkpoint}: 0 tensors named "
        "*.k_scale/*.v_scale/*.kv_scale); FP8 KV then quantizes with scale 1.0, which costs GLM-5 accuracy (about "
        "20 points on AIME/GPQA): use --kv-cache-dtype bfloat16"),
    )


def test_fp8_kv_on_the_tiny_fp8_checkpoint_is_refused_with_strict(fp8_checkpoint):
    with pytest.raises(KVDtypeError, match=r"has no calibrated k/v scales .* \(refused: --strict / SGLANG_GLM5_STRICT=1\)$"):
        decide(request(fp8_checkpoint, "fp8_e4m3", strict=True), available=SHIPPED, env=BLACKWELL)


def test_a_hub_id_not_cached_cannot_be_checked_and_warns_saying_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # empty (a cached hub id: tests/checkpoint/test_hub_ids.py)
    decision = decide(request("zai-org/GLM-5-FP8", "fp8_e4m3"), available=SHIPPED, env=BLACKWELL)
    assert "could not be checked for k/v scales (zai-org/GLM-5-FP8: not a local directory" in decision.warnings[0]
    assert f"not in the local Hugging Face cache {tmp_path}" in decision.warnings[0]


def test_calibrated_checkpoint_has_scales_and_no_warning(calibrated_checkpoint):
    assert find_kv_scales(calibrated_checkpoint).calibrated is True
    assert decide(request(calibrated_checkpoint, "fp8_e4m3"), available=SHIPPED, env=BLACKWELL).warnings == ()


@pytest.mark.parametrize(
    "arch,calibrated,kv",
    [("sm_100", True, "fp8_e4m3"), ("sm_100", False, "bfloat16"), ("sm_90", True, "bfloat16"),
     ("gfx942", True, "bfloat16"), ("cpu", True, "auto"), ("cpu", False, "auto")],
    ids=["sm_100-calibrated", "sm_100-uncalibrated", "sm_90-calibrated", "gfx942-calibrated", "cpu-calibrated", "cpu"],
)  # fmt: skip
def test_default_kv_dtype_per_device_and_checkpoint(arch, calibrated, kv, fp8_checkpoint, calibrated_checkpoint):
    checkpoint = calibrated_checkpoint if calibrated else fp8_checkpoint
    for given in (None, "auto"):
        decision = decide(request(checkpoint, given), available=SHIPPED, env={SIMULATE_ENV: arch})
        assert decision.kv_cache_dtype == kv and decision.warnings == ()


def test_bf16_alias_is_normalized(fp8_checkpoint):
    assert decide(request(fp8_checkpoint, "bf16"), available=SHIPPED, env={SIMULATE_ENV: "sm_90"}).kv_cache_dtype == "bfloat16"
