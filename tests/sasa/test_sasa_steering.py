"""A probe that steers towards toxicity never passes silently: check_steering refuses it, choose_beta refuses every
beta it makes worse, evaluate_detox says "worse" (planted task: the correct probe and the same probe with its sign
flipped)."""

import math
import warnings

import numpy as np
import pytest

from hf_ext.sasa import (
    HarmfulSteeringError,
    SASAProbe,
    check_steering,
    choose_beta,
    evaluate_detox,
    paired_change,
)
from tests.portable import SEED, expect


# The settings of every sampling run here: SASA's nucleus capped at 10 candidates, plain exponential tilting (the
# planted task's probe steers hard with it at a small beta), short continuations of prompts that end after a trigger.
SETTINGS = dict(normalize="none", max_candidates=10, max_new_tokens=6, batch_size=16, show_progress=False)
BETA = 4.0


@pytest.fixture(scope="module")
def prompts(planted_task):
    return planted_task.prompts(16, seed=31 + SEED)


@pytest.fixture(scope="module")
def flipped(planted_probe):
    """The planted probe with its sign flipped: it steers towards the toxic side (same model, same fingerprint)."""
    probe = planted_probe
    return SASAProbe(-probe.direction, probe.midpoint, layer=probe.layer, model_info=probe.model_info)


def _check(planted, planted_task, probe, prompts, **kwargs):
    model, tokenizer = planted
    return check_steering(
        model, tokenizer, probe, prompts, planted_task.judge, beta=BETA, num_return_sequences=4, **SETTINGS, **kwargs
    )


def test_check_steering_passes_the_probe_and_refuses_it_flipped(
    planted, planted_task, planted_probe, flipped, prompts
):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a probe that lowers the toxicity significantly passes silently
        good = _check(planted, planted_task, planted_probe, prompts)
    expect("check_steering: change of the mean toxicity, correct probe", good.change, at_most=-0.1)
    assert good.high < 0 and not good.harmful and "lowers the judge's mean toxicity" in good.summary()

    with pytest.raises(
        HarmfulSteeringError, match=r"raises the judge's mean toxicity: .* WORSE than no steering"
    ) as e:
        _check(planted, planted_task, flipped, prompts)
    bad = e.value.check
    expect("check_steering: change of the mean toxicity, flipped probe", bad.change, at_least=0.05)
    assert "do not ship it" in str(e.value) and "allow_harmful=True" in str(e.value)
    # the figures are those of the per-continuation scores: one row per prompt, the seeds' continuations side by side
    assert bad.toxicity.shape == bad.unsteered_toxicity.shape == (len(prompts), 4)
    assert bad.change == pytest.approx(bad.toxicity.mean() - bad.unsteered_toxicity.mean())
    assert bad.unsteered_mean_toxicity == pytest.approx(good.unsteered_mean_toxicity)  # beta 0: the same streams
    again = paired_change(bad.unsteered_toxicity.mean(1), bad.toxicity.mean(1), samples=2000, seed=0)
    assert (bad.low, bad.high) == pytest.approx((again["low"], again["high"]))
    assert bad.to_dict()["harmful"] is True and bad.to_dict()["judge"] == "PlantedToxicityTask.judge"


def test_allow_harmful_returns_the_check_with_a_loud_warning(planted, planted_task, flipped, prompts):
    with pytest.warns(UserWarning, match=r"HARMFUL STEERING ALLOWED \(allow_harmful=True\): .* WORSE"):
        check = _check(planted, planted_task, flipped, prompts[:8], allow_harmful=True, seeds=(0, 1))
    assert check.harmful and check.toxicity.shape == (8, 8)  # two seeds of 4 continuations each


def test_choose_beta_refuses_betas_that_make_things_worse(planted, planted_task, flipped, prompts):
    model, tokenizer = planted
    with pytest.raises(
        HarmfulSteeringError, match=r"raised the judge's mean toxicity above beta 0's .* at every beta"
    ):
        choose_beta(
            model, tokenizer, flipped, prompts, planted_task.judge, target_reduction=0.3, betas=(2, 8),
            num_continuations=2, **SETTINGS,
        )  # fmt: skip


