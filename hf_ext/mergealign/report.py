"""The similarity report: how the domain vector and the alignment vector relate, tensor by tensor.

MergeAlign assumes both fine-tuned models start from the same base and move away from it independently. The
report shows whether that holds: the cosine between tau_D and tau_A (overall and per tensor), their norms and
the norm ratio, and the *alignment share* of the domain vector, `<tau_D, tau_A> / ||tau_A||^2`, about 0 for
independent fine-tunes and about 1 when the domain model was fine-tuned from the aligned model (then tau_D
already contains tau_A, and the merge adds the alignment vector twice over). A share above `derived_threshold`
raises a warning.

`merge` writes the report next to the merged model; [`similarity_report`] computes it without merging. The dot
products are float32 BLAS reductions summed in float64 (about 6 significant digits; the last ones can change with
the number of CPU threads, the merged weights never do).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .vectors import VectorStatistics, summarize_statistics, vector_statistics


__all__ = ["REPORT_JSON", "REPORT_PNG", "SimilarityReport", "similarity_report"]

REPORT_JSON = "mergealign_similarity.json"
REPORT_PNG = "mergealign_similarity.png"
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass
class SimilarityReport:
    """Cosine, norms and alignment share of the domain and alignment task vectors.

    Args:
        per_tensor (`dict[str, VectorStatistics]`): Statistics of each tensor, in model order.
        summary (`dict`): Overall figures (see `hf_ext.mergealign.vectors.summarize_statistics`).
        base_model, domain_model, alignment_model (`str`, *optional*): The inputs, as named in the configuration.
        warnings (`list[str]`): What deserves a look (the domain model looking derived from the aligned one).
    """

    per_tensor: dict[str, VectorStatistics]
    summary: dict
    base_model: str | None = None
    domain_model: str | None = None
    alignment_model: str | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_statistics(
        cls,
        per_tensor: dict[str, VectorStatistics],
        *,
        base_model: str | None = None,
        domain_model: str | None = None,
        alignment_model: str | None = None,
        derived_threshold: float = 0.5,
    ) -> SimilarityReport:
        """Build the report (summary and warnings) from per-tensor statistics."""
        summary = summarize_statistics(per_tensor, derived_threshold=derived_threshold)
        messages = []
        if summary["domain_derived_from_alignment"]:
            messages.append(
                f"The domain model {domain_model or ''} looks derived from the aligned model {alignment_model or ''} "
                f"rather than from the base: its task vector already contains {summary['alignment_share']:.0%} of the "
                f"alignment vector (cosine {summary['cosine']:.2f}; threshold {derived_threshold:.0%}). MergeAlign "
                "would add the alignment vector twice; use the aligned model as the base, or check the base model."
            )
        return cls(
            per_tensor=dict(per_tensor),
            summary=summary,
            base_model=base_model,
            domain_model=domain_model,
            alignment_model=alignment_model,
            warnings=messages,
        )

    @property
    def derived_from_alignment(self) -> bool:
        """Whether the domain model looks fine-tuned from the aligned model (see the module docstring)."""
        return bool(self.summary["domain_derived_from_alignment"])

    def per_layer(self) -> dict[int, VectorStatistics]:
        """Statistics summed over the tensors of each numbered layer (`...layers.<i>....`)."""
        layers: dict[int, VectorStatistics] = {}
        for name, stats in self.per_tensor.items():
            match = _LAYER.search(name)
            if match:
                index = int(match.group(1))
                layers[index] = layers[index] + stats if index in layers else stats
        return dict(sorted(layers.items()))

    def card_summary(self) -> dict:
        """The figures the model card carries."""
        keys = (
            "cosine",
            "domain_norm",
            "alignment_norm",
            "norm_ratio",
            "alignment_share",
            "tensor_cosine_min",
            "tensor_cosine_max",
        )
        figures = {key: _finite(round(self.summary[key], 6)) for key in keys}
        figures["domain_derived_from_alignment"] = self.derived_from_alignment
        return figures

    def to_dict(self) -> dict:
        return {
            "base_model": self.base_model,
            "domain_model": self.domain_model,
            "alignment_model": self.alignment_model,
            "summary": {k: _finite(v) for k, v in self.summary.items()},
            "warnings": list(self.warnings),
            "per_layer": {str(k): _finite_dict(v.to_dict()) for k, v in self.per_layer().items()},
            "per_tensor": {name: _finite_dict(stats.to_dict()) for name, stats in self.per_tensor.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> SimilarityReport:
        per_tensor = {
            name: VectorStatistics(
                dot=d["dot"],
                domain_sq=d["domain_norm"] ** 2,
                alignment_sq=d["alignment_norm"] ** 2,
                numel=d["numel"],
            )
            for name, d in data["per_tensor"].items()
        }
        summary = {k: (float("nan") if v is None else v) for k, v in data["summary"].items()}
        return cls(
            per_tensor=per_tensor,
            summary=summary,
            base_model=data.get("base_model"),
            domain_model=data.get("domain_model"),
            alignment_model=data.get("alignment_model"),
            warnings=list(data.get("warnings", [])),
        )

    def save(self, save_directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write `mergealign_similarity.json` and `mergealign_similarity.png` into `save_directory`."""
        from ..serialization import save_json

        save_directory = Path(save_directory)
        json_path = save_json(save_directory / REPORT_JSON, self.to_dict())
        return json_path, self.plot(save_directory / REPORT_PNG)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SimilarityReport:
        """Read the report `save` wrote (from the report file or the folder holding it)."""
        from ..serialization import load_json

        path = Path(directory)
        return cls.from_dict(load_json(path / REPORT_JSON if path.is_dir() else path))

    def plot(self, path: str | os.PathLike) -> Path:
        """Per-tensor cosine(tau_D, tau_A) and the two vectors' norms, as a PNG (see `hf_ext.mergealign.plots`)."""
        from .plots import similarity_chart

        stats = list(self.per_tensor.values())
        share = self.summary["alignment_share"]
        title = (
            f"MergeAlign similarity: overall cosine {self.summary['cosine']:.3f}, alignment share of tau_D {share:.2f}"
            + (" (derived from the aligned model?)" if self.derived_from_alignment else "")
        )
        return similarity_chart(
            path,
            cosines=[s.cosine for s in stats],
            domain_norms=[s.domain_norm for s in stats],
            alignment_norms=[s.alignment_norm for s in stats],
            title=title,
        )


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite_dict(values: dict) -> dict:
    return {k: _finite(v) for k, v in values.items()}


