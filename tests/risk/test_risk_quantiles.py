import numpy as np
import pytest

from hf_ext.risk import quantile, second_order_quantile, tvar


@pytest.fixture
def rng():
    return np.random.default_rng(1)


@pytest.mark.parametrize("n", [1, 7, 250])
def test_quantile_matches_numpy_inverted_cdf(n, rng):
    x = rng.normal(size=n)
    t = np.concatenate([np.linspace(0.0005, 1, 997), np.arange(1, n + 1) / n])  # includes every breakpoint i / n
    np.testing.assert_array_equal(quantile(x, t), np.quantile(x, t, method="inverted_cdf"))
    assert quantile(x, 0.0) == x.min()


def test_second_order_quantile_is_the_integral_of_the_quantile_function(rng):
    x = rng.exponential(size=37)
    grid = (np.arange(400_000) + 0.5) / 400_000
    integral = np.cumsum(np.quantile(x, grid, method="inverted_cdf")) / grid.size  # midpoint rule
    t = np.array([0.1, 0.25, 0.5, 0.9, 1.0])
    expected = integral[np.round(t * grid.size).astype(int) - 1]
    np.testing.assert_allclose(second_order_quantile(x, t), expected, atol=1e-5)
    assert second_order_quantile(x, 0.0) == 0.0
    assert second_order_quantile(x, 1.0) == pytest.approx(x.mean(), rel=1e-12)


def test_tvar_is_the_mean_of_the_worst_fraction(rng):
    x = rng.normal(size=200)
    worst = np.sort(x)
    for k in (1, 10, 50, 200):
        assert tvar(x, k / 200) == pytest.approx(worst[:k].mean(), rel=1e-12)
    assert tvar(x, 0.0) == worst[0]
    # half a step: the worst value and half of the next
    assert tvar(x, 1.5 / 200) == pytest.approx((worst[0] + 0.5 * worst[1]) / 1.5, rel=1e-12)


@pytest.mark.parametrize(
    "values, message",
    [
        ([], "empty"),
        ([1.0, np.nan], "non-finite"),
        ([1.0, np.inf], "non-finite"),
        ([[1.0, 2.0]], "1-D"),
        (["a", "b"], "expected numbers"),
    ],
)
def test_bad_samples_are_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        quantile(values, 0.5)


def test_levels_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"t: quantile levels must lie in \[0, 1\]"):
        second_order_quantile([1.0, 2.0], [0.5, 1.2])
