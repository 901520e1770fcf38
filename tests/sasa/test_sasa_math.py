"""The pure math: LDA with Ledoit–Wolf shrinkage, the nucleus candidate set and the tilt, against independent oracles."""

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from hf_ext.sasa.lda import fit_lda, ledoit_wolf_shrinkage, linear_margin, pooled_covariance
from hf_ext.sasa.sampling import candidate_set, nucleus_mask, tilt_scores


def _gaussian_classes(n_d, n_u, dim, seed=0, separation=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.1 * np.eye(dim)
    mu_u = rng.normal(size=dim)
    mu_d = mu_u + separation * rng.normal(size=dim)
    chol = np.linalg.cholesky(cov)
    x_d = mu_d + rng.normal(size=(n_d, dim)) @ chol.T
    x_u = mu_u + rng.normal(size=(n_u, dim)) @ chol.T
    return torch.tensor(x_d), torch.tensor(x_u), cov, mu_d, mu_u


def _ledoit_wolf_oracle(x):
    """Ledoit & Wolf (2004), written out from the paper's element-wise definitions (float64 numpy)."""
    n, p = x.shape
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2)
    b2 = sum(np.sum((np.outer(xk, xk) - s) ** 2) for xk in x) / n**2
    return min(b2, d2) / d2


def test_ledoit_wolf_matches_the_paper_formula():
    x_d, x_u, *_ = _gaussian_classes(30, 25, 12, seed=1)
    centered = torch.cat([x_d - x_d.mean(0), x_u - x_u.mean(0)])
    expected = _ledoit_wolf_oracle(centered.numpy())
    assert 0 < expected < 1
    assert ledoit_wolf_shrinkage(centered) == pytest.approx(expected, rel=1e-10)


def test_ledoit_wolf_matches_sklearn():
    covariance = pytest.importorskip("sklearn.covariance")
    x_d, x_u, *_ = _gaussian_classes(20, 15, 40, seed=2)  # n < d: the regime of real probes
    centered = torch.cat([x_d - x_d.mean(0), x_u - x_u.mean(0)])
    _, expected = covariance.ledoit_wolf(centered.numpy(), assume_centered=True)
    assert ledoit_wolf_shrinkage(centered) == pytest.approx(expected, rel=1e-9)


def test_unshrunk_direction_equals_the_reference_pseudo_inverse_formula():
    # IBM/AISteer360's LinearProbeEstimator: w = F D^-1 F^T (mu_1 - mu_2) / 2 over the SVD of the pooled covariance,
    # normalised; midpoint (mu_1 + mu_2) / 2. With a full-rank covariance and no shrinkage the two must agree.
    x_d, x_u, *_ = _gaussian_classes(200, 150, 8, seed=3)
    fit = fit_lda(x_d, x_u, shrinkage=0.0)
    xd, xu = x_d.numpy(), x_u.numpy()
    cov = (np.cov(xd.T) * (len(xd) - 1) + np.cov(xu.T) * (len(xu) - 1)) / (len(xd) + len(xu) - 2)
    f, d, _ = np.linalg.svd(cov)
    w = f @ np.diag(1 / d) @ f.T @ ((xd.mean(0) - xu.mean(0)) / 2)
    w /= np.linalg.norm(w)
    np.testing.assert_allclose(fit.direction.numpy(), w, atol=1e-6)
    np.testing.assert_allclose(fit.midpoint.numpy(), (xd.mean(0) + xu.mean(0)) / 2, atol=1e-6)
    np.testing.assert_allclose(pooled_covariance(x_d, x_u).numpy(), cov, atol=1e-10)


def test_direction_recovers_the_bayes_optimal_boundary():
    x_d, x_u, cov, mu_d, mu_u = _gaussian_classes(20000, 20000, 6, seed=4)
    fit = fit_lda(x_d, x_u)  # Ledoit-Wolf shrinks next to nothing with this much data
    w = np.linalg.solve(cov, mu_d - mu_u)
    w /= np.linalg.norm(w)
    assert float(np.dot(fit.direction.numpy(), w)) > 0.999
    assert fit.shrinkage < 0.01


def test_margin_sign_symmetry_and_invariances():
    x_d, x_u, *_ = _gaussian_classes(60, 40, 10, seed=5)
    fit = fit_lda(x_d, x_u)
    assert float(torch.linalg.vector_norm(fit.direction)) == pytest.approx(1.0, abs=1e-6)
    m_d = linear_margin(fit.mean_desired, fit.direction, fit.midpoint)
    m_u = linear_margin(fit.mean_undesired, fit.direction, fit.midpoint)
    assert m_d > 0 and m_u == pytest.approx(-float(m_d), rel=1e-5)
    # Translating all data moves the midpoint, not the direction, and keeps every margin.
    shift = torch.randn(10, dtype=torch.float64) * 5
    moved = fit_lda(x_d + shift, x_u + shift)
    torch.testing.assert_close(moved.direction, fit.direction, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        linear_margin(x_d + shift, moved.direction, moved.midpoint),
        linear_margin(x_d, fit.direction, fit.midpoint),
        atol=1e-4,
        rtol=0,
    )
    # Swapping the classes flips the direction.
    swapped = fit_lda(x_u, x_d)
    torch.testing.assert_close(swapped.direction, -fit.direction, atol=1e-6, rtol=0)


