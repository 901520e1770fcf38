"""Larimar's memory math against independent oracles (QR projections, closed-form ridge regression, torch's KL)."""

import math

import numpy as np
import pytest
import torch

from hf_ext.larimar import memory as mem


DTYPES = [torch.float64, torch.float32]
# Tolerances of the spec's oracles: fp64 ~1e-12, fp32 ~1e-5 (relative).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _projection(q, z):
    """q projected onto the row space of z, through a QR factorisation (no pseudo-inverse involved)."""
    basis, _ = torch.linalg.qr(z.double().transpose(-2, -1))  # [B, C, N], orthonormal columns
    return q.double() @ basis @ basis.transpose(-2, -1)


def _priors(k, c, dtype, generator):
    return {
        "identity": torch.eye(k, c, dtype=dtype),
        "gaussian": torch.randn(k, c, generator=generator, dtype=torch.float64).to(dtype),
        "small": (1e-2 * torch.randn(k, c, generator=generator, dtype=torch.float64)).to(dtype),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 16, 64, 96), (2, 64, 192, 160), (1, 8, 128, 192)])
def test_read_after_write_returns_the_episode(dtype, shape):
    batch, n, k, c = shape
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, n, c, generator=g, dtype=torch.float64).to(dtype)
    for name, prior in _priors(k, c, dtype, g).items():
        memory = mem.write(z, prior)
        assert memory.shape == (batch, k, c) and memory.dtype == dtype
        assert _rel(mem.read(z, memory), z) < TOL[dtype], name


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_is_the_projection_onto_the_written_rows_for_any_prior(dtype):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 24, 128, generator=g, dtype=torch.float64).to(dtype)
    q = torch.randn(2, 10, 128, generator=g, dtype=torch.float64).to(dtype)
    expected = _projection(q, z)
    for name, prior in _priors(96, 128, dtype, g).items():
        assert _rel(mem.read(q, mem.write(z, prior)), expected) < 10 * TOL[dtype], name


def test_correlated_encodings_in_float32_keep_the_projection():
    # Encodings that share a dominant direction (as trained latents do) make a float32 memory with spurious tiny
    # singular values; the dtype-aware cut-off drops them, inverting them (rtol=0) amplifies rounding noise.
    g = torch.Generator().manual_seed(2)
    common = torch.randn(1, 1, 256, generator=g, dtype=torch.float64)
    z64 = 0.9 * common + 0.1 * torch.randn(1, 200, 256, generator=g, dtype=torch.float64)
    q64 = torch.randn(1, 10, 256, generator=g, dtype=torch.float64)
    z, q = z64.float(), q64.float()
    for prior in (torch.eye(256, 256), torch.randn(256, 256, generator=g)):
        memory = mem.write(z, prior)
        assert _rel(mem.read(z, memory), z) < 1e-4
        assert _rel(mem.read(q, memory), _projection(q64, z64)) < 1e-4
        no_cutoff = mem.write(z, prior, rtol=0.0)
        assert _rel(mem.read(z, no_cutoff, rtol=0.0), z) > 1e-2


def test_batched_episodes_are_independent():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 12, 48, generator=g, dtype=torch.float64)
    q = torch.randn(4, 5, 48, generator=g, dtype=torch.float64)
    prior = torch.randn(32, 48, generator=g, dtype=torch.float64)
    memory = mem.write(z, prior)
    for b in range(4):
        single = mem.write(z[b : b + 1], prior)
        torch.testing.assert_close(memory[b : b + 1], single, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(mem.read(q[b : b + 1], single), mem.read(q, memory)[b : b + 1])
    # A per-episode prior [B, K, C] broadcasts the same way.
    torch.testing.assert_close(mem.write(z, prior.expand(4, -1, -1)), memory)


@pytest.mark.parametrize("scale", [10.0, 50.0])
def test_large_encodings_give_no_nan(scale):
    g = torch.Generator().manual_seed(4)
    z = scale * torch.randn(2, 16, 128, generator=g)
    prior = torch.eye(128, 128)
    memory = mem.write(z, prior)
    z_read = mem.read(z, memory)
    assert torch.isfinite(memory).all() and torch.isfinite(z_read).all()
    assert _rel(z_read, z) < TOL[torch.float32]
    # The official fixed-step iteration does not survive the same encodings: its memory diverges (documented), and
    # reading a non-finite memory is an error rather than NaN latents.
    official_memory = mem.write(z, prior, pinv_method="ben_israel")
    if torch.isfinite(official_memory).all():
        assert _rel(mem.read(z, official_memory, pinv_method="ben_israel"), z) > 0.5
    else:
        with pytest.raises(ValueError, match="memory holds NaN or infinite values"):
            mem.read(z, official_memory, pinv_method="ben_israel")


def test_ben_israel_iteration_converges_on_well_conditioned_matrices():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3, 6, 10, generator=g, dtype=torch.float64)
    a = a / torch.linalg.matrix_norm(a, ord=2, keepdim=True)  # σ_max = 1, so init_scale = 1 converges fast
    x = mem.ben_israel_pinv(a, steps=60, init_scale=1.0)
    torch.testing.assert_close(x, torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="steps=-1"):
        mem.ben_israel_pinv(a, steps=-1)


