"""Sample a running Python process with py-spy and summarize where it spends its time."""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

RATE_HZ = 100
TOP = 15
SITE_PACKAGES = "site-packages/"
REPO_PREFIX = str(Path(__file__).resolve().parents[2]) + "/"
# Share of samples with this frame anywhere on the stack (py-spy --function: "name (file:first line)").
MARKERS = {
    "model forward (ModelRunner.forward)": "ModelRunner.forward ",
    "our package (sglang_glm5)": "sglang_glm5/",
    "our DSA backend": "sglang_glm5/attention/",
    "scheduler idle (Scheduler.on_idle)": "Scheduler.on_idle ",
}


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """Start sampling `pid` for `seconds` into a collapsed-stack file; returns the py-spy process to wait on."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(RATE_HZ),
           "--format", "raw", "--function", "--full-filenames", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(spy: subprocess.Popen, timeout: float = 60) -> None:
    """End a `record` early (py-spy writes what it sampled on SIGINT, as on Ctrl-C) and wait for its file."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    spy.wait(timeout=timeout)


def scheduler_pid(server_pid: int) -> int | None:
    """The SGLang scheduler among a launched server's processes (the one that runs the model), else the busiest child."""
    import psutil

    children = psutil.Process(server_pid).children(recursive=True)
    for child in children:
        try:
            if "scheduler" in " ".join([child.name(), *child.cmdline()]).lower():
                return child.pid
        except psutil.Error:
            continue
    return max(children, key=lambda c: sum(c.cpu_times()[:2])).pid if children else None


def share(stacks: list[tuple[list[str], int]], needle: str, within: str | None = None) -> tuple[float, int]:
    """(share of samples with a frame containing `needle`, samples counted): of all samples, or of those with a
    `within` frame (e.g. the model forward) when given."""
    pool = [(frames, c) for frames, c in stacks if within is None or any(within in f for f in frames)]
    total = sum(c for _, c in pool)
    hits = sum(c for frames, c in pool if any(needle in f for f in frames))
    return (hits / total if total else 0.0), total


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """`frame;frame;leaf count` lines -> [(frames, count)]."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """`name (/long/path/site-packages/pkg/mod.py:12)` -> `name (pkg/mod.py:12)`; same for files under the repo."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    return f"{name} ({where.split(SITE_PACKAGES)[-1].removeprefix(REPO_PREFIX)}"


def summarize(stacks: list[tuple[list[str], int]], top: int = TOP) -> dict:
    """Share of samples per leaf function (self), and of stacks holding each MARKERS frame."""
    total = sum(c for _, c in stacks) or 1
    leaf: collections.Counter = collections.Counter()
    for frames, count in stacks:
        leaf[short(frames[-1])] += count
    markers = {
        label: round(sum(c for frames, c in stacks if any(needle in f for f in frames)) / total, 3)
        for label, needle in MARKERS.items()
    }
    return {
        "samples": total,
        "markers": markers,
        "self_top": [(frame, round(c / total, 3)) for frame, c in leaf.most_common(top)],
    }
