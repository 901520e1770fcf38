import re

import pytest

from hf_ext.demo import DEMO_STAGES, run_demo


@pytest.mark.slow
def test_demo_stage_reports_the_edit(tmp_path, trained_larimar_path):
    assert "larimar" in [stage.name for stage in DEMO_STAGES]
    assert run_demo(tmp_path, stages=["larimar"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| larimar | ok |" in report
    assert (tmp_path / "larimar" / "larimar_recall.png").read_bytes()[:4] == b"\x89PNG"
    figures = dict(re.findall(r"\| ([a-z0-9 -]+) \| ([0-9.]+) \|", report))
    assert float(figures["recall without memory"]) <= 0.1
    assert float(figures["recall after one-shot write"]) >= 0.9
    assert float(figures["recall of 16 forgotten facts"]) <= 0.1
    assert float(figures["unrelated prompts unchanged"]) == 1.0
