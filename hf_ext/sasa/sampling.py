"""The per-step math of SASA, in plain torch: the candidate set and the reweighting of the scores.

Nothing here needs a Hugging Face object. [`candidate_set`] picks, per row, the tokens of the nucleus (the same set
as `transformers`' `TopPLogitsWarper` keeps after `TemperatureLogitsWarper`), capped by score; [`tilt_scores`]
adds `beta * g(m)` to the candidates' scores, where `m` are their margins and `g` is a softmax over the
candidates (the reference implementation) or the identity (plain exponential tilting, `p' ∝ p · exp(beta · m)`).
"""

from __future__ import annotations

import torch


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
    """
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
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not supported; expected one of {NORMALIZATIONS}.")
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
