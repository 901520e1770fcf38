"""Property tests of MergeAlign's math (issue 18, item 7): a merge, a task vector, the statistics and the Pareto
choice are never a silent NaN; mismatched shapes name the tensor and both shapes; the merge is the paper's formula."""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from hf_ext.mergealign.pareto import pareto_front, select_candidate
from hf_ext.mergealign.vectors import lora_delta, mergealign_tensor, task_vector, vector_statistics


FEW = settings(max_examples=25, deadline=None)
finite = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False, width=32)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
unit = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def triples(draw, shape=None):
    shape = shape or draw(array_shapes(min_dims=1, max_dims=3, max_side=5))
    base, domain, alignment = (draw(arrays(np.float32, shape, elements=finite)) for _ in range(3))
    return torch.from_numpy(base), torch.from_numpy(domain), torch.from_numpy(alignment)


@FEW
@given(tensors=triples(), role=st.sampled_from(["base", "domain", "alignment"]), bad=non_finite, data=st.data())
def test_a_non_finite_input_is_named_never_merged(tensors, role, bad, data):
    base, domain, alignment = (t.clone() for t in tensors)
    target = {"base": base, "domain": domain, "alignment": alignment}[role]
    target.view(-1)[data.draw(st.integers(0, target.numel() - 1))] = bad
    alpha, scale = data.draw(unit), data.draw(st.floats(0.0, 3.0))
    with pytest.raises(ValueError, match=rf"The {role} tensor 'layer.w' holds 1 NaN or infinite value\(s\)"):
        mergealign_tensor(base, domain, alignment, alpha, scale, name="layer.w")
    finetuned = domain if role == "domain" else alignment
    if role != "alignment":
        expected = "base" if role == "base" else "fine-tuned"
        with pytest.raises(ValueError, match=rf"The {expected} tensor 'layer.w' holds 1 NaN"):
            task_vector(finetuned, base, name="layer.w")


@FEW
@given(tensors=triples(), extra=st.integers(1, 3), which=st.sampled_from(["domain", "alignment"]))
def test_mismatched_shapes_name_the_tensor_and_every_shape(tensors, extra, which):
    base, domain, alignment = tensors
    grown = torch.cat([domain.reshape(-1), torch.zeros(extra)])
    inputs = {"domain": domain, "alignment": alignment, which: grown}
    shapes = rf"tensor 'w': its shapes differ \(base {re.escape(str(tuple(base.shape)))}.*{re.escape(str((grown.numel(),)))}"
    with pytest.raises(ValueError, match=shapes):
        mergealign_tensor(base, inputs["domain"], inputs["alignment"], name="w")
    with pytest.raises(ValueError, match=r"Task vectors differ in shape: \(\d+,\) \(domain\) vs"):
        vector_statistics(domain.reshape(-1), grown)


@FEW
@given(tensors=triples(), alpha=unit, scale=st.floats(0.0, 3.0))
def test_the_merge_is_the_formula_and_its_endpoints_are_the_parents(tensors, alpha, scale):
    base, domain, alignment = tensors
    b, d, a = (t.double().numpy() for t in tensors)
    merged = mergealign_tensor(base, domain, alignment, alpha, scale)
    expected = b + scale * (alpha * (d - b) + (1 - alpha) * (a - b))
    np.testing.assert_allclose(merged.double().numpy(), expected, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(mergealign_tensor(base, domain, alignment, 0.5, 0.0), base)
    torch.testing.assert_close(mergealign_tensor(base, domain, alignment, 1.0), domain, atol=1e-4, rtol=1e-5)
    for bad in (math.nan, -0.1, 1.1):
        with pytest.raises(ValueError, match=r"alpha=.* is out of range; expected a number in \[0, 1\]"):
            mergealign_tensor(base, domain, alignment, bad)
    with pytest.raises(ValueError, match=r"scale=.* is out of range; expected a number >= 0"):
        mergealign_tensor(base, domain, alignment, alpha, -scale - 1.0)


@FEW
@given(tensors=triples(), bad=non_finite)
def test_vector_statistics_are_bounded_or_an_error(tensors, bad):
    base, domain, alignment = tensors
    tau_d, tau_a = task_vector(domain, base), task_vector(alignment, base)
    statistics = vector_statistics(tau_d, tau_a)
    if statistics.domain_sq > 0 and statistics.alignment_sq > 0:
        assert -1 <= statistics.cosine <= 1
    if statistics.alignment_sq > 0:
        assert vector_statistics(tau_a, tau_a).alignment_share == pytest.approx(1.0)
    else:  # documented: undefined for a zero alignment vector
        assert math.isnan(statistics.alignment_share)
    tau_d.view(-1)[0] = bad
    with pytest.raises(ValueError, match=r"The domain vector\(s\) hold NaN or infinite values"):
        vector_statistics(tau_d, tau_a)


@FEW
@given(
    rank=st.integers(1, 3),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    scaling=st.floats(0.0, 4.0),
    data=st.data(),
)
def test_lora_delta_is_scaled_b_at_a_and_refuses_unchained_factors(rank, shape, scaling, data):
    out_features, in_features = shape
    a = torch.from_numpy(data.draw(arrays(np.float32, (rank, in_features), elements=finite)))
    b = torch.from_numpy(data.draw(arrays(np.float32, (out_features, rank), elements=finite)))
    expected = scaling * (b.double() @ a.double())
    np.testing.assert_allclose(lora_delta(a, b, scaling).double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-2)
    assert lora_delta(a, b, scaling, embedding=True).shape == (in_features, out_features)
    with pytest.raises(ValueError, match=r"LoRA factors do not chain: A has shape .* and B has shape"):
        lora_delta(a, torch.zeros(out_features, rank + 1), scaling)


scores = st.floats(min_value=-10, max_value=10, allow_nan=False)


@FEW
@given(
    pairs=st.lists(st.tuples(scores, scores), min_size=1, max_size=8),
    floor=st.one_of(st.none(), scores),
    directions=st.tuples(st.booleans(), st.booleans()),
    nan_at=st.integers(0, 7),
)
def test_the_selection_is_feasible_and_pareto_optimal_and_nan_is_refused(pairs, floor, directions, nan_at):
    safety, domain = [p[0] for p in pairs], [p[1] for p in pairs]
    up_s, up_d = directions
    kwargs = dict(safety_higher_is_better=up_s, domain_higher_is_better=up_d)
    front = pareto_front(safety, domain, **kwargs)
    assert any(front)
    chosen = select_candidate(safety, domain, safety_floor=floor, **kwargs)
    sign_s, sign_d = (1 if up_s else -1), (1 if up_d else -1)
    feasible = [i for i in range(len(pairs)) if floor is None or sign_s * safety[i] >= sign_s * floor]
    if not feasible:
        assert chosen is None
    else:
        assert chosen in feasible
        assert sign_d * domain[chosen] == max(sign_d * domain[i] for i in feasible)
    broken = list(safety)
    broken[nan_at % len(broken)] = math.nan
    for call in (pareto_front, select_candidate):
        with pytest.raises(
            ValueError, match=rf"The safety scores of candidate\(s\) \[{nan_at % len(broken)}\] are NaN"
        ):
            call(broken, domain, **kwargs)
    with pytest.raises(ValueError, match="safety_floor=nan cannot be compared"):
        select_candidate(safety, domain, safety_floor=math.nan)
    with pytest.raises(ValueError, match=r"Got \d+ safety scores but \d+ domain scores"):
        pareto_front(safety, [*domain, 0.0])
