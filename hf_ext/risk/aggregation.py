"""The metrics portfolio: several per-sample metrics aggregated into one score per sample (pure numpy).

Each metric is mapped to (0, 1] by its empirical CDF over all models' samples pooled (after flipping the sign of a
metric where smaller is better), then the per-sample scores are combined by a weighted geometric mean,
`R = exp(sum_m w_m log F_m(x_m))` (an independent copula; uniform weights by default). Larger is better. Rankings
can be made on the portfolio, or per metric and then aggregated with [`aggregate_rankings`].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .quantiles import as_sample


__all__ = ["DIRECTIONS", "aggregate_rankings", "empirical_cdf_scores", "portfolio"]

DIRECTIONS = ("max", "min")


def _check_direction(metric: str, direction) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(
            f"directions[{metric!r}]: expected 'max' (larger is better) or 'min' (smaller is better), got {direction!r}"
        )
    return direction


def empirical_cdf_scores(samples: Mapping[str, object], direction: str = "max") -> dict[str, np.ndarray]:
    """Map one metric to (0, 1] by its empirical CDF over all models' samples pooled.

    Args:
        samples (`Mapping[str, array-like]`): The metric's per-sample values for each model.
        direction (`str`, *optional*, defaults to `"max"`): `"max"` when larger is better, `"min"` when smaller is
            better (the sign is flipped first, so that 1 is always the best).

    Returns:
        `dict[str, np.ndarray]`: `F(x)` = the fraction of pooled values `<=` x, for every sample of every model.
    """
    _check_direction("metric", direction)
    if not isinstance(samples, Mapping) or not samples:
        raise ValueError(f"samples: expected a non-empty mapping from model name to its values, got {samples!r}")
    sign = 1.0 if direction == "max" else -1.0
    checked = {name: sign * as_sample(values, f"samples[{name!r}]") for name, values in samples.items()}
    pooled = np.sort(np.concatenate(list(checked.values())))
    return {name: np.searchsorted(pooled, values, side="right") / pooled.size for name, values in checked.items()}


def portfolio(
    metrics: Mapping[str, Mapping[str, object]],
    directions: Mapping[str, str],
    weights: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Aggregate several per-sample metrics into one per-sample portfolio score for each model.

    Args:
        metrics (`Mapping[str, Mapping[str, array-like]]`): For each model, its metrics: `{model: {metric: values}}`;
            every model must have every metric, and a model's metrics the same number of samples (one per prompt).
        directions (`Mapping[str, str]`): For each metric, `"max"` (larger is better) or `"min"` (smaller is better).
        weights (`Mapping[str, float]`, *optional*): Non-negative weight of each metric (normalised to sum to 1);
            uniform when omitted.

    Returns:
        `dict[str, np.ndarray]`: Per-sample portfolio scores in (0, 1] (larger is better), in the input order.

    Example:

    ```python
    >>> from hf_ext.risk import portfolio
    >>> scores = portfolio(
    ...     {"a": {"toxicity": [0.1, 0.2], "fluency": [0.9, 0.8]}, "b": {"toxicity": [0.5, 0.6], "fluency": [0.7, 0.9]}},
    ...     directions={"toxicity": "min", "fluency": "max"},
    ... )
    >>> {model: values.round(3).tolist() for model, values in scores.items()}
    {'a': [1.0, 0.612], 'b': [0.354, 0.5]}

    ```
    """
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"metrics: expected a non-empty mapping {{model: {{metric: values}}}}, got {metrics!r}")
    models = list(metrics)
    names = list(metrics[models[0]])
    if not names:
        raise ValueError(f"metrics[{models[0]!r}]: no metric given")
    for model in models:
        if set(metrics[model]) != set(names):
            raise ValueError(f"metrics[{model!r}]: expected the metrics {sorted(names)}, got {sorted(metrics[model])}")
    if not isinstance(directions, Mapping):
        raise ValueError(f"directions: expected a mapping {{metric: 'max' or 'min'}}, got {type(directions).__name__}")
    missing = sorted(set(names) - set(directions))
    if missing:
        raise ValueError(f"directions: no direction ('max' or 'min') given for the metric(s) {missing}")
    unknown = sorted(set(directions) - set(names))
    if unknown:
        raise ValueError(f"directions: unknown metric(s) {unknown}; the metrics are {sorted(names)}")
    for name in names:
        _check_direction(name, directions[name])
    if weights is None:
        weights = {name: 1.0 for name in names}
    missing = sorted(set(names) - set(weights))
    if missing:
        raise ValueError(f"weights: no weight given for the metric(s) {missing}")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights: unknown metric(s) {unknown}; the metrics are {sorted(names)}")
    raw = np.array([weights[name] for name in names], dtype=np.float64)
    if not np.all(np.isfinite(raw)) or np.any(raw < 0) or raw.sum() <= 0:
        raise ValueError(f"weights: expected non-negative finite weights with a positive sum, got {dict(weights)}")
    lam = raw / raw.sum()

    log_score = {}
    for model in models:
        sizes = {name: np.size(metrics[model][name]) for name in names}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"metrics[{model!r}]: every metric needs one value per sample, got sizes {sizes}")
        log_score[model] = 0.0
    for weight, name in zip(lam, names):
        cdf = empirical_cdf_scores({model: metrics[model][name] for model in models}, directions[name])
        for model in models:
            log_score[model] = log_score[model] + weight * np.log(cdf[model])
    return {model: np.exp(log_score[model]) for model in models}


def aggregate_rankings(rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None) -> list[str]:
    """Aggregate several rankings (best first, e.g. one per metric) into one by Borda count.

    A model ranked r-th among k gets k - r points from that ranking (times the ranking's weight); models are
    ordered by total points, ties by name.

    Args:
        rankings (sequence of sequences of `str`): Each a permutation of the same model names, best first.
        weights (sequence of `float`, *optional*): One non-negative weight per ranking (uniform by default).

    Returns:
        `list[str]`: The aggregated ranking, best first.
    """
    if isinstance(rankings, str) or any(isinstance(r, str) for r in rankings):
        raise TypeError(f"rankings must be a list of rankings, each a list of model names; got {rankings!r}")
    rankings = [list(r) for r in rankings]
    if not rankings:
        raise ValueError("rankings: expected at least one ranking")
    models = sorted(rankings[0])
    for index, ranking in enumerate(rankings):
        if sorted(ranking) != models or len(set(ranking)) != len(ranking):
            raise ValueError(f"rankings[{index}]: expected a permutation of {models}, got {ranking}")
    if weights is None:
        weights = [1.0] * len(rankings)
    weights = list(weights)
    if len(weights) != len(rankings) or not all(np.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"weights: expected {len(rankings)} finite non-negative weights, got {weights}")
    points = dict.fromkeys(models, 0.0)
    k = len(models)
    for weight, ranking in zip(weights, rankings):
        for rank, model in enumerate(ranking):
            points[model] += weight * (k - 1 - rank)
    return sorted(models, key=lambda model: (-points[model], model))
