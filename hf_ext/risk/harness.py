"""Risk-aware comparison of models from the logs of evaluation harnesses ([`compare_harness_logs`]).

For every task and metric read by [`~hf_ext.risk.read_harness_logs`] (a *view*), and for the metrics portfolio of
each task with several metrics, the models' per-sample values are matched item by item and compared:

- the relative stochastic-dominance test of each order, with a paired bootstrap (a cluster bootstrap where items
  have several values: epochs, generations, seeds);
- McNemar's exact test for 0/1 metrics (one value per item), alongside;
- every pairwise claim of every view, order and test forms one family, adjusted together (Benjamini-Hochberg by
  default, or Holm, or Bonferroni);
- each undecided comparison gets its minimum detectable effect at the level the family was tested at, and a
  [`UnderpoweredComparisonWarning`] says where too few samples were logged to decide;
- rankings: per view, the Borda count of significant wins; across tasks, the rankings of each task's portfolio (or
  single metric) aggregated by Borda count (the paper's rank aggregation; [`aggregate_view_rankings`]).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .aggregation import portfolio
from .dominance import RelativeDominanceResult, borda_ranking, relative_dominance
from .paired import (
    CORRECTIONS,
    adjust_pvalues,
    is_binary,
    mcnemar_minimum_detectable_effect,
    minimum_detectable_effect,
    pairwise_mcnemar,
)
from .readers import HarnessLogError, HarnessLogs, PairedScores


__all__ = [
    "PORTFOLIO",
    "Claim",
    "HarnessComparison",
    "UnderpoweredComparisonWarning",
    "View",
    "aggregate_view_rankings",
    "compare_harness_logs",
]

PORTFOLIO = "portfolio"
"""Metric name of a task's metrics portfolio."""
ORDER_NAMES = {1: "first", 2: "second"}
CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm", "bonferroni": "Bonferroni", None: "no"}
MIN_ITEMS = 10


class UnderpoweredComparisonWarning(UserWarning):
    """Some comparisons could not be decided because too few samples were logged: their minimum detectable effect
    is larger than the smallest effect worth detecting (`min_effect`)."""


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