def test_margin_runs_in_float32_for_half_precision_states():
    fit = fit_lda(*_gaussian_classes(30, 30, 8, seed=6)[:2])
    hidden = torch.randn(5, 8)
    expected = (hidden - fit.midpoint) @ fit.direction
    got = linear_margin(hidden.to(torch.bfloat16), fit.direction, fit.midpoint)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0.05 * float(expected.abs().max()), rtol=0)


def test_lda_bad_input():
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="x_desired has hidden size 4 but x_undesired has 3"):
        fit_lda(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"shrinkage=1.5 is out of range"):
        fit_lda(x, torch.randn(5, 4), shrinkage=1.5)
    with pytest.raises(ValueError, match="shrinkage='ledoit'"):
        fit_lda(x, torch.randn(5, 4), shrinkage="ledoit")
    with pytest.raises(ValueError, match="same mean"):
        fit_lda(x, x.clone())
    with pytest.raises(ValueError, match="singular with shrinkage=0"):
        fit_lda(torch.randn(3, 16), torch.randn(3, 16), shrinkage=0)  # 6 points in 16 dimensions
    with pytest.raises(ValueError, match="NaN"):
        fit_lda(torch.full((3, 4), float("nan")), x)
    with pytest.raises(ValueError, match="2-D"):
        fit_lda(torch.randn(4), x)


# ------------------------------------------------------------------------------------------- candidates and tilt


def _scores(batch=4, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, vocab, generator=g) * 3
    scores[0, :50] = float("-inf")  # an earlier processor filtered these
    return scores


@pytest.mark.parametrize("top_p,temperature", [(0.9, 1.0), (0.5, 0.6), (1.0, 1.3), (0.05, 1.0)])
def test_nucleus_is_the_set_transformers_warpers_keep(top_p, temperature):
    scores = _scores()
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    assert torch.equal(nucleus_mask(scores, top_p, temperature), warped > float("-inf"))


def test_candidate_set_is_the_capped_nucleus_sorted_by_score():
    scores = _scores()
    keep = nucleus_mask(scores, 0.9)
    ids, valid = candidate_set(scores, top_p=0.9, max_candidates=None)
    assert ids.shape[1] == int(keep.sum(-1).max())
    for row in range(scores.shape[0]):
        assert set(ids[row][valid[row]].tolist()) == set(keep[row].nonzero()[:, 0].tolist())
        vals = scores[row, ids[row][valid[row]]]
        assert torch.all(vals[:-1] >= vals[1:])
    capped, capped_valid = candidate_set(scores, top_p=0.9, max_candidates=5)
    assert capped.shape[1] == 5
    for row in range(scores.shape[0]):
        expected = torch.topk(scores[row].masked_fill(~keep[row], float("-inf")), 5)
        n = int(capped_valid[row].sum())
        assert n == min(5, int(keep[row].sum()))
        assert capped[row][:n].tolist() == expected.indices[:n].tolist()


def test_tilt_with_beta_zero_is_the_identity_bit_for_bit():
    scores = _scores()
    ids, valid = candidate_set(scores, top_p=0.8, max_candidates=20)
    margins = torch.randn(ids.shape)
    out, shift = tilt_scores(scores, ids, valid, margins, beta=0.0, filter_non_candidates=False)
    assert torch.equal(out, scores) and torch.all(shift == 0)
    out, _ = tilt_scores(scores, ids, valid, margins, beta=0.0, normalize="none", filter_non_candidates=True)
    kept = torch.zeros_like(scores, dtype=torch.bool).scatter(1, ids, valid)
    assert torch.equal(out[kept], scores[kept]) and torch.all(out[~kept] == float("-inf"))


def test_tilt_none_is_exponential_tilting_over_the_candidates():
    scores = _scores(seed=1)
    ids, valid = candidate_set(scores, top_p=0.9, max_candidates=30)
    margins = torch.randn(ids.shape, generator=torch.Generator().manual_seed(2))
    beta = 1.7
    out, _ = tilt_scores(scores, ids, valid, margins, beta=beta, normalize="none")
    probs = out.softmax(-1)
    for row in range(scores.shape[0]):
        cand = ids[row][valid[row]]
        p = scores[row, cand].softmax(-1) * torch.exp(beta * margins[row][valid[row]])
        torch.testing.assert_close(probs[row, cand], p / p.sum(), atol=1e-6, rtol=1e-5)
        assert probs[row].sum() == pytest.approx(float(probs[row, cand].sum()), abs=1e-6)


def test_tilt_softmax_shift_is_a_distribution_over_each_rows_candidates():
    scores = _scores(seed=3)
    ids, valid = candidate_set(scores, top_p=0.7, max_candidates=40)
    margins = torch.randn(ids.shape) * 4
    out, shift = tilt_scores(scores, ids, valid, margins, beta=10.0, normalize="softmax", filter_non_candidates=False)
    torch.testing.assert_close(shift.sum(-1), torch.full((scores.shape[0],), 10.0))
    assert torch.all(shift[~valid] == 0)
    for row in range(scores.shape[0]):
        m = margins[row][valid[row]]
        torch.testing.assert_close(shift[row][valid[row]], 10.0 * m.softmax(-1))
    untouched = ~torch.zeros_like(scores, dtype=torch.bool).scatter(1, ids, valid)
    assert torch.equal(out[untouched], scores[untouched])  # non-candidates unchanged without filtering
