import numpy as np
import pytest

import hf_ext.demo as demo
from examples.risk.experiment import rank_stage_samples, run_real
from hf_ext.demo import DemoContext, DemoStage, StageResult


def _shifted(seed=0, n=300):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, n)
    return {"tuned": (base + 1.0).tolist(), "base": base.tolist()}


def _risky(seed=1, n=400):
    rng = np.random.default_rng(seed)
    safe = rng.normal(0.3, 0.3, n)
    failures = rng.random(n) < 0.15
    risky = np.where(failures, rng.normal(-4.0, 0.5, n), rng.normal(1.5, 0.3, n))
    return {"safe": safe.tolist(), "risky": risky.tolist()}


def test_each_stage_is_ranked_with_significance(tmp_path):
    previous = {
        "aot": StageResult(headline="", samples=_shifted(), samples_description="margin"),
        "sasa": StageResult(headline="", samples=_risky(), samples_description="-toxicity"),
        "seal": StageResult(headline="no samples"),
    }
    result = run_real(DemoContext(output_dir=tmp_path, real=True, previous=previous), n_bootstrap=300)
    assert "aot: tuned ≻ base" in result.headline
    assert result.figures["aot: first order"].startswith("tuned > base; significant: tuned ≻ base")
    # sasa: the mean favours `risky` (0.68 vs 0.3), second-order (risk-averse) dominance favours `safe`.
    assert result.figures["sasa: second order"].startswith("safe > risky")
    assert "| sasa | -toxicity | 400 | risky > safe |" in result.details
    assert not any(key.startswith("seal") for key in result.figures)
    assert (tmp_path / "rankings.json").exists()


def test_bad_samples_are_named():
    with pytest.raises(ValueError, match="Stage 'aot' reported samples for \\['a', 'b'\\] with lengths \\[2, 3\\]"):
        rank_stage_samples({"aot": {"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}})
    with pytest.raises(ValueError, match="two or more models"):
        rank_stage_samples({"aot": {"a": [1.0, 2.0]}})


def test_alone_it_says_what_it_needs(tmp_path):
    result = run_real(DemoContext(output_dir=tmp_path, real=True))
    assert result.headline.startswith("no earlier stage reported per-sample scores")


def test_the_tour_passes_earlier_results_to_later_stages(tmp_path):
    from examples.risk.experiment import STAGE as RISK_STAGE

    method = DemoStage(name="method", title="m", run=lambda context: StageResult(headline="h", samples=_shifted()))
    assert demo.run_demo(tmp_path, real=True, available=[method, RISK_STAGE]) == 0
    assert "method: tuned ≻ base" in (tmp_path / "report.md").read_text()