@dataclass
class Claim:
    """One pairwise comparison of two models on one view, by one test, in its observed direction.

    Attributes:
        task, metric (`str`): The view (`metric` is `"portfolio"` for a task's metrics portfolio).
        test (`str`): `"dominance"` (the relative test) or `"mcnemar"`.
        order (`int` or `None`): Dominance order (1 or 2); `None` for McNemar.
        winner, loser (`str`): The better model in the observed direction, and the other one.
        effect (`float`): Dominance: `eps_winner - eps_loser` (negative; -1 to 1). McNemar: accuracy of the winner
            minus the loser's.
        pvalue (`float`): Unadjusted p-value (dominance: one-sided, with the Kolmogorov-Smirnov guard; McNemar:
            exact, two-sided).
        adjusted_pvalue (`float`): Adjusted over the whole family of claims.
        significant (`bool`): `adjusted_pvalue <= alpha` (and a non-zero effect).
        n_items (`int`): Items compared.
        mde (`float`): Minimum detectable effect with the comparison's power at the family's effective level, in the
            units of `effect`.
        underpowered (`bool`): Undecided, and the sample's resolution is above `min_effect`: too few samples to
            decide. The resolution is `mde` for McNemar, and `guard_distance` for dominance with the guard (between
            two nearly equal distributions the violation ratio does not concentrate, so its bootstrap `mde` stays
            large at any sample size and says nothing about the samples; the guard's distance shrinks as
            `1 / sqrt(n)`), `mde` without it.
        direction (`str`): The metric's direction (`"max"` / `"min"`).
        detail (`str`): Test-specific figures (McNemar's discordant counts).
        guard_distance (`float`): Dominance with the Kolmogorov-Smirnov guard: the smallest distance between the
            two distributions (largest gap of their CDFs; for a 0/1 metric, the accuracy difference) the guard can
            find significant at the family's effective level with these sample sizes (asymptotic critical value);
            `NaN` otherwise.
    """

    task: str
    metric: str
    test: str
    order: int | None
    winner: str
    loser: str
    effect: float
    pvalue: float
    adjusted_pvalue: float
    significant: bool
    n_items: int
    mde: float
    underpowered: bool
    direction: str
    detail: str = ""
    guard_distance: float = float("nan")

    @property
    def view(self) -> str:
        return f"{self.task} / {self.metric}"

    def statement(self, correction: str | None = "bh") -> str:
        """The claim in words, with its direction, e.g. "A dominates B in the first order on arc / acc, p = ..."."""
        where = self.view + (" (lower is better)" if self.direction == "min" else "")
        adjusted = f"{CORRECTION_NAMES[correction]}-adjusted p = {_p(self.adjusted_pvalue)}" if correction else ""
        pvalues = f"p = {_p(self.pvalue)}" + (f", {adjusted}" if adjusted else "")
        if self.test == "dominance":
            kind = f"in the {ORDER_NAMES[self.order]} order"
            if self.significant:
                return f"{self.winner} dominates {self.loser} {kind} on {where}: Δε = {self.effect:.3f}, {pvalues}"
            text = f"{self.winner} vs {self.loser} {kind} on {where}: undecided (Δε = {self.effect:.3f}, {pvalues}); "
            if not np.isfinite(self.mde):
                text += "the bootstrap never varied (identical values on every item): no detectable effect"
            else:
                text += f"smallest |Δε| detectable with this power: {self.mde:.3f}"
            if np.isfinite(self.guard_distance):
                text += f"; smallest distance between the distributions the guard can find: {self.guard_distance:.3f}"
            return text
        if self.significant:
            return (
                f"{self.winner} is right more often than {self.loser} on {where}: {self.detail} (McNemar, {pvalues})"
            )
        text = f"{self.winner} vs {self.loser} on {where}: undecided ({self.detail}, McNemar {pvalues}); "
        return text + f"smallest accuracy difference detectable with this power: {self.mde:.3f}"

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metric": self.metric,
            "test": self.test,
            "order": self.order,
            "winner": self.winner,
            "loser": self.loser,
            "effect": float(self.effect),
            "pvalue": float(self.pvalue),
            "adjusted_pvalue": float(self.adjusted_pvalue),
            "significant": bool(self.significant),
            "n_items": int(self.n_items),
            "mde": float(self.mde) if np.isfinite(self.mde) else None,
            "guard_distance": float(self.guard_distance) if np.isfinite(self.guard_distance) else None,
            "underpowered": bool(self.underpowered),
            "direction": self.direction,
            "detail": self.detail,
        }


@dataclass
class View:
    """One task and metric (or a task's portfolio), its matched samples and its test results.

    Attributes:
        task, metric, direction (`str`): What is compared (`direction` of the raw metric; the portfolio is `"max"`).
        scores (`dict[str, np.ndarray]`): Per model, the values compared, oriented so that larger is better (a
            `"min"` metric is negated; a portfolio is in (0, 1]).
        raw_means (`dict[str, float]`): Per model, the mean of the raw metric (`NaN` for a portfolio).
        n_items, repeats (`int`): Items, and values per item.
        metrics (`list[str]`): The metrics of a portfolio (empty otherwise).
        results (`dict[int, RelativeDominanceResult]`): The relative test by order (its `significant` and
            `adjusted_pvalue` are the family-wise ones).
        mcnemar (`dict` or `None`): [`~hf_ext.risk.paired.pairwise_mcnemar`] for 0/1 metrics with one value per item.
        rankings (`dict[int, list[str]]`): Models best first, by order (Borda count of significant dominances).
        ids (`list[str]`): The item of each position of the scores.
        clusters (`np.ndarray` or `None`): The item code of each position when items have several values.
        raw (`dict[str, np.ndarray]` or `None`): The raw metric values (`None` for a portfolio).
    """

    task: str
    metric: str
    direction: str
    scores: dict[str, np.ndarray]
    raw_means: dict[str, float]
    n_items: int
    repeats: int
    metrics: list[str] = field(default_factory=list)
    results: dict[int, RelativeDominanceResult] = field(default_factory=dict)
    mcnemar: dict | None = None
    rankings: dict[int, list[str]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list, repr=False)
    clusters: np.ndarray | None = field(default=None, repr=False)
    raw: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.task} / {self.metric}"


