"""One TileLang: the version the installed sglang pins is the one our kernels are tested with and the one we declare;
any other is named at import of our TileLang kernels, with the fix."""

import re
import tomllib
import warnings
from importlib.metadata import requires
from pathlib import Path

import pytest

from sglang_glm5.dsa.tilelang import version as tl_version

REPO = Path(__file__).resolve().parents[2]


def _pin(requirements, name="tilelang"):
    pins = [r for r in requirements if re.match(rf"{name}\s*==", r)]
    assert len(pins) == 1, requirements
    return pins[0].split("==")[1].split(";")[0].strip()


def test_tested_tilelang_is_the_one_sglang_pins():
    assert _pin(requires("sglang")) == tl_version.TESTED_TILELANG


def test_we_declare_the_tested_tilelang():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _pin(project["dependencies"]) == tl_version.TESTED_TILELANG


def test_installed_tilelang_is_the_tested_one():
    """Fails in a venv set up before the TileLang override was dropped: `make setup` (or pip install -e .) fixes it."""
    assert tl_version.installed_tilelang() == tl_version.TESTED_TILELANG, tl_version.version_problem(
        tl_version.installed_tilelang()
    )


@pytest.mark.parametrize("installed", ["0.1.15", None], ids=["other-version", "not-installed"])
def test_an_untested_tilelang_is_named_with_the_fix(installed, monkeypatch):
    problem = tl_version.version_problem(installed)
    assert "--dsa-*-backend tilelang" in problem and f"pip install tilelang=={tl_version.TESTED_TILELANG}" in problem
    assert (f"tilelang {installed} is installed" if installed else "no tilelang distribution") in problem
    monkeypatch.setattr(tl_version, "installed_tilelang", lambda: installed)
    with pytest.warns(tl_version.TileLangVersionWarning, match="triton"):
        tl_version.warn_if_untested()


def test_the_tested_tilelang_is_quiet(monkeypatch):
    assert tl_version.version_problem(tl_version.TESTED_TILELANG) is None
    monkeypatch.setattr(tl_version, "installed_tilelang", lambda: tl_version.TESTED_TILELANG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tl_version.warn_if_untested()
