"""Choosing alpha: the Pareto front of (safety, domain utility) and the best candidate above a safety floor.

Plain Python, no tensors: each candidate is a pair of scores, and each score says whether higher or lower is
better (a refusal rate is higher-is-better, a perplexity lower-is-better).
"""

from __future__ import annotations

from collections.abc import Sequence


__all__ = ["meets_floor", "pareto_front", "select_candidate"]


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
    better on one. Candidates with equal scores are all kept."""
    if len(safety) != len(domain):
        raise ValueError(
            f"Got {len(safety)} safety scores but {len(domain)} domain scores; expected one of each per candidate."
        )
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
    meets the floor.
    """
    if len(safety) != len(domain):
        raise ValueError(
            f"Got {len(safety)} safety scores but {len(domain)} domain scores; expected one of each per candidate."
        )
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
