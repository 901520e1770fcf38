"""Re-editing facts on the real natural-facts Larimar (issue 27): A -> B -> C answers C (`examples.larimar.edits`)."""

import dataclasses

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
def reedits():
    from examples.larimar.edits import measure_reedits

    return measure_reedits(_recipe_dir(), count=100)


def _recipe_dir():
    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir

    return real_larimar_dir(dataclasses.replace(NATURAL_RECIPE, seed=NATURAL_RECIPE.seed + SEED), progress=False)


def test_the_latest_of_three_edits_is_what_the_memory_holds_and_reads(reedits):
    reedit = reedits["reedit"]
    assert reedits["num_records"] == 100
    assert reedit["items_stored"] == 100  # one fact per record: A and B were replaced
    expect("share of records whose memory holds the latest edit", reedit["holds_latest"], at_least=0.99)
    expect("share of records whose read returns the latest edit", reedit["reads_latest"], at_least=0.99)


def test_the_latest_edit_is_answered_as_if_it_were_the_only_one(reedits):
    reedit = reedits["reedit"]
    expect("share of records preferring the latest edit", reedit["prefers_latest"], at_least=0.99)
    # The greedy answer starts with C as often as when C alone was ever written (the decoder's own wording is the
    # limit there, not the memory).
    gap = reedit["answers_latest_exact"] - reedits["answers_latest_exact_alone"]
    expect("exact answers after A -> B -> C minus after C alone", gap, at_least=-0.02)


def test_edits_leave_the_other_relations_of_a_subject_alone(reedits):
    replace, append = reedits["with_other_relations"]["replace"], reedits["with_other_relations"]["append"]
    assert replace["other_relations_kept"] == 1.0  # another relation of the same subject is not an edit of it
    expect("holds the latest edit beside other relations", replace["holds_latest"], at_least=0.99)
    assert replace["items_stored"] <= 202
    # Appending instead keeps all three objects: the memory grows and nothing makes the latest win.
    assert append["items_stored"] == 400 and append["holds_latest"] == 0


def test_forgetting_removes_every_copy_on_the_real_model():
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor

    path = _recipe_dir()
    model = LarimarForCausalLM.from_pretrained(path).eval()
    processor = LarimarProcessor.from_pretrained(path)
    fact, other = "Wanda Hartmann plays the saxophone", "Edgar Ramanathan owns a pet lizard"
    model.write_memory([fact, other], processor=processor)
    model.write_memory(fact, processor=processor, replace=False)  # a second copy
    assert model.memory_texts == [fact, other, fact]
    assert model.write_memory(fact, processor=processor) == 2  # written again with replace: one copy
    model.write_memory(fact, processor=processor, replace=False)
    assert model.forget_memory(fact, processor=processor) == 1
    assert model.memory_texts == [other]
    assert model.read_memory_items(["The instrument Wanda Hartmann plays is the"], processor) == [None]
