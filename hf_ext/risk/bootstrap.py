"""Vectorised joint bootstrap of the pairwise violation ratios of k samples (pure numpy).

A resample drawn with replacement from a sorted sample is itself sorted once each element is repeated as often as
it was drawn, so a resample costs one `bincount` and one `repeat` (linear time) instead of a sort. All k samples
are resampled in the same bootstrap round (jointly): independently of each other, or with the same indices for
all of them when the samples are paired (the i-th value of every sample comes from the same prompt), so that the
bootstrap keeps the correlation between models. Paired samples that come in groups (several generations of one
prompt, several seeds) are resampled a whole group at a time (a cluster bootstrap). Rounds are processed in chunks
of vectorised operations; nothing loops over resamples in Python.

Samples with few distinct values (accuracy, exact match, a grade), the usual per-sample metrics of evaluation
harnesses, are resampled as counts of their distinct values ([`step_violation_ratios`]): the same random draws and
the same ratios as the expanded samples, at a cost that does not grow with the sample size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .paired import cluster_bootstrap_counts
from .violation import lorenz, step_violation_ratios, violation_ratios


__all__ = ["bootstrap_violation_ratios", "pairwise_violation_ratios", "resample_sorted"]

# elements per model per chunk: bounds the memory of one chunk (a few arrays of this many float64 values)
_CHUNK_ELEMENTS = 1 << 15
# resampling by counts of distinct values when every sample has at most this share of distinct values
_STEP_SHARE = 1 / 16
# draws per chunk when resampling by counts (a few arrays of this many int64 values)
_STEP_DRAWS = 1 << 21


def _repeat_rows(sorted_values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # counts has shape (b, n) and each row sums to n: repeating the sorted values row by row gives b sorted resamples
    rows = counts.shape[0]
    return np.repeat(np.tile(sorted_values, rows), counts.ravel()).reshape(rows, sorted_values.size)


def _row_counts(indices: np.ndarray, n: int) -> np.ndarray:
    rows = indices.shape[0]
    offsets = (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount((indices + offsets).ravel(), minlength=rows * n).reshape(rows, n)


def _paired_counts(n: int, rounds: int, rng: np.random.Generator, cluster_codes: np.ndarray | None) -> np.ndarray:
    # (rounds, n) draw counts indexed by original position, shared by all paired samples
    if cluster_codes is None:
        return _row_counts(rng.integers(0, n, size=(rounds, n)), n)
    return cluster_bootstrap_counts(cluster_codes, rounds, rng)


def resample_sorted(
    sorted_samples: Sequence[np.ndarray],
    rounds: int,
    rng: np.random.Generator,
    *,
    paired_order: Sequence[np.ndarray] | None = None,
    cluster_codes: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Draw `rounds` bootstrap resamples of every sample, each returned sorted.

    Args:
        sorted_samples (sequence of `np.ndarray`): The k samples, each sorted ascending.
        rounds (`int`): Number of resamples to draw.
        rng (`np.random.Generator`): The random generator (the only source of randomness).
        paired_order (sequence of `np.ndarray`, *optional*):
            For paired samples (all of size n), the permutation that sorted each one (`np.argsort` of the
            original). The same original indices are then drawn for every sample.
        cluster_codes (`np.ndarray`, *optional*):
            For paired samples in equal-size groups, the group code of each original position
            ([`~hf_ext.risk.paired.check_clusters`]): whole groups are drawn ([`~hf_ext.risk.paired.cluster_bootstrap_counts`]).

    Returns:
        A list of k arrays of shape `(rounds, n_i)`, each row sorted.
    """
    if paired_order is None:
        resamples = []
        for values in sorted_samples:
            n = values.size
            counts = _row_counts(rng.integers(0, n, size=(rounds, n)), n)
            resamples.append(_repeat_rows(values, counts))
        return resamples
    if cluster_codes is not None and paired_order is None:
        raise ValueError("cluster_codes: a cluster bootstrap needs paired samples (paired_order)")
    counts = _paired_counts(sorted_samples[0].size, rounds, rng, cluster_codes)
    # counts are indexed by original position; reorder them into each sample's sorted order
    return [_repeat_rows(values, counts[:, order]) for values, order in zip(sorted_samples, paired_order)]


def pairwise_violation_ratios(sorted_samples: Sequence[np.ndarray], order: int) -> np.ndarray:
    """Violation ratios of every ordered pair: `out[..., i, j] = eps(X_i, X_j)` (`NaN` on the diagonal).

    The samples may be 1-D (sorted) or batched `(b, n_i)` (each row sorted); `eps(X_j, X_i) = 1 - eps(X_i, X_j)`
    is used for the lower triangle.
    """
    k = len(sorted_samples)
    leading = sorted_samples[0].shape[:-1]
    out = np.full(leading + (k, k), np.nan)
    curves = [None] * k
    if order == 2 and len({values.shape[-1] for values in sorted_samples}) == 1:
        curves = [lorenz(values) for values in sorted_samples]  # once per sample, not once per pair
    for i in range(k):
        for j in range(i + 1, k):
            ratio = violation_ratios(
                sorted_samples[i], sorted_samples[j], order=order, lorenz_x=curves[i], lorenz_y=curves[j]
            )
            out[..., i, j] = ratio
            out[..., j, i] = 1.0 - ratio
    return out


