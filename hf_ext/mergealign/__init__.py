"""MergeAlign: combine a domain expert and an aligned model through their task vectors (Thakkar et al., 2024).

`import hf_ext.mergealign` registers the `mergealign` merge method with mergekit. The registration happens as
soon as mergekit's method registry exists: at once when mergekit is already imported, otherwise the moment it is
imported (so that importing this package, and the `hf-ext` command line, stay cheap).

```python
import hf_ext.mergealign  # `merge_method: mergealign` now works in mergekit
from hf_ext.mergealign import merge

report = merge("mergealign.yaml", "merged-model")  # the merge, its similarity report and its card
```

The public names are imported lazily: `merge`, `validate_config`, `SimilarityReport`, `similarity_report`,
`sweep_alpha`, `AlphaSweepConfig`, `AlphaSweepResult`, `PerplexityEvaluator`, `GenerationEvaluator`,
`EvaluationResult`, `lora_task_vector`, and the tensor math of `hf_ext.mergealign.vectors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .._imports import lazy_attributes, when_imported


_REGISTRY_MODULE = "mergekit.merge_methods.registry"
_METHOD_MODULE = "hf_ext.mergealign.method"

_LAZY_ATTRIBUTES: dict[str, str] = {
    "merge": "merging",
    "validate_config": "merging",
    "MergeAlignPlan": "merging",
    "SimilarityReport": "report",
    "similarity_report": "report",
    "AlphaSweepConfig": "sweep",
    "AlphaSweepResult": "sweep",
    "sweep_alpha": "sweep",
    "EvaluationResult": "evaluators",
    "PerplexityEvaluator": "evaluators",
    "GenerationEvaluator": "evaluators",
    "lora_task_vector": "lora",
    "mergealign_tensor": "vectors",
    "vector_statistics": "vectors",
    "VectorStatistics": "vectors",
}

__all__ = sorted(_LAZY_ATTRIBUTES)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES, globals())


def _register_with_mergekit() -> None:
    importlib.import_module(_METHOD_MODULE)


when_imported(_REGISTRY_MODULE, _register_with_mergekit)


if TYPE_CHECKING:
    from .evaluators import EvaluationResult, GenerationEvaluator, PerplexityEvaluator  # noqa: F401
    from .lora import lora_task_vector  # noqa: F401
    from .merging import MergeAlignPlan, merge, validate_config  # noqa: F401
    from .report import SimilarityReport, similarity_report  # noqa: F401
    from .sweep import AlphaSweepConfig, AlphaSweepResult, sweep_alpha  # noqa: F401
    from .vectors import VectorStatistics, mergealign_tensor, vector_statistics  # noqa: F401
