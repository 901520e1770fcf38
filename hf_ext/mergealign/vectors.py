"""The arithmetic of MergeAlign, on plain tensors (no Hugging Face object needed).

A fine-tuned model defines a *task vector* relative to its base, tau = theta_finetuned - theta_base. MergeAlign
interpolates the domain vector tau_D and the alignment vector tau_A and adds the result back to the base:

    theta = theta_base + scale * (alpha * tau_D + (1 - alpha) * tau_A)

(Thakkar et al., "Combining Domain and Alignment Vectors to Achieve Better Knowledge-Safety Trade-offs in LLMs",
2024; the paper uses alpha = 0.5, scale = 1). With `scale = 1` this is the linear merge
`alpha * theta_D + (1 - alpha) * theta_A`.

Everything is computed in float32 (float64 when the inputs are float64) whatever the dtype of the inputs, and
cast back to the base's dtype at the end, so that bfloat16 / float16 checkpoints lose no precision to the
arithmetic itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from hf_ext._validation import check_range


__all__ = [
    "VectorStatistics",
    "accumulation_dtype",
    "check_merged",
    "combine_vectors",
    "lora_delta",
    "mergealign_tensor",
    "summarize_statistics",
    "task_vector",
    "vector_statistics",
]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype MergeAlign computes in for inputs of `dtype`: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def task_vector(finetuned: torch.Tensor, base: torch.Tensor, *, name: str = "tensor") -> torch.Tensor:
    """`finetuned - base`, computed in the accumulation dtype (float32 for half-precision inputs).

    Raises:
        `ValueError`: naming `name` and both shapes when they differ, or naming the input that holds NaN or
            infinite values (a task vector of them would silently be NaN).
    """
    _check_same_shape(name, base=base, finetuned=finetuned)
    tau = _task_vector(finetuned, base)
    if not torch.isfinite(tau).all():
        _raise_non_finite(name, {"base": base, "fine-tuned": finetuned}, result="task vector")
    return tau


def _task_vector(finetuned: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    dtype = accumulation_dtype(torch.promote_types(finetuned.dtype, base.dtype))
    return finetuned.to(dtype) - base.to(dtype)


def _check_same_shape(name: str, **tensors: torch.Tensor) -> None:
    shapes = {role: tuple(tensor.shape) for role, tensor in tensors.items()}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{role} {shape}" for role, shape in shapes.items())
        raise ValueError(f"Cannot merge tensor {name!r}: its shapes differ ({described}); expected one shape.")


def _raise_non_finite(name: str, inputs: Mapping[str, torch.Tensor], *, result: str = "merge") -> None:
    """Raise the `ValueError` that explains a non-finite `result` of tensor `name`: the first input holding NaN / inf,
    else an overflow of the arithmetic or of the output dtype."""
    for role, tensor in inputs.items():
        bad = ~torch.isfinite(tensor)
        if bad.any():
            raise ValueError(
                f"The {role} tensor {name!r} holds {int(bad.sum())} NaN or infinite value(s) of {tensor.numel()}; "
                f"its {result} would be NaN. Check that checkpoint (a diverged fine-tune, a broken conversion)."
            )
    raise ValueError(
        f"The {result} of tensor {name!r} overflows (its inputs are finite): the values exceed the range of the "
        "dtype it is written in; lower `scale` or write the merge in a wider dtype."
    )


def check_merged(
    merged: torch.Tensor, name: str, base: torch.Tensor, domain: torch.Tensor | None, alignment: torch.Tensor | None
) -> torch.Tensor:
    """Return `merged`, or raise a `ValueError` naming tensor `name` and the input to blame when it is not finite.

    One pass over the merged tensor: the inputs are read again only to explain a failure."""
    if not torch.isfinite(merged).all():
        inputs = {"base": base, "domain": domain, "alignment": alignment}
        _raise_non_finite(name, {role: tensor for role, tensor in inputs.items() if tensor is not None})
    return merged


def combine_vectors(
    base: torch.Tensor, tau_domain: torch.Tensor, tau_alignment: torch.Tensor, alpha: float, scale: float = 1.0
) -> torch.Tensor:
    """`base + scale * (alpha * tau_domain + (1 - alpha) * tau_alignment)` in the accumulation dtype.

    The task vectors must already be in the accumulation dtype (as [`task_vector`] returns them); the result is
    too. Neither input is modified. `alpha` must lie in [0, 1] and `scale` be finite and >= 0 (`ValueError`).
    """
    check_range("alpha", alpha, ge=0, le=1)
    check_range("scale", scale, ge=0)
    mixed = torch.lerp(tau_alignment, tau_domain, float(alpha))  # alpha * tau_D + (1 - alpha) * tau_A
    return torch.add(base.to(mixed.dtype), mixed, alpha=float(scale))


def mergealign_tensor(
    base: torch.Tensor,
    domain: torch.Tensor,
    alignment: torch.Tensor,
    alpha: float = 0.5,
    scale: float = 1.0,
    *,
    name: str = "tensor",
) -> torch.Tensor:
    """Merge one tensor: `base + scale * (alpha * (domain - base) + (1 - alpha) * (alignment - base))`.

    Args:
        base (`torch.Tensor`): The base model's tensor.
        domain (`torch.Tensor`): The domain expert's tensor (same shape).
        alignment (`torch.Tensor`): The aligned model's tensor (same shape).
        alpha (`float`, *optional*, defaults to 0.5): Weight of the domain vector, in [0, 1].
        scale (`float`, *optional*, defaults to 1.0): Scale `lambda` of the combined vector, finite and >= 0.
        name (`str`, *optional*): The tensor's name, for error messages.

    Returns:
        `torch.Tensor` in the base's dtype, computed in float32 (float64 for float64 inputs).

    Raises:
        `ValueError`: the shapes differ (both named), an input holds NaN or infinite values (the input is named), or
            the merge overflows the base's dtype: a merge is never silently NaN or infinite.
    """
    _check_same_shape(name, base=base, domain=domain, alignment=alignment)
    merged = combine_vectors(base, _task_vector(domain, base), _task_vector(alignment, base), alpha, scale)
    return check_merged(merged.to(base.dtype), name, base, domain, alignment)


@dataclass(frozen=True)
class VectorStatistics:
    """Sufficient statistics of a pair of task vectors over one tensor (or summed over many).

    Args:
        dot (`float`): `<tau_D, tau_A>`.
        domain_sq (`float`): `||tau_D||^2`.
        alignment_sq (`float`): `||tau_A||^2`.
        numel (`int`): Number of elements.
    """

    dot: float
    domain_sq: float
    alignment_sq: float
    numel: int

    @property
    def domain_norm(self) -> float:
        return math.sqrt(self.domain_sq)

    @property
    def alignment_norm(self) -> float:
        return math.sqrt(self.alignment_sq)

    @property
    def cosine(self) -> float:
        """cosine(tau_D, tau_A) in [-1, 1] (the float32 dot products can overshoot by ~1e-7); NaN when either vector is
        zero."""
        denominator = math.sqrt(self.domain_sq * self.alignment_sq)
        return min(1.0, max(-1.0, self.dot / denominator)) if denominator > 0 else float("nan")

    @property
    def norm_ratio(self) -> float:
        """`||tau_D|| / ||tau_A||`; inf when only tau_A is zero, NaN when both are."""
        if self.alignment_sq > 0:
            return self.domain_norm / self.alignment_norm
        return float("inf") if self.domain_sq > 0 else float("nan")

    @property
    def alignment_share(self) -> float:
        """How much of tau_A the domain vector already contains: the coefficient of the projection of tau_D on
        tau_A, `<tau_D, tau_A> / ||tau_A||^2`.

        About 0 when the domain model was fine-tuned from the base independently of the aligned model; about 1
        when it was fine-tuned from the aligned model (then `tau_D = tau_A + delta`)."""
        return self.dot / self.alignment_sq if self.alignment_sq > 0 else float("nan")

    def __add__(self, other: VectorStatistics) -> VectorStatistics:
        return VectorStatistics(
            dot=self.dot + other.dot,
            domain_sq=self.domain_sq + other.domain_sq,
            alignment_sq=self.alignment_sq + other.alignment_sq,
            numel=self.numel + other.numel,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "numel": self.numel,
            "dot": self.dot,
            "domain_norm": self.domain_norm,
            "alignment_norm": self.alignment_norm,
            "norm_ratio": self.norm_ratio,
            "cosine": self.cosine,
            "alignment_share": self.alignment_share,
        }


def vector_statistics(tau_domain: torch.Tensor, tau_alignment: torch.Tensor) -> VectorStatistics:
    """[`VectorStatistics`] of two task vectors of the same shape (partial sums accumulated in float64)."""
    if tau_domain.shape != tau_alignment.shape:
        raise ValueError(
            f"Task vectors differ in shape: {tuple(tau_domain.shape)} (domain) vs {tuple(tau_alignment.shape)} "
            "(alignment)."
        )
    d = tau_domain.reshape(-1)
    a = tau_alignment.reshape(-1)
    statistics = VectorStatistics(
        dot=_chunked_dot(d, a), domain_sq=_chunked_dot(d, d), alignment_sq=_chunked_dot(a, a), numel=d.numel()
    )
    if not all(math.isfinite(v) for v in (statistics.dot, statistics.domain_sq, statistics.alignment_sq)):
        bad = [role for role, tau in (("domain", d), ("alignment", a)) if not torch.isfinite(tau).all()]
        raise ValueError(
            f"The {' and '.join(bad) or 'task'} vector(s) hold NaN or infinite values (or their squared norms overflow "
            "float64); their similarity is undefined."
        )
    return statistics


def _chunked_dot(x: torch.Tensor, y: torch.Tensor, chunk: int = 1 << 24) -> float:
    """`<x, y>`: BLAS dot products (accurate to ~1e-6 relative in float32) over chunks of 16M elements, summed in
    float64. Small chunks would be slower, not more accurate."""
    total = 0.0
    for start in range(0, x.numel(), chunk):
        total += torch.dot(x[start : start + chunk], y[start : start + chunk]).item()
    return total


def summarize_statistics(
    per_tensor: Mapping[str, VectorStatistics], derived_threshold: float = 0.5
) -> dict[str, float | bool | int]:
    """Overall figures from per-tensor statistics.

    Returns a dict with the overall `cosine`, `domain_norm`, `alignment_norm`, `norm_ratio`, `alignment_share`
    (see [`VectorStatistics`]), the number of tensors, the mean / min / max of the per-tensor cosines, and
    `domain_derived_from_alignment`: whether the domain vector contains at least `derived_threshold` of the
    alignment vector (`alignment_share >= derived_threshold`), the sign that the domain model was fine-tuned from
    the aligned model rather than from the base.
    """
    check_range("derived_threshold", derived_threshold, gt=0, le=1)
    total = _sum(per_tensor.values())
    cosines = [s.cosine for s in per_tensor.values() if not math.isnan(s.cosine)]
    summary = {
        "num_tensors": len(per_tensor),
        "numel": total.numel,
        "cosine": total.cosine,
        "domain_norm": total.domain_norm,
        "alignment_norm": total.alignment_norm,
        "norm_ratio": total.norm_ratio,
        "alignment_share": total.alignment_share,
        "tensor_cosine_mean": sum(cosines) / len(cosines) if cosines else float("nan"),
        "tensor_cosine_min": min(cosines) if cosines else float("nan"),
        "tensor_cosine_max": max(cosines) if cosines else float("nan"),
        "derived_threshold": derived_threshold,
    }
    share = total.alignment_share
    summary["domain_derived_from_alignment"] = bool(not math.isnan(share) and share >= derived_threshold)
    return summary


def _sum(stats: Iterable[VectorStatistics]) -> VectorStatistics:
    total = VectorStatistics(0.0, 0.0, 0.0, 0)
    for s in stats:
        total = total + s
    return total


def lora_delta(
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
    *,
    fan_in_fan_out: bool = False,
    embedding: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The weight update of a LoRA adapter, `scaling * B @ A`, laid out like the adapted weight.

    Args:
        lora_a (`torch.Tensor`): `A`, shape `(r, in_features)` (for an embedding: `(r, num_embeddings)`).
        lora_b (`torch.Tensor`): `B`, shape `(out_features, r)` (for an embedding: `(embedding_dim, r)`).
        scaling (`float`): `lora_alpha / r` (or `lora_alpha / sqrt(r)` for rank-stabilised LoRA).
        fan_in_fan_out (`bool`, *optional*, defaults to `False`):
            The adapted weight is stored `(in, out)` (GPT-2's `Conv1D`): the update is transposed.
        embedding (`bool`, *optional*, defaults to `False`):
            The adapted weight is an embedding table `(num_embeddings, embedding_dim)`: the update is transposed.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): Dtype of the product.
    """
    if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_b.shape[1] != lora_a.shape[0]:
        raise ValueError(
            f"LoRA factors do not chain: A has shape {tuple(lora_a.shape)} and B has shape {tuple(lora_b.shape)}; "
            "expected A (r, in) and B (out, r)."
        )
    delta = (lora_b.to(dtype) @ lora_a.to(dtype)).mul_(float(scaling))
    return delta.T.contiguous() if (fan_in_fan_out or embedding) else delta
