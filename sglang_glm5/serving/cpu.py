"""The environment and default flags for serving on CPU, read from configs/cpu-defaults.json."""

import os
import sys
from pathlib import Path

from sglang_glm5.datafiles import config_path, field, read_json_object
from sglang_glm5.hooks.model_choice import UPSTREAM, model_choice

CPU_DEFAULTS = "cpu-defaults.json"  # in configs/

STUB_DIR = Path(__file__).parent / "cpu_stubs"  # holds the `sgl_kernel` stand-in
EXTERNAL_MODEL_PACKAGE = "SGLANG_EXTERNAL_MODEL_PACKAGE"
THREADS_BIND_ENV = "SGLANG_CPU_OMP_THREADS_BIND"  # SGLang's per-rank CPU list, "|"-separated, one entry per local rank
# launch_server's spellings (argparse also accepts unique prefixes such as --tp) of the sizes that multiply into ranks
_RANK_FACTORS = {
    "tp": ("--tp-size", "--tensor-parallel-size", "--tp"),
    "pp": ("--pp-size", "--pipeline-parallel-size", "--pp"),
    "dp": ("--dp-size", "--data-parallel-size", "--dp"),
    "nnodes": ("--nnodes",),
}


def cpu_defaults() -> dict:
    """{"env": {VAR: value}, "flags": {flag: value or None}}, checked."""
    path = config_path(CPU_DEFAULTS)
    data = read_json_object(path)
    return {key: field(data, key, dict, str(path)) for key in ("env", "flags")}


def cpu_environment(base: dict[str, str]) -> dict[str, str]:
    """`base` plus SGLang's CPU switch and the `sgl_kernel` stand-in first on PYTHONPATH (reaches SGLang's subprocesses)."""
    env = dict(base)
    env.update(cpu_defaults()["env"])
    if model_choice(env) == UPSTREAM:  # SGLang's own GLM-5 class: our model package must not be registered
        env.pop(EXTERNAL_MODEL_PACKAGE)
    paths = [str(STUB_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(STUB_DIR)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def total_ranks(argv: list[str]) -> int:
    """SGLang scheduler ranks over all nodes: tp x pp x dp replicas (attention DP, `--attn-dp-size`, lives inside the
    TP group and adds none)."""
    size = {key: _int_flag(argv, spellings) for key, spellings in _RANK_FACTORS.items()}
    return size["tp"] * size["pp"] * size["dp"]


def ranks_on_this_node(argv: list[str]) -> int:
    """The ranks this launch_server starts: total_ranks split over --nnodes."""
    return max(1, total_ranks(argv) // _int_flag(argv, _RANK_FACTORS["nnodes"]))


def threads_bind(ranks: int, cpus: list[int]) -> str:
    """SGLang's `SGLANG_CPU_OMP_THREADS_BIND` for `ranks` local ranks over `cpus`: contiguous equal slices
    ("0-3|4-7"), or one CPU per rank taken in turn when there are more ranks than CPUs ("0|1|0|1")."""
    if not cpus or ranks < 1:
        raise ValueError(f"cannot bind {ranks} ranks to CPUs {cpus}")
    cpus = sorted(cpus)
    if ranks >= len(cpus):
        return "|".join(str(cpus[r % len(cpus)]) for r in range(ranks))
    per_rank = len(cpus) // ranks
    slices = [cpus[r * per_rank : (r + 1) * per_rank] for r in range(ranks)]
    return "|".join(_cpu_list(s) for s in slices)


def _cpu_list(cpus: list[int]) -> str:
    """"4-7" for a contiguous run (the form SGLang's CPU kernels parse), else "4,6,9"."""
    if len(cpus) > 1 and cpus[-1] - cpus[0] == len(cpus) - 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


def with_threads_bind(env: dict[str, str], argv: list[str]) -> dict[str, str]:
    """At more than one rank in all (even one per node), SGLang on CPU asserts unless there are as many NUMA nodes or
    an explicit CPU list with one entry per local rank: give it one over the CPUs this process may use, unless the
    user set it."""
    if total_ranks(argv) == 1 or env.get(THREADS_BIND_ENV):
        return env
    return dict(env, **{THREADS_BIND_ENV: threads_bind(ranks_on_this_node(argv), list(os.sched_getaffinity(0)))})


def _int_flag(argv: list[str], spellings: tuple[str, ...]) -> int:
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in spellings:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name} needs an integer, got {value!r}") from None
    return 1


def with_cpu_defaults(argv: list[str]) -> list[str]:
    """launch_server argv plus every CPU default flag the user did not give (`--flag` or `--flag=value`)."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    extra: list[str] = []
    for flag, value in cpu_defaults()["flags"].items():
        if flag not in given:
            extra += [flag] if value is None else [flag, value]
    return argv + extra


def prepare_this_process() -> None:
    """Make *this* Python process CPU-ready (for `sglang.Engine` in-process); call before importing SGLang."""
    os.environ.update(cpu_environment(dict(os.environ)))
    if str(STUB_DIR) not in sys.path:
        sys.path.insert(0, str(STUB_DIR))
