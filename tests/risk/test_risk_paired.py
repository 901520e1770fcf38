import math

import numpy as np
import pytest
from scipy import stats

from hf_ext.risk import adjust_pvalues, mcnemar, minimum_detectable_effect, relative_dominance
from hf_ext.risk.paired import (
    check_clusters,
    cluster_bootstrap_counts,
    mcnemar_minimum_detectable_effect,
    pairwise_mcnemar,
)


def test_mcnemar_matches_scipys_exact_binomial_test():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(5, 80))
        x = (rng.random(n) < rng.random()).astype(float)
        y = np.where(rng.random(n) < 0.7, x, 1 - x)
        result = mcnemar(x, y)
        wins, losses = int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))
        assert (result.wins, result.losses, result.n) == (wins, losses, n)
        expected = 1.0 if wins + losses == 0 else stats.binomtest(wins, wins + losses, 0.5).pvalue
        assert result.pvalue == pytest.approx(expected, rel=1e-9)
        assert result.effect == pytest.approx(x.mean() - y.mean())


def test_pairwise_mcnemar_agrees_with_the_two_model_test():
    rng = np.random.default_rng(1)
    samples = {name: (rng.random(50) < p).astype(float) for name, p in (("a", 0.3), ("b", 0.5), ("c", 0.8))}
    out = pairwise_mcnemar(samples)
    names = list(samples)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                assert np.isnan(out["pvalue"][i, j])
                continue
            single = mcnemar(samples[a], samples[b])
            assert out["wins"][i, j] == single.wins and out["wins"][j, i] == single.losses
            assert out["pvalue"][i, j] == pytest.approx(single.pvalue) == out["pvalue"][j, i]
            assert out["effect"][i, j] == pytest.approx(single.effect)


@pytest.mark.parametrize(
    "x, y, message",
    [
        ([0, 1, 0.5], [0, 1, 1], "needs 0/1 values"),
        ([0, 1], [0, 1, 1], "sizes must be equal"),
        ([], [], "empty"),
    ],
)
def test_mcnemar_rejects_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        mcnemar(x, y)


def _reference_bh_rejections(pvalues, alpha):
    # the step-up procedure as written by Benjamini and Hochberg: reject the k smallest, k the largest index with
    # p_(k) <= k alpha / m
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m, largest = len(pvalues), 0
    for rank, index in enumerate(order, start=1):
        if pvalues[index] <= rank * alpha / m:
            largest = rank
    return {order[r] for r in range(largest)}


def _reference_holm_rejections(pvalues, alpha):
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m, rejected = len(pvalues), set()
    for rank, index in enumerate(order):
        if pvalues[index] > alpha / (m - rank):
            break
        rejected.add(index)
    return rejected


def test_bh_and_holm_decisions_match_the_step_procedures_at_every_level():
    rng = np.random.default_rng(2)
    for _ in range(40):
        m = int(rng.integers(1, 40))
        pvalues = np.where(rng.random(m) < 0.4, rng.random(m) * 0.01, rng.random(m))
        bh, holm = adjust_pvalues(pvalues, "bh"), adjust_pvalues(pvalues, "holm")
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.25):
            assert set(np.flatnonzero(bh <= alpha)) == _reference_bh_rejections(pvalues, alpha)
            assert set(np.flatnonzero(holm <= alpha)) == _reference_holm_rejections(pvalues, alpha)
        np.testing.assert_allclose(bh, stats.false_discovery_control(pvalues, method="bh"), rtol=1e-12)
        np.testing.assert_allclose(adjust_pvalues(pvalues, "bonferroni"), np.minimum(1, m * pvalues))
        assert np.all(bh <= holm + 1e-15) and np.all(holm <= adjust_pvalues(pvalues, "bonferroni") + 1e-15)


def test_adjust_pvalues_keeps_nan_out_of_the_family_and_checks_its_input():
    adjusted = adjust_pvalues([[0.01, np.nan], [0.04, 0.03]], "bonferroni")
    np.testing.assert_allclose(adjusted, [[0.03, np.nan], [0.12, 0.09]])
    np.testing.assert_array_equal(adjust_pvalues([0.2, 0.01], None), [0.2, 0.01])
    with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
        adjust_pvalues([0.5, 1.5])
    with pytest.raises(ValueError, match="method: expected"):
        adjust_pvalues([0.5], "sidak")


