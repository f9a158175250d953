"""The wheel carries what a `pip install` user needs (the kernels tree, data files, the CPU `sgl_kernel` stand-in: a
PYTHONPATH folder, not a package, so only package-data ships it), and installs beside sglang with one version of
everything: into a fresh venv that sees this environment's packages (sglang and its pins) through a .pth file,
resolved with `--no-index` (a dependency the environment does not satisfy cannot be fetched: the install fails),
then `pip check` there, and the installed plugin is the wheel's."""

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRED = (
    "sglang_glm5/serving/cpu_stubs/sgl_kernel/__init__.py",
    "sglang_glm5/configs/cpu-defaults.json",
    "sglang_glm5/checkpoint/chat_template.jinja",
    "sglang_glm5/dsa/triton/__init__.py",
    "sglang_glm5/dsa/tilelang/__init__.py",
    "sglang_glm5/dsa/checks.py",
    "sglang_glm5/configs/glm5-config.json",
    "sglang_glm5/configs/presets/h200-fp8.json",
)
BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 300
PROBE = """
import json, sglang_glm5
from importlib.metadata import distribution, entry_points
(ep,) = [e for e in entry_points(group="sglang.srt.plugins") if e.name == "glm5"]
print("PROBE " + json.dumps({"module": sglang_glm5.__file__, "entry_point": ep.value, "dist": str(ep.dist._path),
      "license": distribution("sglang-glm5").metadata["License-Expression"]}))
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(out)],
        check=True, timeout=BUILD_TIMEOUT_S, cwd=out, env=clean_env(),  # a PYTHONPATH with the repo root would make
    )  # `kernels` our folder instead of the `kernels` distribution whose egg_info writer setuptools loads
    (built,) = out.glob("sglang_glm5-*.whl")
    return built


def test_wheel_contains_runtime_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in REQUIRED if f not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "glm5 = sglang_glm5.plugin:load" in entry_points
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def fresh_venv_beside(path: Path, site_dirs: list[str]) -> Path:
    """A venv without pip whose interpreter also sees `site_dirs` (after its own site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=INSTALL_TIMEOUT_S)
    python = path / "bin" / "python"
    own = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], env=clean_env(),
                         check=True, capture_output=True, text=True, cwd=path).stdout.strip()  # fmt: skip
    Path(own, "_beside.pth").write_text("".join(f"{d}\n" for d in site_dirs))
    return python


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--isolated", "--python", str(python), *args], env=clean_env(),
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, cwd=python.parent)  # fmt: skip


def test_wheel_installs_beside_sglang_in_a_fresh_venv_and_pip_check_passes(wheel, tmp_path):
    python = fresh_venv_beside(tmp_path / "venv", site.getsitepackages())
    install = pip(python, "install", "--no-index", "--no-cache-dir", str(wheel))
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    check = pip(python, "check")
    assert check.returncode == 0, f"pip check in the fresh venv:\n{check.stdout}{check.stderr}"
    probe = subprocess.run([python, "-c", PROBE], env=clean_env(), capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    found = json.loads(next(l for l in probe.stdout.splitlines() if l.startswith("PROBE ")).removeprefix("PROBE "))
    assert found["module"].startswith(str(tmp_path / "venv")), found  # the wheel's files, not this tree's
    assert found["dist"].startswith(str(tmp_path / "venv")) and found["entry_point"] == "sglang_glm5.plugin:load"
    assert found["license"] == "Apache-2.0"