def test_read_iterations_and_sampled_weights():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(1, 8, 32, generator=g, dtype=torch.float64)
    q = torch.randn(1, 3, 32, generator=g, dtype=torch.float64)
    memory = mem.write(z, torch.eye(32, 32, dtype=torch.float64))
    # A projection is idempotent: more iterations read the same thing.
    torch.testing.assert_close(mem.read(q, memory, iterations=3), mem.read(q, memory))
    z_read, w_mean = mem.read(q, memory, return_addresses=True)
    torch.testing.assert_close(w_mean, q @ torch.linalg.pinv(memory))
    torch.testing.assert_close(mem.addresses(q, memory), w_mean)
    # Sampled reads: deterministic given the generator, centred on the mean read.
    first = mem.read(q, memory, w_logvar=-2.0, generator=torch.Generator().manual_seed(0))
    again = mem.read(q, memory, w_logvar=-2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, z_read)
    samples = mem.read(q.repeat(1, 400, 1), memory, w_logvar=-2.0).reshape(1, 400, 3, 32)
    assert _rel(samples.mean(1), z_read) < 0.1
    with pytest.raises(ValueError, match="iterations=0"):
        mem.read(q, memory, iterations=0)


def test_write_noise_is_seeded():
    z = torch.randn(1, 4, 16, dtype=torch.float64)
    prior = torch.eye(16, 16, dtype=torch.float64)
    a = mem.write(z, prior, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    b = mem.write(z, prior, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, mem.write(z, prior))


def test_ben_israel_iteration_is_the_official_fixed_step_update():
    # X_0 = init_scale * Aᵀ, X <- 2X - X A X, written out here; 15 steps from 5e-4 by default.
    g = torch.Generator().manual_seed(25)
    a = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)

    def iterate(steps, init_scale):
        x = init_scale * a.transpose(-2, -1)
        for _ in range(steps):
            x = 2 * x - x @ a @ x
        return x

    torch.testing.assert_close(mem.ben_israel_pinv(a), iterate(15, 5e-4), rtol=1e-12, atol=0)
    torch.testing.assert_close(mem.ben_israel_pinv(a, steps=0, init_scale=0.1), 0.1 * a.transpose(-2, -1))
    torch.testing.assert_close(mem.pinv(a, method="ben_israel", steps=3, init_scale=0.01), iterate(3, 0.01))
    for arguments, message in (
        ({"steps": 1.5}, "steps=1.5"),
        ({"steps": -1}, "steps=-1"),
        ({"init_scale": 0.0}, "init_scale=0.0"),
        ({"init_scale": -1e-3}, "init_scale=-0.001"),
    ):
        with pytest.raises(ValueError, match=message):
            mem.ben_israel_pinv(a, **arguments)
    with pytest.raises(ValueError, match="^a holds NaN or infinite values"):
        mem.ben_israel_pinv(torch.full((2, 2), float("inf")))


def test_w_kl_of_a_scalar_log_variance_in_the_weights_precision():
    w_mean = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    logvar = -1.3
    expected = 0.5 * sum(math.exp(logvar) + m * m - 1 - logvar for m in (0.3, -1.2, 2.0))
    kl = mem.w_kl(w_mean, logvar)
    assert kl.dtype == torch.float64 and kl.item() == pytest.approx(expected, rel=1e-14)
    with pytest.raises(ValueError, match="^w_logvar holds NaN or infinite values"):
        mem.w_kl(w_mean, float("inf"))
    with pytest.raises(ValueError, match="^w_logvar holds NaN or infinite values"):
        mem.w_kl(w_mean, torch.tensor([0.0, float("nan"), 0.0]))
    assert torch.isnan(mem.w_kl(w_mean, float("nan"), check_finite=False)).all()


def test_w_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(7)
    w_mean = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    w_logvar = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(w_mean, torch.exp(0.5 * w_logvar)), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(mem.w_kl(w_mean, w_logvar), expected)


def test_gradients_flow_through_write_and_read():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    prior = (
        torch.eye(7, 5, dtype=torch.float64) + 0.1 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    ).requires_grad_()

    def episode(z, prior):
        memory = mem.write(z, prior)
        z_read, w = mem.read(z[:, :2], memory, return_addresses=True)
        return z_read, w

    assert torch.autograd.gradcheck(episode, (z, prior))


def test_half_precision_inputs_compute_in_float32():
    z = torch.randn(1, 4, 16).to(torch.bfloat16)
    memory = mem.write(z, torch.eye(16, 16, dtype=torch.bfloat16))
    assert memory.dtype == torch.float32
    assert mem.read(z, memory).dtype == torch.float32
    assert mem.compute_dtype(z, dtype=torch.float64) == torch.float64
    with pytest.raises(ValueError, match="dtype=torch.float16"):
        mem.compute_dtype(z, dtype=torch.float16)


