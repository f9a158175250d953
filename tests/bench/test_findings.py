"""bench/findings.py: every line is derived from a recorded result; a benchmark without one is named as not run."""

import json
import shutil

from bench import findings
from bench.lib import common


def test_every_recorded_result_gives_its_line_with_its_numbers(tmp_path):
    for stem in findings.FINDINGS:
        if (common.RESULTS_DIR / f"{stem}.json").is_file():
            shutil.copy(common.RESULTS_DIR / f"{stem}.json", tmp_path)
    (tmp_path / "kernels.json").unlink(missing_ok=True)
    derived = findings.derive(tmp_path)
    assert set(derived) == set(findings.FINDINGS)
    assert derived["kernels"] == {"missing": "no recorded run (kernels.json absent)"}
    for stem, f in derived.items():
        assert stem == "kernels" or "line" in f, stem
    serving = json.loads((tmp_path / "serving_throughput.json").read_text())
    assert f"{serving['ratio']:.2f}x HF transformers" in derived["serving_throughput"]["line"]
    payload = {"command": "CMD", "date": "today", "commit": "abc", "findings": derived}
    text = findings.markdown(payload)
    assert "`kernels`: no recorded run" in text and text.count("\n- ") == len(findings.FINDINGS)
