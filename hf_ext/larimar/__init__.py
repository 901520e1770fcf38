"""Larimar: a language model with an episodic memory (Das et al., ICML 2024), as a transformers model.

`import hf_ext` registers `model_type="larimar"` with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`. The
names below are imported lazily.
"""

from __future__ import annotations

from hf_ext._imports import lazy_package


_import_structure = {
    "configuration_larimar": ["LarimarConfig"],
    "modeling_larimar": ["LarimarForCausalLM", "LarimarModel", "LarimarPreTrainedModel"],
    "processing_larimar": ["LarimarProcessor"],
}
"""Submodule -> the public names it defines: the one list of this package's API."""

__all__, __getattr__, __dir__ = lazy_package(__name__, _import_structure, globals())
