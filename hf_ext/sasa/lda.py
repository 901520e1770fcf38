"""The probe's math: a two-class linear discriminant with shared covariance, in plain torch.

Nothing here needs a Hugging Face object, so it is tested against independent oracles on its own.

With desired embeddings `x_d` and undesired embeddings `x_u` (rows), both classes Gaussian with a shared covariance
`Σ`, the Bayes-optimal boundary is linear:

    w ∝ Σ⁻¹ (μ_d − μ_u),   b = (μ_d + μ_u) / 2,   m(h) = wᵀ (h − b)

with `w` normalised to unit length, so that the margin `m` is a signed distance along `w` (positive = desired side).
`Σ` is the pooled within-class covariance, shrunk towards a scaled identity, `(1 − λ) Σ + λ (tr Σ / d) I`, with
the Ledoit–Wolf intensity `λ` by default; the system is solved by Cholesky. Hidden sizes are usually larger than
the number of labelled texts, where `Σ` is singular: the shrinkage keeps the solve well posed without a hard
eigenvalue cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_ext._validation import check_range


__all__ = [
    "LDAFit",
    "Separability",
    "fit_lda",
    "ledoit_wolf_shrinkage",
    "linear_margin",
    "pooled_covariance",
    "separability",
]


@dataclass
class LDAFit:
    """The fitted discriminant.

    Args:
        direction (`torch.Tensor` of shape `(hidden_size,)`): Unit vector `w` pointing to the desired side.
        midpoint (`torch.Tensor` of shape `(hidden_size,)`): `b = (μ_d + μ_u) / 2`.
        shrinkage (`float`): The shrinkage intensity `λ` that was used.
        mean_desired, mean_undesired (`torch.Tensor`): The class means.
    """

    direction: torch.Tensor
    midpoint: torch.Tensor
    shrinkage: float
    mean_desired: torch.Tensor
    mean_undesired: torch.Tensor


def _check_embeddings(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor (num_texts, hidden_size), got {getattr(x, 'shape', type(x))}.")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); need at least one embedding of size >= 1.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return x.detach().to(torch.float64)


def pooled_covariance(x_desired: torch.Tensor, x_undesired: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """The pooled within-class covariance `(S_d + S_u) / (n_d + n_u − 2)`, with `S` the scatter matrices.

    With `balanced`, the mean of the two class covariances `(S_d / (n_d − 1) + S_u / (n_u − 1)) / 2` instead, so
    that a class with many more texts does not dominate the shape of the boundary (a class of one text contributes
    no covariance, and then the pooled estimate is used).
    """
    x_desired, x_undesired = _check_embeddings("x_desired", x_desired), _check_embeddings("x_undesired", x_undesired)
    if x_desired.shape[1] != x_undesired.shape[1]:
        raise ValueError(f"x_desired has hidden size {x_desired.shape[1]} but x_undesired has {x_undesired.shape[1]}.")
    n_d, n_u = x_desired.shape[0], x_undesired.shape[0]
    if n_d + n_u - 2 < 1:
        raise ValueError("Need at least three embeddings in total (two in one class) to estimate a covariance.")
    c_d, c_u = x_desired - x_desired.mean(0), x_undesired - x_undesired.mean(0)
    if balanced and n_d > 1 and n_u > 1:
        return (c_d.T @ c_d / (n_d - 1) + c_u.T @ c_u / (n_u - 1)) / 2
    centered = torch.cat([c_d, c_u])
    return centered.T @ centered / (n_d + n_u - 2)


def ledoit_wolf_shrinkage(centered: torch.Tensor) -> float:
    """Ledoit–Wolf (2004) intensity for shrinking the covariance of `centered` (rows already centred) towards
    `(tr S / d) I`, with `S = Xᵀ X / n`: `λ = min(b², d²) / d²`, `d² = ‖S − μ I‖²_F`,
    `b² = (Σ_k ‖x_k‖⁴ − n ‖S‖²_F) / n²`. The same estimator as `sklearn.covariance.ledoit_wolf(...,
    assume_centered=True)`."""
    x = _check_embeddings("centered", centered)
    n, d = x.shape
    emp = x.T @ x / n
    mu = torch.trace(emp) / d
    emp_norm2 = (emp**2).sum()
    delta2 = emp_norm2 - 2 * mu * torch.trace(emp) + d * mu**2  # ‖S − μI‖²_F
    beta2 = ((x**2).sum(1) ** 2).sum() / n**2 - emp_norm2 / n
    if delta2 <= 0:  # S is already a multiple of the identity
        return 0.0
    return float(torch.clamp(beta2, min=0.0).clamp(max=delta2) / delta2)


def fit_lda(
    x_desired: torch.Tensor, x_undesired: torch.Tensor, shrinkage: float | str = "auto", balanced: bool = False
) -> LDAFit:
    """Fit the shared-covariance linear discriminant between two sets of embeddings.

    Args:
        x_desired (`torch.Tensor` of shape `(n_desired, hidden_size)`):
            Embeddings of desired (e.g. non-toxic) texts.
        x_undesired (`torch.Tensor` of shape `(n_undesired, hidden_size)`):
            Embeddings of undesired (e.g. toxic) texts.
        shrinkage (`float` or `"auto"`, *optional*, defaults to `"auto"`):
            Intensity `λ` in [0, 1] of the shrinkage towards a scaled identity; `"auto"` picks the Ledoit–Wolf
            intensity. `0` is the plain pooled covariance (then it must be positive definite).
        balanced (`bool`, *optional*, defaults to `False`):
            Weigh the two classes equally in the covariance (see [`pooled_covariance`]); for classes of very
            different sizes, e.g. texts labelled by a judge that finds few undesired ones.

    Returns:
        [`LDAFit`], in float32 (the solve runs in float64).
    """
    xd = _check_embeddings("x_desired", x_desired)
    xu = _check_embeddings("x_undesired", x_undesired)
    if xd.shape[1] != xu.shape[1]:
        raise ValueError(f"x_desired has hidden size {xd.shape[1]} but x_undesired has {xu.shape[1]}.")
    if isinstance(shrinkage, str):
        if shrinkage != "auto":
            raise ValueError(f"shrinkage={shrinkage!r} is not supported; expected 'auto' or a float in [0, 1].")
    else:
        check_range("shrinkage", shrinkage, ge=0, le=1, hint="(or 'auto')")

    mean_d, mean_u = xd.mean(0), xu.mean(0)
    diff = mean_d - mean_u
    if not torch.any(diff != 0):
        raise ValueError("The desired and undesired embeddings have the same mean: there is no direction to fit.")
    cov = pooled_covariance(xd, xu, balanced=balanced)
    if shrinkage == "auto":
        lam = ledoit_wolf_shrinkage(torch.cat([xd - mean_d, xu - mean_u]))
    else:
        lam = float(shrinkage)
    dim = cov.shape[0]
    target = torch.trace(cov) / dim
    shrunk = (1.0 - lam) * cov + lam * target * torch.eye(dim, dtype=cov.dtype, device=cov.device)
    if target <= 0:
        raise ValueError(
            f"The embeddings of each class are all identical ({xd.shape[0]} desired, {xu.shape[0]} undesired): their "
            "within-class covariance is zero, so the shape of the boundary cannot be estimated. Give more varied texts."
        )
    chol, info = torch.linalg.cholesky_ex(shrunk)
    if info.item() != 0:
        raise ValueError(
            f"The pooled covariance is singular with shrinkage={shrinkage!r} (hidden size {dim}, "
            f"{xd.shape[0] + xu.shape[0]} embeddings); use shrinkage='auto' or a value in (0, 1]."
        )
    direction = torch.cholesky_solve(diff[:, None], chol)[:, 0]
    direction = direction / torch.linalg.vector_norm(direction)
    return LDAFit(
        direction=direction.float(),
        midpoint=((mean_d + mean_u) / 2).float(),
        shrinkage=lam,
        mean_desired=mean_d.float(),
        mean_undesired=mean_u.float(),
    )


def linear_margin(hidden: torch.Tensor, direction: torch.Tensor, midpoint: torch.Tensor) -> torch.Tensor:
    """`wᵀ (h − b)` over the last dimension of `hidden`, in float32 whatever the dtype of `hidden`.

    Raises:
        `ValueError`: the sizes differ, or `hidden` holds NaN or infinite values (a margin of such a state would be a
            meaningless number; a half-precision model can overflow).
    """
    if (
        direction.ndim != 1
        or midpoint.shape != direction.shape
        or hidden.ndim < 1
        or hidden.shape[-1] != direction.shape[0]
    ):
        raise ValueError(
            f"hidden states of shape {tuple(hidden.shape)} do not fit a direction of shape {tuple(direction.shape)} "
            f"and a midpoint of shape {tuple(midpoint.shape)}; expected (..., hidden_size) and (hidden_size,)."
        )
    finite = torch.isfinite(hidden)
    if not finite.all():
        raise ValueError(
            f"hidden states hold {int((~finite).sum())} NaN or infinite value(s) (of shape {tuple(hidden.shape)}); the "
            "model's hidden states must be finite to be measured (a half-precision overflow?)."
        )
    hidden = hidden.to(torch.float32)
    return (hidden - midpoint.to(hidden.device, torch.float32)) @ direction.to(hidden.device, torch.float32)


@dataclass
class Separability:
    """How well margins separate two classes.

    Args:
        auc (`float`): Probability that a desired text has a larger margin than an undesired one (ties count half):
            0.5 is chance, 1 a perfect ranking. SASA compares the margins of candidates, so this is what matters.
        balanced_accuracy (`float`): Mean of the two classes' accuracies with the boundary at margin 0.
    """

    auc: float
    balanced_accuracy: float


def separability(margins_desired: torch.Tensor, margins_undesired: torch.Tensor) -> Separability:
    """[`Separability`] of the margins of desired and undesired texts (each a 1-D tensor, non-empty)."""
    md = margins_desired.detach().double().flatten()
    mu = margins_undesired.detach().double().flatten()
    if md.numel() == 0 or mu.numel() == 0:
        raise ValueError("separability needs at least one margin per class.")
    for name, margins in (("margins_desired", md), ("margins_undesired", mu)):
        if not torch.isfinite(margins).all():
            raise ValueError(f"{name} holds {int((~torch.isfinite(margins)).sum())} NaN or infinite value(s).")
    sorted_mu = mu.sort().values
    below = torch.searchsorted(sorted_mu, md, side="left").double()  # undesired margins smaller than each desired
    tied = torch.searchsorted(sorted_mu, md, side="right").double() - below
    auc = float((below + tied / 2).sum() / (md.numel() * mu.numel()))
    accuracy = ((md > 0).double().mean() + (mu <= 0).double().mean()) / 2
    return Separability(auc=auc, balanced_accuracy=float(accuracy))
