"""AOT: alignment via optimal transport (Melnyk et al., NeurIPS 2024) as a TRL trainer.

- [`AOTConfig`] / [`AOTTrainer`]: a `trl.DPOConfig` / `trl.DPOTrainer` with the AOT loss, paired and unpaired;
- `hf_ext.aot.losses`: the loss in plain PyTorch (`quantile_ot_loss`, `aot_paired_loss`, `aot_unpaired_loss`,
  `dominance_diagnostics`);
- `hf_ext.aot.data`: the collator, the dataset checks and a synthetic offline preference task;
- `hf_ext.aot.evaluation`: held-out reward distributions and preference accuracy.

The names are imported lazily, so `import hf_ext.aot` does not import TRL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy_attributes


_LAZY = {
    "AOTConfig": "config",
    "AOTTrainer": "trainer",
    "DataCollatorForAOT": "data",
    "synthetic_preference_dataset": "data",
    "aot_paired_loss": "losses",
    "aot_unpaired_loss": "losses",
    "dominance_diagnostics": "losses",
    "quantile_ot_loss": "losses",
    "completion_logps": "evaluation",
    "preference_scores": "evaluation",
    "preference_report": "evaluation",
}

__all__ = [
    "AOTConfig",
    "AOTTrainer",
    "DataCollatorForAOT",
    "aot_paired_loss",
    "aot_unpaired_loss",
    "completion_logps",
    "dominance_diagnostics",
    "preference_report",
    "preference_scores",
    "quantile_ot_loss",
    "synthetic_preference_dataset",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


if TYPE_CHECKING:
    from .config import AOTConfig
    from .data import DataCollatorForAOT, synthetic_preference_dataset
    from .evaluation import completion_logps, preference_report, preference_scores
    from .losses import aot_paired_loss, aot_unpaired_loss, dominance_diagnostics, quantile_ot_loss
    from .trainer import AOTTrainer
