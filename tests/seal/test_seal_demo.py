import pytest

from hf_ext.demo import DEMO_STAGES, run_demo


@pytest.mark.slow
def test_seal_stage_filters_the_planted_harmful_examples(tmp_path, aligned_path, capsys):
    assert [s.name for s in DEMO_STAGES].index("seal") < [s.name for s in DEMO_STAGES].index("risk")
    assert run_demo(tmp_path, stages=["seal"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| seal | ok |" in report and "](seal/seal_scores.png)" in report
    assert (tmp_path / "seal" / "seal_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "seal" / "seal_scores" / "seal_scores.safetensors").exists()
    kept = int(report.split("| harmful kept at p = 0.8, SEAL | ")[1].split(" |")[0])
    assert kept <= 1  # <= 5 % of the 32 planted harmful examples; a random 80 % keeps 25.6 on average
