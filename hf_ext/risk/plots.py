"""Plots of risk-aware comparisons: quantile and TVaR curves, and the pairwise violation-ratio heat map (PNG)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..plotting import figure, save_figure
from .quantiles import as_sample, quantile, tvar


__all__ = ["plot_epsilon_heatmap", "plot_quantile_curves", "plot_tvar_curves"]

_GRID = np.linspace(0.0, 1.0, 401)[1:]


def _curves(samples: Mapping[str, object], function, path, title: str, ylabel: str) -> Path:
    fig, ax = figure()
    for name, values in samples.items():
        ax.plot(_GRID, function(as_sample(values, f"samples[{name!r}]"), _GRID), label=str(name))
    ax.set_title(title)
    ax.set_xlabel("t (fraction of worst samples)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_quantile_curves(
    samples: Mapping[str, object], path: str | os.PathLike, *, title: str = "Quantile functions", ylabel: str = "score"
) -> Path:
    """Plot each model's empirical quantile function `Q(t)` (first-order dominance: higher everywhere is better)."""
    return _curves(samples, quantile, path, title, ylabel)


def plot_tvar_curves(
    samples: Mapping[str, object],
    path: str | os.PathLike,
    *,
    title: str = "Tail value at risk (mean of the worst t-fraction)",
    ylabel: str = "TVaR(t)",
) -> Path:
    """Plot each model's `TVaR(t) = Q2(t) / t` (second-order dominance: higher everywhere is better)."""
    return _curves(samples, tvar, path, title, ylabel)


def plot_epsilon_heatmap(result, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Heat map of the pairwise violation ratios `eps(row, column)` of a [`RelativeDominanceResult`].

    Cells where the row significantly dominates the column are marked with a star.
    """
    models = list(result.models)
    k = len(models)
    matrix = np.asarray(result.epsilon, dtype=float)
    fig, ax = figure(figsize=(1.0 + 0.7 * max(k, 4), 0.6 + 0.6 * max(k, 4)))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlGn_r", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), models, rotation=45, ha="right")
    ax.set_yticks(range(k), models)
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            mark = "*" if result.significant[i, j] else ""
            ax.text(j, i, f"{matrix[i, j]:.2f}{mark}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="ε(row, column): 0 = row dominates")
    ax.set_title(title or f"Violation ratios, order {result.order} (* significant)")
    return save_figure(fig, path)
