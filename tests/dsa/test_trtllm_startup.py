"""trtllm at start-up: refused off Blackwell through the start-up path itself, accepted on SM100/SM103, and the
capability table's row agrees with what the trtllm module accepts. (The refusal messages per device, naming the GPU
and the backends that work, are tested with the table in tests/attention/test_capabilities.py.)"""

import pytest
import torch

from sglang_glm5.attention.capabilities import (
    SIMULATE_ENV,
    Device,
    DSACapabilityError,
    Target,
    load_capabilities,
)
from sglang_glm5.dsa.trtllm import mla
from sglang_glm5.serving.startup_check import StartupRequest, decide

TRTLLM = {"prefill": "trtllm", "decode": "trtllm"}
KV_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float8_e4m3fn: "fp8_e4m3"}


@pytest.fixture(scope="module")
def table():
    return load_capabilities()


@pytest.mark.parametrize("arch", ["sm_100", "sm_103"])
@pytest.mark.parametrize("kv", ["bfloat16", "fp8_e4m3"])
def test_trtllm_accepted_on_blackwell(table, arch, kv):
    choice = table.choose(TRTLLM, Target(Device(arch, "NVIDIA B200"), kv, 8))
    assert dict(choice.backends) == TRTLLM and not choice.picked


def test_startup_check_refuses_trtllm_on_a_hopper_device(tmp_path):
    """The start-up path itself (what SGLang's server-args pass runs), on a simulated sm_90 device."""
    request = StartupRequest(str(tmp_path), None, "bfloat16", TRTLLM, heads_per_gpu=8, strict=False)
    with pytest.raises(DSACapabilityError, match=r"trtllm does not run on .*\(sm_90\).*Choices that work here"):
        decide(request, env={SIMULATE_ENV: "sm_90"})


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_table_row_matches_the_module(table, phase):
    support = table.impls["trtllm"][phase]
    assert set(support.archs) == {"sm_100", "sm_103"}
    assert {KV_DTYPE_NAMES[d] for d in mla.KV_DTYPES} == set(support.kv_cache_dtypes)
    assert support.heads_per_gpu is not None
    assert not set(support.heads_per_gpu) & set(mla.HEADS_WITHOUT_CUBINS)
