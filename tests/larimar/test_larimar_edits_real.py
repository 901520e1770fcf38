"""Re-editing facts on the real natural-facts Larimar (issue 27): A -> B -> C answers C (`examples.larimar.edits`)."""

import pytest

from hf_ext.real_models import real_models_available


pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.stage,
    pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)"),
]


@pytest.fixture(scope="module")
def reedits():
    from examples.larimar.edits import measure_reedits
    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir

    return measure_reedits(real_larimar_dir(NATURAL_RECIPE, progress=False), count=100)


def test_the_latest_of_three_edits_is_what_the_memory_holds_and_reads(reedits):
    reedit = reedits["reedit"]
    assert reedits["num_records"] == 100
    assert reedit["items_stored"] == 100  # one fact per record: A and B were replaced
    assert reedit["holds_latest"] >= 0.99
    assert reedit["reads_latest"] >= 0.99


def test_the_latest_edit_is_answered_as_if_it_were_the_only_one(reedits):
    reedit = reedits["reedit"]
    assert reedit["prefers_latest"] >= 0.99
    # The greedy answer starts with C as often as when C alone was ever written (the decoder's own wording is the
    # limit there, not the memory).
    assert reedit["answers_latest_exact"] >= reedits["answers_latest_exact_alone"] - 0.02


def test_edits_leave_the_other_relations_of_a_subject_alone(reedits):
    replace, append = reedits["with_other_relations"]["replace"], reedits["with_other_relations"]["append"]
    assert replace["other_relations_kept"] == 1.0  # another relation of the same subject is not an edit of it
    assert replace["holds_latest"] >= 0.99 and replace["items_stored"] <= 202
    # Appending instead keeps all three objects: the memory grows and nothing makes the latest win.
    assert append["items_stored"] == 400 and append["holds_latest"] == 0


def test_forgetting_removes_every_copy_on_the_real_model():
    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor

    path = real_larimar_dir(NATURAL_RECIPE, progress=False)
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