# Half precision: the unit roundoff of bfloat16 / float16 (half their machine epsilon) bounds the relative error of
# rounding the inputs; the memory math itself runs in float32 (~1e-6), so a read from half-precision inputs is within
# that of float32's read of the unrounded inputs (read(write(z)) = z is linear in the rounding error of z).
HALF_UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("autocast", [False, True], ids=["weights", "weights+autocast"])
def test_half_precision_episode_writes_the_float32_memory(half, autocast):
    # K = 512 slots, as in the paper: max(m, n) * eps(bfloat16) = 4 > 1 would drop every singular value.
    g = torch.Generator().manual_seed(12)
    z32 = torch.randn(2, 16, 256, generator=g)
    q32 = z32 + 0.3 * torch.randn(2, 16, 256, generator=g)
    prior32 = torch.eye(512, 256) + 0.05 * torch.randn(512, 256, generator=g)
    z, q, prior = z32.to(half), q32.to(half), prior32.to(half)
    with torch.autocast("cpu", dtype=half, enabled=autocast):
        memory = mem.write(z, prior)
        z_read = mem.read(z, memory)
        q_read = mem.read(q, memory)
    assert memory.dtype == z_read.dtype == torch.float32
    assert memory.norm() > 0.5 * mem.write(z32, prior32).norm()
    tolerance = HALF_UNIT_ROUNDOFF[half] + 1e-4
    assert _rel(z_read, mem.read(z32, mem.write(z32, prior32))) < tolerance
    # Reading with other queries is the projection onto the written rows, in half precision as in float32.
    assert _rel(q_read, _projection(q32, z32)) < 4 * tolerance
    # The enclosing autocast changes nothing: the memory math turns it off.
    torch.testing.assert_close(memory, mem.write(z, prior), rtol=0, atol=0)


def test_default_cutoff_never_exceeds_float32_precision():
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert mem.default_rtol((512, 768), dtype) == 768 * torch.finfo(torch.float32).eps
    assert mem.default_rtol((512, 768), torch.float64) == 768 * torch.finfo(torch.float64).eps


def _numpy_pinv(a, eps):
    """numpy's SVD pseudo-inverse with the spec's cut-off: singular values below max(m, n) * eps * σ_max dropped."""
    return np.linalg.pinv(a, rcond=max(a.shape[-2:]) * eps)


def test_pinv_cutoff_follows_the_precision_the_entries_carry():
    # σ = (1, 1e-9, 1e-13): float64's cut-off (3 * 2.2e-16) keeps 1e-9 and 1e-13, float32's (3 * 1.2e-7) drops both.
    g = torch.Generator().manual_seed(21)
    u, _ = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    a = u @ torch.diag(torch.tensor([1.0, 1e-9, 1e-13], dtype=torch.float64)) @ v.T
    eps32, eps64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    np.testing.assert_allclose(mem.pinv(a).numpy(), _numpy_pinv(a.numpy(), eps64), rtol=1e-6)
    np.testing.assert_allclose(
        mem.pinv(a, input_dtype=torch.float32).numpy(), _numpy_pinv(a.numpy(), eps32), atol=1e-9
    )
    assert mem.pinv(a).abs().max() > 1e12 > 10 * mem.pinv(a, input_dtype=torch.float32).abs().max()
    # An explicit rtol wins over the default, and a half-precision matrix is inverted in float32, returned in its dtype.
    np.testing.assert_allclose(mem.pinv(a, rtol=1e-10).numpy(), np.linalg.pinv(a.numpy(), rcond=1e-10), rtol=1e-6)
    half = torch.eye(4, 3, dtype=torch.bfloat16) * 2
    assert mem.pinv(half).dtype == torch.bfloat16
    torch.testing.assert_close(mem.pinv(half).float(), torch.eye(3, 4) / 2)
    with pytest.raises(ValueError, match="pinv needs matrices"):
        mem.pinv(torch.ones(3))


def test_float32_encodings_written_in_float64_keep_float32s_cutoff():
    # Two encodings one float32 rounding step apart: in float64 their difference is a real but tiny singular value of
    # W0, which float32's cut-off drops (the entries carry no more precision than that) and float64's would invert.
    g = torch.Generator().manual_seed(22)
    z = torch.randn(1, 4, 8, generator=g)
    z[0, 3] = z[0, 2]
    z[0, 3, 0] = torch.nextafter(z[0, 3, 0], torch.tensor(10.0))
    prior = torch.randn(6, 8, generator=g)
    memory = mem.write(z, prior, dtype=torch.float64)
    assert memory.dtype == torch.float64
    eps32 = torch.finfo(torch.float32).eps
    z64, prior64 = z[0].double().numpy(), prior.double().numpy()
    w0 = z64 @ _numpy_pinv(prior64, eps32)
    np.testing.assert_allclose(memory[0].numpy(), _numpy_pinv(w0, eps32) @ z64, rtol=1e-8, atol=1e-10)
    assert memory.abs().max() < 100  # the tiny singular value was not inverted
    # Read back in float64 with float32's cut-off: the two near-identical encodings read as one.
    read = mem.read(z, memory.float(), dtype=torch.float64)
    m32 = memory[0].float().double().numpy()
    np.testing.assert_allclose(read[0].numpy(), z64 @ _numpy_pinv(m32, eps32) @ m32, rtol=1e-8, atol=1e-10)


