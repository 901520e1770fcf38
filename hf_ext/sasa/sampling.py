"""The per-step math of SASA, in plain torch: the candidate set and the reweighting of the scores.

Nothing here needs a Hugging Face object. [`candidate_set`] picks, per row, the tokens of the nucleus (the same set
as `transformers`' `TopPLogitsWarper` keeps after `TemperatureLogitsWarper`), capped by score; [`tilt_scores`]
adds `beta * g(m)` to the candidates' scores, where `m` are their margins and `g` is a softmax over the
candidates (the reference implementation) or the identity (plain exponential tilting, `p' ∝ p · exp(beta · m)`).
"""

from __future__ import annotations

import torch

from hf_ext._validation import check_range


__all__ = ["NORMALIZATIONS", "candidate_set", "nucleus_mask", "tilt_scores"]

NORMALIZATIONS = ("softmax", "none")


def nucleus_mask(scores: torch.Tensor, top_p: float, temperature: float = 1.0, min_tokens_to_keep: int = 1):
    """Boolean mask `(batch, vocab)` of the tokens that nucleus (top-p) sampling keeps at `temperature`.

    Computed exactly as `TemperatureLogitsWarper` followed by `TopPLogitsWarper` compute it, so the kept set is
    identical to theirs. Tokens whose score is `-inf` (filtered by an earlier processor) are never kept.
    """
    scaled = scores / temperature if temperature != 1.0 else scores
    sorted_logits, sorted_indices = torch.sort(scaled, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative_probs <= (1 - top_p)
    sorted_remove[..., -min_tokens_to_keep:] = False
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return ~remove & (scores > float("-inf"))


def _check_scores(scores: torch.Tensor) -> None:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a (batch, vocab) tensor, got {getattr(scores, 'shape', type(scores))}.")
    bad = torch.isnan(scores) | (scores == float("inf"))
    if bad.any():
        rows = bad.any(-1).nonzero()[:, 0].tolist()
        raise ValueError(
            f"scores hold {int(bad.sum())} NaN or +inf value(s) (in row(s) {rows[:3]}); the model's logits must be "
            "finite (-inf marks a filtered token)."
        )


def candidate_set(
    scores: torch.Tensor,
    top_p: float = 0.9,
    temperature: float = 1.0,
    max_candidates: int | None = None,
    min_tokens_to_keep: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate tokens of each row: its nucleus, capped at `max_candidates` by score.

    Rows can have different numbers of candidates; the result is padded to the largest.

    Returns:
        `(candidate_ids, valid)`, both of shape `(batch, K)`: the token ids, sorted by decreasing score, and which
        entries are real candidates (padding entries hold distinct non-candidate ids and `valid=False`).

    Raises:
        `ValueError`: `scores` are not a non-empty `(batch, vocab)` tensor, or hold NaN or `+inf` (`-inf` marks a token
            an earlier processor filtered out and is never a candidate).
    """
    _check_scores(scores)
    keep = nucleus_mask(scores, top_p, temperature, min_tokens_to_keep)
    num = int(keep.sum(-1).max().item())
    if max_candidates is not None:
        num = min(num, max_candidates)
    num = max(num, 1)
    masked = scores.masked_fill(~keep, float("-inf"))
    values, candidate_ids = masked.topk(num, dim=-1)
    return candidate_ids, values > float("-inf")


def tilt_scores(
    scores: torch.Tensor,
    candidate_ids: torch.Tensor,
    valid: torch.Tensor,
    margins: torch.Tensor,
    beta: float,
    normalize: str = "softmax",
    filter_non_candidates: bool = True,
    filter_value: float = -float("inf"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add `beta * g(margins)` to the scores of the candidates.

    Args:
        scores (`torch.Tensor` of shape `(batch, vocab)`): Logits (or log-probabilities).
        candidate_ids, valid (`torch.Tensor` of shape `(batch, K)`): From [`candidate_set`].
        margins (`torch.Tensor` of shape `(batch, K)`): The margin of each candidate.
        beta (`float`): Strength of the tilt; `0` leaves every candidate's score bit for bit unchanged.
        normalize (`str`): `"softmax"`: `g` is the softmax of the margins over each row's candidates (values in
            [0, 1] summing to 1); `"none"`: `g = m`, so that `p' ∝ p · exp(beta · m)` over the candidates.
        filter_non_candidates (`bool`): Set every other token to `filter_value` (sampling then stays inside the
            candidate set); otherwise leave those scores as they are.

    Returns:
        `(new_scores, shift)`: the processed scores and the shift `(batch, K)` given to each candidate (0 on padding).

    Raises:
        `ValueError`: mismatched shapes, candidate ids outside the scores, a negative or non-finite `beta`, or a
            NaN / infinite margin of a real candidate.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not supported; expected one of {NORMALIZATIONS}.")
    check_range("beta", beta, ge=0)
    if scores.ndim != 2 or not (candidate_ids.shape == valid.shape == margins.shape) or candidate_ids.ndim != 2:
        raise ValueError(
            f"scores must be (batch, vocab) and candidate_ids, valid, margins (batch, K) alike; got shapes "
            f"{tuple(scores.shape)}, {tuple(candidate_ids.shape)}, {tuple(valid.shape)}, {tuple(margins.shape)}."
        )
    if candidate_ids.shape[0] != scores.shape[0]:
        raise ValueError(f"candidate_ids have {candidate_ids.shape[0]} rows but scores {scores.shape[0]}.")
    if candidate_ids.numel() and (int(candidate_ids.min()) < 0 or int(candidate_ids.max()) >= scores.shape[1]):
        raise ValueError(f"candidate_ids hold ids outside the {scores.shape[1]} columns of scores.")
    bad = valid & ~torch.isfinite(margins)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} candidate margin(s) are NaN or infinite; the hidden states the probe read are not "
            "finite (a half-precision overflow?)."
        )
    margins = margins.to(scores.dtype)
    if normalize == "softmax":
        g = margins.masked_fill(~valid, float("-inf")).softmax(dim=-1)
    else:
        g = margins
    shift = torch.where(valid, beta * g, torch.zeros_like(g))
    candidate_scores = scores.gather(1, candidate_ids)
    if filter_non_candidates:
        out = torch.full_like(scores, filter_value)
        fill = torch.where(valid, candidate_scores + shift, torch.full_like(candidate_scores, filter_value))
    else:
        out = scores.clone()
        fill = candidate_scores + shift
    out.scatter_(1, candidate_ids, fill)
    return out, shift
