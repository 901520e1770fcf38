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


def _old_sequence_losses(logits, input_ids, loss_mask):
    """The previous implementation: a float32 copy of the full-vocabulary logits, then `cross_entropy`."""
    shift_logits = logits[:, :-1, :].float()
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(shift_logits.dtype)
    token_losses = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    counts = mask.sum(dim=1)
    return (token_losses * mask).sum(dim=1) / counts.clamp(min=1), counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_chunked_sequence_losses_equal_the_float32_copy(dtype, chunk_size):
    generator = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(3, 7, 50, generator=generator)).to(dtype).requires_grad_()
    ids = torch.randint(0, 50, (3, 7), generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    weights = torch.tensor([0.5, 2.0, 1.0])

    losses, counts = sequence_losses(logits, ids, mask, chunk_size=chunk_size)
    (grad,) = torch.autograd.grad((weights * losses).sum(), logits)
    expected, expected_counts = _old_sequence_losses(logits, ids, mask)
    (expected_grad,) = torch.autograd.grad((weights * expected).sum(), logits)

    # Both upcast the same `dtype` values and compute in float32: only the summation order differs (~1e-7 relative).
    assert losses.dtype == torch.float32 and torch.equal(counts, expected_counts)
    torch.testing.assert_close(losses, expected, atol=1e-6, rtol=1e-6)
    # Both gradients are float32 values rounded once to `dtype`: equal to one unit in the last place of `dtype`.
    assert grad.dtype == dtype
    torch.testing.assert_close(grad.float(), expected_grad.float(), atol=1e-6, rtol=torch.finfo(dtype).eps)
    assert grad[:, -1].abs().max() == 0  # the last position predicts nothing


def test_sequence_losses_gradient_is_exact_in_float64():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 6, dtype=torch.float64, generator=generator).requires_grad_()
    ids = torch.randint(0, 6, (2, 4), generator=generator)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 1]])
    assert torch.autograd.gradcheck(lambda x: sequence_losses(x, ids, mask, chunk_size=2)[0], (logits,))


def test_sequence_losses_save_no_upcast_copy_of_the_logits():
    """What autograd keeps for the backward: the bf16 logits and per-position scalars, no float32 (B, T, V) tensor."""
    logits = torch.randn(2, 9, 1000).to(torch.bfloat16).requires_grad_()
    ids = torch.randint(0, 1000, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    for function, upcast_copies in ((sequence_losses, 0), (_old_sequence_losses, 1)):
        saved: list[torch.Tensor] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t) or t, lambda t: t):
            function(logits, ids, mask)[0].sum()
        large = [t for t in saved if t.dtype == torch.float32 and t.numel() >= 2 * 8 * 1000]
        assert len(large) >= upcast_copies and (upcast_copies or not large), function.__name__