def test_sampled_read_weights_are_the_mean_plus_scaled_noise():
    # W = W̄ + exp(logvar / 2) ε with ε from the generator; checked by drawing ε from the same seed here.
    g = torch.Generator().manual_seed(23)
    z = torch.randn(2, 8, 10, generator=g, dtype=torch.float64)  # more items than slots: a full-rank memory
    q = torch.randn(2, 3, 10, generator=g, dtype=torch.float64)
    memory = mem.write(z, torch.randn(6, 10, generator=g, dtype=torch.float64))
    w_mean = q @ torch.linalg.pinv(memory)
    logvar = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    for w_logvar in (-1.5, logvar):
        noise = torch.randn(w_mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        expected = (w_mean + torch.exp(0.5 * torch.as_tensor(w_logvar, dtype=torch.float64)) * noise) @ memory
        read, addresses = mem.read(
            q, memory, w_logvar=w_logvar, generator=torch.Generator().manual_seed(5), return_addresses=True
        )
        torch.testing.assert_close(read, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(addresses, w_mean, rtol=1e-10, atol=1e-12)
    # Two iterations read the read-out again: z2 = (z1 M⁺) M.
    once = mem.read(q, memory)
    torch.testing.assert_close(mem.read(q, memory, iterations=2), once @ torch.linalg.pinv(memory) @ memory)
    with pytest.raises(ValueError, match="w_logvar=nan"):
        mem.read(q, memory, w_logvar=float("nan"))


# What a query-side entry point computes from queries q [B, N', C] and a memory M [K, C], with P = M⁺; and the names of
# its two arguments in its messages.
QUERY_ENTRY_POINTS = {
    "addresses": (mem.addresses, lambda q, p, m: q @ p, ("q", "memory")),
    "read": (mem.read, lambda q, p, m: q @ p @ m, ("q", "memory")),
    "reference_keys": (mem.reference_keys, lambda q, p, m: q @ p, ("z", "reference")),
}


@pytest.mark.parametrize("name", list(QUERY_ENTRY_POINTS))
def test_query_entry_points_against_numpy(name):
    function, oracle, (query_name, memory_name) = QUERY_ENTRY_POINTS[name]
    g = torch.Generator().manual_seed(26)
    eps32, eps64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(9, 6, generator=g, dtype=torch.float64))
    # A float32 memory with one singular value (1e-9) that float32's cut-off drops and float64's would keep.
    memory = (u @ torch.diag(torch.tensor([1.0, 0.8, 0.5, 0.3, 0.1, 1e-9], dtype=torch.float64)) @ v.T).float()
    q = torch.randn(2, 3, 9, generator=g, dtype=torch.float64)
    m64 = memory.double().numpy()

    def expected(queries, rcond):
        return oracle(queries.double().numpy(), np.linalg.pinv(m64, rcond=rcond), m64)

    # float64 queries, float32 memory: computed in float64 with the memory's own (float32) cut-off.
    result = function(q, memory)
    assert result.dtype == torch.float64
    np.testing.assert_allclose(result.numpy(), expected(q, 9 * eps32), rtol=1e-9, atol=1e-9)
    # float32 queries and memory computed in float64 on request; then in float32.
    requested = function(q.float(), memory, dtype=torch.float64)
    assert requested.dtype == torch.float64
    np.testing.assert_allclose(requested.numpy(), expected(q.float(), 9 * eps32), rtol=1e-9, atol=1e-9)
    single = function(q.float(), memory)
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), expected(q.float(), 9 * eps32), rtol=1e-4, atol=1e-4)
    # A float64 memory keeps float64's cut-off: the 1e-9 direction is inverted.
    inverted = function(q, memory.double())
    np.testing.assert_allclose(inverted.numpy(), expected(q, 9 * eps64), rtol=1e-6, atol=1e-6)
    # Half-precision inputs are computed in float32.
    assert function(q.to(torch.bfloat16), memory.to(torch.bfloat16)).dtype == torch.float32
    # An explicit cut-off drops 0.1 and smaller.
    np.testing.assert_allclose(function(q, memory, rtol=0.2).numpy(), expected(q, 0.2), rtol=1e-9, atol=1e-9)
    if name != "reference_keys":
        # The iterative pseudo-inverse with its step count, written out.
        m = memory.double()
        x = 5e-4 * m.T
        for _ in range(3):
            x = 2 * x - x @ m @ x
        iterated = function(q, memory, pinv_method="ben_israel", pinv_steps=3)
        np.testing.assert_allclose(iterated.numpy(), oracle(q.numpy(), x.numpy(), m64), rtol=1e-9, atol=1e-12)
    for bad in (query_name, memory_name):
        arguments = {query_name: q.clone(), memory_name: memory.clone()}
        arguments[bad].view(-1)[0] = float("nan")
        with pytest.raises(ValueError, match=f"^{bad} holds NaN or infinite values"):
            function(*arguments.values())
    with pytest.raises(ValueError, match=f"^{query_name} has latent size 8 but the memory has latent size 9"):
        function(q[..., :8], memory)
    with pytest.raises(ValueError, match=rf"^{query_name} must have shape \[batch, items, latent_size\]"):
        function(q[0], memory)
    with pytest.raises(
        ValueError, match=rf"^{memory_name} must have shape \[memory_size, latent_size\] or \[batch \(2\)"
    ):
        function(q, memory.expand(3, -1, -1))


