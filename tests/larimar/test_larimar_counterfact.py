"""CounterFact-style evaluation (hf_ext.larimar.evaluation.evaluate_counterfact / target_scores) on tiny models,
against a token-by-token oracle."""

import pytest
import torch

from hf_ext.larimar.evaluation import evaluate_counterfact, target_scores
from hf_ext.testing.larimar_natural import counterfact_records


def _oracle(model, processor, prompt, target, latent):
    """log p(target | prompt) and "every target token is the arg-max", decoding one token at a time."""
    head = processor.decoder_ids([prompt], False, None)[0]
    full = processor.decoder_ids([f"{prompt} {target}"], False, None)[0]
    ids, log_prob, greedy = list(head), 0.0, True
    for token in full[len(head) :]:
        kwargs = {} if latent is None else {"memory_latent": latent}
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), **kwargs).logits[0, -1].double()
        log_prob += float(logits.log_softmax(-1)[token])
        greedy &= int(logits.argmax()) == token
        ids.append(token)
    return log_prob, greedy


@pytest.mark.parametrize("written", [False, True])
def test_target_scores_match_token_by_token_oracle(larimar_factory, tiny_processor, written):
    model = larimar_factory(scope_threshold=None)
    records = counterfact_records(4, seed=3)
    if written:
        model.write_memory([r.rewrite_text for r in records], processor=tiny_processor)
    prompts = [r.rewrite_prompt for r in records] + [records[0].paraphrase_prompts[0]]
    targets = [r.target_new for r in records] + [records[0].target_true]
    log_probs, exact = target_scores(model, tiny_processor, prompts, targets)
    for prompt, target, log_prob, greedy in zip(prompts, targets, log_probs, exact):
        latent = model.read_memory([prompt], processor=tiny_processor)
        expected, expected_greedy = _oracle(model, tiny_processor, prompt, target, latent)
        assert log_prob == pytest.approx(expected, abs=1e-3)
        assert greedy == expected_greedy
    if written:  # the memory changes what the decoder reads
        empty, _ = target_scores(model, tiny_processor, prompts, targets, read_memory=False)
        assert max(abs(a - b) for a, b in zip(empty, log_probs)) > 1e-3


def test_target_scores_of_a_plain_causal_lm(tiny_gpt2_path, tiny_processor):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_gpt2_path).eval()
    records = counterfact_records(3, seed=4)
    log_probs, exact = target_scores(
        plain, tiny_processor, [r.rewrite_prompt for r in records], [r.target_new for r in records]
    )
    for record, log_prob, greedy in zip(records, log_probs, exact):
        expected, expected_greedy = _oracle(plain, tiny_processor, record.rewrite_prompt, record.target_new, None)
        assert log_prob == pytest.approx(expected, abs=1e-3) and greedy == expected_greedy


def test_evaluate_counterfact_scores_against_the_oracle(larimar_factory, tiny_processor):
    model = larimar_factory(scope_threshold=None)
    records = counterfact_records(5, seed=8)
    figures = evaluate_counterfact(model, tiny_processor, records)
    assert model.memory_state.size == 5  # the edits stay written
    rewrite, paraphrase = [], []
    for record in records:
        latent = model.read_memory([record.rewrite_prompt], processor=tiny_processor)
        new = _oracle(model, tiny_processor, record.rewrite_prompt, record.target_new, latent)
        true = _oracle(model, tiny_processor, record.rewrite_prompt, record.target_true, latent)
        rewrite.append((new[1], new[0] > true[0]))
        for prompt in record.paraphrase_prompts:
            latent = model.read_memory([prompt], processor=tiny_processor)
            new = _oracle(model, tiny_processor, prompt, record.target_new, latent)
            true = _oracle(model, tiny_processor, prompt, record.target_true, latent)
            paraphrase.append((new[1], new[0] > true[0]))
    assert figures["rewrite_exact"] == pytest.approx(sum(e for e, _ in rewrite) / 5)
    assert figures["rewrite_score"] == pytest.approx(sum(s for _, s in rewrite) / 5)
    assert figures["paraphrase_score"] == pytest.approx(sum(s for _, s in paraphrase) / len(paraphrase))
    assert figures["num_paraphrases"] == len(paraphrase)
    assert figures["num_neighbourhood"] == 10
    assert [r["target_new"] for r in figures["per_record"]] == [r.target_new for r in records]


def test_an_edit_that_reads_nothing_changes_nothing(larimar_factory, tiny_processor):
    # scope_threshold=0: every query is out of scope and reads a zero latent, so the "edited" model is the unedited
    # one: locality is perfect and every score equals its value before the write.
    model = larimar_factory(scope_threshold=0.0)
    figures = evaluate_counterfact(model, tiny_processor, counterfact_records(6, seed=9))
    assert figures["neighbourhood_exact"] == 1.0 and figures["neighbourhood_score"] == 1.0
    for name in ("rewrite_exact", "rewrite_score", "paraphrase_exact", "paraphrase_score"):
        assert figures[name] == figures[f"{name}_before"]


def test_bad_inputs(larimar_factory, tiny_processor, tiny_gpt2_path):
    from transformers import AutoModelForCausalLM

    model = larimar_factory()
    with pytest.raises(ValueError, match="records is empty"):
        evaluate_counterfact(model, tiny_processor, [])
    with pytest.raises(TypeError, match="needs a LarimarForCausalLM"):
        evaluate_counterfact(
            AutoModelForCausalLM.from_pretrained(tiny_gpt2_path), tiny_processor, counterfact_records(2)
        )
    with pytest.raises(ValueError, match="one target per prompt"):
        target_scores(model, tiny_processor, ["a", "b"], ["c"])


def test_an_empty_memory_with_the_slot_masked_is_the_decoder(larimar_factory, tiny_processor, tiny_llama_path):
    # examples.larimar.natural's "the decoder stays itself" measures: exact agreement and the same perplexity, and a
    # perplexity equal to a hand-computed one.
    import math

    from transformers import AutoModelForCausalLM

    from examples.larimar.natural import greedy_agreement, perplexity

    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    model = larimar_factory("llama", mask_empty_slot=True)
    model.model.prefix_projection.weight.data.zero_()
    model.model.embedding_projection.weight.data.zero_()
    prompts = ["the old harbour", "a short walk to the market was", "she wrote"]
    agreement = greedy_agreement(model, plain, tiny_processor, prompts, max_new_tokens=5)
    assert agreement["agreement"] == 1.0 and agreement["larimar"] == agreement["plain"]
    texts = ["the river was quiet in the evening", "they repaired the wooden bridge"]
    nll, count = 0.0, 0
    for text in texts:
        ids = tiny_processor.decoder_ids([text], False, None)[0]
        for position in range(1, len(ids)):
            with torch.no_grad():
                logits = plain(input_ids=torch.tensor([ids[:position]])).logits[0, -1].double()
            nll -= float(logits.log_softmax(-1)[ids[position]])
            count += 1
    expected = math.exp(nll / count)
    assert perplexity(plain, tiny_processor, texts) == pytest.approx(expected, rel=1e-4)
    assert perplexity(model, tiny_processor, texts) == pytest.approx(expected, rel=1e-4)