def test_minimum_detectable_effect_has_the_stated_power():
    # a one-sided z-test of an estimate ~ N(effect, se): at effect = MDE the rejection rate is the stated power
    rng = np.random.default_rng(3)
    se, alpha, power = 0.07, 0.01, 0.8
    mde = minimum_detectable_effect(se, alpha=alpha, power=power)
    estimates = rng.normal(mde, se, 200_000)
    assert np.mean(estimates / se > stats.norm.ppf(1 - alpha)) == pytest.approx(power, abs=0.005)
    two_sided = minimum_detectable_effect(se, alpha=alpha, power=power, two_sided=True)
    assert two_sided == pytest.approx((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)
    np.testing.assert_allclose(minimum_detectable_effect([se, 2 * se], alpha=alpha), [mde, 2 * mde])
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect(se, alpha=alpha, power=1.0)


def test_mcnemar_detectable_effect_has_the_exact_tests_floor():
    alpha = 0.01
    needed = math.ceil(math.log2(2 / alpha))
    # with one discordant item fewer than `needed`, even all of them one way is not significant; with `needed` it is
    assert stats.binomtest(needed - 1, needed - 1, 0.5).pvalue > alpha
    assert stats.binomtest(needed, needed, 0.5).pvalue <= alpha
    assert mcnemar_minimum_detectable_effect(20, 0, alpha=alpha) == pytest.approx(needed / 20)
    large = mcnemar_minimum_detectable_effect(10_000, 2_000, alpha=alpha, power=0.8)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(0.8)
    assert large == pytest.approx(z * math.sqrt(0.2 / 10_000))
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_minimum_detectable_effect(10, 11, alpha=alpha)


def test_cluster_counts_draw_whole_clusters():
    rng = np.random.default_rng(4)
    codes = check_clusters(np.repeat(["p3", "p1", "p2", "p0"], 3), 12)
    counts = cluster_bootstrap_counts(codes, 50, rng)
    assert counts.shape == (50, 12) and np.all(counts.sum(axis=1) == 12)
    for cluster in range(4):
        members = counts[:, codes == cluster]
        assert np.all(members == members[:, :1])  # every member of a cluster is drawn as often as the cluster


def test_singleton_clusters_give_the_paired_bootstrap():
    from hf_ext.risk.bootstrap import _row_counts

    n = 30
    counts = cluster_bootstrap_counts(check_clusters(np.arange(n), n), 20, np.random.default_rng(5))
    paired = _row_counts(np.random.default_rng(5).integers(0, n, size=(20, n)), n)
    np.testing.assert_array_equal(counts, paired)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 0, 1, 1, 1, 2, 2], "most have 2, but 1 \\(3\\) differ"),
        ([0, 0, 0, 0], "at least 2 clusters"),
        ([0, 1, 1], "one cluster label per sample \\(4\\)"),
    ],
)
def test_check_clusters_rejects_unequal_clusters(labels, message):
    with pytest.raises(ValueError, match=message):
        check_clusters(labels, 4 if len(labels) == 3 else len(labels))


def test_cluster_bootstrap_of_duplicated_samples_equals_the_paired_bootstrap_of_the_originals():
    # each item logged r times with the same value: resampling its r copies together is resampling the item, so the
    # cluster bootstrap reproduces the paired bootstrap of the originals exactly
    rng = np.random.default_rng(6)
    originals = {name: rng.normal(shift, 1, 60) for name, shift in (("a", 0.0), ("b", 0.3), ("c", 0.6))}
    copies = {name: np.repeat(values, 3) for name, values in originals.items()}
    clusters = np.repeat(np.arange(60), 3)
    for order in (1, 2):
        base = relative_dominance(originals, order=order, paired=True, n_bootstrap=200, seed=7, guard=None)
        clustered = relative_dominance(
            copies, order=order, paired=True, n_bootstrap=200, seed=7, guard=None, clusters=clusters
        )
        np.testing.assert_allclose(clustered.epsilon, base.epsilon, atol=1e-12)
        np.testing.assert_allclose(clustered.std_error, base.std_error, atol=1e-12)
        assert clustered.clustered and not base.clustered
    # the labels only group: any labels with the same grouping give a valid (equally distributed) cluster bootstrap
    named = relative_dominance(
        copies, order=2, paired=True, n_bootstrap=200, seed=7, guard=None, clusters=[f"q{c}" for c in clusters]
    )
    assert named.clustered and np.allclose(named.epsilon, base.epsilon, equal_nan=True)


def test_relative_dominance_holm_and_bh_adjust_the_pair_pvalues():
    rng = np.random.default_rng(8)
    samples = {f"m{i}": rng.normal(0.15 * i, 1, 400) for i in range(4)}
    plain = relative_dominance(samples, paired=True, n_bootstrap=300, seed=0, correction=None)
    k = 4
    upper = np.triu_indices(k, 1)
    family = np.fmin(plain.pvalue, plain.pvalue.T)[upper]
    for method in ("holm", "bh"):
        result = relative_dominance(samples, paired=True, n_bootstrap=300, seed=0, correction=method)
        adjusted = adjust_pvalues(family, method)
        expected = np.zeros((k, k), dtype=bool)
        for (i, j), p in zip(zip(*upper), adjusted):
            winner, loser = (i, j) if plain.delta[i, j] < 0 else (j, i)
            expected[winner, loser] = p <= 0.05
        np.testing.assert_array_equal(result.significant, expected)
    bonferroni = relative_dominance(samples, paired=True, n_bootstrap=300, seed=0)
    # the Bonferroni test of the paper, as p-values: significant exactly when pairs x p <= alpha
    np.testing.assert_array_equal(
        bonferroni.significant, (bonferroni.adjusted_pvalue <= 0.05) & (bonferroni.delta < 0) & ~np.eye(k, dtype=bool)
    )


def test_clusters_need_paired_samples():
    with pytest.raises(ValueError, match="set paired=True"):
        relative_dominance({"a": [1.0, 2.0], "b": [2.0, 3.0]}, clusters=[0, 1], n_bootstrap=10)
