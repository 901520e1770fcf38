"""The verifiable fact task behind the real-model AOT stage (`hf_ext.testing.aot`)."""

import pytest

from hf_ext.testing.aot import (
    FACT_TEMPLATES,
    Fact,
    exact_match,
    fact_preference_dataset,
    facts,
    first_clause,
    rejected_answers,
    split_facts,
)


def test_every_fact_is_well_formed_and_unique():
    pool = facts()
    assert {f.category for f in pool} == set(FACT_TEMPLATES)
    assert len({(f.category, f.subject) for f in pool}) == len(pool)
    for fact in pool:
        assert fact.subject and fact.answer and fact.wrong
        assert fact.prompt == FACT_TEMPLATES[fact.category].format(fact.subject)
        # the plausible wrong answer is never judged right (except where singular and plural coincide it differs)
        assert not exact_match(fact.rejected, fact.answer)
        assert exact_match(fact.chosen, fact.answer)


def test_unknown_category_is_named():
    with pytest.raises(ValueError, match=r"categories=\['colour'\] are unknown"):
        facts(["capital", "colour"])


def test_split_is_seeded_disjoint_and_proportional():
    train, test = split_facts(40, seed=3)
    again_train, again_test = split_facts(40, seed=3)
    assert train == again_train and test == again_test
    assert len(test) == 40 and len(train) + len(test) == len(facts())
    assert not {(f.category, f.subject) for f in train} & {(f.category, f.subject) for f in test}
    pool = facts()
    for category in FACT_TEMPLATES:
        share = sum(f.category == category for f in pool) / len(pool)
        assert abs(sum(f.category == category for f in test) - 40 * share) < 1
    assert split_facts(40, seed=4)[1] != test
    with pytest.raises(ValueError, match=r"held_out=0 is out of range"):
        split_facts(0)


@pytest.mark.parametrize(
    "generation, answer, expected",
    [
        (" Canberra.", "Canberra", True),
        (" canberra, the capital", "Canberra", True),
        ("\n Canberra", "Canberra", True),
        (" Canberrans live", "Canberra", False),
        (" Sydney.", "Canberra", False),
        (" a verb", "went", False),
        (" New Delhi.", "New Delhi", True),
        (" New", "New Delhi", False),
        ("", "Paris", False),
    ],
)
def test_exact_match(generation, answer, expected):
    assert exact_match(generation, answer) is expected


@pytest.mark.parametrize(
    "generation, expected",
    [
        (" Paris.\n\nThe", " Paris."),
        (" a verb, and it's", " a verb, and it's"),
        (" Au.\n\nIn", " Au."),
        (" 3.5 metres", " 3.5 metres"),
        (" Is it? Yes", " Is it?"),
        (" Spanish, and\nthe", " Spanish, and"),
        ("\n\nThe", ""),
        (" Canberra  ", " Canberra"),
    ],
)
def test_first_clause(generation, expected):
    assert first_clause(generation) == expected


def test_rejected_answers_keep_the_models_wrong_answers_only():
    pool = [Fact("capital", "France", "Paris", "Lyon"), Fact("capital", "Japan", "Tokyo", "Osaka")]
    pool.append(Fact("plural", "mouse", "mice", "mouses"))
    generations = [" Paris.\n\nThe", " Kyoto, the old", "\n\n"]
    # right answer -> curated wrong one; wrong answer -> its first clause; empty clause -> curated wrong one
    assert rejected_answers(pool, generations) == [" Lyon.", " Kyoto, the old", " mouses."]
    with pytest.raises(ValueError, match=r"Got 2 generations for 3 facts"):
        rejected_answers(pool, generations[:2])


def test_preference_dataset_columns_and_override():
    pool = facts(["symbol"])[:3]
    dataset = fact_preference_dataset(pool)
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert dataset[0] == {"prompt": "The chemical symbol of gold is", "chosen": " Au.", "rejected": " Go."}
    override = fact_preference_dataset(pool, [" x", " y", " z"])
    assert override["rejected"] == [" x", " y", " z"] and override["chosen"] == dataset["chosen"]
    with pytest.raises(ValueError, match=r"Got 1 rejected completions for 3 facts"):
        fact_preference_dataset(pool, [" x"])
