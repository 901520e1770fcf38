"""evaluate_detox: RealToxicityPrompts metrics, perplexity under the base model, pluggable and default judges."""

import math

import numpy as np
import pytest
import torch
from transformers import NoBadWordsLogitsProcessor

from hf_ext.sasa import SASALogitsProcessor, evaluate_detox
from hf_ext.sasa.evaluation import ProfanityCheckJudge, detox_metrics


def _independent_perplexity(model, tokenizer, prompt, continuation, max_new_tokens):
    """Re-tokenize prompt and continuation text and score the continuation with one plain forward."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    new_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if len(new_ids) < max_new_tokens:  # it stopped at EOS, which decoding dropped
        new_ids.append(tokenizer.eos_token_id)
    ids = torch.tensor([prompt_ids + new_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    targets = ids[0, 1:]
    nll = -logprobs[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :]
    return float(nll.mean().exp())


def test_metrics_follow_the_realtoxicityprompts_protocol():
    toxicity = np.array([[0.1, 0.7, 0.2], [0.3, 0.2, 0.4], [0.5, 0.0, 0.0]])
    ppl = np.array([[10.0, 20.0, np.nan], [30.0, 40.0, 50.0], [1.0, 2.0, 3.0]])
    m = detox_metrics(toxicity, ppl, threshold=0.5)
    assert m["expected_max_toxicity"] == pytest.approx((0.7 + 0.4 + 0.5) / 3)
    assert m["expected_max_toxicity_std"] == pytest.approx(np.std([0.7, 0.4, 0.5]))
    assert m["toxic_rate"] == pytest.approx(2 / 3)  # max >= threshold for prompts 0 and 2
    assert m["perplexity"] == pytest.approx(np.mean([10, 20, 30, 40, 50, 1, 2, 3]))


@pytest.mark.slow
def test_evaluate_detox_on_the_planted_task(planted_task, planted, planted_probe):
    model, tokenizer = planted
    prompts = planted_task.prompts(24, seed=21)
    a0 = tokenizer.convert_tokens_to_ids(planted_task.ambivalent_words)
    result = evaluate_detox(
        model,
        tokenizer,
        prompts,
        planted_probe,
        judge=planted_task.judge,
        num_continuations=4,
        max_new_tokens=8,
        beta=8.0,
        normalize="none",
        comparisons={"ban ambivalent words": [NoBadWordsLogitsProcessor([[a] for a in a0], eos_token_id=2)]},
        batch_size=12,
        show_progress=False,
    )
    assert list(result.metrics) == ["base", "sasa", "ban ambivalent words"]
    for name in result.metrics:
        assert result.toxicity[name].shape == (24, 4) and result.perplexity[name].shape == (24, 4)
        assert len(result.continuations[name]) == 24 and all(len(c) == 4 for c in result.continuations[name])
        # the arrays are the judge's scores of the kept texts, and the metrics are computed from them
        flat = [c for row in result.continuations[name] for c in row]
        expected = planted_task.judge(flat, [p for p in prompts for _ in range(4)])
        np.testing.assert_array_equal(result.toxicity[name].ravel(), expected)
        maxima = [max(row) for row in result.toxicity[name]]
        assert result.metrics[name]["expected_max_toxicity"] == pytest.approx(np.mean(maxima))
        assert result.metrics[name]["toxic_rate"] == pytest.approx(np.mean([m >= 0.5 for m in maxima]))
    assert result.metrics["sasa"]["expected_max_toxicity"] < 0.5 * result.metrics["base"]["expected_max_toxicity"]
    assert result.metrics["ban ambivalent words"]["toxic_rate"] == 0.0
    # perplexity is the base model's, recomputed here from the text alone
    for i, j in [(0, 0), (5, 3), (17, 1)]:
        text = result.continuations["sasa"][i][j]
        expected = _independent_perplexity(model, tokenizer, prompts[i], text, max_new_tokens=8)
        assert result.perplexity["sasa"][i, j] == pytest.approx(expected, rel=1e-4)
    assert result.config["beta"] == 8.0 and result.config["judge"] == "PlantedToxicityTask.judge"
    assert "| sasa |" in result.to_markdown()


def test_base_setting_is_plain_nucleus_sampling_and_seeded(planted_task, planted, planted_probe):
    model, tokenizer = planted
    prompts = planted_task.prompts(6, seed=22)
    sasa = SASALogitsProcessor(model, planted_probe, beta=0.0, top_p=0.8)
    kwargs = dict(judge=planted_task.judge, num_continuations=3, max_new_tokens=6, show_progress=False, seed=5)
    first = evaluate_detox(model, tokenizer, prompts, processor=sasa, **kwargs)
    second = evaluate_detox(model, tokenizer, prompts, planted_probe, beta=0.0, top_p=0.8, **kwargs)
    assert first.continuations["base"] == first.continuations["sasa"]  # beta = 0: the same texts
    assert first.continuations == second.continuations
    state = torch.get_rng_state()
    evaluate_detox(model, tokenizer, prompts, processor=sasa, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone


def test_default_judge_scores_real_text():
    pytest.importorskip("profanity_check")
    judge = ProfanityCheckJudge()
    scores = judge(["you are a stupid idiot and I hate you", "what a lovely afternoon in the garden"], ["", ""])
    assert scores[0] > 0.5 > scores[1]
    assert judge([], []) == []


def test_default_judge_in_evaluate_detox(llama_for_eval, probe_for_eval, tiny_tokenizer):
    pytest.importorskip("profanity_check")
    result = evaluate_detox(
        llama_for_eval, tiny_tokenizer, ["Hello there", "The weather"], probe_for_eval,
        num_continuations=2, max_new_tokens=4, show_progress=False,
    )  # fmt: skip
    judge = ProfanityCheckJudge()
    for name in ("base", "sasa"):
        flat = [c for row in result.continuations[name] for c in row]
        np.testing.assert_allclose(result.toxicity[name].ravel(), judge(flat, [""] * len(flat)))
    assert result.config["judge"] == "ProfanityCheckJudge"


@pytest.fixture(scope="module")
def llama_for_eval(tiny_llama_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()


@pytest.fixture(scope="module")
def probe_for_eval(llama_for_eval, tiny_tokenizer):
    from hf_ext.sasa import SASAProbe

    return SASAProbe.fit(llama_for_eval, tiny_tokenizer, ["a nice day", "thank you"], ["you idiot", "I hate you"])


def test_evaluate_detox_bad_input(llama_for_eval, probe_for_eval, tiny_tokenizer):
    judge = lambda continuations, prompts: [0.0] * len(continuations)  # noqa: E731
    args = (llama_for_eval, tiny_tokenizer, ["Hi"])
    with pytest.raises(ValueError, match="exactly one of `probe`"):
        evaluate_detox(*args, judge=judge)
    with pytest.raises(ValueError, match="exactly one of `probe`"):
        evaluate_detox(*args, probe_for_eval, processor=SASALogitsProcessor(llama_for_eval, probe_for_eval))
    with pytest.raises(ValueError, match="num_continuations=0 is out of range"):
        evaluate_detox(*args, probe_for_eval, judge=judge, num_continuations=0)
    with pytest.raises(ValueError, match="prompts is empty"):
        evaluate_detox(llama_for_eval, tiny_tokenizer, [], probe_for_eval, judge=judge)
    with pytest.raises(ValueError, match="beta=-2 is out of range"):
        evaluate_detox(*args, probe_for_eval, judge=judge, beta=-2)
    with pytest.raises(ValueError, match="'sasa' is reserved"):
        evaluate_detox(*args, probe_for_eval, judge=judge, comparisons={"sasa": []})
    assert math.isfinite(
        evaluate_detox(
            *args, probe_for_eval, judge=judge, num_continuations=1, max_new_tokens=2, show_progress=False
        ).metrics["sasa"]["perplexity"]
    )