def similarity_report(
    base: str | os.PathLike,
    domain: str | os.PathLike,
    alignment: str | os.PathLike,
    *,
    derived_threshold: float = 0.5,
    progress: bool = True,
) -> SimilarityReport:
    """The similarity report of two fine-tunes of `base`, without merging them.

    Args:
        base, domain, alignment (`str` or `os.PathLike`):
            Model folders or Hub ids; `domain` and `alignment` may be PEFT LoRA
            adapters trained on `base`.
        derived_threshold (`float`, *optional*, defaults to 0.5): See [`SimilarityReport`].
        progress (`bool`, *optional*, defaults to `True`): Show a progress bar.
    """
    import torch
    from tqdm.auto import tqdm

    from .weights import TaskVectors

    vectors = TaskVectors(base, domain, alignment)
    per_tensor = {}
    for name in tqdm(vectors.names, desc="Task vector similarity", disable=not progress):
        base_tensor, tau_domain, tau_alignment = vectors[name]
        if not base_tensor.is_floating_point():
            continue
        zeros = None
        if tau_domain is None or tau_alignment is None:
            zeros = torch.zeros(base_tensor.shape, dtype=torch.float32)
        per_tensor[name] = vector_statistics(
            tau_domain if tau_domain is not None else zeros, tau_alignment if tau_alignment is not None else zeros
        )
    return SimilarityReport.from_statistics(
        per_tensor,
        base_model=str(base),
        domain_model=str(domain),
        alignment_model=str(alignment),
        derived_threshold=derived_threshold,
    )
