"""The natural-facts Larimar on the real models (issue 16's goals): `NATURAL_RECIPE`, trained once and cached."""

import pytest

from hf_ext.real_models import real_models_available


pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)"),
]


@pytest.fixture(scope="module")
def natural_figures():
    import json

    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir
    from examples.larimar.natural import measure_natural

    path = real_larimar_dir(NATURAL_RECIPE, progress=False)
    log = json.loads((path / "training_log.json").read_text(encoding="utf-8"))
    return measure_natural(path), log


def test_counterfact_goals_on_32_unseen_facts_written_at_once(natural_figures):
    figures, _ = natural_figures
    counterfact = figures["counterfact"]
    assert counterfact["num_records"] == 32
    assert counterfact["rewrite_exact"] >= 0.8
    assert counterfact["paraphrase_exact"] >= 0.5
    assert counterfact["neighbourhood_exact"] >= 0.9
    # nothing was known before the write: the figures come from the memory
    assert counterfact["rewrite_exact_before"] == 0 and counterfact["paraphrase_exact_before"] == 0


def test_the_decoder_stays_itself_with_an_empty_memory(natural_figures):
    figures, _ = natural_figures
    assert figures["agreement"] >= 0.9
    assert abs(figures["perplexity_ratio"] - 1) <= 0.1


def test_the_recipe_fits_its_budget_and_calibrates_its_scope_on_training_subjects(natural_figures):
    _, log = natural_figures
    assert log["cpu_seconds"] <= 60 * 60
    calibration = log["scope_calibration"]
    assert calibration["neighbourhood_in_scope"] <= 0.05
    assert calibration["num_records"] == 64
