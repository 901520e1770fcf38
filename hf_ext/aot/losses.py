"""Alignment via optimal transport (AOT): the loss, in plain PyTorch.

AOT (Melnyk et al., "Distributional Preference Alignment of LLMs via Optimal Transport", NeurIPS 2024) asks the
distribution of rewards of good answers to dominate, in the first stochastic order, the distribution of rewards of
bad answers: every quantile of the good rewards should be at least the same quantile of the bad ones. Relaxing the
violation with a convex cost `h` gives a one-dimensional optimal-transport problem between the two empirical
measures, whose optimal plan matches sorted samples, so the loss is computed by sorting:

    loss(u, v) = ∫₀¹ h(Q_u(t) − Q_v(t)) dt

with `Q_u`, `Q_v` the (step) quantile functions of the samples `u` and `v`. For equal sizes `n` this is
`mean_i h(u_(i) − v_(i))`; for sizes `n != m` it is a finite sum over the merged breakpoints `{i/n} ∪ {j/m}`.

Nothing here needs a Hugging Face object: the trainer ([`~hf_ext.aot.AOTTrainer`]) computes the log-probabilities
and calls these functions.

```python
>>> import torch
>>> from hf_ext.aot.losses import quantile_ot_loss
>>> u, v = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, 1.0])
>>> quantile_ot_loss(u, v, cost="least_squares", beta=1.0)  # the squared 2-Wasserstein distance
tensor(0.7500)
```
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .._validation import check_range


__all__ = [
    "COSTS",
    "aot_paired_loss",
    "aot_unpaired_loss",
    "dominance_diagnostics",
    "ot_cost",
    "quantile_coupling",
    "quantile_ot_loss",
    "soft_sort",
]

COSTS = ("logistic", "hinge", "squared_hinge", "least_squares")
"""The convex relaxations `h` of the dominance violation that [`quantile_ot_loss`] supports."""


def ot_cost(
    x: torch.Tensor, cost: str = "logistic", *, beta: float = 0.01, margin: float = 0.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The cost `h` applied element-wise to quantile differences `x`, with `s = beta * x`.

    | cost | h |
    |---|---|
    | `"logistic"` | `-(1 - ε) log σ(s - margin) - ε log σ(margin - s)`, with `ε = label_smoothing` |
    | `"hinge"` | `max(0, margin - s)` |
    | `"squared_hinge"` | `max(0, margin - s)²` |
    | `"least_squares"` | `(margin - s)²` |

    With `margin=0` and `label_smoothing=0`, `"logistic"` is the cost of TRL's `loss_type="aot"`.

    Element-wise like `torch.nn.functional`'s losses with `reduction="none"`: a NaN element gives NaN in that element
    only (the reductions, [`quantile_ot_loss`] and the paired / unpaired losses, refuse non-finite inputs).
    """
    _check_cost_arguments(cost, beta, margin, label_smoothing)
    s = beta * x
    if margin != 0.0:
        s = s - margin
    if cost == "logistic":
        loss = -F.logsigmoid(s) * (1 - label_smoothing)
        if label_smoothing != 0.0:
            loss = loss - F.logsigmoid(-s) * label_smoothing
        return loss
    if cost == "hinge":
        return torch.relu(-s)
    if cost == "squared_hinge":
        return torch.relu(-s) ** 2
    return s**2


def _check_cost_arguments(cost: str, beta: float, margin: float, label_smoothing: float) -> None:
    # The ranges of AOTConfig (beta, aot_margin, label_smoothing), for callers of the loss functions too.
    if cost not in COSTS:
        raise ValueError(f"cost={cost!r} is not supported; expected one of {list(COSTS)}.")
    check_range("beta", beta, gt=0, hint="(AOT's default: 0.01)")
    check_range("margin", margin)
    check_range("label_smoothing", label_smoothing, ge=0, le=0.5)
    if cost != "logistic" and label_smoothing != 0.0:
        raise ValueError(f"label_smoothing={label_smoothing} only applies to cost='logistic', not cost={cost!r}.")


