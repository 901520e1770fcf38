from hf_ext.demo import DemoStage, StageResult, run_demo


def test_foundation_stage_writes_report_and_plot(tmp_path, capsys):
    assert run_demo(tmp_path, stages=["foundation"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| foundation | ok |" in report
    assert (tmp_path / "foundation" / "qlora_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "](foundation/qlora_loss.png)" in report
    out = capsys.readouterr().out
    assert "foundation  ok" in out and "QLoRA loss" in out


def test_a_failing_stage_fails_the_tour_but_not_the_others(tmp_path):
    def broken(context):
        raise RuntimeError("stage exploded")

    stages = [
        DemoStage("first", "raises", broken),
        DemoStage("second", "works", lambda context: StageResult(headline="fine", figures={"x": 1.5})),
    ]
    assert run_demo(tmp_path, available=stages) == 1
    report = (tmp_path / "report.md").read_text()
    assert "| first | FAILED |" in report and "RuntimeError: stage exploded" in report
    assert "| second | ok |" in report and "| x | 1.5 |" in report
