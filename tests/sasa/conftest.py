"""SASA fixtures: the planted-toxicity model (trained once per machine, cached under $HF_EXT_CACHE) and its probe."""

import pytest

from tests.portable import SEED


@pytest.fixture(scope="session")
def planted_task():
    from hf_ext.testing.sasa import PlantedToxicityTask

    return PlantedToxicityTask(seed=SEED)


@pytest.fixture(scope="session")
def planted(planted_task):
    """`(model, tokenizer)` of the tiny Llama trained on the planted task."""
    return planted_task.load()


@pytest.fixture(scope="session")
def planted_probe(planted_task, planted):
    from hf_ext.sasa import SASAProbe

    model, tokenizer = planted
    desired, undesired = planted_task.probe_texts(400)
    return SASAProbe.fit(model, tokenizer, desired, undesired, show_progress=False)