@functools.lru_cache(maxsize=256)
def _coupling(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Breakpoints in units of 1 / (n m): i·m for the quantiles of u, j·n for those of v; all exact integers.
    points = torch.unique(torch.cat([torch.arange(n + 1) * m, torch.arange(m + 1) * n]))
    start, end = points[:-1], points[1:]
    # No breakpoint lies strictly inside (start, end], so the sample that owns the interval is the one whose
    # quantile interval begins at or before `start`.
    return start // m, start // n, (end - start).double() / (n * m)


def quantile_coupling(n: int, m: int, device=None, dtype: torch.dtype = torch.float32):
    """The optimal 1-D coupling of two sorted samples of sizes `n` and `m`, as intervals of `(0, 1]`.

    The step quantile functions `Q_u(t) = u_(⌈tn⌉)` and `Q_v(t) = v_(⌈tm⌉)` are both constant between consecutive
    points of the merged breakpoints `{i/n} ∪ {j/m}`. Returns `(index_u, index_v, weight)`, one entry per interval:
    the sorted positions that own it and its length (the weights sum to 1; there are at most `n + m - 1`
    intervals). `∫₀¹ f(Q_u(t), Q_v(t)) dt = Σ_k weight_k · f(u_sorted[index_u_k], v_sorted[index_v_k])`.
    """
    check_range("n", n, ge=1, integer=True, hint="(the size of the first sample)")
    check_range("m", m, ge=1, integer=True, hint="(the size of the second sample)")
    index_u, index_v, weight = _coupling(int(n), int(m))
    return index_u.to(device), index_v.to(device), weight.to(device=device, dtype=dtype)


def soft_sort(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """A differentiable relaxation of `torch.sort(x).values` (ascending), by NeuralSort (Grover et al., 2019).

    Row `i` of the relaxed permutation matrix is `softmax(((n + 1 - 2i) x - |x_k - x_l| 1) / temperature)`; the
    result is that matrix times `x`, flipped to ascending order. As `temperature -> 0` it tends to the hard sort;
    larger temperatures spread each sorted value over its neighbours, so every sample gets a gradient. The
    temperature is in the units of `x` times the batch size. Invariant to permutations of `x`. Costs `O(n²)`.
    """
    check_range("temperature", temperature, gt=0)
    _check_1d("x", x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or infinite values; soft_sort needs finite values.")
    return _soft_sort(x, temperature)


def _soft_sort(x: torch.Tensor, temperature: float) -> torch.Tensor:
    n = x.shape[0]
    if n <= 1:
        return x
    pairwise = (x.unsqueeze(0) - x.unsqueeze(1)).abs().sum(dim=1)  # Σ_l |x_k - x_l|
    scaling = n + 1 - 2 * torch.arange(1, n + 1, device=x.device, dtype=x.dtype)
    logits = (scaling.unsqueeze(1) * x.unsqueeze(0) - pairwise.unsqueeze(0)) / temperature
    descending = torch.softmax(logits, dim=-1) @ x
    return descending.flip(0)


def _sorted(x: torch.Tensor, soft_sort_temperature: float | None) -> torch.Tensor:
    if soft_sort_temperature is None:
        return torch.sort(x, dim=0).values
    return _soft_sort(x, soft_sort_temperature)


def _check_1d(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of rewards; got {type(x).__name__}.")
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of rewards; got shape {tuple(x.shape)}.")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must hold floating-point rewards; got dtype {x.dtype}.")


def _check_finite(u: torch.Tensor, v: torch.Tensor) -> None:
    # One device-to-host copy for both samples (a synchronisation on an accelerator).
    finite = torch.stack([torch.isfinite(u).all(), torch.isfinite(v).all()]).tolist()
    _raise_if_not_finite(finite)


def _raise_if_not_finite(finite: list[bool]) -> None:
    bad = [name for name, ok in zip(("u", "v"), finite) if not ok]
    if bad:
        raise ValueError(
            f"{' and '.join(bad)} hold{'s' if len(bad) == 1 else ''} NaN or infinite rewards; the AOT loss needs finite "
            "values (a NaN would be sorted to an arbitrary quantile and make the loss NaN)."
        )


def quantile_ot_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    cost: str = "logistic",
    beta: float = 0.01,
    margin: float = 0.0,
    label_smoothing: float = 0.0,
    soft_sort_temperature: float | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """The AOT loss: the optimal-transport cost `∫₀¹ h(Q_u(t) - Q_v(t)) dt` of asking `u` to dominate `v`.

    Args:
        u (`torch.Tensor` of shape `(n,)`):
            The samples that should dominate (rewards of good answers, or the policy's margins).
        v (`torch.Tensor` of shape `(m,)`):
            The samples to dominate (rewards of bad answers, or the reference's margins). `m` may differ from `n`:
            the loss is then the exact 1-D OT between the two empirical measures, summed over the merged
            breakpoints (see [`quantile_coupling`]).
        cost (`str`, *optional*, defaults to `"logistic"`):
            One of [`COSTS`]; see [`ot_cost`].
        beta (`float`, *optional*, defaults to `0.01`):
            Scale of the quantile differences (the paper's default).
        margin (`float`, *optional*, defaults to `0.0`):
            Offset subtracted from the scaled differences: the cost asks for `beta * (Q_u - Q_v) >= margin`.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            `ε` of the logistic cost (conservative AOT); only for `cost="logistic"`.
        soft_sort_temperature (`float`, *optional*):
            If set, sort with [`soft_sort`] at this temperature instead of the hard sort.
        check_finite (`bool`, *optional*, defaults to `True`):
            Raise a `ValueError` when `u` or `v` holds NaN or infinite values. The check reads one value back from
            the device (a synchronisation on an accelerator); [`~hf_ext.aot.AOTTrainer`] turns it off and makes the
            same check in the metrics it reads back anyway.

    Returns:
        A scalar tensor. Gradients flow through the sorted values. When `u` or `v` is empty the dominance of one
        over the other is undefined: the loss is then `0`, still attached to the graph, with zero gradient.

    Raises:
        `ValueError`: `u` or `v` is not 1-D or (with `check_finite`) not finite, or an argument is out of range
        (`beta <= 0`, `label_smoothing` outside `[0, 0.5]`, a non-finite `margin`, `soft_sort_temperature <= 0`).
        `TypeError`: `u` or `v` is not a floating-point tensor.
    """
    _check_1d("u", u)
    _check_1d("v", v)
    _check_cost_arguments(cost, beta, margin, label_smoothing)
    check_range("soft_sort_temperature", soft_sort_temperature, gt=0, optional=True, hint="(None: hard sort)")
    n, m = u.shape[0], v.shape[0]
    if check_finite and (n or m):
        _check_finite(u, v)
    if n == 0 or m == 0:
        return (u.sum() + v.sum()) * 0.0
    u_sorted = _sorted(u, soft_sort_temperature)
    v_sorted = _sorted(v, soft_sort_temperature)
    kwargs = {"beta": beta, "margin": margin, "label_smoothing": label_smoothing}
    if n == m:
        return ot_cost(u_sorted - v_sorted, cost, **kwargs).mean()
    index_u, index_v, weight = quantile_coupling(n, m, device=u.device, dtype=torch.promote_types(u.dtype, v.dtype))
    return (weight * ot_cost(u_sorted[index_u] - v_sorted[index_v], cost, **kwargs)).sum()


def aot_paired_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Paired AOT (TRL's `loss_type="aot"`): the policy's log-ratio margins must dominate the reference's.

    `u = log πθ(y⁺|x) - log πθ(y⁻|x)` and `v = log π_ref(y⁺|x) - log π_ref(y⁻|x)`, one entry per pair (summed
    sequence log-probabilities). `kwargs` go to [`quantile_ot_loss`].
    """
    sizes = {t.shape for t in (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)}
    if len(sizes) != 1:
        raise ValueError(f"Paired AOT needs one log-probability per pair in each input; got shapes {sorted(sizes)}.")
    return quantile_ot_loss(chosen_logps - rejected_logps, ref_chosen_logps - ref_rejected_logps, **kwargs)


def aot_unpaired_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, labels: torch.Tensor, **kwargs
) -> torch.Tensor:
    """Unpaired AOT: the rewards of desirable completions must dominate those of undesirable ones.

    The reward of a completion is the implicit DPO reward `log πθ(y|x) - log π_ref(y|x)`; `labels` (bool) marks the
    desirable ones. The two groups may have different sizes (or be empty: see [`quantile_ot_loss`]). With the
    chosen and rejected halves of a paired batch, this is TRL's `loss_type="aot_unpaired"`. `kwargs` go to
    [`quantile_ot_loss`].
    """
    if not (policy_logps.shape == ref_logps.shape == labels.shape):
        raise ValueError(
            "policy_logps, ref_logps and labels must have the same shape; got "
            f"{tuple(policy_logps.shape)}, {tuple(ref_logps.shape)} and {tuple(labels.shape)}."
        )
    labels = labels.bool()
    rewards = policy_logps - ref_logps
    return quantile_ot_loss(rewards[labels], rewards[~labels], **kwargs)


def quantile(x_sorted: torch.Tensor, t: float) -> torch.Tensor:
    """The left-continuous quantile `Q(t) = x_(⌈t n⌉)` of a sorted sample, for `t` in `(0, 1]`."""
    check_range("t", t, gt=0, le=1)
    n = x_sorted.shape[0]
    if n == 0:
        raise ValueError("quantile of an empty sample is undefined; expected at least one value.")
    index = math.ceil(t * n - 1e-9) - 1  # the tolerance keeps t·n = 3.0000000000000004 at 3
    return x_sorted[min(max(index, 0), n - 1)]


def dominance_diagnostics(
    u: torch.Tensor, v: torch.Tensor, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
) -> dict[str, float]:
    """How far `u` is from dominating `v` in the first stochastic order, exactly, for any sizes.

    Returns a dict with:
    - `violation_fraction`: the measure of `t ∈ (0, 1)` where `Q_u(t) < Q_v(t)` (0 when `u` dominates `v`);
    - `ot_violation`: `∫₀¹ max(0, Q_v(t) - Q_u(t)) dt`, the size of the violation in the units of `u` and `v`;
    - `quantile_gap_{100 t}` for each `t` in `quantiles`: `Q_u(t) - Q_v(t)`.

    An empty `u` or `v` gives an empty dict (the dominance is undefined); NaN or infinite values are a `ValueError`
    (checked in the same device-to-host copy as the results).
    """
    _check_1d("u", u)
    _check_1d("v", v)
    for t in quantiles:
        check_range("quantiles", t, gt=0, le=1, hint="(levels t of Q(t))")
    n, m = u.shape[0], v.shape[0]
    if n == 0 or m == 0:
        _check_finite(u, v)  # the loss of this batch is 0 times the other side: NaN if it is not finite
        return {}
    dtype = torch.promote_types(torch.promote_types(u.dtype, v.dtype), torch.float32)
    u_sorted = torch.sort(u.detach().to(dtype)).values
    v_sorted = torch.sort(v.detach().to(dtype)).values
    index_u, index_v, weight = quantile_coupling(n, m, device=u.device, dtype=dtype)
    gap = u_sorted[index_u] - v_sorted[index_v]
    values = torch.stack([(weight * (gap < 0)).sum(), (weight * torch.relu(-gap)).sum()])
    gaps = [quantile(u_sorted, t) - quantile(v_sorted, t) for t in quantiles]
    gaps = torch.stack(gaps) if gaps else values[:0]
    finite = torch.stack([torch.isfinite(u).all(), torch.isfinite(v).all()]).to(dtype)
    *values, finite_u, finite_v = torch.cat([values, gaps, finite]).tolist()  # one device-to-host copy
    _raise_if_not_finite([bool(finite_u), bool(finite_v)])
    names = ["violation_fraction", "ot_violation"] + [f"quantile_gap_{round(100 * t)}" for t in quantiles]
    return dict(zip(names, values))


# Applied here rather than as `@torch.no_grad()`: mutation testing (`make mutate`, mutmut) leaves decorated functions
# alone.
dominance_diagnostics = torch.no_grad()(dominance_diagnostics)
