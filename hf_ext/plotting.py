"""Small matplotlib helpers (Agg backend: no display needed) that write PNGs atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path


__all__ = ["figure", "line_plot", "save_figure"]


def figure(**kwargs):
    """A new `(fig, ax)` on the Agg backend, whatever backend the user's session has selected."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", (6.4, 4.0)), **kwargs)
    return fig, fig.add_subplot()


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write `fig` as a PNG to `path` atomically and return the path."""
    from .serialization import atomic_path

    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def line_plot(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    x: Sequence[float] | None = None,
) -> Path:
    """Plot one line per entry of `series` (against `x`, or the index) and save it to `path`."""
    fig, ax = figure()
    for label, values in series.items():
        ax.plot(list(x) if x is not None else range(len(values)), list(values), label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1 or any(series):
        ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