@dataclass
class HarnessComparison:
    """Result of [`compare_harness_logs`].

    Attributes:
        models (`list[str]`): The models compared.
        views (`list[View]`): Every task / metric, and every task's portfolio.
        claims (`list[Claim]`): Every pairwise claim of the family (dominance at each order, McNemar).
        rankings (`dict[int, list[str]]`): By order, the models best first across tasks (the Borda aggregation of
            each task's portfolio ranking, or of its single metric's).
        warnings (`list[str]`): Undecided comparisons with too few samples, and views with very few items.
        skipped (`list[str]`): Metrics the logs hold but that could not be compared, with the reason.
        settings (`dict`): `orders`, `alpha`, `correction`, `n_bootstrap`, `seed`, `power`, `min_effect`, `guard`,
            the family size and the effective per-claim level.
    """

    models: list[str]
    views: list[View]
    claims: list[Claim]
    rankings: dict[int, list[str]]
    warnings: list[str]
    skipped: list[str]
    settings: dict

    def significant_claims(self) -> list[Claim]:
        """The significant claims, dominance first, by view and order."""
        return [claim for claim in self.claims if claim.significant]

    def statements(self) -> list[str]:
        """Every significant claim in words."""
        return [claim.statement(self.settings["correction"]) for claim in self.significant_claims()]

    def view(self, task: str, metric: str) -> View:
        """The view of `task` / `metric` (`metric="portfolio"` for the portfolio)."""
        for view in self.views:
            if view.task == task and view.metric == metric:
                return view
        raise KeyError(f"no view {task!r} / {metric!r}; the views are {[v.name for v in self.views]}")

    def to_dict(self) -> dict:
        """A JSON-serialisable summary: settings, rankings, every view's tests and every claim."""
        return {
            "models": list(self.models),
            "settings": dict(self.settings),
            "rankings": {f"order{order}": ranking for order, ranking in self.rankings.items()},
            "views": [
                {
                    "task": view.task,
                    "metric": view.metric,
                    "direction": view.direction,
                    "metrics": view.metrics,
                    "n_items": view.n_items,
                    "repeats": view.repeats,
                    "raw_means": {m: (None if not np.isfinite(v) else float(v)) for m, v in view.raw_means.items()},
                    "rankings": {f"order{order}": ranking for order, ranking in view.rankings.items()},
                    "dominance": {f"order{order}": result.to_dict() for order, result in view.results.items()},
                    "mcnemar": None
                    if view.mcnemar is None
                    else {key: np.asarray(value, dtype=float).tolist() for key, value in view.mcnemar.items()},
                }
                for view in self.views
            ],
            "claims": [claim.to_dict() for claim in self.claims],
            "warnings": list(self.warnings),
            "skipped": list(self.skipped),
        }

    def __repr__(self) -> str:
        significant = len(self.significant_claims())
        return (
            f"HarnessComparison(models={self.models}, views={len(self.views)}, claims={len(self.claims)}, "
            f"significant={significant}, rankings={self.rankings})"
        )