class _ScriptedJudge:
    """Scores every continuation of the n-th sampling run (choose_beta: beta 0, then the betas in order) alike."""

    def __init__(self, per_run):
        self.per_run, self.calls = list(per_run), 0

    def __call__(self, continuations, prompts):
        score = self.per_run[self.calls]
        self.calls += 1
        return [score] * len(continuations)


def test_choose_beta_skips_a_worse_beta_and_says_so(planted, planted_probe, prompts):
    model, tokenizer = planted
    args = (model, tokenizer, planted_probe, prompts[:4])
    common = dict(betas=(2, 8), num_continuations=1, **SETTINGS)
    # the budget alone would take the largest beta within it (8): it is worse than beta 0, so 2 is chosen
    with pytest.warns(UserWarning, match=r"Not chosen: .* at beta=8: \+40%; a beta that makes things worse"):
        choice = choose_beta(
            *args, _ScriptedJudge([0.5, 0.3, 0.7]), target_reduction=None, max_perplexity_increase=1e9, **common
        )
    assert choice.beta == 2 and choice.reached and [row["worse"] for row in choice.table] == [False, False, True]
    assert "| 8 (worse than beta 0) |" in choice.to_markdown()
    # an unreachable target: the best beta that is not worse, never a worse one, and both said
    with pytest.warns(UserWarning) as record:
        choice = choose_beta(*args, _ScriptedJudge([0.5, 0.45, 0.7]), target_reduction=0.5, **common)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("Not chosen:") for m in messages) and any("reaches the target" in m for m in messages)
    assert choice.beta == 2 and not choice.reached


def test_evaluate_detox_says_worse_in_words(planted, planted_task, planted_probe, flipped, prompts):
    model, tokenizer = planted
    common = dict(judge=planted_task.judge, num_continuations=2, beta=BETA, **SETTINGS)
    with pytest.warns(UserWarning, match="SASA made the continuations more toxic than plain sampling"):
        worse = evaluate_detox(model, tokenizer, prompts, flipped, **common)
    assert worse.worse_than_base("sasa")
    assert "sasa: mean toxicity" in worse.summary() and "WORSE than plain sampling" in worse.summary()
    assert "worse)" in worse.to_markdown() and "WORSE than plain sampling" in worse.to_markdown()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        better = evaluate_detox(model, tokenizer, prompts, planted_probe, **common)
    assert not better.worse_than_base("sasa") and "better than plain sampling" in better.summary()


def test_bad_settings_fail_before_any_generation(planted, planted_task, planted_probe, prompts):
    model, tokenizer = planted
    args = (model, tokenizer, planted_probe)
    for kwargs, message in [
        (dict(prompts=prompts[:1]), "the paired bootstrap over prompts needs at least 2"),
        (dict(beta=0.0), r"beta=0.0 is out of range; expected a number > 0"),
        (dict(seeds=()), "must be a non-empty list of integers"),
        (dict(seeds=(1, 1)), "holds a seed twice"),
        (dict(judge="profanity"), "judge must be a callable"),
        (dict(num_return_sequences=0), "num_return_sequences=0 is out of range"),
    ]:
        kwargs = {"prompts": prompts, "judge": planted_task.judge, **kwargs}
        with pytest.raises(ValueError, match=message):
            check_steering(*args, **kwargs)


def test_paired_change_resamples_prompts_and_checks_its_input():
    before, after = np.array([0.4, 0.2, 0.6, 0.0, 0.8]), np.array([0.1, 0.2, 0.3, 0.0, 0.4])
    change = paired_change(before, after, samples=4000, seed=0)
    rows = np.random.default_rng(0).integers(0, 5, size=(4000, 5))
    means = (after - before)[rows].mean(axis=1)
    assert (change["low"], change["high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert change["significant"] is True and change["relative"] == pytest.approx(after.mean() / before.mean() - 1)
    assert math.isnan(paired_change([0.0, 0.0], [0.1, 0.0], samples=10, seed=0)["relative"])
    for bad, message in [
        (([0.1, 0.2], [0.1]), "same non-zero length"),
        (([0.1, math.nan], [0.1, 0.2]), "must be finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            paired_change(*bad, samples=10, seed=0)
    with pytest.raises(ValueError, match="samples=-1 is out of range"):
        paired_change([0.1], [0.2], samples=-1, seed=0)
