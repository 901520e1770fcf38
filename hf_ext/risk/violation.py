"""The almost-dominance violation ratio, computed exactly on merged breakpoints (pure numpy).

For samples `X` (size n) and `Y` (size m), with `Q` the first-order (`order=1`) or second-order (`order=2`)
empirical quantile function,

    eps(X, Y) = int_0^1 (Q_Y(t) - Q_X(t))_+^2 dt / int_0^1 (Q_Y(t) - Q_X(t))^2 dt,

the share of the squared distance between the two quantile functions where `Y` is above `X`: 0 when `X`
dominates `Y`, 1 when `Y` dominates `X`, and `eps(X, Y) + eps(Y, X) = 1`. Both quantile functions change only
at the breakpoints `i / n` and `j / m`: between two consecutive merged breakpoints the first-order difference is
constant and the second-order difference is linear, so both integrals are finite sums, computed here exactly (no
grid). When the two quantile functions coincide (zero denominator) the ratio is 0.5: neither is preferred.

The batched form [`violation_ratios`] takes `(b, n)` and `(b, m)` arrays of sorted resamples, so that a whole
bootstrap is a handful of vectorised operations.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

from .quantiles import as_sample


__all__ = [
    "PairGeometry",
    "lorenz",
    "pair_geometry",
    "step_violation_ratios",
    "violation_ratio",
    "violation_ratios",
]

ORDERS = (1, 2)


def check_order(order) -> int:
    if order not in ORDERS:
        raise ValueError(f"order: expected 1 (first-order dominance) or 2 (second-order dominance), got {order!r}")
    return int(order)


class PairGeometry:
    """The merged breakpoints of two empirical quantile functions with `n` and `m` steps.

    Breakpoints are held as integers in units of `1 / lcm(n, m)`, so that which step of each sample an interval
    belongs to is exact integer arithmetic.

    Attributes:
        n, m (`int`): The sample sizes.
        width (`np.ndarray` of shape `(L,)`): Lengths of the `L` merged intervals (they sum to 1).
        x_step, y_step (`np.ndarray` of shape `(L,)`): 0-based order statistic of each sample on each interval.
        x_whole, y_whole (`np.ndarray` of shape `(L + 1,)`): At each breakpoint `t`, the number of whole steps
            below it (`floor(n t)`), and x_part, y_part the remaining part of `t` inside the next step; together
            they give the second-order quantile at the breakpoint.
    """

    def __init__(self, n: int, m: int):
        self.n, self.m = int(n), int(m)
        if self.n < 1 or self.m < 1:
            raise ValueError(f"sample sizes must be positive, got n={n}, m={m}")
        total = self.n // gcd(self.n, self.m) * self.m
        x_unit, y_unit = total // self.n, total // self.m
        points = np.union1d(
            np.arange(self.n + 1, dtype=np.int64) * x_unit, np.arange(self.m + 1, dtype=np.int64) * y_unit
        )
        self.width = np.diff(points) / total
        # an interval (p_k, p_k+1] lies in step ceil(p_k+1 / unit) of each sample
        self.x_step = -(-points[1:] // x_unit) - 1
        self.y_step = -(-points[1:] // y_unit) - 1
        self.x_whole = points // x_unit
        self.y_whole = points // y_unit
        self.x_part = (points - self.x_whole * x_unit) / total
        self.y_part = (points - self.y_whole * y_unit) / total

    @property
    def equal(self) -> bool:
        return self.n == self.m


@lru_cache(maxsize=64)
def pair_geometry(n: int, m: int) -> PairGeometry:
    """A cached [`PairGeometry`] for sample sizes `n` and `m`."""
    return PairGeometry(n, m)


def _second_order_at_breakpoints(sorted_values: np.ndarray, whole: np.ndarray, part: np.ndarray) -> np.ndarray:
    n = sorted_values.shape[-1]
    cumulative = np.zeros(sorted_values.shape[:-1] + (n + 1,))
    np.cumsum(sorted_values, axis=-1, out=cumulative[..., 1:])
    return cumulative[..., whole] / n + part * sorted_values[..., np.minimum(whole, n - 1)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray, tolerance: np.ndarray | float = 0.0) -> np.ndarray:
    positive = denominator > tolerance
    # clipped: the two sums are rounded separately, so a ratio of 1 can come out a hair above it
    return np.where(positive, np.clip(numerator / np.where(positive, denominator, 1.0), 0.0, 1.0), 0.5)


def _tolerance(sorted_x: np.ndarray, sorted_y: np.ndarray) -> np.ndarray:
    # Rounding noise of the squared distance: when both quantile functions are the same up to rounding (the same
    # law written with different sample sizes), the ratio is 0.5, not the ratio of two rounding errors.
    scale = np.maximum(
        np.maximum(np.abs(sorted_x[..., 0]), np.abs(sorted_x[..., -1])),
        np.maximum(np.abs(sorted_y[..., 0]), np.abs(sorted_y[..., -1])),
    )
    size = max(sorted_x.shape[-1], sorted_y.shape[-1])
    return (8 * size * np.finfo(np.float64).eps * scale) ** 2


def violation_ratios(
    sorted_x: np.ndarray,
    sorted_y: np.ndarray,
    order: int = 1,
    *,
    lorenz_x: np.ndarray | None = None,
    lorenz_y: np.ndarray | None = None,
) -> np.ndarray:
    """Exact violation ratios `eps(X_b, Y_b)` for a batch of sorted samples.

    Args:
        sorted_x (`np.ndarray` of shape `(n,)` or `(b, n)`): Samples of `X`, each row sorted ascending.
        sorted_y (`np.ndarray` of shape `(m,)` or `(b, m)`): Samples of `Y`, sorted likewise.
        order (`int`, *optional*, defaults to 1): 1 for first-order, 2 for second-order dominance.
        lorenz_x, lorenz_y (`np.ndarray`, *optional*): [`lorenz`] of the samples when already computed (order 2
            with equal sizes), so that a caller comparing many pairs computes each only once.

    Returns:
        `np.ndarray` of shape `()` or `(b,)`, values in [0, 1].
    """
    order = check_order(order)
    geometry = pair_geometry(sorted_x.shape[-1], sorted_y.shape[-1])
    tolerance = _tolerance(sorted_x, sorted_y)
    if order == 1:
        if geometry.equal:
            diff = sorted_y - sorted_x
            positive = np.maximum(diff, 0.0)
            return _ratio(
                np.einsum("...i,...i->...", positive, positive),
                np.einsum("...i,...i->...", diff, diff),
                tolerance * geometry.n,  # the sums are n times the integrals
            )
        diff = sorted_y[..., geometry.y_step] - sorted_x[..., geometry.x_step]
        positive = np.maximum(diff, 0.0)
        return _ratio((positive * positive) @ geometry.width, (diff * diff) @ geometry.width, tolerance)

    if geometry.equal:
        return _second_order_equal(
            lorenz(sorted_x) if lorenz_x is None else lorenz_x,
            lorenz(sorted_y) if lorenz_y is None else lorenz_y,
            tolerance * (3 * geometry.n),  # the sums are 3 n times the integrals
        )
    values = _second_order_at_breakpoints(sorted_y, geometry.y_whole, geometry.y_part) - (
        _second_order_at_breakpoints(sorted_x, geometry.x_whole, geometry.x_part)
    )
    return _second_order_ratio(values, geometry.width, 3 * tolerance)  # the sums are 3 times the integrals


def lorenz(sorted_values: np.ndarray) -> np.ndarray:
    """The second-order quantile at the breakpoints `0, 1/n, ..., 1` of sorted samples: shape `(..., n + 1)`."""
    n = sorted_values.shape[-1]
    out = np.zeros(sorted_values.shape[:-1] + (n + 1,))
    np.cumsum(sorted_values, axis=-1, out=out[..., 1:])
    out /= n
    return out


# Second order: the difference D(t) of the absolute Lorenz curves is linear between breakpoints; with values u, v
# at the ends of an interval of width h,
#   int D^2 = h (u^2 + u v + v^2) / 3,
#   int D_+^2 = the same with u_+, v_+ when u and v do not have opposite signs, and h p^3 / (3 |u - v|) when they do
#   (p the positive one of u, v), that is h p^2 (1 - p / |u - v|) / 3 less than the formula with u_+, v_+.
# The factor h / 3 cancels in the ratio when all widths are equal.


def _crossing_excess(values: np.ndarray, width: np.ndarray | None):
    u, v = values[..., :-1], values[..., 1:]
    uv = u * v
    if uv.ndim == 1:
        cols = np.flatnonzero(uv < 0)
        rows = None
        cu, cv = u[cols], v[cols]
    else:
        # crossings are rare: find them on the flat array (cheaper than a 2-D nonzero), then gather
        flat = np.flatnonzero(uv < 0)
        rows, cols = np.divmod(flat, uv.shape[-1])
        cu, cv = u[rows, cols], v[rows, cols]
    p = np.maximum(cu, cv)
    excess = p * p * (1.0 - p / np.abs(cu - cv))
    if width is not None:
        excess = excess * width[cols]
    if rows is None:
        return uv, excess.sum()
    return uv, np.bincount(rows, weights=excess, minlength=values.shape[0])


def _second_order_equal(lorenz_x: np.ndarray, lorenz_y: np.ndarray, tolerance) -> np.ndarray:
    diff = lorenz_y - lorenz_x
    squeeze = diff.ndim == 1
    if squeeze:
        diff = diff[None]
    positive = np.maximum(diff, 0.0)
    uv, excess = _crossing_excess(diff, None)
    ends = diff[:, 0] ** 2 + diff[:, -1] ** 2
    ends_positive = positive[:, 0] ** 2 + positive[:, -1] ** 2
    denominator = 2 * np.einsum("ij,ij->i", diff, diff) - ends + uv.sum(axis=-1)
    numerator = (
        2 * np.einsum("ij,ij->i", positive, positive)
        - ends_positive
        + np.einsum("ij,ij->i", positive[:, :-1], positive[:, 1:])
        - excess
    )
    ratio = _ratio(np.maximum(numerator, 0.0), denominator, tolerance)
    return ratio[0] if squeeze else ratio


def _second_order_ratio(values: np.ndarray, width: np.ndarray, tolerance) -> np.ndarray:
    squeeze = values.ndim == 1
    if squeeze:
        values = values[None]
    u, v = values[:, :-1], values[:, 1:]
    pu, pv = np.maximum(u, 0.0), np.maximum(v, 0.0)
    uv, excess = _crossing_excess(values, width)
    denominator = (u * u + uv + v * v) @ width
    numerator = (pu * pu + pu * pv + pv * pv) @ width - excess
    ratio = _ratio(np.maximum(numerator, 0.0), denominator, tolerance)
    return ratio[0] if squeeze else ratio


def step_violation_ratios(
    values_x: np.ndarray, counts_x: np.ndarray, values_y: np.ndarray, counts_y: np.ndarray, order: int = 1
) -> np.ndarray:
    """Exact violation ratios of samples given by their distinct values and how often each occurs.

    The same ratios as [`violation_ratios`] on the expanded samples, at a cost that grows with the number of
    distinct values rather than the sample size: the quantile function of a sample with distinct values
    `v_1 < ... < v_d` occurring `c_1, ..., c_d` times steps at the cumulative fractions `(c_1 + ... + c_j) / n`.
    Metrics logged by evaluation harnesses (accuracy, exact match, a judge's 1-10 grade) take few values, so a whole
    bootstrap of them is a few operations on `(b, d)` count arrays.

    Args:
        values_x (`np.ndarray` of shape `(dx,)`): Distinct values of `X`, ascending.
        counts_x (`np.ndarray` of shape `(b, dx)`): Integer counts of each value in each of `b` samples (zeros
            allowed); every row sums to the same size `n`.
        values_y, counts_y: The same for `Y` (rows summing to `m`).
        order (`int`, *optional*, defaults to 1): 1 for first-order, 2 for second-order dominance.

    Returns:
        `np.ndarray` of shape `(b,)`, values in [0, 1].
    """
    order = check_order(order)
    counts_x, counts_y = np.atleast_2d(counts_x), np.atleast_2d(counts_y)
    dx = values_x.size
    n, m = int(counts_x[0].sum()), int(counts_y[0].sum())
    # breakpoints as integers in units of 1 / (n m): exact comparisons, so equal fractions merge exactly
    ends = np.concatenate([np.cumsum(counts_x, axis=-1) * m, np.cumsum(counts_y, axis=-1) * n], axis=-1)
    position = np.argsort(ends, axis=-1, kind="stable")
    merged = np.take_along_axis(ends, position, axis=-1)
    width = np.diff(merged, axis=-1, prepend=0) / (n * m)
    from_x = position < dx
    # the interval ending at the l-th merged breakpoint lies on the step after the breakpoints of a sample before it
    x_step = np.minimum(np.cumsum(from_x, axis=-1) - from_x, dx - 1)
    y_step = np.minimum(np.cumsum(~from_x, axis=-1) - ~from_x, values_y.size - 1)
    qx, qy = values_x[x_step], values_y[y_step]
    scale = max(abs(values_x[0]), abs(values_x[-1]), abs(values_y[0]), abs(values_y[-1]))
    tolerance = (8 * max(n, m) * np.finfo(np.float64).eps * scale) ** 2
    if order == 1:
        diff = qy - qx
        positive = np.maximum(diff, 0.0)
        return _ratio(np.sum(width * positive * positive, axis=-1), np.sum(width * diff * diff, axis=-1), tolerance)
    # second order: the difference of the Lorenz curves at the merged breakpoints, linear in between
    values = np.zeros(width.shape[:-1] + (width.shape[-1] + 1,))
    np.cumsum(width * (qy - qx), axis=-1, out=values[..., 1:])
    u, v = values[..., :-1], values[..., 1:]
    pu, pv = np.maximum(u, 0.0), np.maximum(v, 0.0)
    uv = u * v
    crossing = uv < 0
    p = np.maximum(u, v)
    gap = np.where(crossing, np.abs(u - v), 1.0)
    excess = np.where(crossing, p * p * (1.0 - p / gap), 0.0)
    denominator = np.sum(width * (u * u + uv + v * v), axis=-1)
    numerator = np.sum(width * (pu * pu + pu * pv + pv * pv - excess), axis=-1)
    return _ratio(np.maximum(numerator, 0.0), denominator, 3 * tolerance)


def violation_ratio(x, y, order: int = 1) -> float:
    """The almost-dominance violation ratio `eps(X, Y)` of two samples, computed exactly.

    `eps = 0` means `X` dominates `Y` (stochastically, at the given order); `eps = 1` means `Y` dominates `X`.
    For a metric where smaller is better, negate the samples first.

    Args:
        x (array-like): Sample of `X` (1-D, finite).
        y (array-like): Sample of `Y` (1-D, finite); the sizes may differ.
        order (`int`, *optional*, defaults to 1): 1 for first-order, 2 for second-order dominance.

    Returns:
        `float` in [0, 1].

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_ext.risk import violation_ratio
    >>> rng = np.random.default_rng(0)
    >>> better, worse = rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)
    >>> violation_ratio(better, worse) < 0.05 < 0.95 < violation_ratio(worse, better)
    True

    ```
    """
    order = check_order(order)
    x, y = as_sample(x, "x"), as_sample(y, "y")
    # a common shift leaves the ratio unchanged and keeps the cumulative sums of order 2 well conditioned
    center = 0.5 * (x.mean() + y.mean())
    return float(violation_ratios(np.sort(x - center), np.sort(y - center), order=order))
