"""Every DSA kernel compiles for CUDA sm_90 / sm_100 (bundled ptxas) and HIP gfx942 / gfx950, without a GPU.

One subprocess (`tests/dsa/compile_targets.py`, no TRITON_INTERPRET; the session fixture `triton_compiled`)
compiles them all; each pair is a test. What the binaries ask of the hardware: test_resources.py.
"""

import pytest

from tests.dsa.compile_targets import TARGETS, kernel_specs, wanted

# a HIP failure naming one of these is the machine lacking ROCm tools, not a kernel error
MISSING_ROCM_TOOL = ("ld.lld", "rocm", "hipcc", "lld not found")
PAIRS = [(spec[0], target) for spec in kernel_specs() for target in TARGETS if wanted(target, spec[5])]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kernel,target", PAIRS, ids=[f"{k}-{t}" for k, t in PAIRS])
def test_kernel_compiles(triton_compiled, kernel, target):
    record = triton_compiled[(kernel, target)]
    if record["status"] != "ok" and target.startswith("gfx"):
        if any(tool in record["detail"].lower() for tool in MISSING_ROCM_TOOL):
            pytest.skip(f"HIP {target} needs ROCm tools absent here: {record['detail'][:300]}")
    assert record["status"] == "ok", f"{kernel} for {target}: {record['detail']}\n{record['trace']}"
    assert record["bytes"] > 0
