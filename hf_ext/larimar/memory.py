"""Larimar's episodic memory as pure tensor math (no Hugging Face object needed).

A memory is a matrix `M` of shape `[K, C]` (K slots, latent size C), batched over episodes as `[B, K, C]`. An
episode of N encodings `Z` (`[B, N, C]`) is written in one shot against a prior memory `M0`
(Das et al., 2024, eq. 1):

    W0 = Z M0⁺          (addressing weights, [B, N, K])
    M  = W0⁺ Z          (the posterior memory, [B, K, C])

and read with queries `Q` (`[B, N', C]`):

    W = Q M⁺            (the read weights; sampled around this mean in training)
    Z_read = W M

With an exact pseudo-inverse and N <= K, reading is the orthogonal projection onto the span of the written rows:
`read(q) = q Z⁺ Z`, so `read(Z) == Z` after `write(Z)`.

Sequential writing and forgetting (paper eqs. 2-6) is a recursive least-squares update with a ridge `λ > 0`:

    C_0 = λ I,  M_0 = 0
    C_i = C_{i-1} + α_i W_iᵀ W_i
    M_i = M_{i-1} + α_i C_i⁻¹ W_iᵀ (Z_i - W_i M_{i-1})

with `α = +1` to write and `α = -1` to forget. The keys `W_i = Z_i M_ref⁺` come from a fixed reference memory, so a
fact's key can be computed again to forget it; `M_i` is always the ridge solution for the facts currently stored,
whatever the order of writes and forgets. A memory in this form is read with reference keys too:
`Z_read = (Q M_ref⁺) M`.

All functions compute in float32, or float64 when an input is float64 or `dtype=torch.float64` is asked for, with
autocast turned off (never in half precision, whatever the model dtype or an enclosing `torch.autocast`), and return
tensors of that dtype. Pseudo-inverses are exact (an SVD in the compute dtype) with a cut-off of `max(m, n) * eps`
relative to the largest singular value, where `eps` is that of the precision the entries carry but never coarser than
float32's: a float32 matrix computed in float64 keeps float32's cut-off, so that its spurious singular values are
dropped rather than inverted, and a bfloat16 / float16 matrix gets float32's (their own `eps` times `max(m, n)` exceeds
1 for a few hundred rows and would drop every singular value). The iterative Ben-Israel-Cohen approximation of the
official implementation is available as `pinv_method="ben_israel"`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable

import torch

from .._validation import check_range


__all__ = [
    "PINV_METHODS",
    "addresses",
    "ben_israel_pinv",
    "compute_dtype",
    "default_rtol",
    "hierarchical_read",
    "item_weights",
    "nearest_distance",
    "pinv",
    "addressing_loss",
    "read",
    "read_with_keys",
    "reference_keys",
    "ridge_memory",
    "scope_mask",
    "sequential_write",
    "w_kl",
    "write",
]

PINV_METHODS = ("exact", "ben_israel")
"""Pseudo-inverse methods: `"exact"` (SVD, float64, dtype-aware cut-off) and `"ben_israel"` (the official
fixed-step iteration, which diverges when encodings are large)."""


def _autocast_off(function):
    """Run `function` with autocast disabled on the CPU and on the devices of its tensor arguments, so that memory
    math stays in the dtype it chose even inside `torch.autocast(...)` (e.g. `Trainer(bf16=True)`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        device_types = {"cpu"}
        device_types.update(a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        with contextlib.ExitStack() as stack:
            for device_type in sorted(device_types):
                if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return function(*args, **kwargs)

    return wrapper


def _check_finite(**tensors: torch.Tensor | None) -> None:
    """Raise `ValueError` naming the tensors that hold NaN or infinite values (one device-to-host copy when they
    share a device: a synchronisation on an accelerator)."""
    named = [(name, t) for name, t in tensors.items() if isinstance(t, torch.Tensor)]
    if not named:
        return
    flags = [torch.isfinite(t).all() for _, t in named]
    if len({f.device for f in flags}) == 1:
        flags = torch.stack(flags).tolist()
    else:
        flags = [bool(f) for f in flags]
    bad = [name for (name, _), ok in zip(named, flags) if not ok]
    if bad:
        raise ValueError(
            f"{' and '.join(bad)} hold{'s' if len(bad) == 1 else ''} NaN or infinite values; the memory math needs "
            "finite encodings and memories (a NaN would spread to every slot it is written to)."
        )


def compute_dtype(*tensors: torch.Tensor, dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype memory math runs in: `dtype` when given, else float64 if any input is float64, else float32."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"dtype={dtype} is not supported for memory math; expected torch.float32 or torch.float64."
            )
        return dtype
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def default_rtol(shape: tuple[int, ...] | torch.Size, input_dtype: torch.dtype) -> float:
    """The default pseudo-inverse cut-off `max(m, n) * eps` for `[..., m, n]` matrices whose entries carry
    `input_dtype`'s precision; `eps` is float64's for float64 entries and float32's for everything else (half
    precision entries are computed in float32, and `max(m, n) * eps(bfloat16)` exceeds 1 from 129 rows on)."""
    precision = torch.float64 if input_dtype == torch.float64 else torch.float32
    return max(shape[-2], shape[-1]) * torch.finfo(precision).eps


def pinv(
    a: torch.Tensor,
    *,
    rtol: float | None = None,
    method: str = "exact",
    steps: int = 15,
    init_scale: float = 5e-4,
    input_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of the last two dimensions of `a`, in `a`'s dtype (computed in float32 at least).

    Args:
        a (`torch.Tensor` of shape `[..., m, n]`):
            The matrices.
        rtol (`float`, *optional*):
            Singular values below `rtol * σ_max` are treated as zero. Defaults to [`default_rtol`] of `input_dtype`.
        method (`str`, *optional*, defaults to `"exact"`):
            `"exact"`: an SVD in `a`'s dtype, or float32 for half precision (stable, and differentiable while the
            rank does not change); `"ben_israel"`: [`ben_israel_pinv`] with `steps` and `init_scale`.
        steps (`int`, *optional*, defaults to 15), init_scale (`float`, *optional*, defaults to 5e-4):
            Only for `"ben_israel"`.
        input_dtype (`torch.dtype`, *optional*):
            The precision the entries of `a` really carry (e.g. float32 for a memory written from float32 encodings
            and upcast to float64), which sets the default cut-off; `a.dtype` by default.

    Raises:
        `ValueError`: `a` has fewer than 2 dimensions or holds NaN / infinite values, or `rtol` is negative.
    """
    if not isinstance(a, torch.Tensor) or a.ndim < 2:
        raise ValueError(f"pinv needs matrices [..., m, n]; got {getattr(a, 'shape', type(a).__name__)}.")
    check_range("rtol", rtol, ge=0, optional=True)
    _check_finite(a=a)
    return _pinv(a, rtol=rtol, method=method, steps=steps, init_scale=init_scale, input_dtype=input_dtype)


def _pinv(a, *, rtol=None, method="exact", steps=15, init_scale=5e-4, input_dtype=None) -> torch.Tensor:
    if method == "ben_israel":
        return _ben_israel(a, steps, init_scale)
    if method != "exact":
        raise ValueError(f"pinv method={method!r} is not supported; expected one of {PINV_METHODS}.")
    if rtol is None:
        rtol = default_rtol(a.shape, input_dtype or a.dtype)
    compute = a if a.dtype in (torch.float32, torch.float64) else a.float()
    return torch.linalg.pinv(compute, rtol=rtol).to(a.dtype)


def ben_israel_pinv(a: torch.Tensor, steps: int = 15, init_scale: float = 5e-4) -> torch.Tensor:
    """The Ben-Israel-Cohen iteration `X <- 2X - X A X` from `X_0 = init_scale * Aᵀ`, as in the official code.

    It converges to `A⁺` only when `init_scale < 2 / σ_max(A)²`, and slowly when `A` is ill-conditioned: with large
    encodings it diverges (to inf / NaN). Offered for comparison with the official implementation; prefer
    `method="exact"`.
    """
    check_range("steps", steps, ge=0, integer=True)
    check_range("init_scale", init_scale, gt=0)
    _check_finite(a=a)
    return _ben_israel(a, steps, init_scale)


def _ben_israel(a: torch.Tensor, steps: int, init_scale: float) -> torch.Tensor:
    x = init_scale * a.transpose(-2, -1)
    for _ in range(steps):
        x = 2 * x - x @ a @ x
    return x


def _check_latents(name: str, z: torch.Tensor, code_size: int | None = None) -> None:
    if z.ndim != 3:
        raise ValueError(f"{name} must have shape [batch, items, latent_size]; got shape {tuple(z.shape)}.")
    if code_size is not None and z.shape[-1] != code_size:
        raise ValueError(
            f"{name} has latent size {z.shape[-1]} but the memory has latent size {code_size} "
            f"(shape {tuple(z.shape)})."
        )


def _batched_memory(memory: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
    if memory.ndim == 2:
        return memory.unsqueeze(0).expand(batch_size, -1, -1)
    if memory.ndim != 3 or memory.shape[0] not in (1, batch_size):
        raise ValueError(
            f"{name} must have shape [memory_size, latent_size] or [batch ({batch_size}), memory_size, latent_size]; "
            f"got shape {tuple(memory.shape)}."
        )
    return memory.expand(batch_size, -1, -1)


def write(
    z: torch.Tensor,
    prior: torch.Tensor,
    *,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    pinv_method: str = "exact",
    pinv_steps: int = 15,
    rtol: float | None = None,
    dtype: torch.dtype | None = None,
    prior_pinv: torch.Tensor | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Write an episode into memory in one shot: `W0 = Z M0⁺`, `M = W0⁺ Z`.

    Args:
        z (`torch.Tensor` of shape `[B, N, C]`):
            The episode's encodings (B episodes of N items).
        prior (`torch.Tensor` of shape `[K, C]` or `[B, K, C]`):
            The prior memory `M0`.
        noise_std (`float`, *optional*, defaults to 0):
            Standard deviation of the write noise `ξ` added to `z` (training only; 0 is deterministic).
        generator (`torch.Generator`, *optional*):
            Source of the write noise.
        pinv_method, pinv_steps, rtol:
            See [`pinv`].
        dtype (`torch.dtype`, *optional*):
            Compute dtype (float32 or float64); see [`compute_dtype`].
        prior_pinv (`torch.Tensor` of shape `[C, K]` or `[B, C, K]`, *optional*):
            `M0⁺`, when already computed (e.g. once for several writes against the same prior). Otherwise it is
            computed here, once for all episodes when the prior is shared (`[K, C]`).
        check_finite (`bool`, *optional*, defaults to `True`):
            Raise a `ValueError` when an input holds NaN or infinite values (one device-to-host copy, a
            synchronisation on an accelerator). The model's training forward passes `False`.

    Returns:
        `torch.Tensor` of shape `[B, K, C]`: the posterior memory.
    """
    _check_latents("z", z)
    if z.shape[1] == 0:
        raise ValueError("Cannot write an empty episode (z has 0 items).")
    if prior.shape[-1] != z.shape[-1]:
        raise ValueError(f"z has latent size {z.shape[-1]} but the prior memory has shape {tuple(prior.shape)}.")
    check_range("noise_std", noise_std, ge=0)
    if check_finite:
        _check_finite(z=z, prior=prior, prior_pinv=prior_pinv)
    z_dtype = z.dtype
    dtype = compute_dtype(z, prior, dtype=dtype)
    z = z.to(dtype)
    kwargs = {"method": pinv_method, "steps": pinv_steps, "rtol": rtol}
    if prior_pinv is None:
        _batched_memory(prior, z.shape[0], "prior")  # checks the shape
        # A shared prior ([K, C] or [1, K, C]) is inverted once and broadcast over the episodes.
        prior_pinv = _pinv(prior.to(dtype), input_dtype=prior.dtype, **kwargs)
    if noise_std > 0:
        z = z + noise_std * torch.randn(z.shape, generator=generator, device=z.device, dtype=dtype)
    w0 = z @ prior_pinv.to(dtype)
    return _pinv(w0, input_dtype=z_dtype, **kwargs) @ z


def addresses(
    q: torch.Tensor,
    memory: torch.Tensor,
    *,
    pinv_method: str = "exact",
    pinv_steps: int = 15,
    rtol: float | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The mean read weights `W̄ = Q M⁺` (`[B, N', K]`) of queries `q` (`[B, N', C]`) in `memory` (`[B, K, C]`)."""
    _check_latents("q", q, memory.shape[-1])
    _check_finite(q=q, memory=memory)
    memory_dtype = memory.dtype
    dtype = compute_dtype(q, memory, dtype=dtype)
    memory = _batched_memory(memory.to(dtype), q.shape[0], "memory")
    m_pinv = _pinv(memory, method=pinv_method, steps=pinv_steps, rtol=rtol, input_dtype=memory_dtype)
    return q.to(dtype) @ m_pinv


def read(
    q: torch.Tensor,
    memory: torch.Tensor,
    *,
    w_logvar: torch.Tensor | float | None = None,
    generator: torch.Generator | None = None,
    iterations: int = 1,
    pinv_method: str = "exact",
    pinv_steps: int = 15,
    rtol: float | None = None,
    dtype: torch.dtype | None = None,
    return_addresses: bool = False,
    check_finite: bool = True,
):
    """Read `memory` with queries `q`: `W = Q M⁺`, `Z_read = W M`.

    Deterministic unless `w_logvar` is given: then the read weights are sampled, `W = W̄ + exp(w_logvar / 2) ε`
    (the training-time read of the paper).

    Args:
        q (`torch.Tensor` of shape `[B, N', C]`):
            The queries.
        memory (`torch.Tensor` of shape `[B, K, C]` or `[K, C]`):
            The memory, e.g. from [`write`].
        w_logvar (`torch.Tensor` broadcastable to `[B, N', K]`, or `float`, *optional*):
            Log-variance of the read weights; `None` reads the mean.
        generator (`torch.Generator`, *optional*):
            Source of the sampling noise.
        iterations (`int`, *optional*, defaults to 1):
            Read iteratively: `z <- read(z)`, `iterations` times (the first read uses `q`).
        pinv_method, pinv_steps, rtol, dtype:
            See [`write`].
        return_addresses (`bool`, *optional*, defaults to `False`):
            Also return the mean read weights `W̄` of the last iteration.
        check_finite (`bool`, *optional*, defaults to `True`):
            Raise a `ValueError` when an input holds NaN or infinite values (one device-to-host copy, a
            synchronisation on an accelerator). The model's training forward passes `False`.

    Returns:
        `torch.Tensor` of shape `[B, N', C]` (and `W̄`, `[B, N', K]`, with `return_addresses`). Zero queries
        (`N' = 0`) read an empty `[B, 0, C]`.
    """
    _check_latents("q", q, memory.shape[-1])
    check_range("iterations", iterations, ge=1, integer=True)
    if check_finite:
        _check_finite(q=q, memory=memory, w_logvar=w_logvar if isinstance(w_logvar, torch.Tensor) else None)
        if w_logvar is not None and not isinstance(w_logvar, torch.Tensor):
            check_range("w_logvar", w_logvar)
    memory_dtype = memory.dtype
    dtype = compute_dtype(q, memory, dtype=dtype)
    memory = _batched_memory(memory.to(dtype), q.shape[0], "memory")
    m_pinv = _pinv(memory, method=pinv_method, steps=pinv_steps, rtol=rtol, input_dtype=memory_dtype)
    z = q.to(dtype)
    for _ in range(iterations):
        w_mean = z @ m_pinv
        w = w_mean
        if w_logvar is not None:
            std = torch.exp(0.5 * torch.as_tensor(w_logvar, dtype=dtype, device=z.device))
            w = w_mean + std * torch.randn(w_mean.shape, generator=generator, device=z.device, dtype=dtype)
        z = w @ memory
    return (z, w_mean) if return_addresses else z


def w_kl(w_mean: torch.Tensor, w_logvar: torch.Tensor | float, *, check_finite: bool = True) -> torch.Tensor:
    """KL divergence of the read weights from the standard normal prior, summed over slots:
    `½ Σ_k (exp(logvar) + W̄² - 1 - logvar)`; shape `w_mean.shape[:-1]`. With `check_finite` (the default; the
    model's training forward turns it off), NaN or infinite inputs are a `ValueError`."""
    if check_finite:
        _check_finite(w_mean=w_mean, w_logvar=torch.as_tensor(w_logvar, device=w_mean.device))
    w_logvar = torch.as_tensor(w_logvar, dtype=w_mean.dtype, device=w_mean.device)
    return 0.5 * (torch.exp(w_logvar) + w_mean.square() - 1 - w_logvar).sum(-1)


def reference_keys(
    z: torch.Tensor, reference: torch.Tensor, *, rtol: float | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Keys `W = Z M_ref⁺` (`[B, N, K]`) of encodings `z` (`[B, N, C]`) in a fixed reference memory (`[K, C]`).

    The same encoding always gets the same key, which is what lets [`sequential_write`] forget it later.
    """
    _check_latents("z", z, reference.shape[-1])
    _check_finite(z=z, reference=reference)
    reference_dtype = reference.dtype
    dtype = compute_dtype(z, reference, dtype=dtype)
    reference = _batched_memory(reference.to(dtype), z.shape[0], "reference")
    return z.to(dtype) @ _pinv(reference, rtol=rtol, input_dtype=reference_dtype)


def read_with_keys(keys: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """`Z_read = W M` for keys `W` (`[B, N', K]`), e.g. from [`reference_keys`], and a memory (`[B, K, C]`)."""
    if keys.ndim != 3 or keys.shape[-1] != memory.shape[-2]:
        raise ValueError(
            f"keys of shape {tuple(keys.shape)} do not address a memory of shape {tuple(memory.shape)} "
            "(expected [batch, items, memory_size])."
        )
    _check_finite(keys=keys, memory=memory)
    dtype = compute_dtype(keys, memory)
    return keys.to(dtype) @ _batched_memory(memory.to(dtype), keys.shape[0], "memory")


def ridge_memory(
    batch_size: int,
    memory_size: int,
    latent_size: int,
    ridge: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty memory for [`sequential_write`]: `M_0 = 0` (`[B, K, C]`) and `C_0 = λ I` (`[B, K, K]`)."""
    check_range(
        "ridge",
        ridge,
        gt=0,
        hint="(without a ridge, forgetting is a no-op while fewer than memory_size items are stored)",
    )
    for name, size in (("batch_size", batch_size), ("memory_size", memory_size), ("latent_size", latent_size)):
        check_range(name, size, ge=1, integer=True)
    memory = torch.zeros(batch_size, memory_size, latent_size, dtype=dtype, device=device)
    precision = ridge * torch.eye(memory_size, dtype=dtype, device=device).expand(batch_size, -1, -1).clone()
    return memory, precision


def sequential_write(
    z: torch.Tensor,
    keys: torch.Tensor,
    memory: torch.Tensor,
    precision: torch.Tensor,
    *,
    alpha: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recursive least-squares step: write (`alpha=+1`) or forget (`alpha=-1`) encodings `z` with keys `keys`.

    `C' = C + α WᵀW`, `M' = M + α C'⁻¹ Wᵀ (Z - W M)`. Writing N rows at once equals writing them one at a time.

    Args:
        z (`torch.Tensor` of shape `[B, N, C]`): The encodings.
        keys (`torch.Tensor` of shape `[B, N, K]`): Their keys, e.g. from [`reference_keys`].
        memory (`torch.Tensor` of shape `[B, K, C]`), precision (`torch.Tensor` of shape `[B, K, K]`):
            The state, from [`ridge_memory`] or a previous call.
        alpha (`float`, *optional*, defaults to 1): `+1` writes, `-1` forgets.

    Returns:
        The new `(memory, precision)`. Zero encodings (`N = 0`) leave the state unchanged.
    """
    _check_latents("z", z, memory.shape[-1])
    if keys.shape[:2] != z.shape[:2] or keys.shape[-1] != memory.shape[-2]:
        raise ValueError(
            f"keys of shape {tuple(keys.shape)} do not match z of shape {tuple(z.shape)} and a memory of shape "
            f"{tuple(memory.shape)}."
        )
    k = memory.shape[-2]
    if precision.shape[-2:] != (k, k) or precision.shape[:-2] != memory.shape[:-2]:
        raise ValueError(
            f"precision of shape {tuple(precision.shape)} does not match a memory of shape {tuple(memory.shape)} "
            f"(expected [batch, {k}, {k}])."
        )
    check_range("alpha", alpha, hint="(+1 writes, -1 forgets)")
    _check_finite(z=z, keys=keys, memory=memory, precision=precision)
    dtype = compute_dtype(z, keys, memory, precision)
    z, keys, memory, precision = (t.to(dtype) for t in (z, keys, memory, precision))
    keys_t = keys.transpose(-2, -1)
    precision = precision + alpha * keys_t @ keys
    residual = z - keys @ memory
    memory = memory + alpha * torch.linalg.solve(precision, keys_t @ residual)
    return memory, precision


def item_weights(query_keys: torch.Tensor, item_keys: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """How much of each stored item a read draws on: `A = W_q C⁻¹ W_itemsᵀ` (`[B, Q, N]`).

    A memory written with [`sequential_write`] from [`ridge_memory`] is the ridge solution `M = C⁻¹ Wᵀ Z` for the
    items stored, so a read is a combination of their encodings: `W_q M = A Z`. Row `q` of `A` says which items query
    `q` reads (with fewer items than slots and a small ridge, `A ≈ W_q W⁺`, the least-squares fit of the query's key
    by the items' keys; past the memory's capacity the items blur into each other and `A` spreads).

    Args:
        query_keys (`torch.Tensor` of shape `[B, Q, K]`): Keys of the queries, e.g. from [`reference_keys`].
        item_keys (`torch.Tensor` of shape `[B, N, K]`): Keys of the items currently stored.
        precision (`torch.Tensor` of shape `[B, K, K]`): The state's `C` (from [`sequential_write`]).
    """
    if query_keys.ndim != 3 or item_keys.ndim != 3 or precision.ndim != 3:
        raise ValueError(
            f"query_keys [B, Q, K], item_keys [B, N, K] and precision [B, K, K] expected; got "
            f"{tuple(query_keys.shape)}, {tuple(item_keys.shape)} and {tuple(precision.shape)}."
        )
    k = precision.shape[-1]
    if query_keys.shape[-1] != k or item_keys.shape[-1] != k or precision.shape[-2] != k:
        raise ValueError(
            f"Keys of shapes {tuple(query_keys.shape)} and {tuple(item_keys.shape)} do not match a precision "
            f"matrix of shape {tuple(precision.shape)}."
        )
    _check_finite(query_keys=query_keys, item_keys=item_keys, precision=precision)
    dtype = compute_dtype(query_keys, item_keys, precision)
    solved = torch.linalg.solve(precision.to(dtype), item_keys.to(dtype).transpose(-2, -1))  # [B, K, N]
    return query_keys.to(dtype) @ solved


def addressing_loss(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    *,
    threshold: float,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Cross-entropy of "which stored item does each query address, or none": the logits are the queries' cosine
    similarities to the items over `temperature`, plus one "none" logit `(1 - threshold) / temperature` (the
    similarity at the scope threshold's distance). A query about a stored item learns to be nearer to it than to
    the others and than the threshold; a query about nothing stored (target `-1`) learns to stay beyond it.

    Args:
        queries (`torch.Tensor` of shape `[B, Q, C]`), items (`torch.Tensor` of shape `[B, N, C]`): Latents.
        targets (`torch.LongTensor` of shape `[B, Q]`): The item each query is about, `-1` for none.
        threshold (`float`): The scope threshold (a cosine distance in `[0, 2]`).
    """
    check_range("threshold", threshold, ge=0, le=2, hint="(a cosine distance)")
    check_range("temperature", temperature, gt=0)
    if queries.ndim != 3 or items.ndim != 3 or queries.shape[::2] != items.shape[::2]:
        raise ValueError(
            f"queries [B, Q, C] and items [B, N, C] expected; got {tuple(queries.shape)} and {tuple(items.shape)}."
        )
    if targets.shape != queries.shape[:2]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match queries {tuple(queries.shape)}.")
    if bool(((targets < -1) | (targets >= items.shape[1])).any()):
        raise ValueError(f"targets must be item indices in [0, {items.shape[1]}) or -1 (none).")
    dtype = compute_dtype(queries, items)
    q = torch.nn.functional.normalize(queries.to(dtype), dim=-1)
    k = torch.nn.functional.normalize(items.to(dtype), dim=-1)
    similarity = q @ k.transpose(-2, -1)
    none = similarity.new_full((*similarity.shape[:2], 1), 1.0 - threshold)
    logits = torch.cat([similarity, none], -1) / temperature
    labels = torch.where(targets < 0, items.shape[1], targets)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def scope_mask(queries: torch.Tensor, stored: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which queries are in scope: their smallest cosine distance to a stored encoding is at most `threshold`.

    Args:
        queries (`torch.Tensor` of shape `[B, Q, D]`), stored (`torch.Tensor` of shape `[B, S, D]` or `[S, D]`):
            Encodings (any embedding; hf-ext uses the Larimar latents).
        threshold (`float`): Cosine distance in `[0, 2]`.

    Returns:
        `torch.BoolTensor` of shape `[B, Q]`; all `False` when nothing is stored.
    """
    check_range("threshold", threshold, ge=0, le=2, hint="(a cosine distance)")
    if stored.ndim == 2:
        stored = stored.unsqueeze(0).expand(queries.shape[0], -1, -1)
    if queries.ndim != 3 or stored.ndim != 3 or stored.shape[-1] != queries.shape[-1]:
        raise ValueError(
            f"queries [B, Q, D] and stored [B, S, D] or [S, D] must share D; got {tuple(queries.shape)} and "
            f"{tuple(stored.shape)}."
        )
    _check_finite(queries=queries, stored=stored)
    if stored.shape[1] == 0:
        return torch.zeros(queries.shape[:2], dtype=torch.bool, device=queries.device)
    return nearest_distance(queries, stored) <= threshold


def nearest_distance(queries: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Each query's smallest cosine distance to the stored encodings (`[B, Q, D]` and `[B, S, D]`, `S >= 1`):
    `[B, Q]`, what [`scope_mask`] compares with its threshold."""
    dtype = compute_dtype(queries, stored)
    q = torch.nn.functional.normalize(queries.to(dtype), dim=-1)
    s = torch.nn.functional.normalize(stored.to(dtype), dim=-1)
    return 1 - (q @ s.transpose(-2, -1)).amax(-1)


def hierarchical_read(
    chunks: torch.Tensor,
    queries: torch.Tensor,
    prior: torch.Tensor,
    episode_size: int,
    *,
    write_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    read_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Read a context longer than one episode (paper §5.5): write each group of `episode_size` chunks into its own
    memory, read every memory with the query, write the read-outs into a next-level memory, and repeat until the
    read-outs fit one episode; return the final read-out.

    Args:
        chunks (`torch.Tensor` of shape `[B, T, C]`): Encodings of the context's chunks (T may exceed `episode_size`).
        queries (`torch.Tensor` of shape `[B, Q, C]`): The queries; each is answered on its own.
        prior (`torch.Tensor` of shape `[K, C]`): The prior memory every level writes against.
        episode_size (`int`): How many encodings one memory holds.
        write_fn, read_fn (*optional*): Replace [`write`] `(z, prior) -> memory` and [`read`]
            `(q, memory) -> z` (e.g. to pass a pseudo-inverse method); the defaults are the deterministic ones.

    Returns:
        `torch.Tensor` of shape `[B, Q, C]`.
    """
    _check_latents("chunks", chunks, prior.shape[-1])
    _check_latents("queries", queries, prior.shape[-1])
    if episode_size < 2:
        raise ValueError(f"episode_size={episode_size} must be >= 2 for a hierarchical read.")
    if chunks.shape[1] == 0:
        raise ValueError("Cannot read an empty context (0 chunks).")
    _check_finite(chunks=chunks, queries=queries, prior=prior)
    write_fn = write_fn or (lambda z, m0: write(z, m0))
    read_fn = read_fn or (lambda q, m: read(q, m))
    batch, num_queries, code_size = queries.shape
    dtype = compute_dtype(chunks, queries, prior)
    # One independent hierarchy per (episode, query): [B * Q, T, C].
    level = chunks.to(dtype).repeat_interleave(num_queries, dim=0)
    q = queries.to(dtype).reshape(batch * num_queries, 1, code_size)
    while level.shape[1] > episode_size:
        length = level.shape[1]
        groups = math.ceil(length / episode_size)
        # Zero rows pad the last group; an exact pseudo-inverse ignores them.
        padded = torch.nn.functional.pad(level, (0, 0, 0, groups * episode_size - length))
        grouped = padded.reshape(-1, episode_size, code_size)  # [B*Q*G, S, C]
        memories = write_fn(grouped, prior.to(dtype))
        readouts = read_fn(q.repeat_interleave(groups, dim=0), memories)  # [B*Q*G, 1, C]
        level = readouts.reshape(batch * num_queries, groups, code_size)
    final = read_fn(q, write_fn(level, prior.to(dtype)))
    return final.reshape(batch, num_queries, code_size)


# Autocast is turned off by wrapping the public functions here rather than with `@_autocast_off` on each: mutation
# testing (`make mutate`, mutmut) leaves decorated functions alone, and these are the ones it must reach.
pinv = _autocast_off(pinv)
write = _autocast_off(write)
addresses = _autocast_off(addresses)
read = _autocast_off(read)
w_kl = _autocast_off(w_kl)
reference_keys = _autocast_off(reference_keys)
read_with_keys = _autocast_off(read_with_keys)
sequential_write = _autocast_off(sequential_write)
item_weights = _autocast_off(item_weights)
addressing_loss = _autocast_off(addressing_loss)
scope_mask = _autocast_off(scope_mask)
hierarchical_read = _autocast_off(hierarchical_read)
