"""Statistics of paired comparisons: models scored on the same items (pure numpy / scipy).

- [`mcnemar`] / [`pairwise_mcnemar`]: the exact McNemar test of two 0/1 metrics on the same items (a two-sided
  binomial test on the discordant items);
- [`adjust_pvalues`]: Bonferroni, Holm (step-down, family-wise error) and Benjamini-Hochberg (step-up, false
  discovery rate) adjusted p-values over a family of claims;
- [`minimum_detectable_effect`] / [`mcnemar_minimum_detectable_effect`]: the smallest effect a test detects with a
  given power, at the level it was run at;
- [`check_clusters`] / [`cluster_bootstrap_counts`]: resampling whole groups of samples (several generations of one
  prompt, several seeds) instead of single samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .quantiles import as_sample


__all__ = [
    "CORRECTIONS",
    "McNemarResult",
    "adjust_pvalues",
    "check_clusters",
    "cluster_bootstrap_counts",
    "is_binary",
    "mcnemar",
    "mcnemar_minimum_detectable_effect",
    "minimum_detectable_effect",
    "pairwise_mcnemar",
]

CORRECTIONS = ("bh", "holm", "bonferroni")
"""Multiple-comparison corrections of [`adjust_pvalues`] (`None` for none)."""


def _normal_quantile(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def is_binary(values) -> bool:
    """Whether every value is 0 or 1 (a correct / incorrect metric such as accuracy or exact match)."""
    array = np.asarray(values, dtype=np.float64)
    return bool(array.size) and bool(np.all((array == 0.0) | (array == 1.0)))


def _binary(values, name: str) -> np.ndarray:
    array = as_sample(values, name)
    if not is_binary(array):
        bad = array[(array != 0.0) & (array != 1.0)]
        raise ValueError(f"{name}: McNemar's test needs 0/1 values (correct / incorrect), got e.g. {bad[0]!r}")
    return array


def _exact_two_sided(wins: np.ndarray, discordant: np.ndarray) -> np.ndarray:
    # Two-sided binomial test of wins ~ Bin(discordant, 1/2): twice the smaller tail, at most 1; 1 with no discordance.
    from scipy.stats import binom

    smaller = np.minimum(wins, discordant - wins)
    pvalue = np.minimum(1.0, 2.0 * binom.cdf(smaller, discordant, 0.5))
    return np.where(discordant > 0, pvalue, 1.0)


@dataclass
class McNemarResult:
    """Result of [`mcnemar`].

    Attributes:
        wins (`int`): Items where `x` is correct and `y` is not.
        losses (`int`): Items where `y` is correct and `x` is not.
        n (`int`): Number of items.
        effect (`float`): `(wins - losses) / n`, the difference in accuracy of `x` over `y`.
        pvalue (`float`): Exact two-sided p-value (1 when no item is discordant).
    """

    wins: int
    losses: int
    n: int
    effect: float
    pvalue: float


def mcnemar(x, y) -> McNemarResult:
    """Exact McNemar test: do two 0/1 metrics on the same items differ?

    Only the discordant items count (one model correct, the other not); under the null hypothesis each of them
    favours either model with probability 1/2, so the number favouring `x` is Binomial(discordant, 1/2).

    Args:
        x, y (array-like): 0/1 values of the two models, item by item (equal sizes).

    Returns:
        [`McNemarResult`].

    Example:

    ```python
    >>> from hf_ext.risk.paired import mcnemar
    >>> result = mcnemar([1, 1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1])
    >>> result.wins, result.losses, round(result.pvalue, 4)
    (6, 0, 0.0312)

    ```
    """
    x, y = _binary(x, "x"), _binary(y, "y")
    if x.size != y.size:
        raise ValueError(f"x and y: McNemar's test pairs items, so the sizes must be equal; got {x.size} and {y.size}")
    wins = int(np.sum((x == 1) & (y == 0)))
    losses = int(np.sum((x == 0) & (y == 1)))
    pvalue = float(_exact_two_sided(np.array(wins), np.array(wins + losses)))
    return McNemarResult(wins=wins, losses=losses, n=int(x.size), effect=(wins - losses) / x.size, pvalue=pvalue)


def pairwise_mcnemar(samples: Mapping[str, object]) -> dict[str, np.ndarray]:
    """McNemar's test for every pair of k models scored 0/1 on the same items.

    Args:
        samples (`Mapping[str, array-like]`): Each model's 0/1 values, item by item (equal sizes).

    Returns:
        `dict` of `(k, k)` arrays: `wins[i, j]` (items `i` gets right and `j` wrong), `effect[i, j]` (accuracy of
        `i` minus that of `j`) and `pvalue[i, j]` (exact, two-sided; symmetric, `NaN` on the diagonal).
    """
    values = [_binary(v, f"samples[{name!r}]") for name, v in samples.items()]
    sizes = {v.size for v in values}
    if len(sizes) != 1:
        raise ValueError(f"samples: McNemar's test pairs items, so every model needs the same number; got {sizes}")
    matrix = np.stack(values, axis=1)  # (n, k)
    n = matrix.shape[0]
    wins = matrix.T @ (1.0 - matrix)  # wins[i, j] = #(i right, j wrong)
    discordant = wins + wins.T
    pvalue = _exact_two_sided(np.minimum(wins, wins.T), discordant)
    np.fill_diagonal(pvalue, np.nan)
    return {"wins": wins.astype(np.int64), "effect": (wins - wins.T) / n, "pvalue": pvalue}


def adjust_pvalues(pvalues, method: str | None = "bh") -> np.ndarray:
    """Adjusted p-values over a family of claims: a claim is significant at level alpha when its adjusted p-value is
    at most alpha.

    Args:
        pvalues (array-like): The raw p-values, any shape (`NaN` entries are left out of the family and stay `NaN`).
        method (`str`, *optional*, defaults to `"bh"`):
            - `"bh"`: Benjamini-Hochberg step-up, controlling the false discovery rate (the expected share of false
              claims among the significant ones) under independence or positive dependence;
            - `"holm"`: Holm step-down, controlling the family-wise error (any false claim at all) under any
              dependence, uniformly more powerful than Bonferroni;
            - `"bonferroni"`: `m p`; `None`: no adjustment.

    Returns:
        `np.ndarray` of the same shape, values in [0, 1].
    """
    if method not in (*CORRECTIONS, None):
        raise ValueError(f"method: expected one of {CORRECTIONS} or None, got {method!r}")
    array = np.asarray(pvalues, dtype=np.float64)
    flat = array.ravel()
    keep = np.flatnonzero(~np.isnan(flat))
    p = flat[keep]
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"pvalues: expected values in [0, 1], got values in [{p.min()}, {p.max()}]")
    m = p.size
    out = flat.copy()
    if m == 0 or method is None:
        return out.reshape(array.shape)
    if method == "bonferroni":
        adjusted = np.minimum(1.0, m * p)
    else:
        order = np.argsort(p, kind="stable")
        ranked = p[order]
        rank = np.arange(1, m + 1)
        if method == "bh":
            # the adjusted value of the i-th smallest is min over j >= i of m p_(j) / j
            stepped = np.minimum.accumulate((m * ranked / rank)[::-1])[::-1]
        else:
            # the adjusted value of the i-th smallest is max over j <= i of (m - j + 1) p_(j)
            stepped = np.maximum.accumulate((m - rank + 1) * ranked)
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(1.0, stepped)
    out[keep] = adjusted
    return out.reshape(array.shape)


def _check_power(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    if not 0 < power < 1:
        raise ValueError(f"power: expected a probability in (0, 1), got {power!r}")


def minimum_detectable_effect(std_error, *, alpha: float, power: float = 0.8, two_sided: bool = False):
    """The smallest true effect a normal test with this standard error detects with probability `power` at level
    `alpha`: `(z(1 - alpha) + z(power)) * std_error` (`z(1 - alpha / 2)` when `two_sided`).

    Args:
        std_error (`float` or array-like): Standard error of the effect's estimate.
        alpha (`float`): The level the test is run at (after any multiple-comparison correction).
        power (`float`, *optional*, defaults to 0.8): The wanted probability of detecting the effect.
        two_sided (`bool`, *optional*, defaults to `False`): Whether the test is two-sided.

    Returns:
        `float` or `np.ndarray`, in the units of the effect.
    """
    _check_power(alpha, power)
    errors = np.asarray(std_error, dtype=np.float64)
    if not np.all(np.isfinite(errors) & (errors >= 0)):
        raise ValueError(f"std_error: expected finite standard errors >= 0, got {std_error!r}")
    z = _normal_quantile(1 - alpha / 2 if two_sided else 1 - alpha) + _normal_quantile(power)
    return z * np.asarray(std_error, dtype=np.float64) if np.ndim(std_error) else z * float(std_error)


def mcnemar_minimum_detectable_effect(n: int, discordant: int, *, alpha: float, power: float = 0.8) -> float:
    """The smallest difference in accuracy that McNemar's exact test detects on `n` items, with power `power` at
    level `alpha` (two-sided).

    Two bounds, the larger is returned: the normal approximation `(z(1 - alpha/2) + z(power)) sqrt(d / n) / sqrt(n)`
    with `d` the observed discordant items, and the exact test's floor: with fewer than `ceil(log2(2 / alpha))`
    discordant items no outcome is significant, so no difference below that many items over `n` is ever detected.

    Args:
        n (`int`): Number of items.
        discordant (`int`): Items where the two models disagree (one right, one wrong).
        alpha (`float`): The level of the test (after correction).
        power (`float`, *optional*, defaults to 0.8): The wanted power.

    Returns:
        `float`, a difference in accuracy (0 to 1; values above 1 mean that no difference is detectable).
    """
    _check_power(alpha, power)
    if n < 1 or not 0 <= discordant <= n:
        raise ValueError(f"expected n >= 1 items and 0 <= discordant <= n, got n={n}, discordant={discordant}")
    z = _normal_quantile(1 - alpha / 2) + _normal_quantile(power)
    floor = math.ceil(math.log2(2 / alpha)) / n
    return max(z * math.sqrt(discordant / n) / math.sqrt(n), floor)


def check_clusters(clusters, n: int, name: str = "clusters") -> np.ndarray:
    """Validate cluster labels for `n` paired samples: one label per sample, every cluster of the same size.

    Returns:
        `np.ndarray` of `int64` codes `0 .. G-1`, one per sample.

    Raises:
        ValueError: naming the clusters whose sizes differ (a cluster bootstrap of unequal clusters would give
            resamples of varying size).
    """
    labels = np.asarray(clusters)
    if labels.ndim != 1 or labels.size != n:
        raise ValueError(f"{name}: expected one cluster label per sample ({n}), got shape {labels.shape}")
    uniques, codes, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if uniques.size < 2:
        raise ValueError(f"{name}: at least 2 clusters are needed to resample them, got {uniques.size}")
    if np.any(sizes != sizes[0]):
        common = int(np.bincount(sizes).argmax())
        odd = [f"{uniques[i]!s} ({sizes[i]})" for i in np.flatnonzero(sizes != common)[:5]]
        raise ValueError(
            f"{name}: every cluster needs the same number of samples for a cluster bootstrap; most have {common}, "
            f"but {', '.join(odd)}{' ...' if np.sum(sizes != common) > 5 else ''} differ"
        )
    return codes.astype(np.int64)


def cluster_bootstrap_counts(codes: np.ndarray, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap counts of a cluster bootstrap: each round draws as many clusters as there are, with replacement,
    and every sample counts as often as its cluster was drawn.

    Args:
        codes (`np.ndarray` of shape `(n,)`): Cluster codes `0 .. G-1` of equal-size clusters ([`check_clusters`]).
        rounds (`int`): Number of bootstrap rounds.
        rng (`np.random.Generator`): The only source of randomness.

    Returns:
        `np.ndarray` of shape `(rounds, n)`: how many times each sample is drawn in each round (each row sums to
        `n`). With one sample per cluster, the counts are those of the ordinary paired bootstrap with the same
        generator.
    """
    groups = int(codes.max()) + 1
    draws = rng.integers(0, groups, size=(rounds, groups))
    offsets = (np.arange(rounds, dtype=np.int64) * groups)[:, None]
    cluster_counts = np.bincount((draws + offsets).ravel(), minlength=rounds * groups).reshape(rounds, groups)
    return cluster_counts[:, codes]
