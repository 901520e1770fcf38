"""Choosing alpha: the Pareto front of (safety, domain utility) and the best candidate above a safety floor.

Plain Python, no tensors: each candidate is a pair of scores, and each score says whether higher or lower is
better (a refusal rate is higher-is-better, a perplexity lower-is-better).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


__all__ = ["meets_floor", "pareto_front", "select_candidate"]


def _check_scores(safety: Sequence[float], domain: Sequence[float]) -> None:
    """One pair of comparable scores per candidate: equal lengths, no NaN (infinities are ordered, NaN is not)."""
    if len(safety) != len(domain):
        raise ValueError(
            f"Got {len(safety)} safety scores but {len(domain)} domain scores; expected one of each per candidate."
        )
    for label, scores in (("safety", safety), ("domain", domain)):
        bad = [i for i, score in enumerate(scores) if math.isnan(float(score))]
        if bad:
            raise ValueError(
                f"The {label} scores of candidate(s) {bad[:5]} are NaN; a NaN score cannot be compared. Drop those "
                "candidates (or fix the evaluator) first."
            )


def _oriented(value: float, higher_is_better: bool) -> float:
    return value if higher_is_better else -value


def pareto_front(
    safety: Sequence[float],
    domain: Sequence[float],
    *,
    safety_higher_is_better: bool = True,
    domain_higher_is_better: bool = True,
) -> list[bool]:
    """Which candidates are Pareto-optimal: no other candidate is at least as good on both scores and strictly
    better on one. Candidates with equal scores are all kept. NaN scores are a `ValueError`."""
    _check_scores(safety, domain)
    points = [
        (_oriented(s, safety_higher_is_better), _oriented(d, domain_higher_is_better)) for s, d in zip(safety, domain)
    ]
    return [not any(o[0] >= p[0] and o[1] >= p[1] and (o[0] > p[0] or o[1] > p[1]) for o in points) for p in points]


def meets_floor(value: float, floor: float | None, higher_is_better: bool) -> bool:
    """Whether a safety score is acceptable: `value >= floor` for a higher-is-better score, `value <= floor` (the
    floor then being the worst acceptable value) for a lower-is-better one. No floor accepts everything."""
    if floor is None:
        return True
    return value >= floor if higher_is_better else value <= floor


def select_candidate(
    safety: Sequence[float],
    domain: Sequence[float],
    *,
    safety_floor: float | None = None,
    safety_higher_is_better: bool = True,
    domain_higher_is_better: bool = True,
) -> int | None:
    """The index of the candidate with the best domain score among those whose safety meets `safety_floor`.

    Ties on the domain score go to the safer candidate, then to the earlier one. Returns `None` when no candidate
    meets the floor. NaN scores, or a NaN floor, are a `ValueError`.
    """
    _check_scores(safety, domain)
    if safety_floor is not None and math.isnan(safety_floor):
        raise ValueError("safety_floor=nan cannot be compared; expected a number or None.")
    feasible = [i for i, s in enumerate(safety) if meets_floor(s, safety_floor, safety_higher_is_better)]
    if not feasible:
        return None
    return max(
        feasible,
        key=lambda i: (
            _oriented(domain[i], domain_higher_is_better),
            _oriented(safety[i], safety_higher_is_better),
            -i,
        ),
    )
