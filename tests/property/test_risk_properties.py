"""Property tests of the risk math (issue 18, item 7): NaN / inf / empty / mismatched input is never a silent number,
and the invariants of violation ratios, quantiles, dominance tests, mean-risk, the portfolio and the bootstrap."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_ext.risk import (
    absolute_dominance,
    adjust_pvalues,
    aggregate_rankings,
    empirical_cdf_scores,
    gini_tail,
    mean_risk,
    portfolio,
    quantile,
    relative_dominance,
    second_order_quantile,
    semideviation,
    tvar,
    violation_ratio,
)
from hf_ext.risk.bootstrap import bootstrap_violation_ratios, pairwise_violation_ratios
from hf_ext.risk.paired import mcnemar, minimum_detectable_effect


FEW = settings(max_examples=25, deadline=None)
values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
samples = st.lists(values, min_size=2, max_size=25)
levels = st.floats(min_value=0.0, max_value=1.0)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


# Every public entry point that takes per-sample scores, fed a sample `x` (and a clean second sample where it needs one).
ENTRY_POINTS = {
    "violation_ratio-x": lambda x: violation_ratio(x, [0.0, 1.0]),
    "violation_ratio-y": lambda x: violation_ratio([0.0, 1.0], x, order=2),
    "quantile": lambda x: quantile(x, 0.5),
    "second_order_quantile": lambda x: second_order_quantile(x, 0.5),
    "tvar": lambda x: tvar(x, 0.1),
    "mean_risk": lambda x: mean_risk(x),
    "semideviation": lambda x: semideviation(x),
    "gini_tail": lambda x: gini_tail(x),
    "absolute_dominance": lambda x: absolute_dominance(x, [0.0, 1.0], n_bootstrap=5, seed=0),
    "relative_dominance": lambda x: relative_dominance({"a": x, "b": [0.0, 1.0]}, n_bootstrap=5, seed=0),
    "empirical_cdf_scores": lambda x: empirical_cdf_scores({"a": x, "b": [0.0, 1.0]}),
    "portfolio": lambda x: portfolio({"a": {"m": x}, "b": {"m": list(range(len(x)))}}, {"m": "max"}),
}


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS), ids=list(ENTRY_POINTS))
@FEW
@given(sample=samples, bad=non_finite, where=st.integers(min_value=0, max_value=24))
def test_non_finite_or_empty_scores_are_errors_never_numbers(entry_point, sample, bad, where):
    call = ENTRY_POINTS[entry_point]
    sample = list(sample)
    sample[where % len(sample)] = bad
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) \(NaN or inf\), the first at index"):
        call(sample)
    with pytest.raises(ValueError, match="the sample is empty"):
        call([])
    with pytest.raises(ValueError, match="expected a 1-D sample"):
        call([sample[:1], sample[:1]])


@FEW
@given(x=samples, y=samples, order=st.sampled_from([1, 2]))
def test_violation_ratios_are_complementary_and_half_against_themselves(x, y, order):
    eps = violation_ratio(x, y, order=order)
    assert 0.0 <= eps <= 1.0
    assert eps + violation_ratio(y, x, order=order) == pytest.approx(1.0, abs=1e-9)
    assert violation_ratio(x, x, order=order) == 0.5
    assert violation_ratio(x, list(x) * 2, order=order) == 0.5  # the same law written with another sample size


@FEW
@given(x=samples, shift=st.floats(min_value=0.5, max_value=100.0), order=st.sampled_from([1, 2]))
def test_a_shifted_sample_dominates_its_original(x, shift, order):
    shifted = [v + shift for v in x]
    assert violation_ratio(shifted, x, order=order) == 0.0
    assert violation_ratio(x, shifted, order=order) == pytest.approx(1.0, abs=1e-12)
    result = absolute_dominance(shifted, x, order=order, paired=True, n_bootstrap=20, seed=0)
    assert result.dominant and result.epsilon == 0.0 and result.epsilon_min == 0.0
    ranking = relative_dominance({"low": x, "high": shifted}, order=order, paired=True, n_bootstrap=20, seed=0)
    assert ranking.ranking == ["high", "low"]


@FEW
@given(x=samples, t=st.lists(levels, min_size=1, max_size=5))
def test_quantiles_are_order_statistics_and_their_integral(x, t):
    t = sorted(t)
    q = quantile(x, t)
    assert np.all(np.diff(q) >= 0) and np.all(np.isin(q, x))
    assert second_order_quantile(x, 1.0) == pytest.approx(np.mean(x), abs=1e-9 * (1 + np.abs(x).max()))
    assert np.all(tvar(x, t) <= np.mean(x) + 1e-9 * (1 + np.abs(x).max()))
    assert tvar(x, 0.0) == min(x)
    for bad in (math.nan, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"t: quantile levels must lie in \[0, 1\]"):
            quantile(x, [0.5, bad])


@FEW
@given(x=samples)
def test_mean_risk_figures_never_exceed_the_mean(x):
    figures = mean_risk(x)
    tolerance = 1e-9 * (1 + np.abs(x).max())
    assert all(figures[name] <= figures["mean"] + tolerance for name in figures if name != "std")
    assert semideviation(x) >= 0 and gini_tail(x) >= -tolerance
    for bad in (math.nan, 0.0, 1.5):
        with pytest.raises(ValueError, match=r"levels: TVaR levels must lie in \(0, 1\]"):
            mean_risk(x, levels=[0.1, bad])


@FEW
@given(
    data=st.lists(st.tuples(values, values), min_size=2, max_size=20),
    extra=st.integers(min_value=1, max_value=3),
)
def test_portfolio_scores_are_probabilities_and_sizes_must_match(data, extra):
    metrics = {
        "a": {"m": [d[0] for d in data], "n": [d[1] for d in data]},
        "b": {"m": [d[1] for d in data], "n": [d[0] for d in data]},
    }
    scores = portfolio(metrics, {"m": "max", "n": "min"})
    for values_ in scores.values():
        assert np.all((values_ > 0) & (values_ <= 1))
    metrics["b"]["n"] = metrics["b"]["n"] + [0.0] * extra
    with pytest.raises(ValueError, match=r"metrics\['b'\]: every metric needs one value per sample"):
        portfolio(metrics, {"m": "max", "n": "min"})
    with pytest.raises(ValueError, match=r"directions: unknown metric\(s\) \['o'\]"):
        portfolio(metrics, {"m": "max", "n": "min", "o": "max"})


@FEW
@given(
    k=st.integers(min_value=2, max_value=4),
    data=st.data(),
    paired=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_bootstrap_ratios_are_complementary_probabilities_and_seeded(k, data, paired, seed):
    size = data.draw(st.integers(min_value=2, max_value=15))
    raw = [np.array(data.draw(st.lists(values, min_size=size, max_size=size))) for _ in range(k)]
    orders = [np.argsort(v, kind="stable") for v in raw]
    sorted_samples = [v[o] for v, o in zip(raw, orders)]

    def run():
        return bootstrap_violation_ratios(
            sorted_samples,
            order=1,
            n_bootstrap=7,
            rng=np.random.default_rng(seed),
            paired_order=orders if paired else None,
        )

    boot = run()
    off_diagonal = ~np.eye(k, dtype=bool)
    assert boot.shape == (7, k, k) and np.all(np.isnan(boot[:, ~off_diagonal]))
    assert np.all((boot[:, off_diagonal] >= 0) & (boot[:, off_diagonal] <= 1))
    np.testing.assert_allclose(
        boot + boot.transpose(0, 2, 1), np.broadcast_to(np.where(off_diagonal, 1.0, np.nan), boot.shape), atol=1e-9
    )
    np.testing.assert_array_equal(run(), boot)
    full = pairwise_violation_ratios(sorted_samples, 1)
    np.testing.assert_allclose(full[off_diagonal] + full.T[off_diagonal], 1.0, atol=1e-9)


@FEW
@given(x=st.lists(values, min_size=1, max_size=1), y=st.lists(values, min_size=1, max_size=1))
def test_dominance_tests_need_two_samples_per_model(x, y):
    for call in (
        lambda: relative_dominance({"a": x, "b": y}, n_bootstrap=5),
        lambda: absolute_dominance(x, y, n_bootstrap=5),
    ):
        with pytest.raises(ValueError, match=r"at least 2 samples per model .* got \{.*: 1"):
            call()


@FEW
@given(
    p=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12),
    method=st.sampled_from(["bh", "holm", "bonferroni"]),
)
def test_adjusted_pvalues_are_probabilities_no_smaller_than_the_raw_ones(p, method):
    adjusted = adjust_pvalues(p, method)
    assert np.all((adjusted >= np.asarray(p) - 1e-15) & (adjusted <= 1))
    with_nan = adjust_pvalues([*p, math.nan], method)  # documented: NaN is left out of the family and stays NaN
    assert math.isnan(with_nan[-1]) and np.array_equal(with_nan[:-1], adjusted)
    for bad in (math.inf, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"pvalues: expected values in \[0, 1\]"):
            adjust_pvalues([*p, bad], method)


@FEW
@given(
    std_error=st.one_of(non_finite, st.floats(max_value=-1e-9)),
    bits=st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=10),
)
def test_paired_statistics_refuse_non_finite_input(std_error, bits):
    with pytest.raises(ValueError, match="std_error: expected finite standard errors >= 0"):
        minimum_detectable_effect(std_error, alpha=0.05)
    with pytest.raises(ValueError, match="non-finite"):
        mcnemar([*bits, math.nan], [*bits, 1.0])
    with pytest.raises(ValueError, match="x and y: McNemar's test pairs items"):
        mcnemar(bits, [*bits, 1.0])
    with pytest.raises(ValueError, match="weights: expected 2 finite non-negative weights"):
        aggregate_rankings([["a", "b"], ["b", "a"]], weights=[1.0, std_error])
