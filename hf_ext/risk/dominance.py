"""Statistical tests of almost stochastic dominance: the absolute test for two models and the relative test for k.

Both follow Nitsure et al., "Risk Aware Benchmarking of Large Language Models" (ICML 2024); larger metric values
are better (negate a metric where smaller is better, or use [`portfolio`](hf_ext.risk.aggregation)).

- **Absolute test** (del Barrio et al.; Dror et al.): `X` is eps-almost dominant over `Y` at level alpha when the
  upper confidence bound `eps_min = eps + se * z(1 - alpha)` of the violation ratio is below a threshold tau, with
  `se` the bootstrap standard deviation of `eps*` (that is `sqrt((n+m)/(nm)) * sigma` in the paper's notation).
- **Relative test**: each model's relative violation `eps_i = mean_{j != i} eps(X_i, X_j)`; `i` relatively
  dominates `j` when `delta_ij + se_ij * z(1 - alpha / #pairs) < 0` with `delta_ij = eps_i - eps_j`, `se_ij` from a
  joint bootstrap of all k models (Bonferroni over the k(k-1)/2 pairs; by default a Kolmogorov-Smirnov test at the
  same level must also find the two distributions different, see `guard` in [`relative_dominance`]). Equivalently,
  the one-sided p-value `Phi(delta_ij / se_ij)` (the larger of it and the guard's) is at most `alpha / #pairs`; Holm
  or Benjamini-Hochberg adjust the same p-values instead. Models are ranked by their Borda count: the number of
  models they significantly dominate (ties broken by `eps_i`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .bootstrap import bootstrap_violation_ratios, pairwise_violation_ratios
from .paired import adjust_pvalues, check_clusters
from .quantiles import as_sample
from .violation import check_order


__all__ = [
    "AbsoluteDominanceResult",
    "RelativeDominanceResult",
    "absolute_dominance",
    "borda_ranking",
    "relative_dominance",
]


def _normal_quantile(p: float) -> float:
    from scipy.special import ndtri  # imported here so that `hf-ext --help` stays fast

    return float(ndtri(p))


def _check_settings(alpha, n_bootstrap, threshold=None) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: expected a significance level in (0, 1), got {alpha!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap: expected an integer >= 2, got {n_bootstrap!r}")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold <= 0.5):
        raise ValueError(f"threshold: expected a violation-ratio threshold in (0, 0.5], got {threshold!r}")


MIN_SAMPLE_SIZE = 2
"""Values a model needs for a dominance test: the bootstrap of a single value has no spread, so one value each would
rank models as if every difference were certain."""


def check_samples(samples: Mapping[str, object], *, paired: bool = False, minimum: int = 2) -> dict[str, np.ndarray]:
    """Validate per-model samples: at least `minimum` models, each a finite 1-D sample of at least
    [`MIN_SAMPLE_SIZE`] values.

    With `paired=True` all samples must have the same size (the i-th values come from the same prompt).
    """
    if not isinstance(samples, Mapping):
        raise ValueError(
            f"samples: expected a mapping from model name to its per-sample scores, got {type(samples).__name__}"
        )
    if len(samples) < minimum:
        raise ValueError(
            f"samples: expected at least {minimum} models to compare, got {len(samples)} ({list(samples)})"
        )
    checked = {str(name): as_sample(values, f"samples[{name!r}]") for name, values in samples.items()}
    small = {name: values.size for name, values in checked.items() if values.size < MIN_SAMPLE_SIZE}
    if small:
        raise ValueError(
            f"samples: a dominance test needs at least {MIN_SAMPLE_SIZE} samples per model (one score per prompt; many "
            f"more to decide anything), got {small}; the bootstrap of a single value has no spread"
        )
    if len(checked) != len(samples):
        raise ValueError(f"samples: model names must be distinct as strings, got {list(samples)}")
    if paired:
        sizes = {name: values.size for name, values in checked.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"paired=True needs samples of equal size (one value per prompt per model), got sizes {sizes}"
            )
    return checked


def _prepare(samples: dict[str, np.ndarray], paired: bool):
    # a common shift leaves every violation ratio unchanged; centring keeps the cumulative sums well conditioned
    center = float(np.mean([values.mean() for values in samples.values()]))
    shifted = [values - center for values in samples.values()]
    orders = [np.argsort(values, kind="stable") for values in shifted]
    sorted_samples = [values[order] for values, order in zip(shifted, orders)]
    return sorted_samples, (orders if paired else None)


@dataclass
class AbsoluteDominanceResult:
    """Result of [`absolute_dominance`].

    Attributes:
        epsilon (`float`): The violation ratio `eps(X, Y)` (0: `X` dominates `Y`).
        epsilon_min (`float`): Its upper confidence bound `eps + se * z(1 - alpha)`, clipped to [0, 1].
        std_error (`float`): Bootstrap standard deviation of the violation ratio.
        dominant (`bool`): Whether `X` is almost dominant over `Y`: `epsilon_min < threshold`.
        threshold, alpha, order, n_bootstrap, paired, seed: The settings of the test.
    """

    epsilon: float
    epsilon_min: float
    std_error: float
    dominant: bool
    threshold: float
    alpha: float
    order: int
    n_bootstrap: int
    paired: bool
    seed: int | None


def absolute_dominance(
    x,
    y,
    *,
    order: int = 1,
    alpha: float = 0.05,
    threshold: float = 0.25,
    n_bootstrap: int = 1000,
    paired: bool = False,
    seed: int | None = None,
) -> AbsoluteDominanceResult:
    """Absolute test of almost stochastic dominance of `X` over `Y` (larger values are better).

    Args:
        x, y (array-like): The two samples (1-D, finite; equal sizes when `paired`).
        order (`int`, *optional*, defaults to 1): 1 for first-order, 2 for second-order dominance.
        alpha (`float`, *optional*, defaults to 0.05): Significance level.
        threshold (`float`, *optional*, defaults to 0.25): The tau below which `epsilon_min` means dominance.
        n_bootstrap (`int`, *optional*, defaults to 1000): Bootstrap rounds for the standard error.
        paired (`bool`, *optional*, defaults to `False`): Resample both samples with the same indices.
        seed (`int`, *optional*): Seed of the bootstrap; the same seed gives the same result.

    Returns:
        [`AbsoluteDominanceResult`].
    """
    order = check_order(order)
    _check_settings(alpha, n_bootstrap, threshold)
    samples = check_samples({"x": x, "y": y}, paired=paired)
    sorted_samples, paired_order = _prepare(samples, paired)
    epsilon = float(pairwise_violation_ratios(sorted_samples, order)[0, 1])
    rng = np.random.default_rng(seed)
    boot = bootstrap_violation_ratios(
        sorted_samples, order=order, n_bootstrap=n_bootstrap, rng=rng, paired_order=paired_order
    )[:, 0, 1]
    std_error = float(np.std(boot))
    epsilon_min = float(np.clip(epsilon + std_error * _normal_quantile(1 - alpha), 0.0, 1.0))
    return AbsoluteDominanceResult(
        epsilon=epsilon,
        epsilon_min=epsilon_min,
        std_error=std_error,
        dominant=epsilon_min < threshold,
        threshold=float(threshold),
        alpha=float(alpha),
        order=order,
        n_bootstrap=int(n_bootstrap),
        paired=bool(paired),
        seed=seed,
    )


def borda_ranking(
    names: Sequence[str], significant: np.ndarray, tie_break: Sequence[float]
) -> tuple[list[str], np.ndarray]:
    """Rank models by Borda count over significant pairwise outcomes.

    Args:
        names (sequence of `str`): The k model names.
        significant (`np.ndarray` of shape `(k, k)`): `significant[i, j]` is `True` when `i` significantly
            beats `j`.
        tie_break (sequence of `float`): Smaller is better among models with the same count (the relative
            violation ratios).

    Returns:
        The names, best first, and the Borda counts (number of significant wins) in the input order.
    """
    wins = np.asarray(significant, dtype=bool).sum(axis=1)
    order = sorted(range(len(names)), key=lambda i: (-wins[i], tie_break[i], names[i]))
    return [names[i] for i in order], wins


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if not np.isfinite(value) else f"{value:.{digits}f}"


@dataclass
class RelativeDominanceResult:
    """Result of [`relative_dominance`]: the ranking, the pairwise violation ratios and their significance.

    Attributes:
        models (`list[str]`): Model names, in input order (rows and columns of the matrices).
        ranking (`list[str]`): Model names, best first (Borda count, then relative violation ratio).
        borda (`np.ndarray` of shape `(k,)`): Number of models each one significantly dominates.
        epsilon (`np.ndarray` of shape `(k, k)`): `eps(X_i, X_j)`; `NaN` on the diagonal.
        relative_epsilon (`np.ndarray` of shape `(k,)`): `eps_i = mean_{j != i} eps(X_i, X_j)` (smaller is better).
        delta (`np.ndarray` of shape `(k, k)`): `eps_i - eps_j`.
        std_error (`np.ndarray` of shape `(k, k)`): Bootstrap standard deviation of `delta`.
        significant (`np.ndarray` of shape `(k, k)`): `i` relatively dominates `j` (Bonferroni-corrected, and with
            the Kolmogorov-Smirnov guard when `guard="ks"`).
        epsilon_min (`np.ndarray` of shape `(k, k)`): Upper confidence bounds of `eps(X_i, X_j)` from the same
            bootstrap, at the same corrected level (the absolute test; compare with a threshold such as 0.25).
        ks_pvalue (`np.ndarray` of shape `(k, k)`): Two-sample Kolmogorov-Smirnov p-values of the guard (`NaN`
            without it).
        critical_value (`float`): The normal quantile `z(1 - alpha / #pairs)` used (for `epsilon_min` always).
        order, alpha, n_bootstrap, paired, seed, correction, guard: The settings of the test.
        pvalue (`np.ndarray` of shape `(k, k)`): Unadjusted one-sided p-value of "`i` relatively dominates `j`",
            `Phi(delta_ij / std_error_ij)`, the larger of it and the guard's p-value with the guard (`NaN` on the
            diagonal).
        adjusted_pvalue (`np.ndarray` of shape `(k, k)`): `pvalue` adjusted by `correction` over the k(k-1)/2 pairs
            (each pair counted once, in its observed direction; 1 in the other).
        clustered (`bool`): Whether the bootstrap resampled whole clusters of samples.
    """

    models: list[str]
    ranking: list[str]
    borda: np.ndarray
    epsilon: np.ndarray
    relative_epsilon: np.ndarray
    delta: np.ndarray
    std_error: np.ndarray
    significant: np.ndarray
    epsilon_min: np.ndarray
    ks_pvalue: np.ndarray
    critical_value: float
    order: int
    alpha: float
    n_bootstrap: int
    paired: bool
    seed: int | None
    correction: str | None = "bonferroni"
    guard: str | None = "ks"
    metadata: dict = field(default_factory=dict)
    pvalue: np.ndarray | None = None
    adjusted_pvalue: np.ndarray | None = None
    clustered: bool = False

    def rank_of(self, model: str) -> int:
        """1-based rank of `model`."""
        return self.ranking.index(model) + 1

    def dominated_by(self, model: str) -> list[str]:
        """Models that `model` significantly dominates."""
        i = self.models.index(model)
        return [name for j, name in enumerate(self.models) if self.significant[i, j]]

    def summary(self) -> str:
        """One line: the ranking, then the significant dominances (`a ≻ b`), e.g. for a table cell."""
        wins = [f"{name} ≻ {other}" for name in self.ranking for other in self.dominated_by(name)]
        return " > ".join(self.ranking) + "; significant: " + (", ".join(wins) if wins else "none")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (matrices as nested lists, `None` for `NaN`)."""

        def clean(array):
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(array, dtype=float)]

        return {
            "models": list(self.models),
            "ranking": list(self.ranking),
            "borda": [int(v) for v in self.borda],
            "relative_epsilon": [float(v) for v in self.relative_epsilon],
            "epsilon": clean(self.epsilon),
            "delta": clean(self.delta),
            "std_error": clean(self.std_error),
            "significant": [[bool(v) for v in row] for row in self.significant],
            "epsilon_min": clean(self.epsilon_min),
            "ks_pvalue": clean(self.ks_pvalue),
            "critical_value": float(self.critical_value),
            "pvalue": None if self.pvalue is None else clean(self.pvalue),
            "adjusted_pvalue": None if self.adjusted_pvalue is None else clean(self.adjusted_pvalue),
            "clustered": self.clustered,
            "order": self.order,
            "alpha": self.alpha,
            "n_bootstrap": self.n_bootstrap,
            "paired": self.paired,
            "seed": self.seed,
            "correction": self.correction,
            "guard": self.guard,
        }

    def to_markdown(self) -> str:
        """The ranking table, the pairwise violation-ratio matrix and the significant dominances, as Markdown."""
        index = {name: i for i, name in enumerate(self.models)}
        names = {"bonferroni": "Bonferroni", "holm": "Holm", "bh": "Benjamini-Hochberg"}
        pairs = len(self.models) * (len(self.models) - 1) // 2
        kind = "cluster" if self.clustered else ("paired" if self.paired else "independent")
        # a comparison of harness logs corrects over all its claims, not only this test's pairs
        family = f"{self.metadata['family']} claims" if "family" in self.metadata else f"{pairs} pairs"
        lines = [
            f"Relative stochastic dominance of order {self.order}: alpha = {self.alpha}"
            f"{' (' + names[self.correction] + ' over ' + family + ')' if self.correction else ''}, "
            f"{self.n_bootstrap} {kind} bootstrap rounds, seed {self.seed}.",
            "",
            "| rank | model | Borda (significant wins) | relative ε (lower is better) | dominates |",
            "|---:|---|---:|---:|---|",
        ]
        for rank, name in enumerate(self.ranking, start=1):
            i = index[name]
            beaten = ", ".join(self.dominated_by(name)) or "—"
            lines.append(f"| {rank} | {name} | {int(self.borda[i])} | {_fmt(self.relative_epsilon[i])} | {beaten} |")
        lines += [
            "",
            "Pairwise violation ratio ε(row, column): 0 means the row dominates the column, 1 the reverse.",
            "",
            "| | " + " | ".join(self.models) + " |",
            "|---|" + "---:|" * len(self.models),
        ]
        for i, name in enumerate(self.models):
            lines.append(f"| **{name}** | " + " | ".join(_fmt(v) for v in self.epsilon[i]) + " |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RelativeDominanceResult(order={self.order}, ranking={self.ranking}, borda={self.borda.tolist()})"


_KS_ASYMPTOTIC = 1000


def _ks_pvalues(samples: dict[str, np.ndarray]) -> np.ndarray:
    import warnings

    from scipy.stats import ks_2samp

    values = list(samples.values())
    k = len(values)
    pvalues = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(i + 1, k):
            # from 1,000 samples a side the asymptotic distribution is accurate, and the exact one costs milliseconds
            method = "asymp" if min(values[i].size, values[j].size) >= _KS_ASYMPTOTIC else "auto"
            with warnings.catch_warnings():
                # with ties (a 0/1 metric) scipy's exact method gives up and says so; its fallback is the asymptotic one
                warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
                pvalues[i, j] = pvalues[j, i] = ks_2samp(values[i], values[j], method=method).pvalue
    return pvalues


def dominance_pvalues(delta: np.ndarray, std_error: np.ndarray) -> np.ndarray:
    """One-sided p-values of "`i` relatively dominates `j`": `Phi(delta_ij / std_error_ij)` (the normal test of the
    paper); 0 when the bootstrap never moved a negative `delta`, 1 when it never moved a non-negative one."""
    from scipy.special import ndtr

    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(
            std_error > 0, delta / np.where(std_error > 0, std_error, 1.0), np.where(delta < 0, -np.inf, np.inf)
        )
    pvalue = ndtr(z)
    np.fill_diagonal(pvalue, np.nan)
    return pvalue


def relative_dominance(
    samples: Mapping[str, object],
    *,
    order: int = 1,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    paired: bool = False,
    seed: int | None = None,
    correction: str | None = "bonferroni",
    guard: str | None = "ks",
    clusters=None,
    progress: bool = False,
) -> RelativeDominanceResult:
    """Relative test of stochastic dominance among k models, with a ranking (larger values are better).

    Args:
        samples (`Mapping[str, array-like]`): Per-sample scores of each model (at least two models; 1-D, finite).
        order (`int`, *optional*, defaults to 1): 1 for first-order, 2 for second-order dominance (risk-averse:
            compares the means of the worst tails at every level).
        alpha (`float`, *optional*, defaults to 0.05): Family-wise significance level.
        n_bootstrap (`int`, *optional*, defaults to 1000): Joint bootstrap rounds.
        paired (`bool`, *optional*, defaults to `False`): Whether the i-th score of every model comes from the same
            prompt; all models are then resampled with the same indices (the samples must have equal sizes).
        seed (`int`, *optional*): Seed of the bootstrap; the same seed gives the same result.
        correction (`str`, *optional*, defaults to `"bonferroni"`): `"bonferroni"` divides alpha by the number of
            pairs k(k-1)/2; `"holm"` (family-wise error too, more powerful) and `"bh"` (Benjamini-Hochberg: the false
            discovery rate) adjust the pairs' p-values ([`~hf_ext.risk.paired.adjust_pvalues`]); `None` tests each
            pair at level alpha.
        guard (`str`, *optional*, defaults to `"ks"`): Also require a two-sample Kolmogorov-Smirnov test, at the
            same corrected level, to find the two distributions different before declaring a dominance. When two
            models have the same distribution the violation ratio does not concentrate (its central limit theorem
            needs distinct distributions) and the bootstrap variance is about half the sampling variance, so the
            plain test of the paper (`guard=None`) rejects far more often than alpha on identical models; with the
            guard the family-wise error there is at most alpha, and the guard's power tends to 1 for distinct
            distributions, where the bootstrap test is valid. (The Kolmogorov-Smirnov test assumes independent
            samples; with paired samples that are positively correlated, as scores on the same prompts usually are,
            it is conservative.)
        clusters (array-like, *optional*): With `paired=True`, a label per sample position saying which samples
            belong together (the prompt of several generations, the item of several seeds): the bootstrap draws whole
            clusters, which must all have the same size.
        progress (`bool`, *optional*, defaults to `False`): Show a progress bar.

    Returns:
        [`RelativeDominanceResult`] (with `to_markdown()`).

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_ext.risk import relative_dominance
    >>> rng = np.random.default_rng(0)
    >>> samples = {f"model-{i}": rng.normal(0.5 * i, 1, 500) for i in range(3)}
    >>> relative_dominance(samples, n_bootstrap=200, seed=0).ranking
    ['model-2', 'model-1', 'model-0']

    ```
    """
    order = check_order(order)
    _check_settings(alpha, n_bootstrap)
    if guard not in (None, "ks"):
        raise ValueError(f"guard: expected 'ks' or None, got {guard!r}")
    if correction not in (None, "bonferroni", "holm", "bh"):
        raise ValueError(f"correction: expected 'bonferroni', 'holm', 'bh' or None, got {correction!r}")
    checked = check_samples(samples, paired=paired)
    names = list(checked)
    k = len(names)
    codes = None
    if clusters is not None:
        if not paired:
            raise ValueError(
                "clusters: a cluster bootstrap resamples the same clusters for every model; set paired=True"
            )
        codes = check_clusters(clusters, next(iter(checked.values())).size)
    sorted_samples, paired_order = _prepare(checked, paired)

    epsilon = pairwise_violation_ratios(sorted_samples, order)
    boot = bootstrap_violation_ratios(
        sorted_samples,
        order=order,
        n_bootstrap=n_bootstrap,
        rng=np.random.default_rng(seed),
        paired_order=paired_order,
        cluster_codes=codes,
        progress=progress,
    )
    relative = np.nanmean(epsilon, axis=-1)
    boot_relative = np.nanmean(boot, axis=-1)  # (B, k)
    delta = relative[:, None] - relative[None, :]
    boot_delta = boot_relative[:, :, None] - boot_relative[:, None, :]
    std_error = np.std(boot_delta, axis=0)

    pairs = k * (k - 1) // 2
    level = alpha / pairs if correction in ("bonferroni", "holm", "bh") else alpha
    critical = _normal_quantile(1 - level)
    ks_pvalue = _ks_pvalues(checked) if guard == "ks" else np.full((k, k), np.nan)
    pvalue = dominance_pvalues(delta, std_error)
    if guard == "ks":
        pvalue = np.maximum(pvalue, ks_pvalue)  # both tests must reject (an intersection-union test)
    if correction in ("holm", "bh"):
        # one claim per pair, in its observed direction (the smaller of the two one-sided p-values)
        upper = np.triu_indices(k, 1)
        adjusted_pairs = np.full((k, k), np.nan)
        adjusted_pairs[upper] = adjust_pvalues(np.fmin(pvalue, pvalue.T)[upper], correction)
        adjusted_pairs.T[upper] = adjusted_pairs[upper]
        adjusted = np.where(pvalue <= pvalue.T, adjusted_pairs, 1.0)
        significant = (adjusted <= alpha) & (delta < 0)
    else:
        significant = delta + std_error * critical < 0
        if guard == "ks":
            significant &= ks_pvalue < level
        adjusted = np.minimum(1.0, pvalue * (pairs if correction == "bonferroni" else 1))
    np.fill_diagonal(significant, False)
    np.fill_diagonal(adjusted, np.nan)
    epsilon_min = np.clip(epsilon + np.std(boot, axis=0) * critical, 0.0, 1.0)
    ranking, borda = borda_ranking(names, significant, relative)
    return RelativeDominanceResult(
        models=names,
        ranking=ranking,
        borda=borda,
        epsilon=epsilon,
        relative_epsilon=relative,
        delta=delta,
        std_error=std_error,
        significant=significant,
        epsilon_min=epsilon_min,
        ks_pvalue=ks_pvalue,
        critical_value=critical,
        order=order,
        alpha=float(alpha),
        n_bootstrap=int(n_bootstrap),
        paired=bool(paired),
        seed=seed,
        correction=correction,
        guard=guard,
        pvalue=pvalue,
        adjusted_pvalue=adjusted,
        clustered=codes is not None,
    )
