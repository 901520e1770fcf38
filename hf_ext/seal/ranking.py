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


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not supported; expected one of {list(WEIGHTINGS)}.")


def initial_logits(num_examples: int, weighting: str = "softmax", dtype: torch.dtype = torch.float32, device=None):
    """Uniform starting logits: every example weighs 1 (softmax: ω = 0, so `N · softmax(ω) = 1`; sigmoid: ω = 0,
    so `2 · sigmoid(ω) = 1`)."""
    _check_weighting(weighting)
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be at least 1.")
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
    if indices.numel() == 0:
        return logits.sum() * 0.0
    weights = example_weights(logits, weighting)[indices]
    signal = losses.detach().to(weights.dtype)
    if reference_losses is not None:
        signal = signal - reference_losses.detach().to(weights.dtype)
    return (weights * signal).mean()


def upper_level_weight(start: float, decay: float, epoch: float) -> float:
    """λ for an epoch: `start - decay · floor(epoch)`, clipped to [0, 1] (λ = 1 trains on the safe set only)."""
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
    if chunk_size is None:
        chunk_size = max(1, 2**24 // logits.size(-1))
    token_losses = _ShiftedTokenCrossEntropy.apply(logits, input_ids[:, 1:], chunk_size)
    mask = loss_mask[:, 1:].to(token_losses.dtype)
    counts = mask.sum(dim=1)
    losses = (token_losses * mask).sum(dim=1) / counts.clamp(min=1)
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
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be at least 1.")
    if start < 0 or count < 0:
        raise ValueError(f"start={start} and count={count} must be non-negative.")
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
    """A boolean mask of the `k` highest scores; ties go to the earlier position, so the result is deterministic."""
    n = scores.numel()
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
