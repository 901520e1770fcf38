"""The math of SEAL's data ranker, in plain torch: no Hugging Face object is needed here.

SEAL (Shen et al., ICLR 2025) learns one logit ω_i per fine-tuning example by bilevel optimisation:

    min_ω  Σ_j ℓ(θ*(ω); safe_j)   s.t.   θ*(ω) ∈ argmin_θ Σ_i σ_i(ω) ℓ(θ; ft_i)

and solves it with a first-order penalty method: the model minimises `λ · f_safe(θ) + (1 - λ) · mean_i σ_i ℓ_i(θ)`
while the ranker minimises `mean_i σ_i(ω) · ℓ_i(θ)` (the losses detached), or, in the full algorithm,
`mean_i σ_i(ω) · (ℓ_i(θ) - ℓ_i(θ̂))` with an auxiliary model θ̂ ≈ θ*(ω).

The functions below are those pieces: the weights σ(ω), the ranker's objective, the upper-level weight schedule,
per-example losses from token losses, the cycling order of the safe set, top-k selection and AUROC.
"""

from __future__ import annotations

import math

import torch

from .._validation import check_range


__all__ = [
    "WEIGHTINGS",
    "auroc",
    "cycling_indices",
    "example_weights",
    "initial_logits",
    "ranker_objective",
    "sequence_losses",
    "top_k_mask",
    "upper_level_weight",
]

WEIGHTINGS = ("softmax", "sigmoid")
"""How logits become example weights: `N · softmax(ω)` or `2 · sigmoid(ω)` (both average 1 at uniform logits)."""


def _check_vector(name: str, x: torch.Tensor, length: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if x.dim() != 1 or (length is not None and x.shape[0] != length):
        expected = f"({length},)" if length is not None else "(N,)"
        raise ValueError(f"{name} must have shape {expected}; got {tuple(x.shape)}.")


def _check_finite(name: str, x: torch.Tensor, hint: str = "") -> None:
    # One device-to-host copy (the trainer reads its losses back every step anyway).
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).nonzero()[:5].tolist()
        raise ValueError(f"{name} hold NaN or infinite values (at {bad}){hint}.")


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not supported; expected one of {list(WEIGHTINGS)}.")


def initial_logits(num_examples: int, weighting: str = "softmax", dtype: torch.dtype = torch.float32, device=None):
    """Uniform starting logits: every example weighs 1 (softmax: ω = 0, so `N · softmax(ω) = 1`; sigmoid: ω = 0,
    so `2 · sigmoid(ω) = 1`)."""
    _check_weighting(weighting)
    check_range("num_examples", num_examples, ge=1, integer=True)
    return torch.zeros(num_examples, dtype=dtype, device=device)


def example_weights(logits: torch.Tensor, weighting: str = "softmax") -> torch.Tensor:
    """The weights σ(ω) of all examples, in float32 or wider, averaging 1 at uniform logits.

    Args:
        logits (`torch.Tensor` of shape `(N,)`): The ranker's logits ω.
        weighting (`str`, *optional*, defaults to `"softmax"`):
            `"softmax"`: `N · softmax(ω)` (the weights always sum to N, so raising one lowers the others);
            `"sigmoid"`: `2 · sigmoid(ω)` (each weight in (0, 2), independent of the others).
    """
    _check_weighting(weighting)
    _check_vector("logits", logits)
    _check_finite("logits", logits)
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if weighting == "softmax":
        return logits.numel() * torch.softmax(logits, dim=0)
    return 2.0 * torch.sigmoid(logits)