def test_a_shared_prior_is_inverted_once():
    g = torch.Generator().manual_seed(13)
    z = torch.randn(6, 8, 40, generator=g)
    prior = torch.randn(64, 40, generator=g)
    calls = []
    original = torch.linalg.pinv

    def counting_pinv(a, *args, **kwargs):
        calls.append(tuple(a.shape))
        return original(a, *args, **kwargs)

    torch.linalg.pinv = counting_pinv
    try:
        memory = mem.write(z, prior)
    finally:
        torch.linalg.pinv = original
    assert calls == [(64, 40), (6, 8, 64)]  # the prior once, then the six episodes' addresses
    # The same memory as inverting the prior of every episode separately, or passing M0⁺ in.
    torch.testing.assert_close(memory, mem.write(z, prior.expand(6, -1, -1)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(memory, mem.write(z, prior, prior_pinv=torch.linalg.pinv(prior)), rtol=0, atol=0)


# Sequential writing and forgetting ------------------------------------------------------------------------------


def _closed_form_ridge(z, keys, ridge):
    """argmin_M ||keys M - z||² + ridge ||M||², solved directly."""
    k = keys.shape[-1]
    gram = keys.transpose(-2, -1) @ keys + ridge * torch.eye(k, dtype=keys.dtype)
    return torch.linalg.solve(gram, keys.transpose(-2, -1) @ z)


def _seq(parts, reference, ridge, dtype):
    """Apply (z, alpha) steps in order to an empty ridge memory."""
    memory, precision = mem.ridge_memory(1, reference.shape[0], reference.shape[1], ridge, dtype=dtype)
    for z, alpha in parts:
        keys = mem.reference_keys(z, reference)
        memory, precision = mem.sequential_write(z, keys, memory, precision, alpha=alpha)
    return memory, precision


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_write_is_the_ridge_solution(dtype):
    g = torch.Generator().manual_seed(9)
    reference = torch.randn(64, 48, generator=g, dtype=torch.float64).to(dtype)
    a = torch.randn(1, 10, 48, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(1, 7, 48, generator=g, dtype=torch.float64).to(dtype)
    ridge = 1e-3
    # The ridge system's condition number is |W|² / ridge: float32 keeps ~cond * eps (hf-ext stores this memory in
    # float64 by default).
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    memory, _ = _seq([(a, 1.0), (b, 1.0)], reference, ridge, dtype)
    keys = mem.reference_keys(torch.cat([a, b], 1), reference)
    expected = _closed_form_ridge(torch.cat([a, b], 1).double(), keys.double(), ridge)
    assert _rel(memory, expected) < tol
    # Writing row by row equals writing the whole block.
    rows = [(a[:, i : i + 1], 1.0) for i in range(a.shape[1])] + [(b, 1.0)]
    assert _rel(_seq(rows, reference, ridge, dtype)[0], expected) < tol


def test_sequential_writes_equal_one_batch_write_up_to_the_ridge():
    g = torch.Generator().manual_seed(10)
    prior = torch.randn(96, 64, generator=g, dtype=torch.float64)
    a = torch.randn(1, 20, 64, generator=g, dtype=torch.float64)
    b = torch.randn(1, 12, 64, generator=g, dtype=torch.float64)
    both = torch.cat([a, b], 1)
    one_shot = mem.write(both, prior)
    queries = torch.randn(1, 8, 64, generator=g, dtype=torch.float64)
    errors = []
    for ridge in (1e-2, 1e-4, 1e-6, 1e-8):
        sequential, _ = _seq([(a, 1.0), (b, 1.0)], prior, ridge, torch.float64)
        errors.append(_rel(sequential, one_shot))
        read_seq = mem.read_with_keys(mem.reference_keys(queries, prior), sequential)
        read_one = mem.read_with_keys(mem.reference_keys(queries, prior), one_shot)
        assert _rel(read_seq, read_one) < 10 * errors[-1] + 1e-10
    assert errors[-1] < 1e-7
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))  # the gap closes with the ridge


@pytest.mark.parametrize("dtype", DTYPES)
def test_forgetting_undoes_a_write(dtype):
    g = torch.Generator().manual_seed(11)
    reference = torch.eye(128, 96, dtype=dtype)
    a = torch.randn(1, 16, 96, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(1, 48, 96, generator=g, dtype=torch.float64).to(dtype)
    # Forgetting cancels |W|² against the ridge: the error is ~eps * |W|² / ridge (|W|² ~ 96 here), so float32 needs a
    # ridge near 1 % of the squared key norm while float64 takes a negligible one.
    ridge, tol = (1e-4, 1e-8) if dtype == torch.float64 else (1.0, 1e-3)
    forgotten, precision = _seq([(a, 1.0), (b, 1.0), (a, -1.0)], reference, ridge, dtype)
    only_b, precision_b = _seq([(b, 1.0)], reference, ridge, dtype)
    assert _rel(forgotten, only_b) < tol
    torch.testing.assert_close(precision, precision_b, rtol=1e-4, atol=1e-4)

    def recall_error(z, memory):
        return _rel(mem.read_with_keys(mem.reference_keys(z, reference), memory), z)

    before, _ = _seq([(a, 1.0), (b, 1.0)], reference, ridge, dtype)
    assert recall_error(a, before) < 0.05 and recall_error(b, before) < 0.05
    assert recall_error(a, forgotten) > 0.5  # A is gone ...
    assert recall_error(b, forgotten) < 0.05  # ... and B is intact


def test_ridge_must_be_positive():
    with pytest.raises(ValueError, match="ridge=0"):
        mem.ridge_memory(1, 8, 8, ridge=0)


def test_item_weights_say_how_a_read_combines_the_stored_items():
    # A ridge memory is M = C⁻¹ Wᵀ Z, so a read W_q M is A Z with A = W_q C⁻¹ Wᵀ: checked against the memory
    # sequential_write built, and against numpy's solve of the same system.
    g = torch.Generator().manual_seed(17)
    reference = torch.randn(24, 16, generator=g, dtype=torch.float64)
    z = torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
    queries = torch.randn(2, 3, 16, generator=g, dtype=torch.float64)
    memory, precision = mem.ridge_memory(2, 24, 16, 1e-2, dtype=torch.float64)
    item_keys = mem.reference_keys(z, reference)
    memory, precision = mem.sequential_write(z, item_keys, memory, precision)
    query_keys = mem.reference_keys(queries, reference)
    weights = mem.item_weights(query_keys, item_keys, precision)
    assert weights.shape == (2, 3, 5)
    torch.testing.assert_close(weights @ z, mem.read_with_keys(query_keys, memory), rtol=1e-10, atol=1e-12)
    gram = item_keys.numpy().transpose(0, 2, 1) @ item_keys.numpy() + 1e-2 * np.eye(24)
    expected = query_keys.numpy() @ np.linalg.solve(gram, item_keys.numpy().transpose(0, 2, 1))
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-9, atol=1e-12)
    # A stored item read with its own key draws on itself: the diagonal dominates (small ridge, few items).
    own = mem.item_weights(item_keys, item_keys, precision)
    assert (own.diagonal(dim1=-2, dim2=-1) > 0.9).all()
    with pytest.raises(ValueError, match=r"query_keys \[B, Q, K\], item_keys \[B, N, K\] and precision"):
        mem.item_weights(query_keys[0], item_keys, precision)
    with pytest.raises(ValueError, match="do not match a precision matrix of shape"):
        mem.item_weights(query_keys[..., :-1], item_keys, precision)
    with pytest.raises(ValueError, match="do not match a precision matrix of shape"):
        mem.item_weights(query_keys, item_keys[..., :-1], precision)
    with pytest.raises(ValueError, match="do not match a precision matrix of shape"):
        mem.item_weights(query_keys, item_keys, precision[:, :-1])
    with pytest.raises(ValueError, match="do not match a precision matrix of shape"):
        mem.item_weights(query_keys, item_keys, precision[..., :-1])  # not square
    with pytest.raises(ValueError, match=r"query_keys \[B, Q, K\], item_keys \[B, N, K\] and precision"):
        mem.item_weights(query_keys, item_keys, precision[0])
    for name in ("query_keys", "item_keys", "precision"):
        arguments = {"query_keys": query_keys, "item_keys": item_keys, "precision": precision}
        arguments[name] = arguments[name].clone()
        arguments[name][0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=f"^{name} holds NaN or infinite values"):
            mem.item_weights(**arguments)


def _addressing_loss_oracle(queries, items, targets, threshold, temperature):
    """Cross-entropy over [cosine similarities to the items, 1 - threshold] / temperature, in numpy."""
    q = queries / np.linalg.norm(queries, axis=-1, keepdims=True)
    k = items / np.linalg.norm(items, axis=-1, keepdims=True)
    similarity = q @ k.transpose(0, 2, 1)
    logits = np.concatenate([similarity, np.full(similarity.shape[:2] + (1,), 1 - threshold)], -1) / temperature
    labels = np.where(targets < 0, items.shape[1], targets)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_softmax, labels[..., None], -1).mean()


