"""Re-editing facts on the real natural-facts Larimar (issue 27): A -> B -> C answers C (`examples.larimar.edits`)."""

import pytest

from hf_ext.real_models import real_models_available


pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)"),
]


@pytest.fixture(scope="module")
def reedits():
    from examples.larimar.edits import measure_reedits
    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir

    return measure_reedits(real_larimar_dir(NATURAL_RECIPE, progress=False), count=100)


def test_the_latest_of_three_edits_is_what_the_memory_holds_and_reads(reedits):
    replace = reedits["replace"]
    assert reedits["num_records"] == 100
    assert replace["items_stored"] == 200  # one fact per record, plus the other relation of each subject
    assert replace["holds_latest"] >= 0.99
    assert replace["reads_latest"] >= 0.99
    assert replace["other_relations_kept"] == 1.0  # another relation of the same subject is not an edit of it


def test_the_latest_edit_is_answered_as_if_it_were_the_only_one(reedits):
    replace = reedits["replace"]
    assert replace["prefers_latest"] >= 0.99
    # The greedy answer starts with C as often as when C alone was ever written (the decoder's own wording is the
    # limit there, not the memory).
    assert replace["answers_latest_exact"] >= reedits["answers_latest_exact_alone"] - 0.01
    # Appending instead keeps all three: the memory grows and nothing makes the latest win.
    assert reedits["append"]["items_stored"] == 400
