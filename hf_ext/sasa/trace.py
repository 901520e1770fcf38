"""The per-step trace of a SASA generation (candidates, margins, shifts) and a plot of the margin along it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..plotting import figure, save_figure


__all__ = ["SASAStep", "SASATrace"]


@dataclass
class SASAStep:
    """What [`SASALogitsProcessor`] saw and did at one call (all tensors on the CPU, one row per sequence).

    Args:
        input_length (`int`): Length of `input_ids` at this call; the token chosen at this step is
            `sequences[:, input_length]`.
        candidate_ids (`torch.LongTensor` of shape `(batch, K)`): The candidates, by decreasing score.
        valid (`torch.BoolTensor` of shape `(batch, K)`): Which entries are real candidates (rows can have fewer).
        margins (`torch.Tensor` of shape `(batch, K)`): Probe margin of `prefix + candidate`.
        shift (`torch.Tensor` of shape `(batch, K)`): What was added to each candidate's score.
        probs (`torch.Tensor` of shape `(batch, K)`): Candidate probabilities before the tilt (softmax of the
            incoming scores at the processor's temperature, over the candidates).
        tilted_probs (`torch.Tensor` of shape `(batch, K)`): The same after the tilt.
        source (`str`): `"generate"` (tree forward on generate's cache) or `"own"` (the processor's own cache).
    """

    input_length: int
    candidate_ids: torch.Tensor
    valid: torch.Tensor
    margins: torch.Tensor
    shift: torch.Tensor
    probs: torch.Tensor
    tilted_probs: torch.Tensor
    source: str

    def expected_margin(self, tilted: bool = True) -> torch.Tensor:
        """Expected margin of the next token per row, under the tilted (or original) candidate distribution."""
        probs = self.tilted_probs if tilted else self.probs
        return (probs * self.margins.masked_fill(~self.valid, 0.0)).sum(-1)


class SASATrace(list):
    """A list of [`SASAStep`], one per processor call, with helpers to read and plot a generation's margins."""

    def margins_along(self, sequences: torch.Tensor, row: int = 0) -> dict[str, list[float]]:
        """Per step of row `row`: the chosen token's margin (NaN when it was not a candidate, e.g. forced by a later
        processor), the smallest and largest candidate margins, and the expected margin before and after the tilt.
        `sequences` is what `generate` returned."""
        out = {"chosen": [], "min": [], "max": [], "expected_before": [], "expected_after": []}
        for step in self:
            if step.input_length >= sequences.shape[1]:
                break
            token = int(sequences[row, step.input_length])
            valid = step.valid[row]
            margins = step.margins[row][valid]
            hit = (step.candidate_ids[row][valid] == token).nonzero()
            out["chosen"].append(float(margins[hit[0, 0]]) if len(hit) else math.nan)
            out["min"].append(float(margins.min()))
            out["max"].append(float(margins.max()))
            out["expected_before"].append(float(step.expected_margin(tilted=False)[row]))
            out["expected_after"].append(float(step.expected_margin(tilted=True)[row]))
        return out

    def plot(self, path: str | os.PathLike, sequences: torch.Tensor, row: int = 0, title: str = "") -> Path:
        """Plot the margin along the generation of row `row` (candidate range, expected margin before / after the
        tilt, the chosen token) and save it as a PNG."""
        series = self.margins_along(sequences, row)
        steps = list(range(len(series["chosen"])))
        fig, ax = figure()
        ax.fill_between(steps, series["min"], series["max"], alpha=0.2, label="candidate margins (range)")
        ax.plot(steps, series["expected_before"], linestyle="--", label="expected margin, no tilt")
        ax.plot(steps, series["expected_after"], label="expected margin, SASA")
        ax.plot(steps, series["chosen"], marker="o", linestyle="", markersize=3, label="chosen token")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("generation step")
        ax.set_ylabel("margin  (> 0: desired side)")
        ax.set_title(title or "SASA: probe margin along a generation")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        return save_figure(fig, path)
