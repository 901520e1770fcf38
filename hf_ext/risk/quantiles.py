"""Exact empirical quantile functions of first and second order (pure numpy).

For a sample `x_(1) <= ... <= x_(n)` the empirical quantile function is the left-continuous step function
`Q(t) = x_(ceil(n t))` for `t` in (0, 1] (with `Q(0) = x_(1)`); its integral, the second-order quantile (absolute
Lorenz curve) `Q2(t) = int_0^t Q(s) ds`, is piecewise linear with breakpoints at `i / n`. The tail value at risk
`TVaR(t) = Q2(t) / t` is the mean of the worst `t`-fraction of the sample (larger values are better).
"""

from __future__ import annotations

import numpy as np


__all__ = ["as_sample", "quantile", "second_order_quantile", "tvar"]


def as_sample(values, name: str = "sample") -> np.ndarray:
    """`values` as a 1-D float64 array, checked: non-empty and finite.

    Raises:
        ValueError: naming `name` when the sample is empty, not one-dimensional, or holds NaN / inf.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected numbers, got {type(values).__name__} ({error})") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sample, got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: the sample is empty; at least one value is needed")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), the first at index {first} "
            f"({array[first]}); drop or impute them first"
        )
    return array


def _levels(t) -> np.ndarray:
    levels = np.asarray(t, dtype=np.float64)
    if not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"t: quantile levels must lie in [0, 1], got values in [{levels.min()}, {levels.max()}]")
    return levels


def _step_index(levels: np.ndarray, n: int) -> np.ndarray:
    # 0-based index of the order statistic Q(t) = x_(ceil(n t)); the tiny tolerance keeps t = i / n on its own step
    # despite rounding in n * t.
    index = np.ceil(levels * n - 1e-9 * n).astype(np.int64) - 1
    return np.clip(index, 0, n - 1)


def quantile(x, t, *, sorted: bool = False) -> np.ndarray:
    """Exact empirical quantile function `Q(t) = x_(ceil(n t))`.

    Args:
        x (array-like): The sample (1-D, finite).
        t (float or array-like): Levels in [0, 1].
        sorted (`bool`, *optional*, defaults to `False`): Whether `x` is already sorted ascending.

    Returns:
        `np.ndarray` of the shape of `t`.
    """
    values = as_sample(x, "x")
    if not sorted:
        values = np.sort(values)
    levels = _levels(t)
    return values[_step_index(levels, values.size)]


def second_order_quantile(x, t, *, sorted: bool = False) -> np.ndarray:
    """Exact second-order quantile (absolute Lorenz curve) `Q2(t) = int_0^t Q(s) ds`.

    Args:
        x (array-like): The sample (1-D, finite).
        t (float or array-like): Levels in [0, 1].
        sorted (`bool`, *optional*, defaults to `False`): Whether `x` is already sorted ascending.

    Returns:
        `np.ndarray` of the shape of `t`; `Q2(0) = 0` and `Q2(1)` is the sample mean.
    """
    values = as_sample(x, "x")
    if not sorted:
        values = np.sort(values)
    levels = _levels(t)
    n = values.size
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    # whole steps below t, then the partial step
    whole = np.clip(np.floor(levels * n + 1e-9 * n).astype(np.int64), 0, n)
    partial = levels - whole / n
    return cumulative[whole] / n + partial * values[np.minimum(whole, n - 1)]


def tvar(x, t, *, sorted: bool = False) -> np.ndarray:
    """Tail value at risk `TVaR(t) = Q2(t) / t`: the mean of the worst `t`-fraction (larger is better).

    At `t = 0` the limit, the sample minimum, is returned.
    """
    levels = _levels(t)
    values = as_sample(x, "x")
    if not sorted:
        values = np.sort(values)
    safe = np.where(levels > 0, levels, 1.0)
    return np.where(levels > 0, second_order_quantile(values, safe, sorted=True) / safe, values[0])
