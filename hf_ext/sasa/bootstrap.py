"""The change of a per-prompt statistic between two settings, with a paired bootstrap interval over prompts (numpy).

Two settings sampled on the same prompts (and the same random streams) give paired values, one per prompt:
resampling prompts, the same ones for both settings, keeps that pairing, so the interval is that of the change
itself, narrower than one from two independent samples.
"""

from __future__ import annotations

import math

import numpy as np


__all__ = ["paired_change"]


def paired_change(before, after, samples: int, seed: int, level: float = 0.95) -> dict:
    """The change of a per-prompt statistic, `mean(after) - mean(before)`, with a paired bootstrap interval over
    prompts (resampling prompts) and the relative change `mean(after) / mean(before) - 1`.

    Args:
        before, after (array-like of shape `(num_prompts,)`): The statistic per prompt in each setting, row `i` of
            both from prompt `i`.
        samples (`int`): Bootstrap rounds; `0`: no interval.
        seed (`int`): Seed of the resampling.
        level (`float`, *optional*, defaults to 0.95): Coverage of the (percentile) interval.

    Returns:
        `{"change", "low", "high", "relative", "significant"}`: `significant` when the interval excludes 0; without
        `samples`, `low` / `high` are NaN and `significant` is `None`. `relative` is NaN when `mean(before)` is 0.

    Raises:
        `ValueError`: `before` and `after` are not 1-D of the same non-zero length, or hold NaN / infinite values.
    """
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.ndim != 1 or before.shape != after.shape or before.size == 0:
        raise ValueError(
            f"before and after must be 1-D of the same non-zero length (one value per prompt), got shapes "
            f"{before.shape} and {after.shape}."
        )
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        raise ValueError("before and after must be finite (one value per prompt).")
    if not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples={samples!r} is out of range; expected an integer >= 0.")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} is out of range; expected a number in (0, 1).")
    change = float(after.mean() - before.mean())
    relative = float(after.mean() / before.mean() - 1.0) if before.mean() > 0 else math.nan
    if samples == 0:
        return {"change": change, "low": math.nan, "high": math.nan, "relative": relative, "significant": None}
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(before), size=(samples, len(before)))
    means = (after[rows] - before[rows]).mean(axis=1)
    tail = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(means, [tail, 1 - tail]))
    return {"change": change, "low": low, "high": high, "relative": relative, "significant": high < 0 or low > 0}
