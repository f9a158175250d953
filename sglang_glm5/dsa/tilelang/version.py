"""The one TileLang these kernels are built and tested with: the version the installed SGLang pins (sglang 0.5.23:
tilelang==0.1.12), so SGLang's own TileLang kernels and ours share one install and `pip check` stays clean."""

import warnings
from importlib.metadata import PackageNotFoundError, version

TESTED_TILELANG = "0.1.12"  # tests/dsa/test_tilelang_lowering.py lowers and builds every kernel with it


class TileLangVersionWarning(UserWarning):
    pass


def installed_tilelang() -> str | None:
    try:
        return version("tilelang")
    except PackageNotFoundError:
        return None


def version_problem(installed: str | None) -> str | None:
    """Why the installed TileLang is not the tested one, or None."""
    if installed == TESTED_TILELANG:
        return None
    found = f"tilelang {installed} is installed" if installed else "no tilelang distribution is installed"
    return (
        f"--dsa-*-backend tilelang: {found}, but sglang-glm5's TileLang kernels are built and tested with "
        f"tilelang=={TESTED_TILELANG} (the version sglang pins); `pip install tilelang=={TESTED_TILELANG}` "
        f"(or choose --dsa-prefill-backend/--dsa-decode-backend triton)"
    )


def warn_if_untested() -> None:
    problem = version_problem(installed_tilelang())
    if problem:
        warnings.warn(problem, TileLangVersionWarning, stacklevel=2)
