"""The natural CounterFact-style fact set (hf_ext.testing.larimar_natural): splits, determinism, records."""

import random

import pytest

from hf_ext.testing import larimar_natural as natural


def _training_answers(episodes=200, size=32, seed=0):
    rng = random.Random(seed)
    return [fact for _ in range(episodes) for fact in natural.natural_training_episode(rng, size)]


def test_evaluation_subjects_and_objects_never_occur_in_training():
    training = _training_answers()
    train_subjects = {f.subject for f in training}
    train_objects = {f.object for f in training}
    train_object_first_words = {f.object.split()[0] for f in training}
    records = natural.counterfact_records(200, seed=7)
    for record in records:
        assert record.subject not in train_subjects
        assert record.target_new not in train_objects and record.target_true not in train_objects
        # Person objects: not even the first name (the answer's first token) is a training answer.
        assert record.target_new.split()[0] not in train_object_first_words
        assert record.target_new != record.target_true
    # The two sides of every split are disjoint by construction, not only in this sample.
    assert not set(natural.person_names(True)) & set(natural.person_names(False))
    for relation in natural.RELATIONS:
        assert not set(natural.relation_objects(relation, True)) & set(natural.relation_objects(relation, False))


def test_fact_set_is_large_and_natural():
    assert len(natural.RELATIONS) >= 12
    assert sum(len(r.phrasings) for r in natural.RELATIONS) >= 36
    assert len(natural.person_names(False)) + len(natural.person_names(True)) >= 5000
    objects = {o for r in natural.RELATIONS if r.kind != "person" for o in natural.relation_objects(r, False)}
    assert len(objects) >= 300
    for relation in natural.RELATIONS:
        for phrasing in range(len(relation.phrasings)):
            prompt = relation.prompt("Mara Okafor", phrasing)
            assert "Mara Okafor" in prompt and not prompt.endswith(" ")


def test_training_episode_facts_have_distinct_subjects_and_prompt_prefixes():
    episode = natural.natural_training_episode(random.Random(3), 64)
    assert len({f.subject for f in episode}) == 64
    for fact in episode:
        assert fact.text == f"{fact.prompt} {fact.object}"
        assert fact.as_dict() == {"text": fact.text, "prompt": fact.prompt, "answer": fact.object, "query": fact.query}
        # the query is another phrasing of the same question about the same subject
        relation = next(r for r in natural.RELATIONS if r.name == fact.relation)
        others = {relation.prompt(fact.subject, p) for p in range(len(relation.phrasings)) if p != fact.phrasing}
        assert fact.query in others


@pytest.mark.parametrize("seed", [0, 5])
def test_deterministic_from_the_seed(seed):
    assert natural.counterfact_records(16, seed=seed) == natural.counterfact_records(16, seed=seed)
    assert (
        natural.natural_fact_dataset(2, 8, seed=seed)["text"] == natural.natural_fact_dataset(2, 8, seed=seed)["text"]
    )
    assert natural.counterfact_records(16, seed=seed) != natural.counterfact_records(16, seed=seed + 1)


def test_records_paraphrase_and_neighbourhood_prompts():
    records = natural.counterfact_records(40, seed=2, num_neighbours=3)
    edited = {r.subject for r in records}
    for record in records:
        relation = next(r for r in natural.RELATIONS if r.name == record.relation)
        assert record.rewrite_prompt == relation.prompt(record.subject, 0)
        assert len(record.paraphrase_prompts) == len(relation.phrasings) - 1
        assert all(record.subject in p and p != record.rewrite_prompt for p in record.paraphrase_prompts)
        assert len(record.neighbourhood_prompts) == 3
        assert not set(record.neighbourhood_subjects) & edited
        assert record.rewrite_text == f"{record.rewrite_prompt} {record.target_new}"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"count": 0}, "count"),
        ({"count": 5000}, "evaluation subjects"),
        ({"count": 4, "num_neighbours": -1}, "num_neighbours"),
    ],
)
def test_bad_record_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        natural.counterfact_records(**kwargs)


def test_fixture_dataset():
    from hf_ext.testing import load_fixture_dataset

    dataset = load_fixture_dataset("hf-ext-testing/larimar-natural-facts", size=3, episode_size=8, seed=1)["train"]
    assert dataset.column_names == ["text", "prompt", "answer", "query"]
    assert len(dataset) == 24
    assert dataset["text"] == natural.natural_fact_dataset(3, 8, seed=1)["text"]


def test_natural_recipe_options():
    from examples.larimar.model import NATURAL_RECIPE, RealLarimarRecipe

    with pytest.raises(ValueError, match="corpus='wiki' is not supported"):
        RealLarimarRecipe(corpus="wiki")
    # The options left at their defaults keep the fingerprints (and cache folders) of the recipes cached before.
    assert RealLarimarRecipe().fingerprint() == RealLarimarRecipe(corpus="template", decoder_lora=True).fingerprint()
    assert RealLarimarRecipe().fingerprint() == "bfc313ec3fba"
    assert NATURAL_RECIPE.fingerprint() not in {RealLarimarRecipe().fingerprint()}
    assert NATURAL_RECIPE.corpus == "natural" and not NATURAL_RECIPE.decoder_lora
    assert NATURAL_RECIPE.memory_readout == "text"
    with pytest.raises(ValueError, match="memory_readout='bogus'"):
        RealLarimarRecipe(memory_readout="bogus")
    with pytest.raises(ValueError, match="decoder frozen"):
        RealLarimarRecipe(memory_readout="text")  # the template corpus, with a decoder LoRA


def test_validation_records_use_training_subjects_and_objects():
    train_subjects = set(natural.person_names(False))
    records = natural.counterfact_records(64, seed=7, held_out=False)
    assert all(r.subject in train_subjects for r in records)
    relation_objects = {r.name: set(natural.relation_objects(r, False)) for r in natural.RELATIONS}
    assert all({r.target_new, r.target_true} <= relation_objects[r.relation] for r in records)
    evaluation = {r.subject for r in natural.counterfact_records(200, seed=7)}
    assert not evaluation & {r.subject for r in records}