def _check_settings(orders, alpha, correction, power, min_effect) -> list[int]:
    orders = list(orders)
    if not orders or any(order not in (1, 2) for order in orders) or len(set(orders)) != len(orders):
        raise ValueError(f"orders: expected distinct orders among 1 and 2, got {orders}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: expected a significance level in (0, 1), got {alpha!r}")
    if correction not in (*CORRECTIONS, None):
        raise ValueError(f"correction: expected one of {CORRECTIONS} or None, got {correction!r}")
    if not (isinstance(power, (int, float)) and 0 < power < 1):
        raise ValueError(f"power: expected a probability in (0, 1), got {power!r}")
    if not (isinstance(min_effect, (int, float)) and min_effect > 0):
        raise ValueError(f"min_effect: expected a positive effect size, got {min_effect!r}")
    return orders


def _check_weight_keys(logs: HarnessLogs, weights: Mapping[str, float] | None) -> None:
    """Every portfolio weight names a metric (`"acc"`) or a task and metric (`"task/acc"`) of the logs."""
    if not weights:
        return
    pairs = {(task, metric) for task in logs.tasks for metric in logs.metrics(task)}
    known = {metric for _, metric in pairs} | {f"{task}/{metric}" for task, metric in pairs}
    unknown = sorted(str(key) for key in weights if key not in known)
    if unknown:
        raise HarnessLogError(
            f"weights: {unknown} match no metric of the logs; give 'metric' or 'task/metric', metrics: "
            f"{sorted({metric for _, metric in pairs})}"
        )


def _weights_for(task: str, metrics: list[str], weights: Mapping[str, float] | None) -> dict[str, float] | None:
    if not weights:
        return None
    return {metric: float(weights.get(f"{task}/{metric}", weights.get(metric, 1.0))) for metric in metrics}


def _views(logs: HarnessLogs, missing: str, weights, with_portfolio: bool) -> list[View]:
    views = []
    for task in logs.tasks:
        paired: list[PairedScores] = [logs.paired(task, metric, missing=missing) for metric in logs.metrics(task)]
        models = list(paired[0].values)
        if set(models) != set(logs.models):
            raise HarnessLogError(
                f"task {task!r} was not logged for {sorted(set(logs.models) - set(models))} (only for {models}); every "
                "model needs every task to be ranked across tasks: keep the shared tasks (tasks=[...], --tasks)"
            )
        for scores in paired:
            if scores.n_items < 2:
                raise HarnessLogError(
                    f"task {task!r}, metric {scores.metric!r}: only {scores.n_items} sample was logged; comparing "
                    "models needs at least 2 (and many more to decide anything)"
                )
            if list(scores.values) != models:
                raise HarnessLogError(
                    f"task {task!r}: the metrics were logged for different models ({list(scores.values)} for "
                    f"{scores.metric!r}, {models} for {paired[0].metric!r})"
                )
            sign = 1.0 if scores.direction == "max" else -1.0
            views.append(
                View(
                    task=task,
                    metric=scores.metric,
                    direction=scores.direction,
                    scores={model: sign * values for model, values in scores.values.items()},
                    raw_means={model: float(values.mean()) for model, values in scores.values.items()},
                    n_items=scores.n_items,
                    repeats=scores.repeats,
                    ids=scores.ids,
                    clusters=scores.clusters,
                    raw=scores.values,
                )
            )
        if with_portfolio and len(paired) > 1:
            layout = {(tuple(s.ids), s.repeats) for s in paired}
            if len(layout) > 1:
                raise HarnessLogError(
                    f"task {task!r}: its metrics were logged on different samples, so they cannot be combined into a "
                    "portfolio per sample; compare them separately (portfolio=False, --no-portfolio)"
                )
            metrics = [s.metric for s in paired]
            combined = portfolio(
                {model: {s.metric: s.values[model] for s in paired} for model in models},
                {s.metric: s.direction for s in paired},
                _weights_for(task, metrics, weights),
            )
            views.append(
                View(
                    task=task,
                    metric=PORTFOLIO,
                    direction="max",
                    scores=combined,
                    raw_means=dict.fromkeys(models, float("nan")),
                    n_items=paired[0].n_items,
                    repeats=paired[0].repeats,
                    metrics=metrics,
                    ids=paired[0].ids,
                    clusters=paired[0].clusters,
                )
            )
    return views


