"""The `mergealign` merge method for mergekit.

Importing this module registers the method with mergekit's registry (once: importing it again, or reloading it,
is harmless), so that a mergekit configuration can say `merge_method: mergealign`:

```yaml
merge_method: mergealign
base_model: meta-llama/Meta-Llama-3-8B
models:
  - model: aaditya/Llama3-OpenBioLLM-8B
    parameters: {role: domain}
  - model: meta-llama/Meta-Llama-3-8B-Instruct
    parameters: {role: alignment}
parameters: {alpha: 0.5, scale: 1.0}
dtype: bfloat16
```

Each output tensor is `base + scale * (alpha * (domain - base) + (1 - alpha) * (alignment - base))`, computed in
float32 for half-precision inputs. `alpha` and `scale` accept mergekit's gradient syntax (`alpha: [0.9, 0.5]`
interpolates across layers; embeddings, `lm_head` and the final norm take the first value) and conditional
filters like any mergekit parameter.

mergekit has no plugin discovery: run merges through `hf-ext merge` (or `hf_ext.mergealign.merge`), which import
this module first, or import `hf_ext.mergealign` before calling mergekit yourself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import BasePolicy, InputContract, PerNonBase, TensorGroup
from mergekit.merge_methods.easy_define import merge_method
from pydantic import Field

from .vectors import (
    VectorStatistics,
    _check_same_shape,
    _task_vector,
    check_merged,
    combine_vectors,
    vector_statistics,
)


__all__ = ["METHOD_NAME", "ROLES", "mergealign_merge", "record_statistics", "register"]

METHOD_NAME = "mergealign"
ROLES = ("domain", "alignment")

Role = Literal["domain", "alignment"]


class _StatisticsRecorders:
    """The per-tensor statistics collectors active in this process (see [`record_statistics`])."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active: list[dict[str, VectorStatistics]] = []

    def __bool__(self) -> bool:
        return bool(self._active)

    def push(self, target: dict[str, VectorStatistics]) -> None:
        with self._lock:
            self._active.append(target)

    def remove(self, target: dict[str, VectorStatistics]) -> None:
        with self._lock:
            self._active = [t for t in self._active if t is not target]

    def add(self, name: str, stats: VectorStatistics) -> None:
        with self._lock:
            for target in self._active:
                target[name] = stats


_RECORDERS = _StatisticsRecorders()


@contextmanager
def record_statistics() -> Iterator[dict[str, VectorStatistics]]:
    """Collect, for every tensor merged with `mergealign` inside the block, the [`VectorStatistics`] of its
    domain and alignment vectors (keyed by tensor name). This is how `merge` builds the similarity report
    without reading the models a second time.

    ```python
    with record_statistics() as per_tensor:
        run_merge(config, out_path, options=MergeOptions())
    ```
    """
    collected: dict[str, VectorStatistics] = {}
    _RECORDERS.push(collected)
    try:
        yield collected
    finally:
        _RECORDERS.remove(collected)


@merge_method(
    name=METHOD_NAME,
    pretty_name="MergeAlign",
    reference_url="https://arxiv.org/abs/2411.06824",
    contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=2, max_non_base=2),
)
def mergealign_merge(
    group: TensorGroup,
    role: PerNonBase[Role],
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5,
    scale: Annotated[float, Field(ge=0.0)] = 1.0,
) -> torch.Tensor:
    """MergeAlign (Thakkar et al., 2024): interpolate the domain and alignment vectors and add them to the base.

    Args:
        group: The base tensor and two non-base tensors.
        role: Per model, `"domain"` or `"alignment"`; each exactly once.
        alpha: Weight of the domain vector in [0, 1] (default 0.5, as in the paper).
        scale: Scale (lambda >= 0) of the combined vector (default 1.0).
    """
    by_role = {}
    for entry in group.non_base:
        by_role.setdefault(role[entry.id], []).append(entry)
    if sorted(by_role) != sorted(ROLES) or any(len(entries) != 1 for entries in by_role.values()):
        assigned = {str(entry.id): role[entry.id] for entry in group.non_base}
        raise ValueError(
            f"mergealign needs exactly one model with role 'domain' and one with role 'alignment'; got {assigned} "
            f"for tensor {group.metadata.name}."
        )
    name = group.metadata.name or "tensor"
    base, domain, alignment = group.base.tensor, by_role["domain"][0].tensor, by_role["alignment"][0].tensor
    _check_same_shape(name, base=base, domain=domain, alignment=alignment)
    tau_domain, tau_alignment = _task_vector(domain, base), _task_vector(alignment, base)
    # The merge is checked once, before the statistics: a NaN / inf input is named instead of merged.
    merged = check_merged(
        combine_vectors(base, tau_domain, tau_alignment, alpha, scale).to(base.dtype), name, base, domain, alignment
    )
    if _RECORDERS:
        _RECORDERS.add(group.metadata.name or "", vector_statistics(tau_domain, tau_alignment))
    return merged


def register() -> None:
    """Register `mergealign` with mergekit, unless this exact method already is (idempotent)."""
    registered = {method.spec.name: method for method in registry.registered_methods()}
    current = registered.get(METHOD_NAME)
    if current is mergealign_merge:
        return
    if getattr(getattr(current, "implementation", None), "__module__", None) == __name__:
        # A reload of this module built a new method object: replace the stale one.
        registry._METHODS[METHOD_NAME] = mergealign_merge
        return
    registry.register(mergealign_merge)  # raises on a foreign method of the same name


register()