def ranker_objective(
    logits: torch.Tensor,
    indices: torch.Tensor,
    losses: torch.Tensor,
    weighting: str = "softmax",
    reference_losses: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ranker's loss on a batch: `mean_{i ∈ batch} σ_i(ω) · (ℓ_i - ℓ̂_i)`, differentiable in `logits` only.

    Minimising it lowers the logits of the examples whose loss is high (penalty algorithm) or whose loss is high
    compared with the auxiliary model's (full algorithm, `reference_losses` = ℓ_i(θ̂)).

    Args:
        logits (`torch.Tensor` of shape `(N,)`): The ranker's logits ω over the whole fine-tuning set.
        indices (`torch.Tensor` of shape `(B,)`): Which examples are in the batch (each at most once).
        losses (`torch.Tensor` of shape `(B,)`): Their losses ℓ_i(θ) (detached here).
        weighting (`str`, *optional*, defaults to `"softmax"`): See [`example_weights`].
        reference_losses (`torch.Tensor` of shape `(B,)`, *optional*): ℓ_i(θ̂) for the full algorithm.
    """
    _check_vector("indices", indices)
    _check_vector("losses", losses, indices.shape[0])
    if reference_losses is not None:
        _check_vector("reference_losses", reference_losses, indices.shape[0])
    if indices.numel() == 0:
        return logits.sum() * 0.0
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be integer positions into logits; got dtype {indices.dtype}.")
    _check_finite("losses", losses)
    if reference_losses is not None:
        _check_finite("reference_losses", reference_losses)
    weights = example_weights(logits, weighting)[indices]
    signal = losses.detach().to(weights.dtype)
    if reference_losses is not None:
        signal = signal - reference_losses.detach().to(weights.dtype)
    return (weights * signal).mean()


def upper_level_weight(start: float, decay: float, epoch: float) -> float:
    """λ for an epoch: `start - decay · floor(epoch)`, clipped to [0, 1] (λ = 1 trains on the safe set only)."""
    check_range("start", start, ge=0, le=1)
    check_range("decay", decay, ge=0)
    check_range("epoch", epoch, ge=0)
    return float(min(1.0, max(0.0, start - decay * math.floor(epoch + 1e-9))))


def sequence_losses(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example causal-LM losses: the mean, over the example's masked-in target tokens, of the token
    cross-entropy (the next-token shift is done here).

    The cross-entropy is computed in float32 (or wider) a chunk of positions at a time, and its gradient likewise:
    no float32 copy of the full-vocabulary logits is made (at 16 x 1024 positions x 128k vocabulary that copy is ~8 GB),
    and the result equals `cross_entropy(logits.float())` to float32 rounding.

    Args:
        logits (`torch.Tensor` of shape `(B, T, V)`): The model's logits, in any floating dtype.
        input_ids (`torch.Tensor` of shape `(B, T)`): The tokens.
        loss_mask (`torch.Tensor` of shape `(B, T)`): 1 where a token is a target (a completion token), else 0.
        chunk_size (`int`, *optional*):
            How many positions to upcast at once; by default as many as fit in 2^24 elements (64 MB in float32).

    Returns:
        `(losses, counts)`: the `(B,)` token-mean losses in float32 (0 where an example has no target token) and
        the `(B,)` numbers of target tokens.
    """
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2] or loss_mask.shape != input_ids.shape:
        raise ValueError(
            f"logits must be [B, T, V] with input_ids and loss_mask [B, T]; got logits {tuple(logits.shape)}, "
            f"input_ids {tuple(input_ids.shape)} and loss_mask {tuple(loss_mask.shape)}."
        )
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be floating point; got dtype {logits.dtype}.")
    check_range("chunk_size", chunk_size, ge=1, integer=True, optional=True)
    if chunk_size is None:
        chunk_size = max(1, 2**24 // max(1, logits.size(-1)))
    if input_ids.numel():
        low, high = torch.stack([input_ids.min(), input_ids.max()]).tolist()  # one device-to-host copy
        if low < 0 or high >= logits.size(-1):
            raise ValueError(
                f"input_ids hold token ids from {low} to {high}, outside the {logits.size(-1)} columns of the logits: "
                "the tokenizer does not belong to the model."
            )
    token_losses = _ShiftedTokenCrossEntropy.apply(logits, input_ids[:, 1:], chunk_size)
    mask = loss_mask[:, 1:].to(token_losses.dtype)
    counts = mask.sum(dim=1)
    losses = (token_losses * mask).sum(dim=1) / counts.clamp(min=1)
    # Checked on the (B,) result rather than the [B, T, V] logits: a NaN or infinite logit makes its row's loss NaN.
    _check_finite("losses", torch.where(counts > 0, losses, 0.0), " (the logits are not finite)")
    return losses, counts


class _ShiftedTokenCrossEntropy(torch.autograd.Function):
    """`-log_softmax(logits[:, t])[targets[:, t]]` for t < T - 1, upcast a chunk of positions at a time.

    Saves the logits (alive anyway) and one log-sum-exp per position; the backward recomputes the softmax chunk by
    chunk, so neither pass holds more than one upcast chunk.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        batch, positions = targets.shape
        lse = torch.empty(batch, positions, dtype=compute_dtype, device=logits.device)
        for row in range(batch):
            for start in range(0, positions, chunk_size):
                end = min(start + chunk_size, positions)
                lse[row, start:end] = torch.logsumexp(logits[row, start:end].to(compute_dtype), dim=-1)
        target_logits = logits[:, :positions].gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(compute_dtype)
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk_size = chunk_size
        return lse - target_logits

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        grad_logits = torch.zeros_like(logits)
        batch, positions = targets.shape
        for row in range(batch):
            for start in range(0, positions, ctx.chunk_size):
                end = min(start + ctx.chunk_size, positions)
                block = torch.exp(logits[row, start:end].to(lse.dtype) - lse[row, start:end, None])
                block[torch.arange(end - start, device=block.device), targets[row, start:end]] -= 1
                grad_logits[row, start:end] = block * grad_output[row, start:end, None]
        return grad_logits, None, None


def cycling_indices(num_examples: int, start: int, count: int, seed: int = 0) -> list[int]:
    """Positions `[start, start + count)` of an endless stream that visits `range(num_examples)` in a fresh
    seeded permutation every cycle, so a small safe set cycles instead of ending an epoch early.

    The stream is a pure function of `(num_examples, seed)`: resuming at any `start` continues it exactly.
    """
    check_range("num_examples", num_examples, ge=1, integer=True)
    check_range("start", start, ge=0, integer=True)
    check_range("count", count, ge=0, integer=True)
    out: list[int] = []
    position = start
    while len(out) < count:
        cycle, offset = divmod(position, num_examples)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + cycle)
        permutation = torch.randperm(num_examples, generator=generator).tolist()
        take = min(count - len(out), num_examples - offset)
        out.extend(permutation[offset : offset + take])
        position += take
    return out


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A boolean mask of the `k` highest scores; ties go to the earlier position, so the result is deterministic.

    `±inf` scores rank first / last (`seal_filter` gives unscored rows `-inf`); a NaN score has no rank and is a
    `ValueError`.
    """
    n = scores.numel()
    if torch.isnan(scores).any():
        raise ValueError(
            f"scores hold NaN at positions {torch.isnan(scores).flatten().nonzero().flatten()[:5].tolist()}."
        )
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be between 0 and the number of scores ({n}).")
    scores = scores.detach().double().cpu()
    # Stable sort of -scores: equal scores keep their original (position) order.
    order = torch.sort(-scores, stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def auroc(positive_scores, negative_scores) -> float:
    """The probability that a positive example scores above a negative one (ties count one half): the area under
    the ROC curve of `score` as a detector of positives."""
    pos = torch.as_tensor(positive_scores, dtype=torch.float64).flatten()
    neg = torch.as_tensor(negative_scores, dtype=torch.float64).flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("auroc needs at least one positive and one negative score.")
    if torch.isnan(pos).any() or torch.isnan(neg).any():
        raise ValueError("auroc got NaN scores; NaN has no rank (±inf is fine).")
    values = torch.cat([pos, neg])
    # Mid-ranks (average rank of ties), then the Mann-Whitney U statistic.
    sorted_values, order = torch.sort(values, stable=True)
    ranks = torch.empty_like(values)
    i = 0
    n = values.numel()
    while i < n:
        j = i
        while j + 1 < n and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: pos.numel()].sum() - pos.numel() * (pos.numel() + 1) / 2.0
    return float(u / (pos.numel() * neg.numel()))
