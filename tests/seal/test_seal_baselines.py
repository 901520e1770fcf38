"""The selectors SEAL is compared with (hf_ext.seal.baselines), against independent oracles."""

import pytest
import torch

from hf_ext.seal.baselines import dsir_scores, evaluate_scores, loss_scores, random_baseline


def test_evaluate_scores_counts_harmful_in_the_top_share():
    harmful = torch.tensor([False, True, False, False, True])
    # clean: 5, 4, 1; harmful: 3, 0. Pairs (clean > harmful): 5>3, 5>0, 4>3, 4>0, 1>0 -> 5 of 6.
    scores = torch.tensor([5.0, 3.0, 4.0, 1.0, 0.0])
    roc, kept = evaluate_scores(scores, harmful, keep_ratio=0.6)  # top 3: 5, 4, 3 -> one harmful
    assert roc == pytest.approx(5 / 6) and kept == 1
    assert evaluate_scores(scores, harmful, keep_ratio=0.4) == (pytest.approx(5 / 6), 0)


def test_random_baseline_is_near_chance():
    harmful = torch.arange(100) % 5 == 0
    roc, kept = random_baseline(harmful, keep_ratio=0.8, trials=200)
    assert abs(roc - 0.5) < 0.03 and abs(kept - 16) < 0.6


def test_loss_scores_match_the_models_own_loss(tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    rows = [{"text": "the cat sat on the mat"}, {"text": "a b"}, {"text": "one two three four five six"}]
    scores = loss_scores(model, tokenizer, rows, data_format="text", batch_size=2)
    expected = []
    for row in rows:
        ids = [tokenizer.bos_token_id, *tokenizer(row["text"], add_special_tokens=False)["input_ids"]]
        ids = torch.tensor([[*ids, tokenizer.eos_token_id]])
        with torch.no_grad():
            expected.append(-model(input_ids=ids, labels=ids).loss.item())
    assert scores.tolist() == pytest.approx(expected, abs=1e-4)
    assert model.training is False  # from_pretrained gives an eval model; loss_scores restores the mode


def test_dsir_prefers_examples_like_the_target():
    pytest.importorskip("data_selection")
    safe = [{"text": "bake bread with flour and water"}] * 4 + [{"text": "grow tomatoes in the garden"}] * 4
    finetune = [
        {"text": "bake bread with flour"},
        {"text": "steal a car at night quietly"},
        {"text": "grow tomatoes in spring"},
        {"text": "hide the evidence from police"},
    ]
    scores = dsir_scores(safe, finetune)
    assert scores.shape == (4,)
    assert min(scores[0], scores[2]) > max(scores[1], scores[3])


def test_harmful_example_aurocs_average_to_the_auroc():
    from hf_ext.seal.baselines import harmful_example_aurocs

    harmful = torch.tensor([False, True, False, False, True, False])
    scores = torch.tensor([5.0, 3.0, 4.0, 3.0, 0.0, 1.0])
    # harmful 3.0: clean 5, 4 above, 3 tied, 1 below -> (2 + 0.5) / 4; harmful 0.0: all four above -> 1.
    assert harmful_example_aurocs(scores, harmful) == [pytest.approx(0.625), 1.0]
    assert sum(harmful_example_aurocs(scores, harmful)) / 2 == pytest.approx(evaluate_scores(scores, harmful)[0])
