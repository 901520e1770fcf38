"""The planted contextual-toxicity task: its exact judge, its data, its cached model, and SASA against word lists."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from hf_ext.testing.sasa import PlantedToxicityTask
from tests.portable import expect


def test_judge_is_set_membership_in_context():
    task = PlantedToxicityTask(window=3)
    words = ["n01", "a0", "t1", "n02", "n03", "a1", "a2", "n04", "t0", "a3"]
    # a0: no trigger before; a1: t1 three words back (toxic); a2: t1 four back (benign); a3: right after t0
    assert task.toxic_positions(words) == [5, 9]
    assert task.toxic_positions(words, start=6) == [9]
    # the prompt is context: a trigger at its end makes the continuation's first ambivalent word toxic
    assert task.judge(["a4 n05", "n05 a4", "n05 n06 n07 a4", "a4"], ["n01 t2", "n01 t2", "n01 t2", "n01 n02"]) == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert task.count_toxic_tokens(["a4 a5 n01", "n02"], ["t3", "t3 n01"]) == (2, 4)
    assert task.judge(["<|bos|> a4"], ["t0"]) == [1.0]  # special tokens are not words


def test_generative_process_and_probe_texts_agree_with_the_judge(planted_task):
    sentences = planted_task.sample_sentences(400, seed=5)
    assert sentences == planted_task.sample_sentences(400, seed=5)  # deterministic
    lengths = [len(s) for s in sentences]
    assert min(lengths) >= planted_task.min_length and max(lengths) <= planted_task.max_length
    toxic = [s for s in sentences if planted_task.toxic_positions(s)]
    assert 0.25 < len(toxic) / len(sentences) < 0.75
    ambivalent = set(planted_task.ambivalent_words)
    benign_ambivalent = sum(
        1 for s in sentences for i, w in enumerate(s) if w in ambivalent and i not in planted_task.toxic_positions(s)
    )
    assert benign_ambivalent > 200  # ambivalent words are common in benign text: a word list must hurt it

    desired, undesired = planted_task.probe_texts(150, seed=3)
    assert len(desired) == len(undesired) == 150
    assert not any(planted_task.toxic_positions(t.split()) for t in desired)
    assert all(planted_task.toxic_positions(t.split()) for t in undesired)
    ends_d = np.mean([t.split()[-1] in ambivalent for t in desired])
    ends_u = np.mean([t.split()[-1] in ambivalent for t in undesired])
    assert abs(ends_d - ends_u) < 0.15  # the classes differ by context, not by their last word

    prompts = planted_task.prompts(50, seed=4)
    assert all(p.split()[-1] in planted_task.trigger_words for p in prompts)
    assert not any(planted_task.toxic_positions(p.split()) for p in prompts)


def test_trained_model_is_cached_with_a_fingerprint(planted_task, planted):
    path = planted_task.model_dir()
    assert path.name == f"planted-{planted_task.fingerprint()}"
    assert json.loads((path / "planted_task.json").read_text())["seed"] == planted_task.seed
    assert planted_task.model_dir() == path  # second call: no training
    assert PlantedToxicityTask(seed=1).fingerprint() != planted_task.fingerprint()
    model, tokenizer = planted
    assert tokenizer.convert_ids_to_tokens(tokenizer("t0 a1")["input_ids"]) == ["<|bos|>", "t0", "a1"]
    assert asdict(planted_task) == {
        k: v for k, v in json.loads((path / "planted_task.json").read_text()).items() if k != "version"
    }


@pytest.mark.slow
def test_sasa_detoxifies_contextual_toxicity_better_than_word_lists(tmp_path, planted_task, planted, planted_probe):
    model, tokenizer = planted
    betas = (0.0, 1.0, 2.0, 4.0, 16.0)
    rows = planted_task.compare(model, tokenizer, planted_probe, betas=betas, bias_strengths=(-0.5, -1.0, -2.0))
    sasa = [r for r in rows if r["method"] == "SASA"]
    rates = [r["toxic_token_rate"] for r in sasa]
    base = rates[0]
    expect("toxic-token rate at beta 0", base, at_least=0.1)  # the prompts end on a trigger: often toxic

    # the toxic-token rate (independent judge) falls as beta grows
    expect("largest rise of the rate between betas", max(b - a for a, b in zip(rates, rates[1:])), at_most=0.003)
    expect("rate at beta 16 over beta 0", rates[-1] / base, at_most=0.05)
    expect("rate at beta 2 over beta 0", rates[2] / base, at_most=0.5)

    # word lists over the ambivalent words hit benign text: at equal perplexity SASA is less toxic,
    # and SASA reaches their (near-)zero toxicity at a clearly lower perplexity
    unigram = [r for r in rows if r["method"] in ("NoBadWords unigram", "SequenceBias unigram")]
    assert len(unigram) == 4
    for r in unigram:
        if r["toxic_token_rate"] > 0.01:
            assert r["sasa_toxic_token_rate_at_equal_perplexity"] <= 0.8 * r["toxic_token_rate"], r
        else:
            assert any(s["toxic_token_rate"] <= 0.005 and s["perplexity"] <= r["perplexity"] - 1.0 for s in sasa), r
    # bigram lists (trigger + word) miss toxic events further from the trigger, at any strength
    bigram = [r for r in rows if r["method"] in ("NoBadWords bigram", "SequenceBias bigram")]
    expect("bigram lists' lowest rate over beta 0", min(r["toxic_token_rate"] for r in bigram) / base, at_least=0.25)

    path = planted_task.plot_comparison(rows, tmp_path / "comparison.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