def test_addressing_loss_is_the_cross_entropy_of_which_item_or_none():
    g = torch.Generator().manual_seed(18)
    queries = torch.randn(2, 4, 8, generator=g, dtype=torch.float64)
    items = torch.randn(2, 3, 8, generator=g, dtype=torch.float64)
    targets = torch.tensor([[0, 2, -1, 1], [-1, -1, 1, 0]])
    for threshold, temperature in ((0.3, 0.05), (1.2, 0.5)):
        loss = mem.addressing_loss(queries, items, targets, threshold=threshold, temperature=temperature)
        expected = _addressing_loss_oracle(queries.numpy(), items.numpy(), targets.numpy(), threshold, temperature)
        assert loss.item() == pytest.approx(expected, rel=1e-10)
    default = mem.addressing_loss(queries, items, targets, threshold=0.3)
    assert default.item() == pytest.approx(
        _addressing_loss_oracle(queries.numpy(), items.numpy(), targets.numpy(), 0.3, 0.05), rel=1e-10
    )
    # float32 latents are computed in float32, half precision ones too (not in their own arithmetic), and a float64
    # side makes it float64.
    assert mem.addressing_loss(queries.float(), items.float(), targets, threshold=0.3).dtype == torch.float32
    q16, k16 = queries.to(torch.bfloat16), items.to(torch.bfloat16)
    rounded = _addressing_loss_oracle(q16.double().numpy(), k16.double().numpy(), targets.numpy(), 0.3, 0.05)
    half = mem.addressing_loss(q16, k16, targets, threshold=0.3)
    assert half.dtype == torch.float32 and half.item() == pytest.approx(rounded, rel=1e-5)
    for first, second in ((q16.double(), k16.float()), (q16.float(), k16.double())):
        mixed = mem.addressing_loss(first, second, targets, threshold=0.3)
        assert mixed.dtype == torch.float64 and mixed.item() == pytest.approx(rounded, rel=1e-10)
    for threshold in (2.5, -0.1):
        with pytest.raises(ValueError, match=rf"threshold={threshold} .*\(a cosine distance\)"):
            mem.addressing_loss(queries, items, targets, threshold=threshold)
    with pytest.raises(ValueError, match="temperature=0"):
        mem.addressing_loss(queries, items, targets, threshold=0.3, temperature=0)
    with pytest.raises(ValueError, match=r"queries \[B, Q, C\] and items \[B, N, C\] expected"):
        mem.addressing_loss(queries, items[..., :-1], targets, threshold=0.3)
    with pytest.raises(ValueError, match=r"queries \[B, Q, C\] and items \[B, N, C\] expected"):
        mem.addressing_loss(queries, items[:1], targets, threshold=0.3)
    with pytest.raises(ValueError, match=r"queries \[B, Q, C\] and items \[B, N, C\] expected"):
        mem.addressing_loss(queries[..., None], items, targets, threshold=0.3)  # [B, Q, C, 1]: one too many
    with pytest.raises(ValueError, match=r"queries \[B, Q, C\] and items \[B, N, C\] expected"):
        mem.addressing_loss(queries, items[..., None], targets, threshold=0.3)
    with pytest.raises(ValueError, match="targets of shape"):
        mem.addressing_loss(queries, items, targets[:, :3], threshold=0.3)
    for bad in (3, -2):
        wrong = targets.clone()
        wrong[0, 0] = bad
        with pytest.raises(ValueError, match=r"targets must be item indices in \[0, 3\) or -1"):
            mem.addressing_loss(queries, items, wrong, threshold=0.3)


