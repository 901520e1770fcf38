"""AOT: alignment via optimal transport (Melnyk et al., NeurIPS 2024) as a TRL trainer.

- [`AOTConfig`] / [`AOTTrainer`]: a `trl.DPOConfig` / `trl.DPOTrainer` with the AOT loss, paired and unpaired;
- `hf_ext.aot.losses`: the loss in plain PyTorch (`quantile_ot_loss`, `aot_paired_loss`, `aot_unpaired_loss`,
  `dominance_diagnostics`);
- `hf_ext.aot.data`: the collator and the dataset checks;
- `hf_ext.aot.evaluation`: held-out reward distributions and preference accuracy.

The names are imported lazily, so `import hf_ext.aot` does not import TRL.
"""

from __future__ import annotations

from hf_ext._imports import lazy_package


_import_structure = {
    "config": ["AOTConfig"],
    "trainer": ["AOTTrainer"],
    "data": ["DataCollatorForAOT", "dataset_format", "validate_preference_dataset"],
    "losses": ["aot_paired_loss", "aot_unpaired_loss", "dominance_diagnostics", "quantile_ot_loss"],
    "evaluation": ["completion_logps", "preference_report", "preference_scores"],
}
"""Submodule -> the public names it defines: the one list of this package's API."""

__all__, __getattr__, __dir__ = lazy_package(__name__, _import_structure, globals())
