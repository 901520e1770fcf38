"""Property tests of SASA's math (issue 18, item 7): the LDA fit, the margins, their separability and the sampling
reweighting are never a silent NaN; mismatched shapes are named; the invariants the method rests on hold."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hf_ext.sasa.evaluation import detox_metrics
from hf_ext.sasa.lda import fit_lda, ledoit_wolf_shrinkage, linear_margin, pooled_covariance, separability
from hf_ext.sasa.sampling import candidate_set, nucleus_mask, tilt_scores


FEW = settings(max_examples=25, deadline=None)
finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False, width=32)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def two_classes(draw, max_dim=6):
    dim = draw(st.integers(1, max_dim))
    n_d, n_u = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    assume(n_d + n_u >= 3)
    x_d = torch.from_numpy(draw(arrays(np.float32, (n_d, dim), elements=finite)))
    x_u = torch.from_numpy(draw(arrays(np.float32, (n_u, dim), elements=finite)))
    return x_d, x_u


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor.view(-1)[index % tensor.numel()] = value
    return tensor


@FEW
@given(classes=two_classes(), bad=non_finite, index=st.integers(0, 100), which=st.sampled_from([0, 1]))
def test_lda_refuses_non_finite_empty_or_mismatched_embeddings(classes, bad, index, which):
    x = list(classes)
    x[which] = _with(x[which], index, bad)
    name = ("x_desired", "x_undesired")[which]
    for call in (lambda: fit_lda(*x), lambda: pooled_covariance(*x)):
        with pytest.raises(ValueError, match=rf"{name} contains NaN or infinite values"):
            call()
    with pytest.raises(ValueError, match="centered contains NaN or infinite values"):
        ledoit_wolf_shrinkage(x[which])
    x_d, x_u = classes
    with pytest.raises(ValueError, match=r"x_undesired is empty \(shape \(0, \d+\)\)"):
        fit_lda(x_d, x_u[:0])
    with pytest.raises(ValueError, match=rf"x_desired has hidden size {x_d.shape[1]} but x_undesired has"):
        fit_lda(x_d, torch.cat([x_u, x_u[:, :1]], dim=1))


@FEW
@given(classes=two_classes(), shrinkage=st.floats(0.05, 1.0), balanced=st.booleans())
def test_the_discriminant_puts_each_class_mean_on_its_side(classes, shrinkage, balanced):
    x_d, x_u = classes
    assume(float((x_d.double().mean(0) - x_u.double().mean(0)).norm()) > 1e-2)
    covariance = pooled_covariance(x_d, x_u, balanced=balanced)
    if float(torch.trace(covariance)) == 0:  # documented: identical embeddings within each class
        with pytest.raises(ValueError, match="within-class covariance is zero"):
            fit_lda(x_d, x_u, shrinkage=shrinkage, balanced=balanced)
        return
    fitted = fit_lda(x_d, x_u, shrinkage=shrinkage, balanced=balanced)
    assert float(fitted.direction.norm()) == pytest.approx(1.0, abs=1e-5)
    # w ∝ Σ⁻¹ (μ_d − μ_u) with Σ positive definite: m(μ_d) = −m(μ_u) = wᵀ(μ_d − μ_u) / 2 > 0
    m_d = float(linear_margin(fitted.mean_desired, fitted.direction, fitted.midpoint))
    m_u = float(linear_margin(fitted.mean_undesired, fitted.direction, fitted.midpoint))
    assert m_d > 0 > m_u and m_d == pytest.approx(-m_u, rel=1e-3, abs=1e-5)
    torch.testing.assert_close(covariance, covariance.T)
    assert float(torch.linalg.eigvalsh(covariance).min()) >= -1e-6 * (1 + float(covariance.abs().max()))
    assert 0.0 <= ledoit_wolf_shrinkage(torch.cat([x_d - x_d.mean(0), x_u - x_u.mean(0)])) <= 1.0


@FEW
@given(
    dim=st.integers(1, 6),
    rows=st.integers(1, 5),
    step=st.floats(-5, 5),
    bad=non_finite,
    data=st.data(),
)
def test_margins_are_signed_distances_and_refuse_non_finite_states(dim, rows, step, bad, data):
    direction = torch.from_numpy(data.draw(arrays(np.float32, (dim,), elements=finite)))
    assume(float(direction.norm()) > 1e-2)
    direction = direction / direction.norm()
    midpoint = torch.from_numpy(data.draw(arrays(np.float32, (dim,), elements=finite)))
    hidden = torch.from_numpy(data.draw(arrays(np.float32, (rows, dim), elements=finite)))
    moved = linear_margin(hidden + step * direction, direction, midpoint)
    torch.testing.assert_close(moved, linear_margin(hidden, direction, midpoint) + step, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match=r"hidden states hold 1 NaN or infinite value\(s\)"):
        linear_margin(_with(hidden, data.draw(st.integers(0, 100)), bad), direction, midpoint)
    with pytest.raises(ValueError, match=rf"hidden states of shape \({rows}, {dim + 1}\) do not fit a direction"):
        linear_margin(torch.zeros(rows, dim + 1), direction, midpoint)


@FEW
@given(
    desired=st.lists(finite, min_size=1, max_size=10),
    undesired=st.lists(finite, min_size=1, max_size=10),
    bad=non_finite,
)
def test_separability_is_a_ranking_probability_or_an_error(desired, undesired, bad):
    md, mu = torch.tensor(desired), torch.tensor(undesired)
    result = separability(md, mu)
    assert 0.0 <= result.auc <= 1.0 and 0.0 <= result.balanced_accuracy <= 1.0
    assert result.auc + separability(mu, md).auc == pytest.approx(1.0)
    assert separability(mu.max() + 1 + md - md.min(), mu).auc == 1.0  # every desired margin above every undesired
    with pytest.raises(ValueError, match=r"margins_undesired holds 1 NaN or infinite value\(s\)"):
        separability(md, torch.cat([mu, torch.tensor([bad])]))
    with pytest.raises(ValueError, match="at least one margin per class"):
        separability(md, mu[:0])


@st.composite
def step_inputs(draw):
    batch, vocab = draw(st.integers(1, 3)), draw(st.integers(2, 12))
    scores = torch.from_numpy(draw(arrays(np.float32, (batch, vocab), elements=finite)))
    top_p = draw(st.floats(0.05, 1.0))
    max_candidates = draw(st.one_of(st.none(), st.integers(1, vocab)))
    candidate_ids, valid = candidate_set(scores, top_p=top_p, max_candidates=max_candidates)
    margins = torch.from_numpy(draw(arrays(np.float32, tuple(candidate_ids.shape), elements=finite)))
    return scores, top_p, candidate_ids, valid, margins


@FEW
@given(inputs=step_inputs(), beta=st.floats(0.0, 20.0), normalize=st.sampled_from(["softmax", "none"]))
def test_the_reweighting_shifts_only_the_candidates(inputs, beta, normalize):
    scores, top_p, candidate_ids, valid, margins = inputs
    nucleus = nucleus_mask(scores, top_p)
    assert bool(valid.any(-1).all())  # every row keeps at least one candidate
    assert bool(nucleus.gather(1, candidate_ids)[valid].all())  # candidates come from the nucleus
    tilted, shift = tilt_scores(scores, candidate_ids, valid, margins, beta, normalize=normalize)
    kept = torch.isfinite(tilted)
    assert int(kept.sum()) == int(valid.sum())  # everything else is filtered
    if normalize == "softmax":  # the shifts of a row are beta times a distribution over its candidates
        torch.testing.assert_close(shift.sum(-1), torch.full((scores.shape[0],), beta), atol=1e-4, rtol=1e-5)
    unchanged, _ = tilt_scores(scores, candidate_ids, valid, margins, 0.0, normalize=normalize)
    assert torch.equal(unchanged.gather(1, candidate_ids)[valid], scores.gather(1, candidate_ids)[valid])


@FEW
@given(inputs=step_inputs(), bad=non_finite, index=st.integers(0, 100))
def test_the_reweighting_refuses_nan_scores_margins_and_mismatched_shapes(inputs, bad, index):
    scores, top_p, candidate_ids, valid, margins = inputs
    if bad != -math.inf:  # -inf marks a token an earlier processor filtered out
        with pytest.raises(ValueError, match=r"scores hold 1 NaN or \+inf value\(s\)"):
            candidate_set(_with(scores, index, bad), top_p=top_p)
    broken = margins.clone()
    broken[valid.nonzero()[index % int(valid.sum())].unbind()] = bad
    with pytest.raises(ValueError, match=r"1 candidate margin\(s\) are NaN or infinite"):
        tilt_scores(scores, candidate_ids, valid, broken, 1.0)
    with pytest.raises(ValueError, match="candidate_ids, valid, margins .* alike"):
        tilt_scores(scores, candidate_ids, valid, margins[:, :0], 1.0)
    with pytest.raises(ValueError, match="beta=-1.0 is out of range"):
        tilt_scores(scores, candidate_ids, valid, margins, -1.0)
    with pytest.raises(ValueError, match=r"scores must be a \(batch, vocab\) tensor"):
        candidate_set(scores[0])


@FEW
@given(
    toxicity=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)), elements=st.floats(0, 1)),
    bad=st.one_of(non_finite, st.floats(1.0001, 100), st.floats(-100, -0.0001)),
    index=st.integers(0, 100),
    threshold=st.floats(0, 1),
)
def test_detox_metrics_are_rates_of_probabilities_or_an_error(toxicity, bad, index, threshold):
    metrics = detox_metrics(toxicity, np.ones_like(toxicity), threshold)
    assert 0 <= metrics["toxic_rate"] <= 1 and 0 <= metrics["expected_max_toxicity"] <= 1
    broken = toxicity.copy()
    broken.flat[index % broken.size] = bad
    with pytest.raises(ValueError, match=r"toxicity holds 1 of \d+ scores outside \[0, 1\]"):
        detox_metrics(broken, np.ones_like(broken), threshold)
    with pytest.raises(ValueError, match=r"perplexity has shape .* but toxicity"):
        detox_metrics(toxicity, np.ones(toxicity.size + 1), threshold)
