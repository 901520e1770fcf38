"""choose_beta: SASA's strength picked for a target toxicity reduction or a perplexity budget (planted task)."""

import pytest

from hf_ext.sasa import SASALogitsProcessor, choose_beta, evaluate_detox


SETTINGS = dict(num_continuations=2, max_new_tokens=8, top_p=0.9, max_candidates=10, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def prompts(planted_task):
    return planted_task.prompts(16, seed=7)


def test_smallest_beta_reaching_the_target_and_no_larger_one_tried(planted, planted_task, planted_probe, prompts):
    model, tokenizer = planted
    choice = choose_beta(
        model,
        tokenizer,
        planted_probe,
        prompts,
        planted_task.judge,
        target_reduction=0.3,
        betas=(1, 4, 16, 64),
        show_progress=False,
        **SETTINGS,
    )
    table = choice.table
    assert table[0]["beta"] == 0 and table[0]["toxicity_reduction"] == 0
    assert choice.reached and table[-1]["beta"] == choice.beta  # stops at the first beta that reaches the target
    assert table[-1]["toxicity_reduction"] >= 0.3 > max(row["toxicity_reduction"] for row in table[1:-1] or [table[0]])
    # the rows are what evaluate_detox measures with the same settings and random streams: beta 0 is the same
    # processor without steering (a comparison), the chosen row is SASA
    unsteered = SASALogitsProcessor(model, planted_probe, beta=0.0, top_p=0.9, max_candidates=10)
    detox = evaluate_detox(
        model,
        tokenizer,
        prompts,
        planted_probe,
        judge=planted_task.judge,
        beta=choice.beta,
        comparisons={"beta 0": [unsteered]},
        show_progress=False,
        normalize="softmax",
        **SETTINGS,
    )
    assert table[0]["mean_toxicity"] == pytest.approx(detox.metrics["beta 0"]["mean_toxicity"])
    assert table[-1]["mean_toxicity"] == pytest.approx(detox.metrics["sasa"]["mean_toxicity"])
    assert table[-1]["perplexity"] == pytest.approx(detox.metrics["sasa"]["perplexity"])
    assert "(chosen)" in choice.to_markdown()


def test_budget_alone_takes_the_strongest_beta_within_it(planted, planted_task, planted_probe, prompts):
    model, tokenizer = planted
    choice = choose_beta(
        model,
        tokenizer,
        planted_probe,
        prompts,
        planted_task.judge,
        target_reduction=None,
        max_perplexity_increase=0.5,
        betas=(1, 4, 64),
        show_progress=False,
        **SETTINGS,
    )
    within = [row for row in choice.table[1:] if row["perplexity_increase"] <= 0.5]
    assert len(choice.table) == 4 and choice.beta == max(row["beta"] for row in within)


def test_unreachable_target_warns_and_returns_the_best(planted, planted_task, planted_probe, prompts):
    model, tokenizer = planted
    with pytest.warns(UserWarning, match="No beta in .* reaches the target"):
        choice = choose_beta(
            model,
            tokenizer,
            planted_probe,
            prompts,
            planted_task.judge,
            target_reduction=1.0,
            betas=(1e-3,),
            show_progress=False,
            **SETTINGS,
        )
    assert not choice.reached and choice.beta == 1e-3 and len(choice.table) == 2


def test_bad_settings(planted, planted_task, planted_probe, prompts):
    model, tokenizer = planted
    args = (model, tokenizer, planted_probe, prompts, planted_task.judge)
    with pytest.raises(ValueError, match="Give a target_reduction, a max_perplexity_increase, or both"):
        choose_beta(*args, target_reduction=None)
    with pytest.raises(ValueError, match="target_reduction=2 is out of range"):
        choose_beta(*args, target_reduction=2)
    with pytest.raises(ValueError, match="finite strengths > 0"):
        choose_beta(*args, betas=(0,))
    with pytest.raises(ValueError, match="prompts is empty"):
        choose_beta(model, tokenizer, planted_probe, [], planted_task.judge)
