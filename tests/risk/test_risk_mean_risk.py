import numpy as np
import pytest

from hf_ext.risk import gini_tail, mean_risk, second_order_quantile, semideviation


def test_gini_tail_is_half_the_gini_mean_difference_and_the_lorenz_integral():
    x = np.random.default_rng(0).gamma(2.0, size=150)
    brute = np.abs(x[:, None] - x[None, :]).mean() / 2
    assert gini_tail(x) == pytest.approx(brute, rel=1e-12)
    t = (np.arange(100_000) + 0.5) / 100_000
    integral = 2 * np.mean(x.mean() * t - second_order_quantile(x, t))
    assert gini_tail(x) == pytest.approx(integral, rel=1e-6)


def test_semideviation_and_figures():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    assert semideviation(x) == pytest.approx((3 + 2 + 1 + 0) / 4)
    figures = mean_risk(x, levels=(0.25, 0.5, 1.0))
    assert figures["mean"] == 4.0
    assert figures["tvar@0.25"] == 1.0 and figures["tvar@0.5"] == 1.5 and figures["tvar@1"] == 4.0
    assert figures["mean-semideviation"] == pytest.approx(4 - 1.5)
    assert figures["mean-gini"] == pytest.approx(4 - np.abs(x[:, None] - x).mean() / 2)


def test_mean_risk_prefers_the_second_order_dominant_of_equal_means():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 4000)
    spread = x.mean() + 2 * (x - x.mean())  # a mean-preserving spread: x dominates it at second order
    a, b = mean_risk(x), mean_risk(spread)
    assert a["mean"] == pytest.approx(b["mean"])
    for key in ("tvar@0.05", "tvar@0.1", "tvar@0.25", "mean-semideviation", "mean-gini"):
        assert a[key] > b[key]


def test_levels_are_validated():
    with pytest.raises(ValueError, match=r"levels: TVaR levels must lie in \(0, 1\]"):
        mean_risk([1.0, 2.0], levels=(0.0,))
