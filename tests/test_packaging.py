"""The wheel carries what a `pip install` user needs: the kernels tree, data files and the CPU `sgl_kernel` stand-in
(a PYTHONPATH folder, not a package, so only package-data ships it)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRED = (
    "sglang_glm5/serving/cpu_stubs/sgl_kernel/__init__.py",
    "sglang_glm5/serving/cpu_defaults.json",
    "sglang_glm5/checkpoint/chat_template.jinja",
    "sglang_glm5/kernels/triton/__init__.py",
    "sglang_glm5/kernels/tilelang/__init__.py",
    "sglang_glm5/kernels/checks.py",
    "sglang_glm5/presets/configs/glm5-config.json",
    "sglang_glm5/presets/configs/presets/h200-fp8.json",
)
BUILD_TIMEOUT_S = 300


@pytest.mark.slow
def test_wheel_contains_runtime_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(tmp_path)],
        check=True, timeout=BUILD_TIMEOUT_S, cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("sglang_glm5-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in REQUIRED if f not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "glm5 = sglang_glm5.plugin:load" in entry_points
