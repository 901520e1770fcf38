"""MergeAlign: combine a domain expert and an aligned model through their task vectors (Thakkar et al., 2024).

`import hf_ext.mergealign` registers the `mergealign` merge method with mergekit. The registration happens as
soon as mergekit's method registry exists: at once when mergekit is already imported, otherwise the moment it is
imported (so that importing this package, and the `hf-ext` command line, stay cheap).

```python
import hf_ext.mergealign  # `merge_method: mergealign` now works in mergekit
from hf_ext.mergealign import merge

report = merge("mergealign.yaml", "merged-model")  # the merge, its similarity report and its card
```

The public names are imported lazily. Needs mergekit: `pip install "hf-ext[mergealign]"`.
"""

from __future__ import annotations

import importlib

from hf_ext._imports import lazy_package, when_imported


_import_structure = {
    "merging": ["MergeAlignPlan", "merge", "validate_config"],
    "report": ["SimilarityReport", "similarity_report"],
    "sweep": ["AlphaSweepConfig", "AlphaSweepResult", "sweep_alpha"],
    "evaluators": ["EvaluationResult", "GenerationEvaluator", "PerplexityEvaluator"],
    "lora": ["lora_task_vector"],
    "vectors": ["VectorStatistics", "mergealign_tensor", "vector_statistics"],
}
"""Submodule -> the public names it defines: the one list of this package's API."""

__all__, __getattr__, __dir__ = lazy_package(
    __name__, _import_structure, globals(), extra="mergealign", requires=("mergekit",)
)


def _register_with_mergekit() -> None:
    importlib.import_module("hf_ext.mergealign.method")


when_imported("mergekit.merge_methods.registry", _register_with_mergekit)
