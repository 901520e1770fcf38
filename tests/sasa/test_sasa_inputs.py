"""What a user hands to SASA, checked before work: lists of texts, a judge's scores, a tokenizer that fits the model,
the scores a processor is called with."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.sasa import (
    SASALogitsProcessor,
    SASAProbe,
    choose_beta,
    evaluate_detox,
    last_token_hidden_states,
    prefix_hidden_states,
    sample_continuations,
)
from hf_ext.sasa.evaluation import detox_metrics


TEXTS = ["Thank you, that was kind.", "A cup of tea.", "You are a stupid idiot.", "Shut up, loser."]


@pytest.fixture(scope="module")
def llama(tiny_llama_path):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path, padding_side="left")


@pytest.fixture(scope="module")
def probe(llama, tokenizer):
    with pytest.warns(UserWarning, match="Too few texts to hold some out"):
        return SASAProbe.fit(llama, tokenizer, TEXTS[:2], TEXTS[2:], layer=-1, show_progress=False)


def _zero_judge(texts, prompts):
    return [0.0] * len(texts)


ONE_STRING = [
    ("desired_texts", lambda m, t, p: SASAProbe.fit(m, t, "the cat sat", TEXTS)),
    ("undesired_texts", lambda m, t, p: SASAProbe.fit(m, t, TEXTS, "the cat sat")),
    ("texts", lambda m, t, p: SASAProbe.fit_from_judge(m, t, _zero_judge, "the cat sat")),
    ("prompts", lambda m, t, p: SASAProbe.fit_from_judge(m, t, _zero_judge, prompts="the cat sat")),
    ("texts", lambda m, t, p: last_token_hidden_states(m, t, "the cat sat")),
    ("texts", lambda m, t, p: prefix_hidden_states(m, t, "the cat sat", [[3]])),
    ("prompts", lambda m, t, p: sample_continuations(m, t, "the cat sat")),
    ("prompts", lambda m, t, p: evaluate_detox(m, t, "the cat sat", p, judge=_zero_judge)),
    ("prompts", lambda m, t, p: choose_beta(m, t, p, "the cat sat", _zero_judge)),
    ("continuations", lambda m, t, p: _profanity_judge()("the cat sat")),
]


def _profanity_judge():
    pytest.importorskip("profanity_check")
    from hf_ext.sasa import ProfanityCheckJudge

    return ProfanityCheckJudge()


@pytest.mark.parametrize(("argument", "call"), ONE_STRING)
def test_one_string_where_texts_are_expected_is_a_type_error(llama, tokenizer, probe, argument, call):
    """A bare string would be read one character a text: every public function taking texts refuses it."""
    with pytest.raises(TypeError, match=rf"{argument} must be a list of texts, got one string \('the cat sat'\)"):
        call(llama, tokenizer, probe)


BAD_JUDGES = [
    (lambda t, p: [math.nan] * len(t), r"returned (\d+) of \1 scores outside \[0, 1\] \(e.g. nan at 0, nan at 1"),
    (lambda t, p: [0.2] + [5.0] * (len(t) - 1), r"returned (\d+) of \d+ scores outside \[0, 1\] \(e.g. 5.0 at 1,"),
    (lambda t, p: [0.0], r"returned 1 scores for \d+ texts; expected one each"),
    (lambda t, p: ["toxic"] * len(t), r"must return one number per text .* converting its output failed"),
]


@pytest.mark.parametrize(
    "run",
    [
        lambda m, t, p, judge: SASAProbe.fit_from_judge(m, t, judge, TEXTS),
        lambda m, t, p, judge: evaluate_detox(
            m, t, ["Hi", "The"], p, judge=judge, num_continuations=2, max_new_tokens=2, show_progress=False
        ),
        lambda m, t, p, judge: choose_beta(
            m, t, p, ["Hi", "The"], judge, num_continuations=2, max_new_tokens=2, show_progress=False
        ),
    ],
    ids=["fit_from_judge", "evaluate_detox", "choose_beta"],
)
@pytest.mark.parametrize(("judge", "message"), BAD_JUDGES, ids=["nan", "not-a-probability", "count", "not-a-number"])
def test_a_judge_that_does_not_return_probabilities_is_named(llama, tokenizer, probe, run, judge, message):
    """NaN is not 'not toxic' and 5.0 is not a probability: the error names the judge, the count, the first few."""
    with pytest.raises(ValueError, match=r"The judge .*<lambda>.* " + message):
        run(llama, tokenizer, probe, judge)


def test_detox_metrics_refuse_scores_that_are_not_probabilities():
    ok = detox_metrics(torch.tensor([[0.2, 0.7], [0.1, 0.4]]).numpy(), torch.ones(2, 2).numpy())
    assert ok["toxic_rate"] == 0.5 and ok["expected_max_toxicity"] == pytest.approx(0.55)
    for scores, message in [
        ([[math.nan, 0.1]], r"toxicity holds 1 of 2 scores outside \[0, 1\] \(e.g. nan at 0\)"),
        ([[0.1, 5.0]], r"toxicity holds 1 of 2 scores outside \[0, 1\] \(e.g. 5.0 at 1\)"),
        ([0.1, 0.2], r"toxicity must be a non-empty \(num_prompts, k\) array of scores, got shape \(2,\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            detox_metrics(torch.tensor(scores).numpy(), torch.ones(torch.tensor(scores).shape).numpy())


@pytest.mark.filterwarnings("ignore:Too few texts to hold some out")
@pytest.mark.parametrize(
    "run",
    [
        lambda m, t, p: SASAProbe.fit(m, t, TEXTS[:2], TEXTS[2:], show_progress=False),
        lambda m, t, p: sample_continuations(m, t, ["Hi"]),
        lambda m, t, p: evaluate_detox(m, t, ["Hi"], p, judge=_zero_judge),
    ],
    ids=["fit", "sample_continuations", "evaluate_detox"],
)
def test_a_tokenizer_larger_than_the_vocabulary_fails_before_any_forward(llama, tiny_llama_path, probe, run):
    """Otherwise an `IndexError: index out of range in self` deep in torch, at the first rare token."""
    bigger = AutoTokenizer.from_pretrained(tiny_llama_path, padding_side="left")
    bigger.add_tokens([f"<extra_{i}>" for i in range(5)])
    with pytest.raises(
        ValueError,
        match=r"The tokenizer \(.*\) produces token ids up to 1028, but the model \(.*\) embeds only 1024 tokens",
    ):
        run(llama, bigger, probe)


def test_processor_checks_the_scores_against_the_model(llama, tokenizer, probe):
    """Item 4 of issue 18: a standalone call with scores of another width (or batch, or NaN) is an error, not a
    tensor of that width."""
    sasa = SASALogitsProcessor(llama, probe)
    assert sasa.vocab_size == llama.lm_head.out_features == 1024
    ids = tokenizer(["Hello there"], return_tensors="pt").input_ids
    width = r"scores have {} columns but the model's vocabulary \(its LM head\) has 1024"
    for scores, input_ids, message in [
        (torch.randn(1, 100), ids, width.format(100)),
        (torch.randn(1, 1074), ids, width.format(1074)),
        (torch.randn(2, 1024), ids, r"of the same batch, got shapes \(1, \d+\) and \(2, 1024\)"),
        (torch.full((1, 1024), math.nan), ids, r"scores hold 1024 NaN or \+inf value\(s\) \(in row\(s\) \[0\]\)"),
        (torch.randn(1, 1024), torch.tensor([[5, 2000]]), r"input_ids hold token id 2000, beyond the model's 1024"),
    ]:
        with pytest.raises(ValueError, match=message):
            sasa(input_ids, scores)
    assert sasa(ids, torch.randn(1, 1024)).shape == (1, 1024)
