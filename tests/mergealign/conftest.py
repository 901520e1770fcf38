"""Fixtures of the MergeAlign tests: a tiny base and two fine-tunes of it (random perturbations), saved once."""

import pytest
from mergealign_files import save_triple

from tests.portable import SEED


@pytest.fixture(scope="session")
def triple(tmp_path_factory):
    return save_triple(tmp_path_factory.mktemp("mergealign-triple"))


@pytest.fixture(scope="session")
def controlled():
    """The controlled base / domain / aligned models (trained once, then cached under $HF_EXT_CACHE)."""
    from hf_ext.testing.mergealign import ToySpec, controlled_task

    return controlled_task(ToySpec(seed=SEED))