def aggregate_view_rankings(results: Sequence[RelativeDominanceResult]) -> list[str]:
    """Aggregate the rankings of several views (e.g. one per task) by Borda count, ties kept as ties.

    In each view a model earns one point per model ranked strictly below it, where models with the same number of
    significant wins and the same relative violation ratio share their rank (average points). Models are ordered by
    total points, then by their summed relative violation ratio (smaller is better), then by name.
    """
    models = list(results[0].models)
    points = dict.fromkeys(models, 0.0)
    spread = dict.fromkeys(models, 0.0)
    for result in results:
        keys = {
            m: (-int(result.borda[i]), round(float(result.relative_epsilon[i]), 12))
            for i, m in enumerate(result.models)
        }
        for model in models:
            below = sum(keys[other] > keys[model] for other in models)
            tied = sum(keys[other] == keys[model] for other in models if other != model)
            points[model] += below + tied / 2
            spread[model] += float(result.relative_epsilon[result.models.index(model)])
    return sorted(models, key=lambda m: (-points[m], spread[m], m))


def _effective_level(alpha: float, correction: str | None, family: int, rejected: int) -> float:
    # the level a further claim would have needed: BH's threshold with one more rejection, Holm's next step
    if correction == "bh":
        return alpha * min(family, max(rejected, 1)) / family
    if correction == "holm":
        return alpha / max(family - rejected, 1)
    if correction == "bonferroni":
        return alpha / family
    return alpha


