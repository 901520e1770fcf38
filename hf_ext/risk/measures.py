"""Mean-risk figures consistent with second-order stochastic dominance (pure numpy).

For a metric where larger is better (Ogryczak & Ruszczyński, 1999; 2002), `mean - risk` never prefers a model that
is second-order dominated when the risk is

- the absolute semideviation `E[(mean - X)_+]` (mean absolute deviation below the mean), or
- the Gini tail `2 int_0^1 (mean t - Q2(t)) dt`, half the Gini mean difference `E|X - X'| / 2`;

and the tail value at risk `TVaR(p) = Q2(p) / p` (the mean of the worst p-fraction) is itself consistent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .quantiles import as_sample, tvar


__all__ = ["DEFAULT_LEVELS", "gini_tail", "mean_risk", "mean_risk_table", "semideviation"]

DEFAULT_LEVELS = (0.05, 0.1, 0.25)


def semideviation(x) -> float:
    """Absolute semideviation `E[(mean - X)_+]` of a sample."""
    values = as_sample(x, "x")
    return float(np.maximum(values.mean() - values, 0.0).mean())


def gini_tail(x) -> float:
    """Gini tail `2 int_0^1 (mean t - Q2(t)) dt` of a sample (equal to `E|X - X'| / 2` on the empirical law).

    Computed exactly from the order statistics as `sum_i (2 i - n - 1) x_(i) / n^2`.
    """
    values = np.sort(as_sample(x, "x"))
    n = values.size
    coefficients = 2.0 * np.arange(1, n + 1) - n - 1
    return float(coefficients @ values / n**2)


def mean_risk(x, levels: Sequence[float] = DEFAULT_LEVELS) -> dict[str, float]:
    """Mean-risk figures of one sample (larger is better).

    Args:
        x (array-like): The sample (1-D, finite).
        levels (sequence of `float`, *optional*): TVaR levels in (0, 1].

    Returns:
        `dict[str, float]` with `mean`, `std`, `tvar@p` for each level, `mean-semideviation` and `mean-gini`.
    """
    values = np.sort(as_sample(x, "x"))
    levels = [float(p) for p in levels]
    bad = [p for p in levels if not 0 < p <= 1]
    if bad:
        raise ValueError(f"levels: TVaR levels must lie in (0, 1], got {bad}")
    mean = float(values.mean())
    figures = {"mean": mean, "std": float(values.std())}
    for p in levels:
        figures[f"tvar@{p:g}"] = float(tvar(values, p, sorted=True))
    figures["mean-semideviation"] = mean - semideviation(values)
    figures["mean-gini"] = mean - gini_tail(values)
    return figures


def mean_risk_table(
    samples: Mapping[str, object], levels: Sequence[float] = DEFAULT_LEVELS
) -> dict[str, dict[str, float]]:
    """[`mean_risk`] for each model: `{model: figures}`."""
    return {name: mean_risk(values, levels) for name, values in samples.items()}
