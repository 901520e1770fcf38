"""Property tests of Larimar's memory math (`hf_ext.larimar.memory`): written encodings are read back, a forget
undoes a write, the pseudo-inverse is one; NaN / inf / wrong shapes / bad arguments are a `ValueError`, never a
number; empty inputs have the documented result."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_ext.larimar import memory as mem


SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**16)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def episodes(draw):
    """`(z, prior)`: N <= min(K, C) random encodings of size C and a random full-rank K x C prior, in float64."""
    latent = draw(st.integers(2, 12))
    slots = draw(st.integers(2, 12))
    items = draw(st.integers(1, min(latent, slots)))
    generator = torch.Generator().manual_seed(draw(seeds))
    z = torch.randn(draw(st.integers(1, 2)), items, latent, generator=generator, dtype=torch.float64)
    prior = torch.randn(slots, latent, generator=generator, dtype=torch.float64)
    return z, prior


@SETTINGS
@given(episode=episodes())
def test_a_written_episode_reads_back_itself(episode):
    z, prior = episode
    memory = mem.write(z, prior)
    torch.testing.assert_close(mem.read(z, memory), z, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(episode=episodes(), ridge=st.floats(1e-3, 1.0))
def test_forgetting_undoes_writing(episode, ridge):
    z, prior = episode
    memory, precision = mem.ridge_memory(z.shape[0], prior.shape[0], prior.shape[1], ridge, dtype=torch.float64)
    keys = mem.reference_keys(z, prior)
    written = mem.sequential_write(z, keys, memory, precision)
    forgotten = mem.sequential_write(z, keys, *written, alpha=-1.0)
    scale = float(written[1].abs().max())  # the cancellation error of C + KᵀK - KᵀK grows with the keys
    torch.testing.assert_close(forgotten[0], memory, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(forgotten[1], precision, rtol=0, atol=1e-12 * scale)


@SETTINGS
@given(rows=st.integers(1, 8), columns=st.integers(1, 8), seed=seeds)
def test_pinv_is_a_moore_penrose_inverse(rows, columns, seed):
    a = torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    a_pinv = mem.pinv(a)
    torch.testing.assert_close(a @ a_pinv @ a, a, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(a_pinv @ a @ a_pinv, a_pinv, rtol=1e-8, atol=1e-8)


@SETTINGS
@given(episode=episodes(), bad=non_finite, where=st.sampled_from(["z", "prior"]), position=st.integers(0, 200))
def test_non_finite_values_raise_in_every_entry_point(episode, bad, where, position):
    z, prior = episode
    clean_memory = mem.write(z, prior)
    target = z if where == "z" else prior
    target.view(-1)[position % target.numel()] = bad
    name = where
    calls = {
        "write": lambda: mem.write(z, prior),
        "reference_keys": lambda: mem.reference_keys(z, prior),
        "hierarchical_read": lambda: mem.hierarchical_read(z, z[:, :1], prior, 2),
        "pinv": lambda: mem.pinv(target),
        "ben_israel_pinv": lambda: mem.ben_israel_pinv(target),
    }
    if where == "z":
        memory, precision = mem.ridge_memory(z.shape[0], prior.shape[0], prior.shape[1], 1e-3, dtype=torch.float64)
        keys = torch.zeros(z.shape[0], z.shape[1], prior.shape[0], dtype=torch.float64)
        calls.update(
            read=lambda: mem.read(z, clean_memory),
            addresses=lambda: mem.addresses(z, clean_memory),
            sequential_write=lambda: mem.sequential_write(z, keys, memory, precision),
            scope_mask=lambda: mem.scope_mask(z, clean_memory, 0.5),
            w_kl=lambda: mem.w_kl(z, 0.0),
        )
    for entry_point, call in calls.items():
        expected = {
            "pinv": "a",
            "ben_israel_pinv": "a",
            "hierarchical_read": "chunks" if where == "z" else "prior",
            "reference_keys": "z" if where == "z" else "reference",
            "read": "q",
            "addresses": "q",
            "scope_mask": "queries",
            "w_kl": "w_mean",
        }.get(entry_point, name)
        with pytest.raises(ValueError, match=rf"^{expected}\b.*NaN or infinite values"):
            call()


@SETTINGS
@given(episode=episodes(), extra=st.integers(1, 3))
def test_mismatched_shapes_raise(episode, extra):
    z, prior = episode
    batch, items, latent = z.shape
    slots = prior.shape[0]
    memory, precision = mem.ridge_memory(batch, slots, latent, 1e-3, dtype=torch.float64)
    keys = mem.reference_keys(z, prior)
    wrong_latent = torch.zeros(batch, items, latent + extra, dtype=torch.float64)
    for call, match in [
        (lambda: mem.write(wrong_latent, prior), "latent size"),
        (lambda: mem.read(wrong_latent, mem.write(z, prior)), "latent size"),
        (lambda: mem.reference_keys(wrong_latent, prior), "latent size"),
        (lambda: mem.write(z[0], prior), r"must have shape \[batch, items, latent_size\]"),
        (lambda: mem.sequential_write(z, keys[..., :-1], memory, precision), "do not match"),
        (lambda: mem.sequential_write(z, keys, memory, precision[..., :-1]), "precision of shape"),
        (lambda: mem.read_with_keys(keys[..., :-1], memory), "do not address a memory"),
        (lambda: mem.scope_mask(z, wrong_latent, 0.5), "must share D"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


@SETTINGS
@given(
    episode=episodes(),
    bad=st.sampled_from(
        [
            ("ridge_memory", {"ridge": 0.0}),
            ("ridge_memory", {"ridge": math.inf}),
            ("ridge_memory", {"memory_size": 0}),
            ("write", {"noise_std": -1.0}),
            ("read", {"iterations": 0}),
            ("scope_mask", {"threshold": 3.0}),
            ("scope_mask", {"threshold": math.nan}),
            ("sequential_write", {"alpha": math.nan}),
            ("pinv", {"rtol": -1.0}),
        ]
    ),
)
def test_out_of_range_arguments_raise(episode, bad):
    z, prior = episode
    function, argument = bad
    memory, precision = mem.ridge_memory(z.shape[0], prior.shape[0], prior.shape[1], 1e-3, dtype=torch.float64)
    calls = {
        "ridge_memory": lambda **kw: mem.ridge_memory(
            **{"batch_size": 1, "memory_size": 4, "latent_size": 3, "ridge": 1e-3, **kw}
        ),
        "write": lambda **kw: mem.write(z, prior, **kw),
        "read": lambda **kw: mem.read(z, mem.write(z, prior), **kw),
        "scope_mask": lambda **kw: mem.scope_mask(z, z, **kw),
        "sequential_write": lambda **kw: mem.sequential_write(
            z, mem.reference_keys(z, prior), memory, precision, **kw
        ),
        "pinv": lambda **kw: mem.pinv(prior, **kw),
    }
    with pytest.raises(ValueError, match=rf"{next(iter(argument))}=.* is out of range"):
        calls[function](**argument)


@SETTINGS
@given(episode=episodes())
def test_empty_inputs_have_the_documented_results(episode):
    z, prior = episode
    batch, _, latent = z.shape
    memory = mem.write(z, prior)
    with pytest.raises(ValueError, match="Cannot write an empty episode"):
        mem.write(z[:, :0], prior)
    assert mem.read(z[:, :0], memory).shape == (batch, 0, latent)  # zero queries read nothing
    state = mem.ridge_memory(batch, prior.shape[0], latent, 1e-3, dtype=torch.float64)
    keys = mem.reference_keys(z, prior)
    unchanged = mem.sequential_write(z[:, :0], keys[:, :0], *state)  # zero items leave the state as it is
    torch.testing.assert_close(unchanged[0], state[0])
    torch.testing.assert_close(unchanged[1], state[1])
    assert not mem.scope_mask(z, z[:, :0], 0.5).any()  # nothing stored: every query is out of scope
    with pytest.raises(ValueError, match="Cannot read an empty context"):
        mem.hierarchical_read(z[:, :0], z, prior, 2)
