import json
import math

import numpy as np
import pytest

from hf_ext.risk import absolute_dominance, borda_ranking, relative_dominance


def shifted_normals(seed, k=5, n=1000, step=0.5):
    rng = np.random.default_rng(seed)
    return {f"model-{i}": rng.normal(step * i, 1, n) for i in range(k)}


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("paired", [False, True])
def test_relative_test_ranks_shifted_normals_with_significance(order, paired):
    result = relative_dominance(shifted_normals(0), order=order, n_bootstrap=300, paired=paired, seed=0)
    assert result.ranking == [f"model-{i}" for i in (4, 3, 2, 1, 0)]
    # every better model significantly dominates every worse one
    expected = np.array([[i > j for j in range(5)] for i in range(5)])
    np.testing.assert_array_equal(result.significant, expected)
    assert result.borda.tolist() == [0, 1, 2, 3, 4]
    # eps_i: model i is dominated by the 4 - i better ones
    np.testing.assert_allclose(result.relative_epsilon, [(4 - i) / 4 for i in range(5)], atol=0.01)


def false_positive_rate(order, paired, seeds, guard="ks"):
    hits = 0
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        samples = {f"m{i}": rng.normal(0, 1, 200) for i in range(4)}
        result = relative_dominance(samples, order=order, n_bootstrap=100, paired=paired, seed=seed, guard=guard)
        hits += bool(result.significant.any())
    return hits / len(seeds)


@pytest.mark.slow
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("paired", [False, True])
def test_identical_distributions_family_wise_false_positives_at_most_alpha(order, paired):
    assert false_positive_rate(order, paired, range(80)) <= 0.05


@pytest.mark.slow
def test_the_guard_is_what_keeps_identical_models_apart():
    # without the Kolmogorov-Smirnov guard the bootstrap variance of the (non-concentrating) ratio is too small
    assert false_positive_rate(1, False, range(40), guard=None) > 0.1


def test_same_seed_same_result_and_serialisation():
    samples = shifted_normals(1, k=3, n=300, step=0.1)
    first = relative_dominance(samples, order=2, n_bootstrap=100, seed=3)
    second = relative_dominance(samples, order=2, n_bootstrap=100, seed=3)
    np.testing.assert_array_equal(first.std_error, second.std_error)
    other = relative_dominance(samples, order=2, n_bootstrap=100, seed=4)
    assert not np.array_equal(first.std_error, other.std_error)
    data = json.loads(json.dumps(first.to_dict()))
    assert data["ranking"] == first.ranking and data["epsilon"][0][0] is None
    assert data["epsilon"][0][1] == pytest.approx(first.epsilon[0, 1])
    text = first.to_markdown()
    for rank, name in enumerate(first.ranking, start=1):
        assert f"| {rank} | {name} |" in text


def test_bonferroni_divides_alpha_by_the_number_of_pairs():
    # The family of 4 models is its 6 pairs: each pair is tested at alpha / 6, by the normal test and the KS guard.
    # The oracle: scipy's normal quantile and its own two-sample KS test, at a level computed here.
    from scipy import stats

    rng = np.random.default_rng(3)
    samples = {f"m{i}": rng.normal(0.15 * i, 1, 400) for i in range(4)}
    result = relative_dominance(samples, n_bootstrap=200, seed=0)
    names = list(samples)
    ks = np.array([[stats.ks_2samp(samples[a], samples[b]).pvalue for b in names] for a in names])
    off_diagonal = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(result.ks_pvalue[off_diagonal], ks[off_diagonal], rtol=1e-12)

    def decisions(level):
        rejected = (result.delta + result.std_error * stats.norm.ppf(1 - level) < 0) & (ks < level)
        np.fill_diagonal(rejected, False)
        return rejected

    level = 0.05 / math.comb(4, 2)
    assert result.critical_value == pytest.approx(stats.norm.ppf(1 - level), rel=1e-12)
    np.testing.assert_array_equal(result.significant, decisions(level))
    # The data is where the family size matters: uncorrected, twice as many pairs would be declared.
    assert decisions(level).sum() == 3 and decisions(0.05).sum() == 6
    pvalue = np.maximum(stats.norm.cdf(result.delta[off_diagonal] / result.std_error[off_diagonal]), ks[off_diagonal])
    np.testing.assert_allclose(result.adjusted_pvalue[off_diagonal], np.minimum(1, 6 * pvalue), rtol=1e-9, atol=1e-15)
    # The uncorrected test is the same decision at the plain level.
    uncorrected = relative_dominance(samples, n_bootstrap=200, seed=0, correction=None)
    np.testing.assert_array_equal(uncorrected.significant, decisions(0.05))
    assert uncorrected.critical_value == pytest.approx(stats.norm.ppf(0.95), rel=1e-12)


def test_epsilon_matrix_is_the_pairwise_violation_ratio():
    from hf_ext.risk import violation_ratio

    samples = shifted_normals(2, k=3, n=150, step=0.1)
    result = relative_dominance(samples, order=2, n_bootstrap=20, seed=0)
    names = list(samples)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                assert result.epsilon[i, j] == pytest.approx(violation_ratio(samples[a], samples[b], 2), abs=1e-12)
    assert result.relative_epsilon[0] == pytest.approx((result.epsilon[0, 1] + result.epsilon[0, 2]) / 2)


