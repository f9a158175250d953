"""bench/RESULTS.md holds generated sections only: each section a benchmark renders from its recorded JSON is exactly
what its markdown makes of that JSON today (re-render with `python -m bench.republish STEM` after changing one)."""

import json

import pytest

from bench import republish
from bench.lib import common

SECTIONS = common.recorded_sections()


def test_every_section_has_markers_and_a_known_writer():
    assert "findings" in SECTIONS and "serving_throughput" in SECTIONS
    text = common.RESULTS_MD.read_text()
    outside = text
    for key, body in SECTIONS.items():
        outside = outside.replace(body, "")
    assert outside.count("## ") == 0, "a heading outside every generated section"


@pytest.mark.parametrize("stem", [s for s in republish.RENDERED_BY if s in SECTIONS])
def test_section_is_its_markdown_of_its_recorded_result(stem):
    payload = json.loads((common.RESULTS_DIR / f"{stem}.json").read_text())
    assert republish.renderer(stem)(payload).strip() == SECTIONS[stem].strip()


def test_republish_rewrites_only_its_section(tmp_path):
    md = tmp_path / "RESULTS.md"
    common.update_section("a", "old a", md)
    common.update_section("b", "keep b", md)
    (tmp_path / "a.json").write_text(json.dumps({"n": 2}))
    common.republish("a", lambda p: f"new a {p['n']}", tmp_path, md)
    assert common.recorded_sections(md) == {"a": "new a 2", "b": "keep b"}