# Scope and long context ---------------------------------------------------------------------------------------


def test_scope_mask_matches_cosine_distances():
    g = torch.Generator().manual_seed(12)
    stored = torch.randn(2, 5, 16, generator=g)
    queries = torch.cat([stored[:, :2] * 3.0, torch.randn(2, 3, 16, generator=g)], 1)
    threshold = 0.3
    mask = mem.scope_mask(queries, stored, threshold)
    for b in range(2):
        for i in range(queries.shape[1]):
            distances = [1 - torch.cosine_similarity(queries[b, i], s, dim=0).item() for s in stored[b]]
            assert mask[b, i].item() == (min(distances) <= threshold)
    assert mask[:, :2].all()  # a rescaled stored encoding is in scope
    assert not mem.scope_mask(queries, stored[:, :0], threshold).any()  # nothing stored: nothing in scope


def test_nearest_distance_is_the_smallest_cosine_distance():
    g = torch.Generator().manual_seed(19)
    stored = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    queries = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=-1, keepdims=True)
    s = stored.numpy() / np.linalg.norm(stored.numpy(), axis=-1, keepdims=True)
    expected = (1 - q @ s.transpose(0, 2, 1)).min(-1)
    np.testing.assert_allclose(mem.nearest_distance(queries, stored).numpy(), expected, rtol=1e-12, atol=1e-14)
    # A stored [S, D] is shared by every batch row; the threshold is inclusive.
    shared = mem.scope_mask(queries, stored[0], threshold=float(expected[0].max()))
    np.testing.assert_array_equal(shared[0].numpy(), np.ones(3, dtype=bool))
    exact = mem.scope_mask(queries[:1], stored[:1], threshold=float(expected[0, 0]))
    assert exact[0, 0] and exact[0].numpy().tolist() == (expected[0] <= expected[0, 0]).tolist()


def test_nearest_distance_computes_in_float32_or_wider():
    # Half-precision encodings are compared in float32 (bfloat16 arithmetic would be off by ~1e-2), and a float64
    # side makes the whole comparison float64.
    g = torch.Generator().manual_seed(24)
    stored = torch.randn(1, 5, 64, generator=g).to(torch.bfloat16)
    queries = torch.randn(1, 4, 64, generator=g).to(torch.bfloat16)
    q = queries.double().numpy()[0]
    s = stored.double().numpy()[0]
    q, s = q / np.linalg.norm(q, axis=-1, keepdims=True), s / np.linalg.norm(s, axis=-1, keepdims=True)
    expected = (1 - q @ s.T).min(-1)
    half = mem.nearest_distance(queries, stored)
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half[0].numpy(), expected, atol=1e-6)
    for first, second in ((queries.double(), stored.float()), (queries.float(), stored.double())):
        mixed = mem.nearest_distance(first, second)
        assert mixed.dtype == torch.float64
        np.testing.assert_allclose(mixed[0].numpy(), expected, atol=1e-12)


def test_hierarchical_read_takes_other_write_and_read_functions():
    g = torch.Generator().manual_seed(20)
    chunks = torch.randn(1, 7, 16, generator=g, dtype=torch.float64)
    queries = torch.randn(1, 2, 16, generator=g, dtype=torch.float64)
    prior = torch.eye(16, 16, dtype=torch.float64)
    calls = []

    def write_fn(z, m0):
        calls.append(("write", z.shape[1]))
        return mem.write(z, m0)

    def read_fn(q, m):
        calls.append(("read", q.shape[1]))
        return mem.read(q, m)

    # episode_size = 2, the smallest hierarchy: 7 chunks -> 4 read-outs -> 2 -> the answer.
    found = mem.hierarchical_read(chunks, queries, prior, 2, write_fn=write_fn, read_fn=read_fn)
    assert calls == [("write", 2), ("read", 1), ("write", 2), ("read", 1), ("write", 2), ("read", 1)]
    for i in range(2):
        assert _rel(found[:, i], _hierarchy_oracle(chunks[0], queries[0, i : i + 1], 2)) < 1e-9
    with pytest.raises(ValueError, match="episode_size=1 must be >= 2"):
        mem.hierarchical_read(chunks, queries, prior, 1)


