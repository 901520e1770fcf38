"""Shared fixtures: the tiny offline models, built once per session (and cached across sessions)."""

import logging
import os

import pytest
import torch


# Each xdist worker gets its share of the cores instead of all workers oversubscribing every core, unless the
# portability grid (benchmarks/portability.py) asks for a thread count: other counts sum in another order.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(int(os.environ.get("HF_EXT_TEST_THREADS", 0)) or max(1, (os.cpu_count() or 1) // _workers))

# `make mutate` (mutmut) runs the property tests with `--hypothesis-profile=mutation`: a failing example is a killed
# mutant, and shrinking it would only cost time.
try:
    from hypothesis import Phase, settings
except ImportError:  # hypothesis comes with the dev extra
    pass
else:
    settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)


# Notices the stack logs about its own calls among themselves, which no argument of ours triggers (checked); remove
# one as soon as the release that fixes it is pinned.
_UPSTREAM_NOTICES = (
    "`torch_dtype` is deprecated",  # mergekit 0.1.5 sets `config.torch_dtype` on the merged config (merge.py)
)


class _DeprecationLog(logging.Handler):
    """Collects the deprecation notices transformers logs (rather than warns), e.g. reading `output.past_key_values`
    on transformers >= 5.24."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if "deprecated" in message.lower() and not any(notice in message for notice in _UPSTREAM_NOTICES):
            self.messages.append(message)


@pytest.fixture(autouse=True)
def _release_output_locks():
    """A command releases its output folders' locks when it ends; a test calling its checks directly does here."""
    yield
    from hf_ext.transactions import release_process_locks

    release_process_locks()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and unused) when xdist is not loaded
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope` keeps a module's tests on one worker (so a module-scoped trained model is trained once), but
    the README's examples are independent and two of them train for minutes: spread those over the workers."""
    if config.getoption("dist", None) != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ReadmeExamplesApart(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            if nodeid.startswith("tests/test_readme.py::test_readme_example["):
                return nodeid
            return super()._split_scope(nodeid)

    return ReadmeExamplesApart(config, log)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker `cuda`); none is available")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fail_on_logged_deprecation():
    """The logged counterpart of pyproject's `filterwarnings`: a test during which transformers logs a deprecation
    fails. (transformers logs each such notice once per process, so it fails the first test that triggers it.)"""
    handler = _DeprecationLog()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.messages:
        pytest.fail(f"transformers logged a deprecation: {handler.messages}")


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
