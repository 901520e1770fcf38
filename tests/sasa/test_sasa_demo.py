"""The SASA demo stage: its report figures come from the per-continuation arrays it saves."""

import json

import numpy as np
import pytest

from hf_ext.demo import DEMO_STAGES, DemoContext


@pytest.mark.slow
def test_sasa_stage_saves_scores_with_and_without_sasa(tmp_path, planted):
    (stage,) = [s for s in DEMO_STAGES if s.name == "sasa"]
    result = stage.run(DemoContext(output_dir=tmp_path))
    saved = json.loads((tmp_path / "toxicity_scores.json").read_text())
    without, with_sasa = np.array(saved["without_sasa"]), np.array(saved["with_sasa"])
    assert without.shape == with_sasa.shape == (len(saved["prompts"]), saved["num_continuations"])
    assert result.figures["toxic rate, without SASA"] == pytest.approx(np.mean(without.max(1) >= 0.5), abs=1e-4)
    assert result.figures["toxic rate, with SASA"] == pytest.approx(np.mean(with_sasa.max(1) >= 0.5), abs=1e-4)
    assert with_sasa.mean() < without.mean()
    assert {p.name for p in result.plots} == {"sasa_vs_word_lists.png", "margin_along_generation.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.plots)
