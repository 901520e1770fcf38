"""Offline fixtures: tiny models and tokenizers, and the synthetic task of every method.

Everything here is built on the machine, from text the package ships: nothing is downloaded. hf-ext's tests,
benchmarks, demo and shipped recipes use it, and so can yours. One vocabulary:

- a **tiny model** is a small randomly initialised or briefly trained checkpoint ([`tiny_model_dir`], `models.py`);
- a **task** is a method's synthetic task with a known answer, in the module named after the method:
  `hf_ext.testing.aot` (preference pairs; facts with known answers), `hf_ext.testing.larimar` (a fact corpus and a
  tiny Larimar trained on it), `hf_ext.testing.sasa` (planted contextual toxicity), `hf_ext.testing.seal`
  (a planted safe / fine-tuning split), `hf_ext.testing.mergealign` (a base, a domain expert and an aligned model);
- a **fixture id** is `"hf-ext-testing/<name>"`: the shipped recipes name their models and datasets this way, and
  the edges that read recipes (the commands, the demo, the tests) turn it into a local folder or a dataset with
  [`resolve_model_name_or_path`] / [`load_fixture_dataset`]. The library's components never see one.

```python
>>> from transformers import AutoModelForCausalLM
>>> from hf_ext.testing import tiny_model_dir
>>> model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("tiny-llama"))  # built once, then cached
```
"""

from __future__ import annotations

import os

from hf_ext._imports import lazy_package
from hf_ext._validation import check_range
from hf_ext.testing.models import TESTING_PREFIX


_import_structure = {
    "models": [
        "CHAT_TEMPLATE",
        "TESTING_PREFIX",
        "TINY_MODELS",
        "TinyModelSpec",
        "build_tiny_causal_lm",
        "build_tiny_encoder",
        "build_tokenizer",
        "corpus_lines",
        "save_tiny_model",
        "tiny_model_dir",
    ],
}
"""Submodule -> the public names it defines (the tasks are used as modules: `hf_ext.testing.sasa`, ...)."""

_public, __getattr__, __dir__ = lazy_package(__name__, _import_structure, globals())
__all__ = [
    *_public,
    "FIXTURE_DATASETS",
    "fixture_model_names",
    "load_fixture_dataset",
    "resolve_fixture_ids",
    "resolve_model_name_or_path",
]


def _task_models() -> dict[str, object]:
    """Fixture model name -> a function building it (on first use) and returning its folder."""
    from hf_ext.testing import mergealign, sasa, seal

    return {
        "sasa-planted": lambda: sasa.PlantedToxicityTask().model_dir(),
        "seal-aligned": seal.aligned_model_dir,
        "mergealign-base": lambda: mergealign.controlled_task().base,
        "mergealign-domain": lambda: mergealign.controlled_task().domain,
        "mergealign-aligned": lambda: mergealign.controlled_task().aligned,
    }


def fixture_model_names() -> list[str]:
    """Every model fixture id [`resolve_model_name_or_path`] knows, sorted."""
    from hf_ext.testing.models import TINY_MODELS

    return sorted(TESTING_PREFIX + name for name in [*TINY_MODELS, *_task_models()])


def resolve_model_name_or_path(name_or_path: str | os.PathLike) -> str:
    """The local folder of a model fixture id (`"hf-ext-testing/<name>"`, built on first use); anything else as is.

    Raises:
        ValueError: for an id with the fixture prefix that names no fixture (the message lists them all).
    """
    from hf_ext.testing.models import TINY_MODELS, tiny_model_dir

    name_or_path = str(name_or_path)
    if not name_or_path.startswith(TESTING_PREFIX):
        return name_or_path
    name = name_or_path[len(TESTING_PREFIX) :]
    if name in TINY_MODELS:
        return str(tiny_model_dir(name))
    builders = _task_models()
    if name in builders:
        return str(builders[name]())
    raise ValueError(f"Unknown fixture model {name_or_path!r}; expected one of {fixture_model_names()}.")


FIXTURE_DATASETS = (
    "hf-ext-testing/synthetic-preferences",
    "hf-ext-testing/synthetic-unpaired",
    "hf-ext-testing/seal-planted-safe",
    "hf-ext-testing/seal-planted-finetune",
    "hf-ext-testing/larimar-facts",
    "hf-ext-testing/larimar-natural-facts",
)
"""The dataset fixture ids [`load_fixture_dataset`] builds."""


def load_fixture_dataset(
    name: str,
    *,
    size: int = 256,
    train_split: str = "train",
    test_split: str = "test",
    episode_size: int = 16,
    seed: int = 0,
):
    """The `datasets.DatasetDict` of a dataset fixture id (one of [`FIXTURE_DATASETS`]).

    The preference sets (AOT's synthetic task) get `size` training rows and a held-out split with disjoint nouns;
    the SEAL planted sets are one `train` split; the Larimar fact corpora (template and natural) are `size` episodes of `episode_size` facts
    (one `train` split, in episode order).
    """
    from datasets import DatasetDict

    if name not in FIXTURE_DATASETS:
        raise ValueError(f"Unknown fixture dataset {name!r}; expected one of {list(FIXTURE_DATASETS)}.")
    if name == TESTING_PREFIX + "larimar-facts":
        from hf_ext.testing.larimar import fact_dataset

        return DatasetDict({"train": fact_dataset(size, episode_size, seed=seed)})
    if name == TESTING_PREFIX + "larimar-natural-facts":
        from hf_ext.testing.larimar_natural import natural_fact_dataset

        return DatasetDict({"train": natural_fact_dataset(size, episode_size, seed=seed)})
    if name.startswith(TESTING_PREFIX + "synthetic-"):
        from hf_ext.testing.aot import synthetic_preference_dataset

        check_range("size", size, ge=1, integer=True)
        kwargs = {"unpaired": False} if name.endswith("preferences") else {"unpaired": True, "positive_fraction": 0.6}
        return DatasetDict(
            {
                train_split: synthetic_preference_dataset(size, split="train", **kwargs),
                test_split: synthetic_preference_dataset(max(size // 4, 8), split="test", **kwargs),
            }
        )
    from hf_ext.testing.seal import planted_datasets

    safe, finetune = planted_datasets()
    return DatasetDict({"train": safe if name.endswith("safe") else finetune})


def resolve_fixture_ids(config):
    """A copy of a nested configuration (dicts, lists, strings; e.g. a mergekit YAML as loaded) with every model
    fixture id replaced by its folder; mergekit's `model+adapter` references are resolved part by part."""
    if isinstance(config, dict):
        return {key: resolve_fixture_ids(value) for key, value in config.items()}
    if isinstance(config, list):
        return [resolve_fixture_ids(value) for value in config]
    if isinstance(config, str) and TESTING_PREFIX in config:
        return "+".join(resolve_model_name_or_path(part) for part in config.split("+"))
    return config
