"""The report: each run's figures next to the cookbook's for the same task/profile/metric, and a PNG."""

import json

import pytest

from sglang_glm5.cli import main
from sglang_glm5.eval.cookbook import cookbook

RUNS = {
    "gsm8k.json": {"task": "gsm8k", "model": "m", "base_url": "http://h:1", "command": "sglang-glm5 eval gsm8k ...",
                   "created": "2026-01-01T00:00:00+00:00", "accuracy": 0.5, "latency_s": 64.94,
                   "output_throughput_tok_s": 321.022, "num_questions": 200, "failed_requests": 0},
    "speed.json": {"task": "speed", "profile": "latency", "model": "m", "base_url": "http://h:1", "command": "c",
                   "created": "t", "output_throughput_tok_s": 58.98, "mean_tpot_ms": 15.08, "mean_ttft_ms": None,
                   "num_prompts": 10, "failed_requests": 0},
}


@pytest.fixture
def run_files(tmp_path):
    paths = []
    for name, doc in RUNS.items():
        (tmp_path / name).write_text(json.dumps(doc))
        paths.append(str(tmp_path / name))
    return paths


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")]


def test_report_rows_and_png(tmp_path, run_files):
    out = tmp_path / "out" / "report.md"
    assert main(["report", *run_files, "-o", str(out)]) == 0
    text = out.read_text()
    rows = table_rows(text)
    book = cookbook()
    expected = [p for doc in RUNS.values() for p in book.published
                if p.task == doc["task"] and p.profile == doc.get("profile")]
    assert len(rows) == len(expected)
    by_key = {(r[0], r[2], r[4]): r for r in rows}
    assert by_key[("`gsm8k.json`", "accuracy", "0.955")][3] == "0.500"
    assert by_key[("`gsm8k.json`", "accuracy", "0.955")][6] == f"{0.5 / 0.955:.3g}"
    assert by_key[("`gsm8k.json`", "accuracy", "0.970")][6] == f"{0.5 / 0.970:.3g}"
    assert by_key[("`gsm8k.json`", "latency (s)", "32.47")][6] == "2"
    assert by_key[("`speed.json`", "mean TPOT (ms)", "7.540")][3] == "15.08"
    assert by_key[("`speed.json`", "mean TTFT (ms)", "290.88")][3] == "—"
    assert "`sglang-glm5 eval gsm8k ...`" in text and "![measured vs cookbook](report.png)" in text
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_rejects_foreign_json(tmp_path, capsys):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"task": "humaneval"}))
    assert main(["report", str(bad), "-o", str(tmp_path / "r.md")]) == 2
    assert f"{bad}: field 'task' is 'humaneval', expected one of gsm8k, mmlu, speed" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_report_missing_file_named(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.json"), "-o", str(tmp_path / "r.md")]) == 2
    assert f"{tmp_path}/none.json: no such file" in capsys.readouterr().err