def test_pairing_shrinks_the_standard_error_of_correlated_models():
    rng = np.random.default_rng(3)
    prompt = rng.normal(0, 1, 600)  # most of the variation comes from the prompt, shared by both models
    samples = {"a": prompt + rng.normal(0, 0.3, 600), "b": prompt + 0.05 + rng.normal(0, 0.3, 600)}
    paired = relative_dominance(samples, n_bootstrap=200, paired=True, seed=0, guard=None)
    unpaired = relative_dominance(samples, n_bootstrap=200, paired=False, seed=0, guard=None)
    assert paired.std_error[0, 1] < 0.7 * unpaired.std_error[0, 1]


def test_absolute_test():
    rng = np.random.default_rng(4)
    better, worse = rng.normal(1, 1, 1000), rng.normal(0, 1, 1000)
    result = absolute_dominance(better, worse, n_bootstrap=200, seed=0)
    assert result.dominant and result.epsilon < 0.01 and result.epsilon <= result.epsilon_min < 0.25
    assert not absolute_dominance(worse, better, n_bootstrap=200, seed=0).dominant
    # eps_min is the upper confidence bound eps + se * z(0.95)
    assert result.epsilon_min == pytest.approx(result.epsilon + 1.6448536269514722 * result.std_error)


@pytest.mark.slow
def test_absolute_test_false_positives_on_identical_distributions():
    hits = 0
    for seed in range(60):
        rng = np.random.default_rng(20_000 + seed)
        hits += absolute_dominance(rng.normal(size=200), rng.normal(size=200), n_bootstrap=100, seed=seed).dominant
    assert hits / 60 <= 0.05


@pytest.mark.slow
def test_absolute_test_agrees_with_deepsig_aso():
    deepsig = pytest.importorskip("deepsig")
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.15, 1, 200), rng.normal(0, 1, 200)
    ours = absolute_dominance(x, y, n_bootstrap=1000, seed=0)
    # deepsig re-sorts the sample for every quantile it evaluates: a few hundred rounds is what a test can afford
    theirs = deepsig.aso(x, y, num_bootstrap_iterations=150, dt=0.005, seed=0, show_progress=False)
    assert 0.1 < ours.epsilon_min < 0.6
    assert theirs == pytest.approx(ours.epsilon_min, abs=0.04)


def test_borda_ranking_counts_significant_wins_and_breaks_ties():
    significant = np.array([[0, 1, 0], [0, 0, 0], [0, 1, 0]], dtype=bool)
    ranking, wins = borda_ranking(["a", "b", "c"], significant, tie_break=[0.4, 0.9, 0.2])
    assert ranking == ["c", "a", "b"] and wins.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    "samples, kwargs, message",
    [
        ({"a": [1.0, 2.0]}, {}, "at least 2 models"),
        ({"a": [1.0, 2.0], "b": []}, {}, r"samples\['b'\]: the sample is empty"),
        ({"a": [1.0, np.nan], "b": [1.0, 2.0]}, {}, r"samples\['a'\]: 1 non-finite"),
        ({"a": [1.0, np.inf], "b": [1.0, 2.0]}, {}, "non-finite"),
        ({"a": [1.0], "b": [2.0]}, {}, r"at least 2 samples per model .*, got \{'a': 1, 'b': 1\}"),
        ({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0]}, {"paired": True}, "paired=True needs samples of equal size"),
        ({"a": [1.0, 2.0], "b": [2.0, 3.0]}, {"order": 3}, "order: expected 1"),
        ({"a": [1.0, 2.0], "b": [2.0, 3.0]}, {"alpha": 1.5}, r"alpha: expected a significance level in \(0, 1\)"),
        ({"a": [1.0, 2.0], "b": [2.0, 3.0]}, {"n_bootstrap": 1}, "n_bootstrap: expected an integer >= 2"),
        (
            {"a": [1.0, 2.0], "b": [2.0, 3.0]},
            {"correction": "sidak"},
            "correction: expected 'bonferroni', 'holm', 'bh' or None",
        ),
        ([1.0, 2.0], {}, "samples: expected a mapping"),
    ],
)
def test_bad_input_is_rejected(samples, kwargs, message):
    with pytest.raises(ValueError, match=message):
        relative_dominance(samples, **kwargs)


def test_absolute_threshold_is_validated():
    with pytest.raises(ValueError, match=r"threshold: expected a violation-ratio threshold in \(0, 0.5\]"):
        absolute_dominance([1.0, 2.0], [0.0, 1.0], threshold=0.7)


def test_summary_lists_ranking_and_only_significant_wins():
    rng = np.random.default_rng(3)
    samples = {"low": rng.normal(0, 1, 800), "high": rng.normal(1, 1, 800), "twin": rng.normal(1, 1, 800)}
    result = relative_dominance(samples, n_bootstrap=200, seed=0)
    head, wins = result.summary().split("; significant: ")
    assert head.split(" > ")[-1] == "low"
    assert sorted(wins.split(", ")) == ["high ≻ low", "twin ≻ low"]