def bootstrap_violation_ratios(
    sorted_samples: Sequence[np.ndarray],
    *,
    order: int,
    n_bootstrap: int,
    rng: np.random.Generator,
    paired_order: Sequence[np.ndarray] | None = None,
    cluster_codes: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Bootstrap distribution of the pairwise violation ratios of k samples.

    Args:
        sorted_samples (sequence of `np.ndarray`): The k samples, each sorted ascending.
        order (`int`): 1 or 2.
        n_bootstrap (`int`): Number of joint resampling rounds.
        rng (`np.random.Generator`): The random generator.
        paired_order (sequence of `np.ndarray`, *optional*): See [`resample_sorted`].
        cluster_codes (`np.ndarray`, *optional*): See [`resample_sorted`].
        progress (`bool`, *optional*, defaults to `False`): Show a progress bar over chunks.

    Returns:
        `np.ndarray` of shape `(n_bootstrap, k, k)`: `out[b, i, j] = eps(X_i*, X_j*)` in round b.
    """
    k = len(sorted_samples)
    largest = max(values.size for values in sorted_samples)
    steps = _steps(sorted_samples)
    draw_chunk = max(1, min(n_bootstrap, _CHUNK_ELEMENTS // largest))
    # counts of distinct values are small: larger chunks amortise the per-pair overhead (unpaired draws are made in
    # chunks of the same size as for the expanded samples, so that a seed gives the same resamples either way)
    chunk = draw_chunk if steps is None else max(1, min(n_bootstrap, _STEP_DRAWS // largest))
    joint = None if steps is None or paired_order is None else _joint_patterns(steps, paired_order)
    out = np.empty((n_bootstrap, k, k))
    starts = range(0, n_bootstrap, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Bootstrap", unit="chunk", total=len(starts))
    for start in starts:
        rounds = min(chunk, n_bootstrap - start)
        if steps is None:
            resamples = resample_sorted(
                sorted_samples, rounds, rng, paired_order=paired_order, cluster_codes=cluster_codes
            )
            out[start : start + rounds] = pairwise_violation_ratios(resamples, order)
        else:
            if joint is None:
                counts = _step_counts(sorted_samples, steps, rounds, rng, cluster_codes, draw_chunk)
            else:
                counts = _joint_counts(steps, joint, rounds, rng, cluster_codes)
            out[start : start + rounds] = _pairwise_step_ratios(steps, counts, order)
    return out


def _steps(sorted_samples: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """`(distinct values, index of the first of each run)` of every sorted sample, or `None` when some sample has
    too many distinct values for resampling by counts to pay off."""
    steps = []
    for values in sorted_samples:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        if starts.size > max(1.0, _STEP_SHARE * values.size):
            return None
        steps.append((values[starts], starts))
    return steps


def _step_counts(sorted_samples, steps, rounds, rng, cluster_codes, draw_chunk) -> list[np.ndarray]:
    # unpaired: the draws of `resample_sorted`, summed over each run of equal values: (rounds, d_i) per sample
    if cluster_codes is not None:
        raise ValueError("cluster_codes: a cluster bootstrap needs paired samples (paired_order)")
    counts = [[] for _ in steps]
    for start in range(0, rounds, draw_chunk):  # the order of draws of the expanded path, model by model
        size = min(draw_chunk, rounds - start)
        for part, values, (_, starts) in zip(counts, sorted_samples, steps):
            n = values.size
            part.append(np.add.reduceat(_row_counts(rng.integers(0, n, size=(size, n)), n), starts, axis=1))
    return [np.concatenate(part) for part in counts]


def _joint_patterns(steps, paired_order):
    """The joint pattern of every paired item (the tuple of each model's value on it): `(pattern of each item,
    per model a (patterns, d_i) indicator of its value in each pattern)`."""
    n = paired_order[0].size
    codes = np.empty((n, len(steps)), dtype=np.int64)
    for column, (order, (_, starts)) in enumerate(zip(paired_order, steps)):
        run = np.zeros(n, dtype=np.int64)
        run[starts[1:]] = 1
        codes[order, column] = np.cumsum(run)  # the index of each item's value among the model's distinct values
    patterns, joint = np.unique(codes, axis=0, return_inverse=True)
    indicators = []
    for column, (values, _) in enumerate(steps):
        indicator = np.zeros((patterns.shape[0], values.size))
        indicator[np.arange(patterns.shape[0]), patterns[:, column]] = 1.0
        indicators.append(indicator)
    return joint.ravel(), indicators


def _joint_counts(steps, joint, rounds, rng, cluster_codes) -> list[np.ndarray]:
    """Paired draws counted per joint pattern, then per model and value: one pass over the draws for all models."""
    pattern, indicators = joint
    n, size = pattern.size, indicators[0].shape[0]
    if cluster_codes is None:
        draws = rng.integers(0, n, size=(rounds, n))  # the draws of `resample_sorted`
        offsets = (np.arange(rounds, dtype=np.int64) * size)[:, None]
        per_pattern = np.bincount((pattern[draws] + offsets).ravel(), minlength=rounds * size).reshape(rounds, size)
    else:
        drawn = cluster_bootstrap_counts(cluster_codes, rounds, rng)
        by_pattern = np.argsort(pattern, kind="stable")
        firsts = np.flatnonzero(np.r_[True, np.diff(pattern[by_pattern]) != 0])
        per_pattern = np.add.reduceat(drawn[:, by_pattern], firsts, axis=1)
    per_pattern = per_pattern.astype(np.float64)
    # integer sums, exact in float64
    return [np.rint(per_pattern @ indicator).astype(np.int64) for indicator in indicators]


def _pairwise_step_ratios(steps, counts: list[np.ndarray], order: int) -> np.ndarray:
    k = len(steps)
    out = np.full((counts[0].shape[0], k, k), np.nan)
    for i in range(k):
        for j in range(i + 1, k):
            ratio = step_violation_ratios(steps[i][0], counts[i], steps[j][0], counts[j], order=order)
            out[:, i, j] = ratio
            out[:, j, i] = 1.0 - ratio
    return out
