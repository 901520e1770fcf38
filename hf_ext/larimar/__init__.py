"""Larimar: a language model with an episodic memory (Das et al., ICML 2024), as a transformers model.

`import hf_ext` registers `model_type="larimar"` with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`. The
names below are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy_attributes


_LAZY_ATTRIBUTES = {
    "LarimarConfig": "configuration_larimar",
    "LarimarModel": "modeling_larimar",
    "LarimarForCausalLM": "modeling_larimar",
    "LarimarPreTrainedModel": "modeling_larimar",
    "LarimarProcessor": "processing_larimar",
}

__all__ = ["LarimarConfig", "LarimarForCausalLM", "LarimarModel", "LarimarPreTrainedModel", "LarimarProcessor"]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES, globals())


if TYPE_CHECKING:
    from .configuration_larimar import LarimarConfig
    from .modeling_larimar import LarimarForCausalLM, LarimarModel, LarimarPreTrainedModel
    from .processing_larimar import LarimarProcessor
