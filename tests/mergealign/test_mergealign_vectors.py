"""The tensor math of MergeAlign and the choice of alpha, against independent oracles (float64 numpy, brute force)."""

import itertools
import math

import numpy as np
import pytest
import torch

from hf_ext.mergealign.pareto import meets_floor, pareto_front, select_candidate
from hf_ext.mergealign.vectors import (
    VectorStatistics,
    lora_delta,
    mergealign_tensor,
    summarize_statistics,
    task_vector,
    vector_statistics,
)


def _triple(shape=(7, 5), seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator)
    domain = base + 0.05 * torch.randn(shape, generator=generator)
    alignment = base + 0.05 * torch.randn(shape, generator=generator)
    return base.to(dtype), domain.to(dtype), alignment.to(dtype)


@pytest.mark.parametrize(("alpha", "scale"), [(0.5, 1.0), (0.0, 1.0), (1.0, 1.0), (0.3, 0.0), (0.8, 1.7)])
def test_merge_matches_float64_formula(alpha, scale):
    base, domain, alignment = _triple()
    b, d, a = (t.double().numpy() for t in (base, domain, alignment))
    expected = b + scale * (alpha * (d - b) + (1 - alpha) * (a - b))
    merged = mergealign_tensor(base, domain, alignment, alpha, scale)
    assert merged.dtype == torch.float32
    np.testing.assert_allclose(merged.numpy(), expected, atol=1e-6, rtol=0)


def test_scale_one_is_the_linear_merge_and_the_endpoints_are_the_parents():
    base, domain, alignment = _triple(seed=1)
    np.testing.assert_allclose(
        mergealign_tensor(base, domain, alignment, 0.25).numpy(),
        (0.25 * domain.double() + 0.75 * alignment.double()).numpy(),
        atol=1e-6,
    )
    torch.testing.assert_close(mergealign_tensor(base, domain, alignment, 1.0), domain, atol=1e-6, rtol=0)
    torch.testing.assert_close(mergealign_tensor(base, domain, alignment, 0.0), alignment, atol=1e-6, rtol=0)


def test_bfloat16_inputs_are_accumulated_in_float32():
    base, domain, alignment = _triple(shape=(64, 64), seed=2, dtype=torch.bfloat16)
    exact = base.double() + 1.3 * (
        0.5 * (domain.double() - base.double()) + 0.5 * (alignment.double() - base.double())
    )
    merged = mergealign_tensor(base, domain, alignment, 0.5, 1.3)
    assert merged.dtype == torch.bfloat16
    # float32 arithmetic rounded once to bfloat16 is the correctly rounded result (double rounding aside).
    correctly_rounded = exact.to(torch.bfloat16)
    assert (merged == correctly_rounded).double().mean() > 0.999
    ulp = torch.ldexp(torch.ones_like(exact), torch.frexp(exact).exponent - 8)  # bfloat16: 8 significant bits
    assert bool(((merged.double() - exact).abs() <= 0.5 * ulp + 1e-12).all())


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor.view(-1)[index] = value
    return tensor


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda b, d, a: task_vector(torch.zeros(3, 2), torch.zeros(2, 3), name="w"),
            r"tensor 'w': its shapes differ \(base \(2, 3\), finetuned \(3, 2\)\)",
        ),
        (
            lambda b, d, a: mergealign_tensor(b, d[:3], a, name="layers.0.q.weight"),
            r"tensor 'layers.0.q.weight': its shapes differ \(base \(7, 5\), domain \(3, 5\), alignment \(7, 5\)\)",
        ),
        (
            lambda b, d, a: mergealign_tensor(b, _with(d, 4, math.nan), a, name="w"),
            r"The domain tensor 'w' holds 1 NaN or infinite value\(s\) of 35; its merge would be NaN",
        ),
        (
            lambda b, d, a: mergealign_tensor(_with(b, 0, math.inf), d, a, name="w"),
            r"The base tensor 'w' holds 1 NaN or infinite",
        ),
        (
            lambda b, d, a: task_vector(_with(d, 2, -math.inf), b, name="w"),
            r"The fine-tuned tensor 'w' holds 1 NaN or infinite value\(s\) of 35; its task vector would be NaN",
        ),
        (
            lambda b, d, a: mergealign_tensor(b.half(), (d * 1e4).half(), (a * 1e4).half(), scale=100.0, name="w"),
            r"The merge of tensor 'w' overflows \(its inputs are finite\)",
        ),
        (
            lambda b, d, a: mergealign_tensor(b, d, a, alpha=1.5),
            r"alpha=1.5 is out of range; expected a number in \[0, 1\]",
        ),
        (lambda b, d, a: mergealign_tensor(b, d, a, scale=math.nan), r"scale=nan is out of range"),
        (
            lambda b, d, a: vector_statistics(_with(d - b, 0, math.nan), a - b),
            r"The domain vector\(s\) hold NaN or infinite values",
        ),
    ],
)
def test_bad_tensors_are_named_and_never_merged_into_nan(call, message):
    """A merge is never silently NaN / inf or of the wrong shape: the error names the tensor, the input, the shapes."""
    with pytest.raises(ValueError, match=message):
        call(*_triple())