def test_hierarchical_read_without_hierarchy_is_a_plain_read():
    g = torch.Generator().manual_seed(13)
    prior = torch.eye(64, 64, dtype=torch.float64)
    chunks = torch.randn(2, 10, 64, generator=g, dtype=torch.float64)
    queries = torch.randn(2, 3, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        mem.hierarchical_read(chunks, queries, prior, episode_size=16), mem.read(queries, mem.write(chunks, prior))
    )


def test_hierarchical_read_finds_a_needle_in_a_context_ten_episodes_long():
    g = torch.Generator().manual_seed(14)
    episode_size, code_size = 8, 256
    chunks = torch.randn(1, 10 * episode_size + 3, code_size, generator=g, dtype=torch.float64)
    needle = 37
    query = chunks[:, needle : needle + 1].clone()
    # The query is in the span of the needle's group, so every level reads it back exactly.
    found = mem.hierarchical_read(chunks, query, torch.eye(code_size, code_size, dtype=torch.float64), episode_size)
    assert _rel(found, query) < 1e-10


def _hierarchy_oracle(chunks, query, episode_size):
    """The hierarchical read of one query over one context, level by level with QR projections: each group of
    `episode_size` rows (the last one shorter) is read as the projection onto its rows, until one group is left."""
    level = chunks
    while level.shape[0] > episode_size:
        level = torch.cat(
            [
                _projection(query, level[start : start + episode_size])
                for start in range(0, level.shape[0], episode_size)
            ]
        )
    return _projection(query, level)


def test_hierarchical_read_answers_each_query_from_its_own_hierarchy():
    # Several episodes and several queries over three levels (19 chunks -> 5 read-outs -> 2 -> the answer): every
    # query must be paired with the groups of its own episode at every level.
    g = torch.Generator().manual_seed(15)
    episode_size, code_size = 4, 32
    chunks = torch.randn(2, 19, code_size, generator=g, dtype=torch.float64)
    queries = torch.randn(2, 3, code_size, generator=g, dtype=torch.float64)
    prior = torch.randn(24, code_size, generator=g, dtype=torch.float64)
    found = mem.hierarchical_read(chunks, queries, prior, episode_size)
    assert found.shape == (2, 3, code_size)
    for b in range(2):
        for i in range(3):
            expected = _hierarchy_oracle(chunks[b], queries[b, i : i + 1], episode_size)
            assert _rel(found[b, i : i + 1], expected) < 1e-9, (b, i)


def test_write_is_the_pseudo_inverse_formula_of_the_spec():
    # W0 = Z M0⁺, M = W0⁺ Z, computed in numpy float64 (LAPACK's SVD, not torch's), for a prior that is neither
    # square nor orthogonal (M0ᵀ ≠ M0⁺) and for fewer and more items than slots.
    g = torch.Generator().manual_seed(16)
    for items, slots in ((6, 10), (14, 10)):
        z = torch.randn(2, items, 12, generator=g, dtype=torch.float64)
        prior = torch.randn(slots, 12, generator=g, dtype=torch.float64)
        w0 = z.numpy() @ np.linalg.pinv(prior.numpy())
        expected = np.stack([np.linalg.pinv(w0[b]) @ z[b].numpy() for b in range(2)])
        np.testing.assert_allclose(mem.write(z, prior).numpy(), expected, rtol=1e-9, atol=1e-11)
        # The same formula from float32 encodings, computed in float32.
        np.testing.assert_allclose(mem.write(z.float(), prior.float()).numpy(), expected, rtol=2e-3, atol=2e-4)
        # Write noise is added to the encodings before both products.
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
        noisy = z.numpy() + 0.5 * noise
        w0 = noisy @ np.linalg.pinv(prior.numpy())
        expected = np.stack([np.linalg.pinv(w0[b]) @ noisy[b] for b in range(2)])
        written = mem.write(z, prior, noise_std=0.5, generator=torch.Generator().manual_seed(3))
        np.testing.assert_allclose(written.numpy(), expected, rtol=1e-9, atol=1e-11)


def test_errors_name_the_problem():
    z = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="shape \\[batch, items, latent_size\\]"):
        mem.write(z[0], torch.eye(8, 16))
    with pytest.raises(ValueError, match="empty episode"):
        mem.write(z[:, :0], torch.eye(8, 16))
    with pytest.raises(ValueError, match="latent size 16"):
        mem.write(z, torch.eye(8, 12))
    with pytest.raises(ValueError, match="latent size 12 but the memory has latent size 16"):
        mem.read(torch.randn(1, 2, 12), mem.write(z, torch.eye(8, 16)))
    with pytest.raises(ValueError, match="pinv method='svd'"):
        mem.pinv(torch.eye(3), method="svd")
    with pytest.raises(ValueError, match="do not address a memory"):
        mem.read_with_keys(torch.randn(1, 2, 5), torch.randn(1, 8, 16))
    with pytest.raises(ValueError, match="empty context"):
        mem.hierarchical_read(z[:, :0], z, torch.eye(8, 16), 4)
