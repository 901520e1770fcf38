"""Shared fixtures: the tiny offline models, built once per session (and cached across sessions)."""

import os

import pytest
import torch


# Each xdist worker gets its share of the cores instead of all workers oversubscribing every core.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture(scope="session")
def tiny_llama_path():
    from hf_ext.testing import tiny_model_dir

    return tiny_model_dir("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2_path():
    from hf_ext.testing import tiny_model_dir

    return tiny_model_dir("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_bert_path():
    from hf_ext.testing import tiny_model_dir

    return tiny_model_dir("tiny-bert")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_path)
