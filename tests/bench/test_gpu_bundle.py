"""bench/gpu_bundle.sh + bench/gpu_check.sh offline: what a device run needs is in the bundle, and nothing it imports
needs sglang or an install of this package.

A device-like copy of the repo (the files the device tool sends plus the carried bundle), run with this package's
editable install hidden and sglang / deep_gemm / sgl_kernel / flashinfer unimportable, as on the lent machines
(torch, triton and nvcc there; no tilelang, no sglang, no registry). gpu_check.sh runs up to its GPU probe; then the
bundled TileLang builds an sm_90a cubin with nvcc and the GPU tests and benchmarks import and collect.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MISSING_ON_DEVICE = ("sglang", "deep_gemm", "sgl_kernel", "flashinfer")
DEVICE_SIM = f"""
import sys
MISSING = {MISSING_ON_DEVICE!r}
# no install of sglang_glm5 on the device: drop the editable finder, so the copy's own folders are what imports
# (setuptools appends the finder class itself, so its own __module__ names it)
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in str(getattr(f, "__module__", "")).lower()]


class MissingOnDevice:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"not on the device machine: {{name}}")
        return None


sys.meta_path.insert(0, MissingOnDevice())
"""

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """(repo copy, unpacked site, env, gpu_check.sh's result) with the bundle built, carried and unpacked."""
    root = tmp_path_factory.mktemp("device")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # apache-tvm-ffi for this interpreter, not 3.12
    env = dict(os.environ, BUNDLE_DIR=str(root / "bundle"), XZ_LEVEL="0", DEVICE_PYTHON=version, PYTHON=sys.executable)
    built = _run(["bash", "bench/gpu_bundle.sh"], REPO, env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    listed = _run(["git", "ls-files", "-z", "-co", "--exclude-standard"], REPO, env).stdout.split("\0")
    copy = root / "repo"
    for name in filter(None, listed):  # links travel as links (sglang_glm5/configs -> ../configs)
        source, target = REPO / name, copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    shutil.copytree(root / "bundle", copy / ".gpu-bundle")
    sim = root / "sim"
    sim.mkdir()
    (sim / "sitecustomize.py").write_text(DEVICE_SIM)
    site = root / "site"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env.update(PYTHON=sys.executable, GLM5_SITE=str(site), PYTHONPATH=str(sim))
    check = _run(["bash", "bench/gpu_check.sh"], copy, env)
    env["PYTHONPATH"] = f"{sim}{os.pathsep}{site}"  # what gpu_check.sh exports after unpacking
    return copy, site, env, check


def test_bundle_fits_the_device_tools_carry_limit(device):
    copy, _, _, _ = device
    assert (copy / ".gpu-bundle" / "site.tar.xz").stat().st_size < 56 * 2**20  # XZ_LEVEL 0 here; 9 is ~33 MiB


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: bench/gpu_check.sh runs in full there")
def test_gpu_check_unpacks_and_stops_at_the_gpu_probe(device):
    copy, site, _, check = device
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"unpacked .gpu-bundle to {site}" in check.stdout
    assert "no CUDA/ROCm device visible to torch" in check.stderr
    assert (site / "tilelang" / "lib" / "libtilelang.so").is_file()


def test_kernels_import_from_the_copy_and_the_bundle_without_sglang(device):
    copy, site, env, _ = device
    probe = _run([sys.executable, "-c", f"""
import json, importlib
import tilelang, sglang_glm5, sglang_glm5.dsa.triton, sglang_glm5.dsa.tilelang
missing = []
for name in {MISSING_ON_DEVICE!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        missing.append(name)
print(json.dumps(dict(tilelang=tilelang.__file__, package=sglang_glm5.__file__, missing=missing)))
"""], copy, env)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["tilelang"].startswith(str(site)) and found["package"].startswith(str(copy))
    assert found["missing"] == list(MISSING_ON_DEVICE)


def test_bundled_tilelang_builds_an_sm90a_cubin(device, tmp_path):
    copy, _, env, _ = device
    built = _run([sys.executable, "-m", "tests.dsa.tilelang_targets", "cubin", "indexer_logits_fp8-H32"], copy,
                 dict(env, TILELANG_CACHE_DIR=str(tmp_path)))  # fmt: skip
    records = [json.loads(line) for line in built.stdout.splitlines() if line.startswith("{")]
    assert built.returncode == 0 and len(records) == 1, built.stderr[-3000:]
    assert records[0]["status"] == "ok" and records[0]["cuda_elf"], records[0]


def test_gpu_tests_and_benchmarks_load_without_sglang(device):
    copy, _, env, _ = device
    collected = _run([sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider",
                      "tests/gpu/test_dsa_kernels.py"], copy, env)  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert "test_indexer_logits_fp8[prefill-tilelang]" in collected.stdout
    for bench in ("kernels", "sparse_mla_prefill", "indexer_fp8"):  # as gpu_check.sh runs them
        loaded = _run([sys.executable, "-m", f"bench.{bench}", "--help"], copy, env)
        assert loaded.returncode == 0, f"bench.{bench}: {loaded.stderr[-2000:]}"
