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
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING


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


def __getattr__(name: str):
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


class _RegisterWhenImported(importlib.abc.MetaPathFinder):
    """Import `hf_ext.mergealign.method` (which registers the method) right after mergekit's registry module has
    been executed. Removes itself from `sys.meta_path` on first use."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        _remove_hook()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        sys.modules[module.__name__] = module
        importlib.import_module(_METHOD_MODULE)

    def __getattr__(self, name):  # get_source, get_code, ... for tracebacks and tools
        return getattr(self._loader, name)


def _remove_hook() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterWhenImported)]


def _register_with_mergekit() -> None:
    if _REGISTRY_MODULE in sys.modules:
        importlib.import_module(_METHOD_MODULE)
    elif not any(isinstance(finder, _RegisterWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenImported())


_register_with_mergekit()


if TYPE_CHECKING:
    from .evaluators import EvaluationResult, GenerationEvaluator, PerplexityEvaluator  # noqa: F401
    from .lora import lora_task_vector  # noqa: F401
    from .merging import MergeAlignPlan, merge, validate_config  # noqa: F401
    from .report import SimilarityReport, similarity_report  # noqa: F401
    from .sweep import AlphaSweepConfig, AlphaSweepResult, sweep_alpha  # noqa: F401
    from .vectors import VectorStatistics, mergealign_tensor, vector_statistics  # noqa: F401
