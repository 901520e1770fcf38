"""Property tests of AOT's numeric entry points (`hf_ext.aot.losses`): finite inputs give finite, invariant
results; NaN / inf / wrong shapes / out-of-range arguments are a `ValueError` or `TypeError`, never a number;
empty samples have the documented result."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_ext.aot.losses import (
    COSTS,
    aot_paired_loss,
    aot_unpaired_loss,
    dominance_diagnostics,
    ot_cost,
    quantile_coupling,
    quantile_ot_loss,
    soft_sort,
)


SETTINGS = settings(max_examples=40, deadline=None)
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)
samples = st.lists(finite, min_size=1, max_size=12).map(lambda xs: torch.tensor(xs, dtype=torch.float64))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
costs = st.sampled_from(COSTS)
betas = st.floats(1e-3, 2.0)


@SETTINGS
@given(u=samples, v=samples, cost=costs, beta=betas, seed=st.integers(0, 2**16))
def test_quantile_loss_is_finite_nonnegative_and_invariant_to_order_and_duplication(u, v, cost, beta, seed):
    loss = quantile_ot_loss(u, v, cost=cost, beta=beta)
    assert torch.isfinite(loss) and loss >= 0
    generator = torch.Generator().manual_seed(seed)
    shuffled = quantile_ot_loss(
        u[torch.randperm(len(u), generator=generator)],
        v[torch.randperm(len(v), generator=generator)],
        cost=cost,
        beta=beta,
    )
    torch.testing.assert_close(shuffled, loss)  # a batch's order does not matter
    # Duplicating every sample leaves the empirical measures, so the OT cost, unchanged.
    torch.testing.assert_close(quantile_ot_loss(torch.cat([u, u]), v, cost=cost, beta=beta), loss)


@SETTINGS
@given(u=samples, cost=costs, beta=betas)
def test_equal_sizes_match_the_sorted_oracle(u, cost, beta):
    v = torch.flip(u, (0,)) * 0.5 - 1.0
    expected = ot_cost(torch.sort(u).values - torch.sort(v).values, cost, beta=beta).mean()
    torch.testing.assert_close(quantile_ot_loss(u, v, cost=cost, beta=beta), expected)
    # The element-wise cost is documented to keep a NaN in its own element, as torch's unreduced losses do.
    with_nan = ot_cost(torch.cat([u, torch.tensor([math.nan], dtype=u.dtype)]), cost, beta=beta)
    assert torch.isnan(with_nan[-1]) and bool(torch.isfinite(with_nan[:-1]).all())


@SETTINGS
@given(u=samples, v=samples, bad=non_finite, where=st.sampled_from(["u", "v"]), position=st.integers(0, 11))
def test_non_finite_rewards_raise_in_the_loss_and_the_diagnostics(u, v, bad, where, position):
    target = u if where == "u" else v
    target[position % len(target)] = bad
    for call in (
        lambda: quantile_ot_loss(u, v),
        lambda: quantile_ot_loss(u, v, soft_sort_temperature=1.0),
        lambda: dominance_diagnostics(u, v),
        lambda: aot_unpaired_loss(
            torch.cat([u, v]), torch.zeros(len(u) + len(v), dtype=u.dtype), torch.arange(len(u) + len(v)) < len(u)
        ),
    ):
        with pytest.raises(ValueError, match=rf"{where} holds NaN or infinite rewards"):
            call()
    with pytest.raises(ValueError, match="x holds NaN or infinite values"):
        soft_sort(target, 1.0)


@SETTINGS
@given(u=samples, empty_side=st.sampled_from(["u", "v", "both"]))
def test_an_empty_sample_gives_the_documented_zero_loss_and_no_diagnostics(u, empty_side):
    empty = torch.zeros(0, dtype=u.dtype, requires_grad=True)
    u = u.clone().requires_grad_(True)
    a, b = {"u": (empty, u), "v": (u, empty), "both": (empty, empty)}[empty_side]
    loss = quantile_ot_loss(a, b)
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad
    assert u.grad is None or torch.count_nonzero(u.grad) == 0
    assert dominance_diagnostics(a.detach(), b.detach()) == {}


@SETTINGS
@given(
    shape=st.sampled_from([(), (2, 3), (1, 1, 2)]),
    bad_argument=st.sampled_from(
        [
            {"beta": 0.0},
            {"beta": -1.0},
            {"beta": math.nan},
            {"margin": math.inf},
            {"label_smoothing": -0.1},
            {"label_smoothing": 0.6},
            {"soft_sort_temperature": 0.0},
            {"soft_sort_temperature": -2.0},
        ]
    ),
)
def test_wrong_shapes_and_out_of_range_arguments_raise(shape, bad_argument):
    good = torch.randn(4)
    with pytest.raises(ValueError, match="must be a 1-D tensor"):
        quantile_ot_loss(torch.zeros(shape), good)
    with pytest.raises(ValueError, match="is out of range"):
        quantile_ot_loss(good, good, **bad_argument)
    with pytest.raises(ValueError, match="one log-probability per pair"):
        aot_paired_loss(good, good, good, torch.zeros(5))


@SETTINGS
@given(n=st.integers(1, 40), m=st.integers(1, 40))
def test_the_coupling_covers_the_unit_interval_in_order(n, m):
    index_u, index_v, weight = quantile_coupling(n, m, dtype=torch.float64)
    assert len(weight) <= n + m - 1 and bool((weight > 0).all())
    torch.testing.assert_close(weight.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert bool((index_u.diff() >= 0).all() and (index_v.diff() >= 0).all())
    assert index_u.max() == n - 1 and index_v.max() == m - 1


@SETTINGS
@given(n=st.sampled_from([0, -1, 2.5, math.nan, True]))
def test_the_coupling_refuses_sizes_that_are_not_positive_integers(n):
    with pytest.raises(ValueError, match="out of range; expected an integer >= 1"):
        quantile_coupling(n, 3)


@SETTINGS
@given(x=samples, temperature=st.floats(1e-2, 100.0), seed=st.integers(0, 2**16))
def test_soft_sort_is_order_free_and_within_the_sample_range(x, temperature, seed):
    out = soft_sort(x, temperature)
    permuted = soft_sort(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))], temperature)
    torch.testing.assert_close(permuted, out)
    assert bool((out >= x.min() - 1e-9).all() and (out <= x.max() + 1e-9).all())


@SETTINGS
@given(v=samples, shift=st.floats(0.0, 10.0), n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_diagnostics_are_bounded_and_zero_under_dominance(v, shift, n, seed):
    generator = torch.Generator().manual_seed(seed)
    u = v[torch.randint(len(v), (n,), generator=generator)]  # any sample
    report = dominance_diagnostics(u, v)
    assert 0.0 <= report["violation_fraction"] <= 1.0 and report["ot_violation"] >= 0.0
    dominated = dominance_diagnostics(v + shift, v)  # shifting up dominates in the first order
    assert dominated["violation_fraction"] == 0.0 and dominated["ot_violation"] == 0.0
