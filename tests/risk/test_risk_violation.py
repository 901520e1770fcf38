import numpy as np
import pytest

from hf_ext.risk import second_order_quantile, violation_ratio
from hf_ext.risk.violation import violation_ratios


@pytest.fixture
def rng():
    return np.random.default_rng(2)


def grid_ratio(x, y, order, points=400_000):
    """Independent oracle: the ratio on a fine midpoint grid, quantiles from numpy, order 2 by cumulative sums."""
    t = (np.arange(points) + 0.5) / points
    qx, qy = np.quantile(x, t, method="inverted_cdf"), np.quantile(y, t, method="inverted_cdf")
    if order == 2:
        qx, qy = np.cumsum(qx) / points, np.cumsum(qy) / points
    diff = qy - qx
    return (np.maximum(diff, 0) ** 2).sum() / (diff**2).sum()


def test_hand_computed_values():
    # X = {0, 2}, Y = {1}: first order, the quantile functions differ by +1 then -1 on halves -> 0.5;
    # second order, Y's Lorenz curve is above X's everywhere (same mean, less spread) -> Y dominates X.
    assert violation_ratio([0, 2], [1, 1]) == pytest.approx(0.5)
    assert violation_ratio([0, 2], [1, 1], order=2) == pytest.approx(1.0)
    assert violation_ratio([1, 1], [0, 2], order=2) == pytest.approx(0.0)
    # X = {0, 3}, Y = {1}: D(t) = t on [0, 1/2], 3/2 - 2t on [1/2, 1] (crosses 0 at 3/4);
    # int D^2 = 1/24 + 1/24, int D_+^2 = 1/24 + 1/48 -> 3/4. Y of size 3 exercises merged breakpoints (n=2, m=3).
    assert violation_ratio([0, 3], [1, 1], order=2) == pytest.approx(0.75, rel=1e-12)
    assert violation_ratio([0, 3], [1, 1, 1], order=2) == pytest.approx(0.75, rel=1e-12)
    assert violation_ratio([3, 0], [1], order=2) == pytest.approx(0.75, rel=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_clearly_better_sample_dominates(order, rng):
    x, y = rng.normal(1, 1, 5000), rng.normal(0, 1, 5000)
    assert violation_ratio(x, y, order) < 1e-3
    assert violation_ratio(y, x, order) > 1 - 1e-3


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("sizes", [(300, 300), (301, 173), (64, 1000)])
def test_antisymmetry_is_exact(order, sizes, rng):
    x, y = rng.normal(0, 2, sizes[0]), rng.normal(0.3, 1, sizes[1])
    assert violation_ratio(x, y, order) + violation_ratio(y, x, order) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_common_shift_and_positive_scaling_leave_the_ratio_unchanged(order, rng):
    x, y = rng.gumbel(size=400), rng.normal(0.9, 1.6, 250)
    reference = violation_ratio(x, y, order)
    assert 0.02 < reference < 0.98
    assert violation_ratio(x + 1000.0, y + 1000.0, order) == pytest.approx(reference, abs=1e-9)
    assert violation_ratio(7.5 * x, 7.5 * y, order) == pytest.approx(reference, abs=1e-12)
    assert violation_ratio(0.01 * x - 3, 0.01 * y - 3, order) == pytest.approx(reference, abs=1e-9)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("sizes", [(200, 200), (301, 173), (50, 7)])
def test_exact_agrees_with_a_fine_grid(order, sizes, rng):
    x, y = rng.normal(0, 2, sizes[0]), rng.normal(0.2, 1, sizes[1])
    assert violation_ratio(x, y, order) == pytest.approx(grid_ratio(x, y, order), abs=2e-4)


def test_second_order_uses_the_second_order_quantile(rng):
    x, y = rng.normal(0, 2, 90), rng.normal(0.1, 1, 60)
    t = (np.arange(200_000) + 0.5) / 200_000
    diff = second_order_quantile(y, t) - second_order_quantile(x, t)
    assert violation_ratio(x, y, 2) == pytest.approx((np.maximum(diff, 0) ** 2).sum() / (diff**2).sum(), abs=1e-4)


@pytest.mark.parametrize("order", [1, 2])
def test_batched_rows_match_single_pairs(order, rng):
    xs = np.sort(rng.normal(size=(5, 40)), axis=1)
    ys = np.sort(rng.normal(0.2, 1.5, size=(5, 40)), axis=1)
    yu = np.sort(rng.normal(0.2, 1.5, size=(5, 33)), axis=1)
    batched, batched_unequal = violation_ratios(xs, ys, order), violation_ratios(xs, yu, order)
    for b in range(5):
        assert batched[b] == pytest.approx(violation_ratio(xs[b], ys[b], order), abs=1e-12)
        assert batched_unequal[b] == pytest.approx(violation_ratio(xs[b], yu[b], order), abs=1e-12)


def test_identical_samples_give_one_half(rng):
    x = rng.normal(size=30)
    assert violation_ratio(x, x[::-1]) == 0.5
    assert violation_ratio(x, np.concatenate([x, x]), order=2) == 0.5


def test_bad_input():
    with pytest.raises(ValueError, match="order: expected 1 .* or 2"):
        violation_ratio([1, 2], [2, 3], order=3)
    with pytest.raises(ValueError, match=r"y: 1 non-finite value"):
        violation_ratio([1, 2], [2, np.nan])
    with pytest.raises(ValueError, match="x: the sample is empty"):
        violation_ratio([], [2.0])


# deepsig (the peer): its ratio is computed on the grid t = dt, 2 dt, ..., 1 - dt with the same left-continuous
# empirical quantile, drops the first grid point from the numerator, and returns 0.5 when the distance is 0.
def test_deepsig_ratio_is_ours_on_its_grid_with_its_quirks(rng):
    deepsig_aso = pytest.importorskip("deepsig.aso")
    from hf_ext.risk import quantile

    # sizes 151 and 89 put no grid point on a step of either quantile function (where float rounding decides)
    x, y = rng.normal(0.1, 1, 151), rng.normal(0, 1.4, 89)
    dt = 0.005
    t = np.arange(dt, 1, dt)
    diff = quantile(y, t) - quantile(x, t)
    ours = (np.maximum(diff, 0)[1:] ** 2).sum() / (diff**2).sum()
    assert deepsig_aso.compute_violation_ratio(x, y, dt=dt) == pytest.approx(ours, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_exact_ratio_agrees_with_deepsig_up_to_its_grid(seed):
    deepsig_aso = pytest.importorskip("deepsig.aso")
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0.2, 1, 400), rng.normal(0, 1.5, 300)
    exact = violation_ratio(x, y)
    assert 0.05 < exact < 0.95
    assert deepsig_aso.compute_violation_ratio(x, y, dt=0.001) == pytest.approx(exact, abs=0.01)
    assert deepsig_aso.compute_violation_ratio(x, y, dt=0.0001) == pytest.approx(exact, abs=0.002)
