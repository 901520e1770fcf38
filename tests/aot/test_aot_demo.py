"""The AOT stage of `hf-ext demo`."""

import pytest

from hf_ext.demo import DEMO_STAGES, run_demo
from hf_ext.serialization import load_json, load_tensors


def test_stage_runs_after_the_foundation():
    assert [s.name for s in DEMO_STAGES][:2] == ["foundation", "aot"]


@pytest.mark.slow
def test_demo_stage_writes_before_after_rewards_report_and_plot(tmp_path, capsys):
    assert run_demo(tmp_path, stages=["aot"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| aot | ok |" in report and "](aot/held_out_reward_quantiles.png)" in report
    assert (tmp_path / "aot" / "held_out_reward_quantiles.png").read_bytes()[:4] == b"\x89PNG"
    rewards = load_tensors(tmp_path / "aot" / "held_out_rewards.safetensors")
    assert sorted(rewards) == ["after.chosen", "after.rejected", "before.chosen", "before.rejected"]
    assert all(t.shape == (64,) for t in rewards.values())
    figures = load_json(tmp_path / "aot" / "held_out_report.json")
    assert figures["after"]["violation_fraction"] < figures["before"]["violation_fraction"]
    assert figures["after"]["accuracy"] > figures["before"]["accuracy"]
    # the report's figures are those of the saved arrays
    assert figures["after"]["accuracy"] == pytest.approx(
        (rewards["after.chosen"] > rewards["after.rejected"]).double().mean().item()
    )
    assert "held-out dominance violation" in capsys.readouterr().out
