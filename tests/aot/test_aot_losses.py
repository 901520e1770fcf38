"""The AOT loss against independent oracles: TRL's own code, a linear-programming OT solver, numpy quantiles."""

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from trl import DPOTrainer

from hf_ext.aot.losses import (
    COSTS,
    aot_paired_loss,
    aot_unpaired_loss,
    dominance_diagnostics,
    quantile_coupling,
    quantile_ot_loss,
    soft_sort,
)


# ---------------------------------------------------------------------------------------------- TRL's own loss


class _Identity:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def trl_loss(loss_type, chosen, rejected, ref_chosen, ref_rejected, *, beta, label_smoothing=0.0):
    """Run TRL 1.16's `DPOTrainer._compute_loss` itself on log-probabilities we choose.

    A stand-in model returns per-token log-probs of one completion token per sequence, so the summed sequence
    log-probs are `chosen` and `rejected`; the reference log-probs come in as precomputed columns.
    """
    n = chosen.shape[0]
    log_probs = torch.cat([chosen, rejected]).unsqueeze(1)
    outputs = SimpleNamespace(
        log_probs=log_probs,
        entropy=torch.zeros(2 * n, 1),
        mean_logits=torch.zeros(2 * n, 1),
        is_top1=torch.zeros(2 * n, 1, dtype=torch.bool),
    )
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Identity(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(),
    )
    inputs = {
        "input_ids": torch.zeros(2 * n, 2, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * (2 * n)),
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, False)


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _logps(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return [-20 + 8 * torch.randn(n, generator=generator) for _ in range(4)]


@pytest.mark.parametrize(("beta", "label_smoothing"), [(0.01, 0.0), (0.1, 0.0), (1.0, 0.2)])
@pytest.mark.parametrize("n", [1, 5, 16])
def test_paired_matches_trl_aot(n, beta, label_smoothing):
    values = _logps(n, seed=n)
    ours = _leaves(*values)
    theirs = _leaves(*values)
    loss = aot_paired_loss(*ours, beta=beta, label_smoothing=label_smoothing)
    expected = trl_loss("aot", *theirs, beta=beta, label_smoothing=label_smoothing)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    loss.backward()
    expected.backward()
    for mine, trl in zip(ours[:2], theirs[:2]):
        torch.testing.assert_close(mine.grad, trl.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("beta", "label_smoothing"), [(0.01, 0.0), (0.5, 0.1)])
@pytest.mark.parametrize("n", [1, 7, 16])
def test_unpaired_on_paired_batch_matches_trl_aot_unpaired(n, beta, label_smoothing):
    values = _logps(n, seed=100 + n)
    ours = _leaves(*values)
    theirs = _leaves(*values)
    chosen, rejected, ref_chosen, ref_rejected = ours
    labels = torch.arange(2 * n) < n
    loss = aot_unpaired_loss(
        torch.cat([chosen, rejected]),
        torch.cat([ref_chosen, ref_rejected]),
        labels,
        beta=beta,
        label_smoothing=label_smoothing,
    )
    expected = trl_loss("aot_unpaired", *theirs, beta=beta, label_smoothing=label_smoothing)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    loss.backward()
    expected.backward()
    for mine, trl in zip(ours[:2], theirs[:2]):
        torch.testing.assert_close(mine.grad, trl.grad, atol=1e-6, rtol=0)


def test_batch_of_one_is_dpo_sigmoid():
    for seed in range(5):
        values = _logps(1, seed=seed)
        loss = aot_paired_loss(*values, beta=0.1)
        torch.testing.assert_close(loss, trl_loss("sigmoid", *values, beta=0.1), atol=1e-6, rtol=0)
        chosen, rejected, ref_chosen, ref_rejected = values
        dpo = -torch.nn.functional.logsigmoid(0.1 * ((chosen - rejected) - (ref_chosen - ref_rejected))).squeeze()
        torch.testing.assert_close(loss, dpo, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- invariances


def test_unpaired_loss_is_invariant_to_permuting_each_side():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(9, generator=generator), torch.randn(4, generator=generator)
    for cost in COSTS:
        base = quantile_ot_loss(u, v, cost=cost, beta=0.7, margin=0.3)
        for _ in range(5):
            permuted = quantile_ot_loss(
                u[torch.randperm(9, generator=generator)],
                v[torch.randperm(4, generator=generator)],
                cost=cost,
                beta=0.7,
                margin=0.3,
            )
            torch.testing.assert_close(permuted, base, atol=1e-7, rtol=0)


def test_paired_loss_depends_on_the_pairing():
    chosen = torch.tensor([0.0, 10.0, 3.0, -2.0])
    rejected = torch.tensor([1.0, -4.0, 2.0, 0.5])
    ref_chosen, ref_rejected = torch.zeros(4), torch.zeros(4)
    base = aot_paired_loss(chosen, rejected, ref_chosen, ref_rejected, beta=1.0)
    repaired = aot_paired_loss(chosen, rejected[[1, 0, 3, 2]], ref_chosen, ref_rejected, beta=1.0)
    assert abs(base.item() - repaired.item()) > 1e-3
    # ... while reordering whole pairs changes nothing.
    order = torch.tensor([2, 0, 3, 1])
    reordered = aot_paired_loss(chosen[order], rejected[order], ref_chosen, ref_rejected, beta=1.0)
    torch.testing.assert_close(reordered, base)


# ---------------------------------------------------------------------------------------------- exact OT


def _h(x, cost, beta, margin, eps=0.0):
    s = beta * x - margin
    if cost == "logistic":
        return (1 - eps) * np.logaddexp(0.0, -s) + eps * np.logaddexp(0.0, s)
    if cost == "hinge":
        return np.maximum(0.0, -s)
    if cost == "squared_hinge":
        return np.maximum(0.0, -s) ** 2
    return s**2


def lp_transport_cost(u, v, cost_fn):
    """min over couplings π of Σ π_ij c(u_i, v_j), with marginals 1/n and 1/m, by linear programming."""
    n, m = len(u), len(v)
    costs = cost_fn(u[:, None] - v[None, :]).ravel()
    rows = np.kron(np.eye(n), np.ones(m))
    cols = np.kron(np.ones(n), np.eye(m))
    constraints = np.vstack([rows, cols])
    marginals = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
    result = linprog(costs, A_eq=constraints, b_eq=marginals, bounds=(0, None), method="highs")
    assert result.status == 0
    return result.fun


@pytest.mark.parametrize(("n", "m"), [(5, 3), (7, 4), (1, 6), (6, 1), (8, 8), (12, 5)])
def test_least_squares_is_squared_w2_for_any_sizes(n, m):
    rng = np.random.default_rng(n * 31 + m)
    u, v = rng.normal(size=n) * 2, rng.normal(0.5, 1.0, size=m)
    w2_squared = lp_transport_cost(u, v, lambda d: d**2)
    loss = quantile_ot_loss(torch.tensor(u), torch.tensor(v), cost="least_squares", beta=1.0, margin=0.0)
    assert loss.item() == pytest.approx(w2_squared, abs=1e-9)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize(("n", "m"), [(6, 4), (3, 7)])
def test_every_cost_equals_the_optimal_transport_cost(cost, n, m):
    # h(u - v) is convex in u - v for every cost, so the sorted (monotone) coupling is an optimal plan.
    rng = np.random.default_rng(7 * n + m)
    u, v = rng.normal(size=n) * 3, rng.normal(size=m) * 3
    beta, margin, eps = 0.8, 0.4, (0.15 if cost == "logistic" else 0.0)
    expected = lp_transport_cost(u, v, lambda d: _h(d, cost, beta, margin, eps))
    loss = quantile_ot_loss(torch.tensor(u), torch.tensor(v), cost=cost, beta=beta, margin=margin, label_smoothing=eps)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("n", "m"), [(5, 3), (4, 6), (9, 9), (1, 1), (10, 4)])
def test_quantile_coupling_is_a_transport_plan(n, m):
    index_u, index_v, weight = quantile_coupling(n, m, dtype=torch.float64)
    assert len(weight) <= n + m - 1 and bool((weight > 0).all())
    assert weight.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(
        torch.zeros(n, dtype=torch.float64).index_add(0, index_u, weight), torch.full((n,), 1 / n, dtype=torch.float64)
    )
    torch.testing.assert_close(
        torch.zeros(m, dtype=torch.float64).index_add(0, index_v, weight), torch.full((m,), 1 / m, dtype=torch.float64)
    )
    # monotone: both indices never decrease, so the plan matches sorted samples
    assert bool((index_u.diff() >= 0).all()) and bool((index_v.diff() >= 0).all())


def test_gradients_of_unequal_sizes_match_finite_differences():
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(7, generator=generator, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
    for cost in COSTS:
        assert torch.autograd.gradcheck(
            lambda a, b, cost=cost: quantile_ot_loss(a, b, cost=cost, beta=1.3, margin=0.2), (u, v)
        )


def test_an_empty_side_gives_a_zero_loss_with_zero_gradient():
    u = torch.randn(5, requires_grad=True)
    for loss in (quantile_ot_loss(u, torch.zeros(0)), quantile_ot_loss(torch.zeros(0), u)):
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, u)
        assert torch.equal(grad, torch.zeros(5))
    labels = torch.ones(5, dtype=torch.bool)
    assert aot_unpaired_loss(u, torch.zeros(5), labels).item() == 0.0
    assert dominance_diagnostics(u, torch.zeros(0)) == {}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="cost='cubic'"):
        quantile_ot_loss(torch.zeros(2), torch.zeros(2), cost="cubic")
    with pytest.raises(ValueError, match="label_smoothing=0.1 only applies to cost='logistic'"):
        quantile_ot_loss(torch.zeros(2), torch.zeros(2), cost="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"u must be a 1-D tensor.*\(2, 2\)"):
        quantile_ot_loss(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        aot_unpaired_loss(torch.zeros(3), torch.zeros(3), torch.ones(2, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- soft sort


def test_soft_sort_tends_to_the_hard_sort_and_is_permutation_invariant():
    x = torch.tensor([0.3, -1.2, 2.5, 0.9, -0.4, 1.7], dtype=torch.float64)
    torch.testing.assert_close(soft_sort(x, 1e-3), torch.sort(x).values)
    relaxed = soft_sort(x, 0.5)
    assert not torch.allclose(relaxed, torch.sort(x).values, atol=1e-3)
    torch.testing.assert_close(soft_sort(x[torch.tensor([3, 1, 5, 0, 4, 2])], 0.5), relaxed)
    # a very high temperature averages everything
    torch.testing.assert_close(soft_sort(x, 1e6), torch.full_like(x, x.mean().item()), atol=1e-4, rtol=0)


def test_soft_sort_loss_spreads_the_gradient():
    u = torch.tensor([0.0, 1.0, 2.0, 3.0], requires_grad=True)
    v = torch.tensor([5.0, -0.5, 0.5, 1.5])
    hard = torch.autograd.grad(quantile_ot_loss(u, v, cost="hinge", beta=1.0), u)[0]
    soft = torch.autograd.grad(quantile_ot_loss(u, v, cost="hinge", beta=1.0, soft_sort_temperature=2.0), u)[0]
    # The hard sort only violates at the top quantile: one sample gets all the gradient; the soft sort spreads it.
    assert int((hard != 0).sum()) == 1 and int((soft.abs() > 1e-4).sum()) == 4
    near = quantile_ot_loss(u, v, cost="hinge", beta=1.0, soft_sort_temperature=1e-4)
    torch.testing.assert_close(near, quantile_ot_loss(u, v, cost="hinge", beta=1.0))


# ---------------------------------------------------------------------------------------------- diagnostics


@pytest.mark.parametrize(("n", "m"), [(7, 5), (10, 10), (3, 8)])
def test_dominance_diagnostics_against_numpy_quantiles(n, m):
    rng = np.random.default_rng(n + 10 * m)
    u, v = rng.normal(0.2, 1.0, size=n), rng.normal(size=m)
    grid = (np.arange(n * m * 20) + 0.5) / (n * m * 20)  # the step functions are constant between grid points
    q_u = np.quantile(u, grid, method="inverted_cdf")
    q_v = np.quantile(v, grid, method="inverted_cdf")
    result = dominance_diagnostics(torch.tensor(u), torch.tensor(v))
    assert result["violation_fraction"] == pytest.approx(np.mean(q_u < q_v), abs=1e-12)
    assert result["ot_violation"] == pytest.approx(np.mean(np.maximum(q_v - q_u, 0)), abs=1e-12)
    for t in (0.1, 0.5, 0.9):
        gap = np.quantile(u, t, method="inverted_cdf") - np.quantile(v, t, method="inverted_cdf")
        assert result[f"quantile_gap_{round(100 * t)}"] == pytest.approx(gap, abs=1e-12)


def test_dominance_diagnostics_of_a_dominating_sample():
    v = torch.randn(6, generator=torch.Generator().manual_seed(1))
    result = dominance_diagnostics(v + 0.5, v)
    assert result["violation_fraction"] == 0.0 and result["ot_violation"] == 0.0
    assert result["quantile_gap_50"] == pytest.approx(0.5)
    flipped = dominance_diagnostics(v, v + 0.5)
    assert flipped["violation_fraction"] == pytest.approx(1.0) and flipped["ot_violation"] == pytest.approx(0.5)
