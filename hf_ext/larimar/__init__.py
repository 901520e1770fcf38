"""Larimar: a language model with an episodic memory (Das et al., ICML 2024), as a transformers model.

`import hf_ext` registers `model_type="larimar"` with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`. The
names below are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


_LAZY_ATTRIBUTES = {
    "LarimarConfig": "configuration_larimar",
    "LarimarModel": "modeling_larimar",
    "LarimarForCausalLM": "modeling_larimar",
    "LarimarPreTrainedModel": "modeling_larimar",
    "LarimarProcessor": "processing_larimar",
}

__all__ = ["LarimarConfig", "LarimarForCausalLM", "LarimarModel", "LarimarPreTrainedModel", "LarimarProcessor"]


def __getattr__(name: str):
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


if TYPE_CHECKING:
    from .configuration_larimar import LarimarConfig
    from .modeling_larimar import LarimarForCausalLM, LarimarModel, LarimarPreTrainedModel
    from .processing_larimar import LarimarProcessor