def test_vector_statistics_match_numpy():
    base, domain, alignment = _triple(shape=(300, 40), seed=3)
    tau_d, tau_a = task_vector(domain, base), task_vector(alignment, base)
    stats = vector_statistics(tau_d, tau_a)
    d, a = tau_d.double().numpy().ravel(), tau_a.double().numpy().ravel()
    assert stats.numel == d.size
    assert math.isclose(stats.cosine, d @ a / np.linalg.norm(d) / np.linalg.norm(a), rel_tol=1e-6, abs_tol=1e-7)
    assert math.isclose(stats.norm_ratio, np.linalg.norm(d) / np.linalg.norm(a), rel_tol=1e-6)
    assert math.isclose(stats.alignment_share, d @ a / (a @ a), rel_tol=1e-5, abs_tol=1e-9)


def test_statistics_add_up_over_tensors():
    parts = [_triple(shape=(20, 3), seed=s) for s in range(3)]
    per_tensor = {
        f"t{i}": vector_statistics(task_vector(d, b), task_vector(a, b)) for i, (b, d, a) in enumerate(parts)
    }
    flat = [torch.cat([task_vector(p[k], p[0]).ravel() for p in parts]) for k in (1, 2)]
    whole = vector_statistics(*flat)
    summary = summarize_statistics(per_tensor)
    assert math.isclose(summary["cosine"], whole.cosine, rel_tol=1e-6)
    assert math.isclose(summary["domain_norm"], whole.domain_norm, rel_tol=1e-6)
    assert summary["num_tensors"] == 3 and summary["numel"] == 180
    assert summary["tensor_cosine_min"] == min(s.cosine for s in per_tensor.values())


def test_a_domain_vector_built_on_the_aligned_model_is_flagged():
    generator = torch.Generator().manual_seed(4)
    tau_a = torch.randn(5000, generator=generator)
    independent = torch.randn(5000, generator=generator)
    derived = tau_a + 0.7 * torch.randn(5000, generator=generator)  # fine-tuned from the aligned model
    assert summarize_statistics({"w": vector_statistics(derived, tau_a)})["domain_derived_from_alignment"]
    assert abs(vector_statistics(derived, tau_a).alignment_share - 1.0) < 0.05
    assert not summarize_statistics({"w": vector_statistics(independent, tau_a)})["domain_derived_from_alignment"]


def test_degenerate_statistics():
    zero = VectorStatistics(0.0, 0.0, 0.0, 4)
    assert math.isnan(zero.cosine) and math.isnan(zero.norm_ratio) and math.isnan(zero.alignment_share)
    assert VectorStatistics(0.0, 4.0, 0.0, 4).norm_ratio == math.inf
    with pytest.raises(ValueError, match=r"derived_threshold=1.5 is out of range"):
        summarize_statistics({"w": zero}, derived_threshold=1.5)


def test_lora_delta_layouts():
    generator = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 6, generator=generator), torch.randn(9, 4, generator=generator)
    expected = 0.5 * np.einsum("or,ri->oi", b.double().numpy(), a.double().numpy())
    np.testing.assert_allclose(lora_delta(a, b, 0.5).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(lora_delta(a, b, 0.5, fan_in_fan_out=True).numpy(), expected.T, atol=1e-5)
    np.testing.assert_allclose(lora_delta(a, b, 0.5, embedding=True).numpy(), expected.T, atol=1e-5)
    with pytest.raises(ValueError, match="do not chain"):
        lora_delta(a, torch.zeros(9, 3), 1.0)


def _dominated(p, q):
    """q dominates p (both maximised)."""
    return q[0] >= p[0] and q[1] >= p[1] and q != p


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    safety = rng.integers(0, 5, size=12).astype(float).tolist()  # ties on purpose
    domain = rng.integers(0, 5, size=12).astype(float).tolist()
    points = list(zip(safety, domain))
    expected = [not any(_dominated(p, q) for q in points) for p in points]
    assert pareto_front(safety, domain) == expected
    # A lower-is-better score is the same front after negation.
    assert pareto_front([-s for s in safety], domain, safety_higher_is_better=False) == expected


def test_select_candidate_honours_the_floor_and_directions():
    safety = [0.9, 0.7, 0.95, 0.5]
    domain = [0.6, 0.8, 0.6, 0.9]
    assert select_candidate(safety, domain) == 3
    assert select_candidate(safety, domain, safety_floor=0.75) == 2  # tie on domain -> the safer one
    assert select_candidate(safety, domain, safety_floor=0.99) is None
    perplexities = [2.0, 3.0, 1.5, 5.0]  # safety as a perplexity: lower is better, the floor is a ceiling
    assert select_candidate(perplexities, domain, safety_floor=2.5, safety_higher_is_better=False) == 2
    brute = max(
        (i for i in range(4) if perplexities[i] <= 3.0),
        key=lambda i: (domain[i], -perplexities[i]),
    )
    assert select_candidate(perplexities, domain, safety_floor=3.0, safety_higher_is_better=False) == brute
    assert meets_floor(2.0, None, False) and not meets_floor(2.0, 1.0, False)
    with pytest.raises(ValueError, match="3 safety scores but 2 domain scores"):
        select_candidate([1, 2, 3], [1, 2])


def test_pareto_front_of_a_grid_is_its_upper_right_staircase():
    points = list(itertools.product(range(3), range(3)))
    front = pareto_front([p[0] for p in points], [p[1] for p in points])
    assert [p for p, keep in zip(points, front) if keep] == [(2, 2)]
