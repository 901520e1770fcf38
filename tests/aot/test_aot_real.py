"""The real-model AOT stage (`make demo-real`): QLoRA on SmolLM2-135M-Instruct, AOT against DPO, short size."""

import numpy as np
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
def stage(tmp_path_factory):
    from examples.aot.experiment import run_real
    from hf_ext.demo import DemoContext
    from hf_ext.serialization import load_json

    output_dir = tmp_path_factory.mktemp("aot-real")
    result = run_real(DemoContext(output_dir=output_dir, real=True, seed=SEED), size="short")
    return result, load_json(output_dir / "held_out.json"), output_dir


def test_training_lowers_the_held_out_violations_of_both_methods(stage):
    _, saved, _ = stage
    reports = saved["reports"]
    for method in ("AOT", "DPO"):
        # judged on held-out facts: the model ranks the known answer above the rejected one more often
        drop = reports["base"]["pairwise_violation"] - reports[method]["pairwise_violation"]
        expect(f"{method}: pairwise violation drop", drop, at_least=0.1)
        gain = reports[method]["median_margin"] - reports["base"]["median_margin"]
        expect(f"{method}: median margin gain", gain, at_least=2.0)
        # the trained policy's implicit reward β log π/π_ref prefers the chosen answer on most held-out pairs
        expect(f"{method}: implicit reward violation", reports[method]["implicit_reward_violation"], at_most=0.3)


def test_exact_match_rises_on_held_out_facts(stage):
    _, saved, _ = stage
    reports = saved["reports"]
    for method in ("AOT", "DPO"):
        # the task's own verifier, blind to the rewards: at least 4 more held-out facts answered right out of 40
        gain = reports[method]["exact_match"] - reports["base"]["exact_match"]
        expect(f"{method}: exact match gain", gain, at_least=0.1)


def test_figures_are_those_of_the_saved_answers_and_scores(stage):
    from hf_ext.testing.aot import exact_match

    result, saved, output_dir = stage
    facts = saved["facts"]
    for method in ("base", "AOT", "DPO"):
        evaluation = saved["evaluations"][method]
        exact = [exact_match(a, f["answer"]) for a, f in zip(evaluation["answers"], facts)]
        assert result.figures[f"held-out exact match, {method}"] == pytest.approx(np.mean(exact), abs=1e-4)
        chosen, rejected = np.array(evaluation["chosen"]), np.array(evaluation["rejected"])
        assert result.figures[f"pairwise violation, {method}"] == pytest.approx(np.mean(chosen <= rejected), abs=1e-4)
    # the held-out rejected answers are the base model's wrong answers, or the curated wrong ones where it was right
    base_answers = saved["evaluations"]["base"]["answers"]
    for fact, answer in zip(facts, base_answers):
        if exact_match(answer, fact["answer"]):
            assert fact["rejected"] == f" {fact['wrong']}."
    risk = saved["risk"]
    assert sorted(risk["models"]) == ["AOT", "DPO"] and risk["order"] == 1 and risk["paired"]
    assert all((output_dir / f"held_out_quantiles_{m}.png").read_bytes()[:4] == b"\x89PNG" for m in ("aot", "dpo"))
