"""The start-up check runs in every start-up path and stops before any weight loads: SGLang's launch_server with our
plugin (through `sglang-glm5 serve`, on this CPU) and `sglang-glm5 launch`."""

import sys

import pytest

from sglang_glm5.attention.capabilities import SIMULATE_ENV
from sglang_glm5.attention.kv_policy import STRICT_ENV
from sglang_glm5.cli import main
from sglang_glm5.serving.cli import launch_command
from tests.started_together import Started, commands_started_together

REFUSAL_TIMEOUT_S = 300  # launch_server's main process: imports and argument resolution only
WEIGHT_LOADING = "Load weight begin"  # SGLang's first weight-loading log line


REFUSALS = {"trtllm": ["--dsa-decode-backend", "trtllm"], "fp8-kv": ["--kv-cache-dtype", "fp8_e4m3"]}


@pytest.fixture(scope="module")
def fp8_checkpoint(tiny_checkpoint):
    return tiny_checkpoint("fp8")


@pytest.fixture(scope="module")
def serve(fp8_checkpoint, server_log_dir):
    """`sglang-glm5 serve --model-path <fp8 checkpoint> <flags>` as a user runs it, each of REFUSALS started at once
    (tests/started_together.py); `serve(name)` -> (exit status, log)."""
    argv = [sys.executable, "-m", "sglang_glm5.cli", "serve", "--model-path", str(fp8_checkpoint)]
    started = {
        name: Started([*argv, *flags], server_log_dir / f"startup-check-{name}.log") for name, flags in REFUSALS.items()
    }
    with commands_started_together(started):
        yield lambda name: started[name].result(REFUSAL_TIMEOUT_S)


@pytest.mark.slow
def test_launch_server_refuses_trtllm_on_cpu_before_loading_weights(serve):
    code, log = serve("trtllm")
    assert code != 0
    assert (
        "DSACapabilityError: GLM-5 DSA cannot start on CPU (cpu) with kv-cache auto (model dtype) and 4 heads per GPU:\n"
        "  --dsa-decode-backend trtllm: trtllm does not run on CPU (cpu): it supports sm_100, sm_103. "
        "Choices that work here: --dsa-decode-backend reference"
    ) in log
    assert WEIGHT_LOADING not in log


@pytest.mark.slow
def test_launch_server_refuses_fp8_latent_the_tiny_dims_cannot_hold(serve):
    """The reference reads SGLang's scaled FP8 latent on CPU (no calibrated scales needed: no warning), but the tiny
    arch's 64-d latent is not a multiple of its 128-value scale tile: refused before any weight loads."""
    code, log = serve("fp8-kv")
    assert code != 0
    assert "no calibrated k/v scales" not in log
    assert ("--kv-cache-dtype fp8_e4m3: SGLang's FP8 latent layout needs kv_lora_rank a multiple of 128 and "
            "qk_rope_head_dim 64 (or 0); this checkpoint has 64 and 16: use --kv-cache-dtype bfloat16") in log
    assert WEIGHT_LOADING not in log


def test_serve_strict_flag_becomes_the_environment_variable():
    command, env = launch_command(["--model-path", "M", "--device", "cuda", "--strict"], {})
    assert "--strict" not in command and env[STRICT_ENV] == "1"


def test_launch_refuses_the_b200_preset_on_hopper(fp8_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv(SIMULATE_ENV, "sm_90")
    assert main(["launch", "--preset", "b200-fp8", "--model-path", str(fp8_checkpoint)]) == 2
    warning, error = capsys.readouterr().err.split("\n", 1)
    assert warning.startswith("warning: --kv-cache-dtype fp8_e4m3: the checkpoint has no calibrated k/v scales")
    assert error.startswith("sglang-glm5 launch: error: GLM-5 DSA cannot start on simulated device (SGLANG_GLM5_DEVICE=sm_90) (sm_90)")
    for phase in ("prefill", "decode"):
        assert f"--dsa-{phase}-backend trtllm: trtllm does not run on simulated device" in error
        assert "sm_100, sm_103. Choices that work here: none; use --kv-cache-dtype auto / bfloat16" in error


def test_launch_strict_refuses_fp8_kv_without_scales(fp8_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv(SIMULATE_ENV, "sm_100")
    assert main(["launch", "--preset", "b200-fp8", "--model-path", str(fp8_checkpoint), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--kv-cache-dtype fp8_e4m3: the checkpoint has no calibrated k/v scales" in err
    assert err.rstrip().endswith("(refused: --strict / SGLANG_GLM5_STRICT=1)")


@pytest.mark.parametrize("algorithm,dp,refused", [("EAGLE", 2, True), ("EAGLE", 1, False), (None, 2, False)],
                         ids=["eagle-dp2", "eagle-dp1", "no-spec-dp2"])
def test_speculation_with_attention_dp_refused_by_the_decision(algorithm, dp, refused):
    from sglang_glm5.serving.startup_check import ParallelChoiceError, refuse_speculation_with_attention_dp

    if refused:
        with pytest.raises(ParallelChoiceError, match=f"--speculative-algorithm {algorithm} with --attn-dp-size {dp}"):
            refuse_speculation_with_attention_dp(algorithm, dp)
    else:
        refuse_speculation_with_attention_dp(algorithm, dp)
