"""`choose_beta`: SASA's strength set by the outcome a user wants, measured on their own validation prompts.

`beta` has no unit a user can reason about: how much toxicity it removes, and at what fluency cost, depends on the
model, the probe and the prompts. [`choose_beta`] samples continuations of validation prompts at increasing
`beta`, has a judge score them, and returns the smallest `beta` that reaches a target reduction of the mean
toxicity (or the strongest within a perplexity budget), with the whole table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hf_ext._validation import check_range

from ._inputs import judge_scores, text_list
from .continuations import sample_continuations
from .evaluation import ProfanityCheckJudge, detox_metrics
from .processor import SASALogitsProcessor
from .steering import HarmfulSteeringError


__all__ = ["BetaChoice", "choose_beta"]


@dataclass
class BetaChoice:
    """What [`choose_beta`] returns.

    Args:
        beta (`float`): The chosen strength.
        reached (`bool`): Whether it meets the target (and the perplexity budget); when no `beta` tried does, the
            one with the largest reduction within the budget is returned, with `reached=False`.
        table (`list[dict]`): One row per setting tried (`beta` 0: the same sampling without steering): `beta`,
            `mean_toxicity`, `toxic_rate` (fraction of continuations scored >= the threshold), `perplexity`,
            `toxicity_reduction` and `perplexity_increase` (relative to `beta` 0), and `worse` (the mean toxicity
            is higher than at `beta` 0: never chosen).
        settings (`dict`): The sampling settings used.
    """

    beta: float
    reached: bool
    table: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = [
            "| beta | mean toxicity | toxic rate | perplexity | toxicity reduction | perplexity increase |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.table:
            mark = " (chosen)" if row["beta"] == self.beta else " (worse than beta 0)" if row.get("worse") else ""
            lines.append(
                f"| {row['beta']:g}{mark} | {row['mean_toxicity']:.4f} | {row['toxic_rate']:.3f} | "
                f"{row['perplexity']:.2f} | {row['toxicity_reduction']:+.1%} | {row['perplexity_increase']:+.1%} |"
            )
        return "\n".join(lines)


def choose_beta(
    model,
    tokenizer,
    probe,
    prompts: Sequence[str],
    judge=None,
    *,
    target_reduction: float | None = 0.25,
    max_perplexity_increase: float | None = None,
    betas: Sequence[float] = (2.0, 5.0, 10.0, 20.0, 40.0),
    num_continuations: int = 4,
    max_new_tokens: int = 20,
    top_p: float = 0.9,
    max_candidates: int | None = 10,
    normalize: str = "softmax",
    threshold: float = 0.5,
    batch_size: int = 8,
    seed: int = 0,
    show_progress: bool = True,
) -> BetaChoice:
    """Pick SASA's `beta` for a target reduction of the mean toxicity, or for a perplexity budget.

    SASA at `beta=0` (its nucleus and candidate cap, no steering) and at each `beta` (in increasing order) continue
    the same prompts with the same random streams; a judge scores every continuation, and reductions are relative to
    `beta=0`, so that they measure the steering alone. With `target_reduction`, the smallest `beta` whose mean toxicity is
    at least that much lower than plain sampling's (and whose perplexity rose by at most `max_perplexity_increase`,
    if given) is chosen, and larger ones are not tried. Without a target, the largest `beta` within the perplexity
    budget is chosen.

    A `beta` under which the mean toxicity is *higher* than at `beta=0` (the probe steers towards what the judge
    scores as toxic) is never chosen: the table marks it `worse`, a warning names those skipped, and when every
    `beta` within the budget is worse, [`HarmfulSteeringError`] says so instead of returning one.

    Args:
        model, tokenizer: The causal LM and its tokenizer (with a pad token).
        probe ([`SASAProbe`]): The fitted probe.
        prompts (`Sequence[str]`): Validation prompts (not the ones you will report on).
        judge (`Callable[[list[str], list[str]], Sequence[float]]`, *optional*): Scores continuations in [0, 1];
            [`ProfanityCheckJudge`] by default.
        target_reduction (`float`, *optional*, defaults to 0.25): Relative reduction of the mean toxicity to reach,
            in (0, 1]; `None` to choose by the perplexity budget alone.
        max_perplexity_increase (`float`, *optional*): Largest relative rise of the continuations' perplexity allowed
            (0.25: at most 25 % above plain sampling's).
        betas (`Sequence[float]`, *optional*): Strengths to try, > 0.
        num_continuations, max_new_tokens, top_p, max_candidates, normalize, threshold, batch_size, seed: As in
            [`evaluate_detox`].

    Raises:
        [`HarmfulSteeringError`] (a `ValueError`): every `beta` tried within the perplexity budget raised the mean
            toxicity above `beta=0`'s.
        `ValueError`: a bad setting, or sampling at `beta=0` judged not toxic at all (nothing to reduce).
    """
    prompts = text_list("prompts", prompts, allow_empty=True)
    betas = sorted(float(b) for b in betas)
    if not betas or not all(math.isfinite(b) and b > 0 for b in betas):
        raise ValueError(f"betas={betas!r} must be a non-empty list of finite strengths > 0.")
    if target_reduction is None and max_perplexity_increase is None:
        raise ValueError("Give a target_reduction, a max_perplexity_increase, or both.")
    check_range("target_reduction", target_reduction, gt=0, le=1, optional=True)
    check_range("max_perplexity_increase", max_perplexity_increase, ge=0, optional=True)
    judge = judge if judge is not None else ProfanityCheckJudge()
    if not callable(judge):
        raise ValueError(
            f"judge must be a callable judge(continuations, prompts) -> scores, got {type(judge).__name__}."
        )
    common = dict(
        num_continuations=num_continuations,
        max_new_tokens=max_new_tokens,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        show_progress=show_progress,
    )
    flat_prompts = [p for p in prompts for _ in range(num_continuations)]

    def measure(beta: float) -> dict:
        # beta 0 through the same processor: the same nucleus and candidate cap, without the steering
        processor = SASALogitsProcessor(
            model, probe, beta=beta, top_p=top_p, max_candidates=max_candidates, normalize=normalize
        )
        sampled = sample_continuations(
            model, tokenizer, prompts, [processor], sasa=True, desc=f"choose_beta: beta={beta:g}", **common
        )
        flat = [text for row in sampled.texts for text in row]
        scores = np.asarray(judge_scores(judge, flat, flat_prompts), dtype=np.float64)
        metrics = detox_metrics(scores.reshape(len(prompts), num_continuations), sampled.perplexity, threshold)
        return {
            "beta": beta,
            "mean_toxicity": metrics["mean_toxicity"],
            "toxic_rate": float((scores >= threshold).mean()),
            "perplexity": metrics["perplexity"],
        }

    base = measure(0.0)
    if base["mean_toxicity"] <= 0:
        raise ValueError("Sampling without steering is judged not toxic at all on these prompts: nothing to reduce.")
    table = [{**base, "toxicity_reduction": 0.0, "perplexity_increase": 0.0, "worse": False}]
    chosen = None
    for beta in betas:
        row = measure(beta)
        row["toxicity_reduction"] = 1.0 - row["mean_toxicity"] / base["mean_toxicity"]
        row["perplexity_increase"] = row["perplexity"] / base["perplexity"] - 1.0
        row["worse"] = row["mean_toxicity"] > base["mean_toxicity"]
        table.append(row)
        within_budget = max_perplexity_increase is None or row["perplexity_increase"] <= max_perplexity_increase
        if target_reduction is not None and within_budget and row["toxicity_reduction"] >= target_reduction:
            chosen = row
            break
        if target_reduction is None and within_budget and not row["worse"]:
            chosen = row
    settings = {**common, "max_candidates": max_candidates, "normalize": normalize, "threshold": threshold}
    settings |= {"target_reduction": target_reduction, "max_perplexity_increase": max_perplexity_increase}
    within = [
        row
        for row in table[1:]
        if max_perplexity_increase is None or row["perplexity_increase"] <= max_perplexity_increase
    ]
    worse = [row for row in within if row["worse"]]
    if within and len(worse) == len(within):
        raise HarmfulSteeringError(
            f"SASA raised the judge's mean toxicity above beta 0's ({base['mean_toxicity']:.4f}) at every beta tried"
            f"{'' if max_perplexity_increase is None else ' within the perplexity budget'} ({_changes(worse)}): "
            "this probe steers towards what the judge scores as toxic, and no beta is chosen. Check the probe with "
            "check_steering, fit it on the states SASA scores (SASAProbe.fit_from_judge adds every word prefix) "
            "or on another layer, and check that its desired side is the non-toxic one."
        )
    if worse and (chosen is None or chosen["beta"] < max(row["beta"] for row in worse)):
        warnings.warn(
            f"Not chosen: SASA raised the judge's mean toxicity above beta 0's ({base['mean_toxicity']:.4f}) at "
            f"{_changes(worse)}; a beta that makes things worse than no steering is refused.",
            UserWarning,
            stacklevel=2,
        )
    if chosen is not None:
        return BetaChoice(chosen["beta"], True, table, settings)
    better = [row for row in within if not row["worse"]]
    best = max(better, key=lambda row: row["toxicity_reduction"]) if better else table[0]
    warnings.warn(
        f"No beta in {betas} reaches the target (reduction {target_reduction}, perplexity increase <= "
        f"{max_perplexity_increase}); returning beta={best['beta']:g} (reduction {best['toxicity_reduction']:+.1%}). "
        "Try larger betas, a stronger probe or more validation prompts.",
        UserWarning,
        stacklevel=2,
    )
    return BetaChoice(best["beta"], False, table, settings)


def _changes(rows: list[dict]) -> str:
    return ", ".join(f"beta={row['beta']:g}: {-row['toxicity_reduction']:+.0%}" for row in rows)
