"""SEAL: safety-enhanced fine-tuning data selection by bilevel optimisation (Shen et al., ICLR 2025).

- [`SEALConfig`] / [`SEALTrainer`]: fine-tune a model while learning one logit per fine-tuning example;
- [`SEALScores`]: the scores, keyed by content hash (safetensors + JSON, `push_to_hub`);
- [`add_seal_scores`] / [`seal_filter`]: the scores over `datasets` objects.

The math lives in `hf_ext.seal.ranking` and needs no Hugging Face object.
"""

from __future__ import annotations

from hf_ext._imports import lazy_package


_import_structure = {
    "config": ["SEALConfig"],
    "trainer": ["SEALTrainer"],
    "filtering": ["SEALScores", "add_seal_scores", "seal_filter"],
}
"""Submodule -> the public names it defines: the one list of this package's API."""

__all__, __getattr__, __dir__ = lazy_package(__name__, _import_structure, globals())