def compare_harness_logs(
    logs: HarnessLogs,
    *,
    orders: Sequence[int] = (1, 2),
    alpha: float = 0.05,
    correction: str | None = "bh",
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    weights: Mapping[str, float] | None = None,
    with_portfolio: bool = True,
    mcnemar: bool = True,
    guard: str | None = "ks",
    power: float = 0.8,
    min_effect: float = 0.1,
    missing: str = "error",
    progress: bool = False,
) -> HarnessComparison:
    """Compare every model of harness logs on every task and metric: paired dominance tests, McNemar for 0/1
    metrics, one multiple-comparison correction over all claims, minimum detectable effects, and rankings.

    Args:
        logs ([`HarnessLogs`]): From [`~hf_ext.risk.read_harness_logs`] (at least two models).
        orders (sequence of `int`, *optional*, defaults to `(1, 2)`): Dominance orders to test (1: quantiles;
            2: tail values at risk, the risk-averse order).
        alpha (`float`, *optional*, defaults to 0.05): Level of the family of claims (false discovery rate for
            `"bh"`, family-wise error for `"holm"` / `"bonferroni"`).
        correction (`str`, *optional*, defaults to `"bh"`): `"bh"`, `"holm"`, `"bonferroni"` or `None`, over every
            pairwise claim of every view, order and test.
        n_bootstrap (`int`, *optional*, defaults to 1000): Paired (or cluster) bootstrap rounds of each relative test.
        seed (`int`, *optional*, defaults to 0): Bootstrap seed.
        weights (`Mapping[str, float]`, *optional*): Portfolio weight per metric (`"acc"`) or task and metric
            (`"arc/acc"`); uniform by default.
        with_portfolio (`bool`, *optional*, defaults to `True`): Add each multi-metric task's portfolio as a view
            (it then stands for the task in the aggregated ranking).
        mcnemar (`bool`, *optional*, defaults to `True`): Add McNemar's exact test for 0/1 metrics with one value
            per item (it does not apply to clustered values).
        guard (`str`, *optional*, defaults to `"ks"`): The Kolmogorov-Smirnov guard of the relative test (see
            [`~hf_ext.risk.relative_dominance`]); `None` for the paper's plain test.
        power (`float`, *optional*, defaults to 0.8): Power of the minimum detectable effects.
        min_effect (`float`, *optional*, defaults to 0.1): The smallest effect worth detecting (a difference of
            relative violation ratios, or of accuracy); undecided comparisons whose minimum detectable effect is
            larger are flagged as having too few samples, with a [`UnderpoweredComparisonWarning`].
        missing (`str`, *optional*, defaults to `"error"`): Items some models lack: `"error"` or `"drop"`.
        progress (`bool`, *optional*, defaults to `False`): Show progress bars.

    Returns:
        [`HarnessComparison`].

    Raises:
        HarnessLogError: when the logs cannot be matched (missing items, unknown direction, a single sample, ...),
            before any bootstrap runs.
    """
    orders = _check_settings(orders, alpha, correction, power, min_effect)
    models = logs.models
    if len(models) < 2:
        raise HarnessLogError(f"the logs hold {len(models)} model(s) ({models}); at least 2 are needed to compare")
    _check_weight_keys(logs, weights)
    views = _views(logs, missing, weights, with_portfolio)  # every check before any bootstrap

    jobs = [(view, order) for view in views for order in orders]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="Relative dominance tests", unit="test")
    for view, order in jobs:
        view.results[order] = relative_dominance(
            view.scores,
            order=order,
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            paired=True,
            seed=seed,
            correction=None,
            guard=guard,
            clusters=view.clusters,
        )
    for view in views:
        if mcnemar and view.raw is not None and view.repeats == 1 and all(map(is_binary, view.raw.values())):
            view.mcnemar = pairwise_mcnemar(view.raw)

    # the family: one claim per pair, view, order and test, in its observed direction
    entries = []
    for view in views:
        k = len(view.scores)
        names = list(view.scores)
        for order, result in view.results.items():
            for i in range(k):
                for j in range(i + 1, k):
                    w, lo = (i, j) if result.delta[i, j] <= 0 else (j, i)
                    p = float(result.pvalue[w, lo]) if result.delta[w, lo] < 0 else 1.0
                    entries.append(("dominance", view, order, names[w], names[lo], w, lo, p))
        if view.mcnemar is not None:
            effect = view.mcnemar["effect"]
            for i in range(k):
                for j in range(i + 1, k):
                    w, lo = (i, j) if effect[i, j] >= 0 else (j, i)
                    entries.append(
                        ("mcnemar", view, None, names[w], names[lo], w, lo, float(view.mcnemar["pvalue"][w, lo]))
                    )
    adjusted = adjust_pvalues(np.array([entry[-1] for entry in entries]), correction)
    significant = [
        bool(a <= alpha) and (entry[0] == "mcnemar" or entry[1].results[entry[2]].delta[entry[5], entry[6]] < 0)
        for entry, a in zip(entries, adjusted)
    ]
    significant = [
        s and not (entry[0] == "mcnemar" and entry[1].mcnemar["effect"][entry[5], entry[6]] == 0)
        for entry, s in zip(entries, significant)
    ]
    level = _effective_level(alpha, correction, len(entries), sum(significant))

    claims = []
    for (test, view, order, winner, loser, w, lo, p), a, s in zip(entries, adjusted, significant):
        if test == "dominance":
            result = view.results[order]
            effect = float(result.delta[w, lo])
            se = float(result.std_error[w, lo])
            # a bootstrap that never moved (identical values on every item) says nothing about detectable effects
            mde = float(minimum_detectable_effect(se, alpha=level, power=power)) if se > 0 else float("nan")
            detail = ""
            size = len(view.ids)
            # the two-sample Kolmogorov-Smirnov critical distance, sqrt(-ln(level / 2) (n + m) / (2 n m)), n = m
            distance = math.sqrt(-math.log(level / 2) / size) if guard == "ks" else float("nan")
        else:
            wins = int(view.mcnemar["wins"][w, lo])
            losses = int(view.mcnemar["wins"][lo, w])
            effect = float(view.mcnemar["effect"][w, lo])
            mde = mcnemar_minimum_detectable_effect(view.n_items, wins + losses, alpha=level, power=power)
            detail = f"{wins} vs {losses} discordant items of {view.n_items}"
            distance = float("nan")
        claims.append(
            Claim(
                task=view.task,
                metric=view.metric,
                test=test,
                order=order,
                winner=winner,
                loser=loser,
                effect=effect,
                pvalue=p,
                adjusted_pvalue=float(a),
                significant=s,
                n_items=view.n_items,
                mde=mde,
                underpowered=(not s)
                and bool((distance if test == "dominance" and guard == "ks" else mde) > min_effect),
                direction=view.direction,
                detail=detail,
                guard_distance=distance,
            )
        )

    # the family-wise significance goes back into each view's results, and each view gets its rankings
    for view in views:
        names = list(view.scores)
        index = {name: i for i, name in enumerate(names)}
        for order, result in view.results.items():
            marks = np.zeros((len(names), len(names)), dtype=bool)
            family = np.full((len(names), len(names)), np.nan)
            for claim in claims:
                if claim.test == "dominance" and claim.view == view.name and claim.order == order:
                    w, lo = index[claim.winner], index[claim.loser]
                    marks[w, lo] = claim.significant
                    family[w, lo] = claim.adjusted_pvalue
                    family[lo, w] = 1.0
            result.significant = marks
            result.adjusted_pvalue = family
            result.correction = correction
            result.metadata["family"] = len(entries)
            result.ranking, result.borda = borda_ranking(names, marks, result.relative_epsilon)
            view.rankings[order] = result.ranking

    primary = {}
    for view in views:  # a task's portfolio stands for it; else its single (or first) metric
        if view.metric == PORTFOLIO or view.task not in primary:
            primary[view.task] = view
    rankings = {order: aggregate_view_rankings([view.results[order] for view in primary.values()]) for order in orders}

    notes = _warnings(views, claims, min_effect, power, level)
    for note in notes:
        warnings.warn(note, UnderpoweredComparisonWarning, stacklevel=2)
    settings = {
        "orders": orders,
        "alpha": alpha,
        "correction": correction,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "power": power,
        "min_effect": min_effect,
        "guard": guard,
        "family_size": len(entries),
        "effective_level": level,
        "harnesses": logs.harnesses,
        "primary_views": {task: view.name for task, view in primary.items()},
    }
    return HarnessComparison(
        models=models,
        views=views,
        claims=claims,
        rankings=rankings,
        warnings=notes,
        skipped=list(logs.skipped),
        settings=settings,
    )


