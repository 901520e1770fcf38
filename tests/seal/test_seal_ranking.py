import math

import pytest
import torch

from hf_ext.seal.ranking import (
    auroc,
    cycling_indices,
    example_weights,
    initial_logits,
    ranker_objective,
    sequence_losses,
    top_k_mask,
    upper_level_weight,
)


def test_weights_average_one_at_uniform_logits():
    for weighting in ("softmax", "sigmoid"):
        w = example_weights(initial_logits(7, weighting), weighting)
        assert torch.allclose(w, torch.ones(7))
    logits = torch.tensor([0.3, -1.0, 2.0])
    assert torch.isclose(example_weights(logits, "softmax").sum(), torch.tensor(3.0))
    assert torch.allclose(example_weights(logits, "sigmoid"), 2 / (1 + torch.exp(-logits)))


def test_softmax_ranker_gradient_matches_the_closed_form():
    torch.manual_seed(0)
    n = 6
    logits = torch.randn(n, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([4, 1, 2])
    losses = torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    ranker_objective(logits, indices, losses, "softmax").backward()
    # d/dω_j (1/B) Σ_{i∈B} N s_i ℓ_i = (N/B) s_j (ℓ_j [j∈B] - Σ_{i∈B} s_i ℓ_i)
    s = torch.softmax(logits.detach(), 0)
    batch_term = (s[indices] * losses).sum()
    expected = torch.zeros(n, dtype=torch.float64)
    for j in range(n):
        own = losses[(indices == j).nonzero()[0, 0]] if j in indices.tolist() else 0.0
        expected[j] = n / 3 * s[j] * (own - batch_term)
    assert torch.allclose(logits.grad, expected)
    # The highest-loss example gets the largest positive gradient: gradient descent lowers its score most.
    assert int(logits.grad.argmax()) == 4


def test_sigmoid_gradients_all_share_one_sign():
    # Why sigmoid + Adam ranks at random: every in-batch gradient is positive, so Adam steps each logit by ~lr.
    logits = torch.zeros(5, requires_grad=True)
    ranker_objective(logits, torch.tensor([0, 1, 2]), torch.tensor([0.1, 5.0, 1.0]), "sigmoid").backward()
    assert (logits.grad[:3] > 0).all() and (logits.grad[3:] == 0).all()


def test_excess_loss_reference_cancels_the_signal():
    logits = torch.zeros(4, requires_grad=True)
    losses = torch.tensor([2.0, 1.0])
    objective = ranker_objective(logits, torch.tensor([0, 3]), losses, "softmax", reference_losses=losses.clone())
    objective.backward()
    assert objective.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_upper_level_weight_schedule():
    assert upper_level_weight(1.0, 0.3, 0.0) == 1.0
    assert upper_level_weight(1.0, 0.3, 0.99) == 1.0
    assert upper_level_weight(1.0, 0.3, 1.0) == pytest.approx(0.7)
    assert upper_level_weight(1.0, 0.3, 2.5) == pytest.approx(0.4)
    assert upper_level_weight(1.0, 0.3, 7.0) == 0.0


def test_sequence_losses_against_a_token_loop():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]])
    losses, counts = sequence_losses(logits, ids, mask)
    for b in range(2):
        terms = [-torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]] for t in range(1, 5) if mask[b, t] == 1]
        assert counts[b] == len(terms)
        assert losses[b].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    empty, count = sequence_losses(logits[:1], ids[:1], torch.zeros(1, 5, dtype=torch.long))
    assert count.item() == 0 and empty.item() == 0.0


def test_cycling_indices_is_a_stream_of_permutations():
    stream = cycling_indices(5, 0, 23, seed=3)
    for start in range(0, 20, 5):
        assert sorted(stream[start : start + 5]) == list(range(5))
    # Resuming at any position continues the same stream.
    assert cycling_indices(5, 7, 9, seed=3) == stream[7:16]
    assert cycling_indices(5, 0, 10, seed=4) != stream[:10]
    with pytest.raises(ValueError, match="num_examples=0"):
        cycling_indices(0, 0, 1)


def test_top_k_mask_breaks_ties_by_position():
    scores = torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0])
    assert top_k_mask(scores, 3).tolist() == [True, True, False, True, False]
    assert top_k_mask(scores, 0).sum() == 0 and top_k_mask(scores, 5).all()
    with pytest.raises(ValueError, match="k=6"):
        top_k_mask(scores, 6)


def test_auroc_against_pair_counting():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 6, (17,), generator=gen).float()
    neg = torch.randint(0, 6, (13,), generator=gen).float()
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos.tolist() for n in neg.tolist())
    assert auroc(pos, neg) == pytest.approx(pairs / (17 * 13))
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0 and auroc([0.0], [1.0]) == 0.0
    assert math.isclose(auroc([1.0], [1.0]), 0.5)
