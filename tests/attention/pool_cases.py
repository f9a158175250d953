"""Run a cases module that builds SGLang's real DSA pool in its own process (Triton interpreter, SGLang's CPU engine,
our CPU stubs on the path) and return the JSON facts it prints last: one process per test module."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CASES_TIMEOUT_S = 900


def pool_case_facts(module: str) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", SGLANG_USE_CPU_ENGINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "sglang_glm5/serving/cpu_stubs"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True, text=True, timeout=CASES_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
