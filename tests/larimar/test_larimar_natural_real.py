"""The natural-facts Larimar on the real models (issue 16's goals): `NATURAL_RECIPE`, trained once and cached."""

import pytest

from hf_ext.real_models import real_models_available
from tests.portable import SEED, expect


pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.stage,
    pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)"),
]


@pytest.fixture(scope="module")
def natural_figures():
    import json
    from dataclasses import replace

    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir
    from examples.larimar.natural import measure_natural

    path = real_larimar_dir(replace(NATURAL_RECIPE, seed=NATURAL_RECIPE.seed + SEED), progress=False)
    log = json.loads((path / "training_log.json").read_text(encoding="utf-8"))
    return measure_natural(path), log


def test_counterfact_goals_on_32_unseen_facts_written_at_once(natural_figures):
    figures, _ = natural_figures
    counterfact = figures["counterfact"]
    assert counterfact["num_records"] == 32
    expect("rewrite, exact", counterfact["rewrite_exact"], at_least=0.8)
    expect("paraphrase, exact", counterfact["paraphrase_exact"], at_least=0.5)
    expect("neighbourhood, exact", counterfact["neighbourhood_exact"], at_least=0.9)
    # nothing was known before the write: the figures come from the memory
    assert counterfact["rewrite_exact_before"] == 0 and counterfact["paraphrase_exact_before"] == 0


def test_the_decoder_stays_itself_with_an_empty_memory(natural_figures):
    figures, _ = natural_figures
    expect("greedy agreement", figures["agreement"], at_least=0.9)
    expect("perplexity ratio", figures["perplexity_ratio"], at_least=0.9, at_most=1.1)


def test_the_recipe_fits_its_budget_and_calibrates_its_scope_on_training_subjects(natural_figures):
    _, log = natural_figures
    assert log["cpu_seconds"] <= 60 * 60
    calibration = log["scope_calibration"]
    expect("neighbourhood in scope at calibration", calibration["neighbourhood_in_scope"], at_most=0.05)
    assert calibration["num_records"] == 64
