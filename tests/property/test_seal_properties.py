"""Property tests of SEAL's numeric entry points (`hf_ext.seal.ranking`, `hf_ext.seal.baselines`, `SEALScores`):
finite inputs give bounded, invariant results; NaN / inf / empty / mismatched shapes are a `ValueError` (or the
documented result), never a silent number."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_ext.seal.baselines import evaluate_scores, harmful_example_aurocs
from hf_ext.seal.filtering import SEALScores
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


SETTINGS = settings(max_examples=30, deadline=None)
finite = st.floats(-20, 20, allow_nan=False, allow_infinity=False, width=32)
vectors = st.lists(finite, min_size=1, max_size=16).map(lambda xs: torch.tensor(xs))
weightings = st.sampled_from(["softmax", "sigmoid"])
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@SETTINGS
@given(logits=vectors, weighting=weightings)
def test_weights_are_positive_bounded_and_average_one_at_uniform_logits(logits, weighting):
    weights = example_weights(logits, weighting)
    assert weights.shape == logits.shape and bool((weights >= 0).all())
    if weighting == "softmax":
        torch.testing.assert_close(weights.sum(), torch.tensor(float(len(logits))))
    else:
        assert bool((weights <= 2).all())
    uniform = example_weights(initial_logits(len(logits), weighting), weighting)
    torch.testing.assert_close(uniform, torch.ones(len(logits)))


@SETTINGS
@given(logits=vectors, bad=non_finite, position=st.integers(0, 15), weighting=weightings)
def test_non_finite_logits_or_losses_raise(logits, bad, position, weighting):
    poisoned = logits.clone()
    poisoned[position % len(poisoned)] = bad
    with pytest.raises(ValueError, match="logits hold NaN or infinite values"):
        example_weights(poisoned, weighting)
    indices = torch.arange(len(logits))
    with pytest.raises(ValueError, match="losses hold NaN or infinite values"):
        ranker_objective(logits, indices, poisoned, weighting)
    with pytest.raises(ValueError, match="reference_losses hold NaN or infinite values"):
        ranker_objective(logits, indices, logits.abs(), weighting, reference_losses=poisoned)


@SETTINGS
@given(logits=vectors, extra=st.integers(1, 3), weighting=weightings)
def test_mismatched_shapes_raise_and_an_empty_batch_is_a_zero_objective(logits, extra, weighting):
    indices = torch.arange(len(logits))
    with pytest.raises(ValueError, match=r"losses must have shape"):
        ranker_objective(logits, indices, torch.zeros(len(logits) + extra), weighting)
    with pytest.raises(ValueError, match=r"logits must have shape \(N,\)"):
        example_weights(logits.reshape(1, -1), weighting)
    parameter = logits.clone().requires_grad_(True)
    objective = ranker_objective(parameter, torch.zeros(0, dtype=torch.long), torch.zeros(0), weighting)
    objective.backward()
    assert objective.item() == 0.0 and torch.count_nonzero(parameter.grad) == 0


@SETTINGS
@given(batch=st.integers(1, 3), length=st.integers(2, 6), vocab=st.integers(2, 9), seed=st.integers(0, 2**16))
def test_sequence_losses_match_cross_entropy_and_refuse_bad_logits(batch, length, vocab, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=generator)
    ids = torch.randint(vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    losses, counts = sequence_losses(logits, ids, mask)
    oracle = (
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1), reduction="none")
        .view(batch, -1)
        .mean(1)
    )
    torch.testing.assert_close(losses, oracle)
    assert bool((counts == length - 1).all())
    poisoned = logits.clone()
    poisoned[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"losses hold NaN or infinite values .*\(the logits are not finite\)"):
        sequence_losses(poisoned, ids, mask)
    with pytest.raises(ValueError, match=r"logits must be \[B, T, V\] with input_ids and loss_mask \[B, T\]"):
        sequence_losses(logits, ids[:, :-1], mask)
    with pytest.raises(ValueError, match=rf"outside the {vocab} columns of the logits"):
        sequence_losses(logits, ids + vocab, mask)


@SETTINGS
@given(scores=vectors, k=st.integers(0, 16))
def test_top_k_keeps_k_best_and_refuses_nan(scores, k):
    k = min(k, len(scores))
    mask = top_k_mask(scores, k)
    assert int(mask.sum()) == k
    if 0 < k < len(scores):
        assert scores[mask].min() >= scores[~mask].max()
    with pytest.raises(ValueError, match=r"k=.* must be between 0 and the number of scores"):
        top_k_mask(scores, len(scores) + 1)
    poisoned = scores.clone()
    poisoned[0] = math.nan
    with pytest.raises(ValueError, match="scores hold NaN"):
        top_k_mask(poisoned, k)
    # ±inf is ranked, documented: seal_filter gives unscored rows -inf.
    with_inf = torch.cat([scores, torch.tensor([-math.inf])])
    assert not top_k_mask(with_inf, len(scores))[-1]


@SETTINGS
@given(positive=vectors, negative=vectors)
def test_auroc_is_a_probability_antisymmetric_and_refuses_nan_or_empty(positive, negative):
    value = auroc(positive, negative)
    assert 0.0 <= value <= 1.0
    assert auroc(negative, positive) == pytest.approx(1.0 - value)
    with pytest.raises(ValueError, match="auroc got NaN scores"):
        auroc(torch.cat([positive, torch.tensor([math.nan])]), negative)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        auroc(positive, torch.zeros(0))
    harmful = torch.arange(len(positive) + len(negative)) >= len(positive)
    scores = torch.cat([positive, negative])
    assert evaluate_scores(scores, harmful)[0] == pytest.approx(value)
    assert sum(harmful_example_aurocs(scores, harmful)) / len(negative) == pytest.approx(value)
    with pytest.raises(ValueError, match="scores but .* harmful flags"):
        evaluate_scores(scores, harmful[:-1])


@SETTINGS
@given(
    start=st.floats(0, 1),
    decay=st.floats(0, 1),
    epoch=st.floats(0, 100),
    bad=st.sampled_from([("start", math.nan), ("start", 1.5), ("decay", -0.1), ("epoch", -1.0), ("epoch", math.inf)]),
)
def test_upper_level_weight_stays_in_unit_interval_and_refuses_bad_arguments(start, decay, epoch, bad):
    assert 0.0 <= upper_level_weight(start, decay, epoch) <= 1.0
    arguments = {"start": start, "decay": decay, "epoch": epoch, bad[0]: bad[1]}
    with pytest.raises(ValueError, match=rf"{bad[0]}=.* is out of range"):
        upper_level_weight(**arguments)


@SETTINGS
@given(n=st.integers(1, 12), start=st.integers(0, 30), seed=st.integers(0, 100))
def test_cycling_indices_visit_every_example_once_per_cycle(n, start, seed):
    cycle = cycling_indices(n, (start // n) * n, n, seed)
    assert sorted(cycle) == list(range(n))
    assert cycling_indices(n, start, 5, seed) == cycling_indices(n, 0, start + 5, seed)[start:]
    for bad in ({"num_examples": 0}, {"start": -1}, {"count": -2}, {"num_examples": 2.5}):
        arguments = {"num_examples": n, "start": start, "count": 3, **bad}
        with pytest.raises(ValueError, match="is out of range"):
            cycling_indices(**arguments, seed=seed)


@SETTINGS
@given(values=vectors, bad=non_finite)
def test_scores_refuse_non_finite_values_and_empty_sets(values, bad):
    hashes = [f"{i:032x}" for i in range(len(values))]
    scores = SEALScores(hashes, values, hash_fields=("text",))
    assert sorted(scores.ranks.tolist()) == list(range(len(values)))
    poisoned = values.clone()
    poisoned[-1] = bad
    with pytest.raises(ValueError, match="Every score must be finite"):
        SEALScores(hashes, poisoned, hash_fields=("text",))
    with pytest.raises(ValueError, match="at least one scored example"):
        SEALScores([], [], hash_fields=("text",))
    with pytest.raises(ValueError, match="hashes but"):
        SEALScores(hashes, torch.cat([values, values]), hash_fields=("text",))