def _warnings(views: list[View], claims: list[Claim], min_effect: float, power: float, level: float) -> list[str]:
    notes = []
    for view in views:
        if view.n_items < MIN_ITEMS:
            notes.append(
                f"{view.name}: only {view.n_items} items; the bootstrap and its normal approximation are unreliable "
                f"below about {MIN_ITEMS}, and few comparisons can be decided"
            )
        weak = [claim for claim in claims if claim.view == view.name and claim.underpowered]
        if not weak:
            continue
        total = sum(claim.view == view.name for claim in claims)

        def resolution(claim):
            return claim.guard_distance if np.isfinite(claim.guard_distance) else claim.mde

        worst = max(weak, key=resolution)
        if worst.test == "mcnemar":
            figure = f"a minimum detectable accuracy difference of {worst.mde:.3f} (power {power:.0%})"
        elif np.isfinite(worst.guard_distance):
            figure = f"the guard needing distributions at least {worst.guard_distance:.3f} apart (largest CDF gap)"
        else:
            figure = f"a minimum detectable |Δε| of {worst.mde:.3f} (power {power:.0%})"
        notes.append(
            f"{view.name}: too few samples to decide {len(weak)} of {total} comparisons ({view.n_items} items): at "
            f"the effective level {level:.2g}, up to {figure} ({worst.winner} vs {worst.loser}), above "
            f"min_effect = {min_effect}"
        )
    return notes
