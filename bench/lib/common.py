"""What every benchmark shares: the command line that produced it, the machine, result JSON and RESULTS.md sections."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "bench"
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_MD_HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script named in its command (re-running it replaces the section).\n"
)
CACHE_ROOT = Path(os.environ.get("SGLANG_GLM5_BENCH_CACHE", "/tmp/sglang_glm5_bench"))
_SECTION = "<!-- bench:{key}:{edge} -->"


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces this run, relative to the repo root where possible."""
    exe = Path(sys.executable)
    exe_str = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe)
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None:  # `python -m bench.X`, as benchmarks are run
        script = ["-m", spec.name]
    else:
        path = Path(sys.argv[0]).resolve()
        script = [str(path.relative_to(REPO)) if path.is_relative_to(REPO) else sys.argv[0]]
    return shlex.join([exe_str, *script, *(sys.argv[1:] if argv is None else argv)])


def announce(argv: list[str] | None = None) -> str:
    cmd = command_line(argv)
    print(f"+ {cmd}", flush=True)
    return cmd


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_gib(field: str) -> float | None:
    """`field` of /proc/meminfo (kB) in GiB, None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def mem_total_gib() -> float | None:
    return _meminfo_gib("MemTotal")


def mem_available_gib() -> float | None:
    return _meminfo_gib("MemAvailable")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def machine() -> dict:
    """CPU model, cores, memory, and the load average at start (other jobs share this machine)."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "mem_total_gib": mem_total_gib(),
        "mem_available_gib_at_start": mem_available_gib(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def result_stem(name: str, quick: bool) -> str:
    return f"{name}-quick" if quick else name


def write_json(payload: dict, stem: str, results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def publish(payload: dict, stem: str, text: str, write: bool = True, results_dir: Path = RESULTS_DIR,
            results_md: Path = RESULTS_MD, section: bool = True) -> None:  # fmt: skip
    """The one way a benchmark reports: print its RESULTS.md section `text`; with `write`, save the payload as JSON
    and (unless `section` is False: a failed or unrecorded run) replace that section, entirely generated."""
    print(text)
    if write:
        print(f"wrote {write_json(payload, stem, results_dir)}")
        if section:
            print(f"updated {update_section(stem, text, results_md)}")


def recorded_sections(results_md: Path = RESULTS_MD) -> dict[str, str]:
    """Every generated section of RESULTS.md, key -> body (between its markers)."""
    text = results_md.read_text() if results_md.exists() else ""
    pattern = re.compile(re.escape(_SECTION.format(key="KEY", edge="start")).replace("KEY", r"(?P<key>\S+?)")
                         + r"\n(?P<body>.*?)\n" + re.escape(_SECTION.format(key="KEY", edge="end")).replace("KEY", r"(?P=key)"),
                         re.S)  # fmt: skip
    return {m["key"]: m["body"] for m in pattern.finditer(text)}


def republish(stem: str, render, results_dir: Path = RESULTS_DIR, results_md: Path = RESULTS_MD) -> Path:
    """Re-render the `stem` section from its recorded JSON with `render` (the benchmark's markdown): after a change
    to how a section is written, without re-running the benchmark. Nothing else writes a section."""
    payload = json.loads((results_dir / f"{stem}.json").read_text())
    return update_section(stem, render(payload), results_md)


def machine_line(m: dict) -> str:
    return (
        f"{m['cpu_model']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['mem_total_gib']} GiB RAM;"
        f" load average {m['loadavg_1m_at_start']} at start (the machine is shared with other jobs)"
    )


def update_section(key: str, body: str, path: Path = RESULTS_MD) -> Path:
    """Replace the `key` section of RESULTS.md (between its markers), or append it."""
    start, end = _SECTION.format(key=key, edge="start"), _SECTION.format(key=key, edge="end")
    block = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else RESULTS_MD_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def add_output_args(p: argparse.ArgumentParser, quick: dict, cache_help: str | None = None) -> None:
    """The flags the server benchmarks share: where caches and results go, RESULTS.md opt-out, and --quick."""
    p.add_argument("--cache-dir", type=Path, default=CACHE_ROOT, help=cache_help)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-markdown", dest="markdown", action="store_false", help="do not touch bench/RESULTS.md")
    p.add_argument("--quick", action="store_true", help=f"small smoke run: {quick}")


def parse_quick(p: argparse.ArgumentParser, argv: list[str] | None, quick: dict) -> argparse.Namespace:
    """Parses argv; with --quick, the `quick` values replace the parsed ones."""
    args = p.parse_args(argv)
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    return args


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lays out, writes `path` (PNG, 110 dpi) and closes `fig`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
