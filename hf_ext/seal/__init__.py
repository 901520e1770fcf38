"""SEAL: safety-enhanced fine-tuning data selection by bilevel optimisation (Shen et al., ICLR 2025).

- [`SEALConfig`] / [`SEALTrainer`]: fine-tune a model while learning one logit per fine-tuning example;
- [`SEALScores`]: the scores, keyed by content hash (safetensors + JSON, `push_to_hub`);
- [`add_seal_scores`] / [`seal_filter`]: the scores over `datasets` objects.

The math lives in `hf_ext.seal.ranking` and needs no Hugging Face object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy_attributes


_LAZY = {
    "SEALConfig": "config",
    "SEALTrainer": "trainer",
    "SEALScores": "selection",
    "add_seal_scores": "selection",
    "seal_filter": "selection",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


if TYPE_CHECKING:
    from .config import SEALConfig  # noqa: F401
    from .selection import SEALScores, add_seal_scores, seal_filter  # noqa: F401
    from .trainer import SEALTrainer  # noqa: F401
