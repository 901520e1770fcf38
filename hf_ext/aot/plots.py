"""Reward-quantile plots for AOT, and logging a PNG through the Trainer's `report_to` integrations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..plotting import figure, save_figure
from .losses import quantile_coupling


__all__ = ["log_image", "plot_reward_quantiles", "quantile_steps"]


def quantile_steps(u: torch.Tensor, v: torch.Tensor):
    """The two step quantile functions on their merged breakpoints, as float64 numpy arrays.

    Returns `(edges, q_u, q_v)`: `edges` has one more entry than `q_u` / `q_v`, and on `(edges[k], edges[k+1]]` the
    quantile functions equal `q_u[k]` and `q_v[k]`.
    """
    u_sorted = torch.sort(u.detach().double().flatten().cpu()).values
    v_sorted = torch.sort(v.detach().double().flatten().cpu()).values
    index_u, index_v, weight = quantile_coupling(len(u_sorted), len(v_sorted), dtype=torch.float64)
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), weight.cumsum(0)])
    return edges.numpy(), u_sorted[index_u].numpy(), v_sorted[index_v].numpy()


def _draw(ax, u, v, labels: Sequence[str], title: str) -> None:
    edges, q_u, q_v = quantile_steps(u, v)
    ax.stairs(q_u, edges, label=labels[0], color="tab:blue", linewidth=1.8, baseline=None)
    ax.stairs(q_v, edges, label=labels[1], color="tab:red", linewidth=1.8, baseline=None)
    violated = q_u < q_v
    for start, end, low, high, bad in zip(edges[:-1], edges[1:], q_u, q_v, violated):
        if bad:
            ax.fill_between([start, end], [low, low], [high, high], color="tab:red", alpha=0.2, linewidth=0)
    fraction = float(((edges[1:] - edges[:-1]) * violated).sum())
    ax.set_title(f"{title}\nviolation fraction {fraction:.2f}" if title else f"violation fraction {fraction:.2f}")
    ax.set_xlabel("quantile level t")
    ax.set_ylabel("reward quantile")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")


def plot_reward_quantiles(
    path: str | os.PathLike,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    labels: Sequence[str] = ("chosen", "rejected"),
    title: str = "",
    before: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Path:
    """Plot the quantile functions of `u` and `v` with the violations (`Q_u(t) < Q_v(t)`) shaded, as a PNG.

    With `before=(u0, v0)` the figure has two panels, before and after.
    """
    if len(u) == 0 or len(v) == 0:
        raise ValueError(f"plot_reward_quantiles needs two non-empty samples; got {len(u)} and {len(v)} values.")
    if before is None:
        fig, ax = figure()
        _draw(ax, u, v, labels, title)
    else:
        fig, _ = figure(figsize=(11, 4.0))
        fig.clear()
        left, right = fig.subplots(1, 2, sharey=True)
        _draw(left, *before, labels, "before")
        _draw(right, u, v, labels, "after")
        if title:
            fig.suptitle(title)
    return save_figure(fig, path)


def log_image(callbacks, tag: str, path: str | os.PathLike, step: int) -> list[str]:
    """Log the PNG at `path` through each `report_to` integration among `callbacks` that is running.

    Supports TensorBoard (`add_image`), Weights & Biases, Trackio, Comet and MLflow (as an artifact). Returns the
    names of the integrations it logged to.
    """
    from transformers.integrations import (
        CometCallback,
        MLflowCallback,
        TensorBoardCallback,
        TrackioCallback,
        WandbCallback,
    )

    logged = []
    for callback in callbacks:
        if isinstance(callback, TensorBoardCallback) and getattr(callback, "tb_writer", None) is not None:
            from matplotlib.image import imread

            image = imread(str(path))[..., :3]  # RGBA -> RGB, floats in [0, 1]
            callback.tb_writer.add_image(tag, image, step, dataformats="HWC")
            callback.tb_writer.flush()
        elif isinstance(callback, WandbCallback) and getattr(callback, "_initialized", False):
            callback._wandb.log({tag: callback._wandb.Image(str(path)), "train/global_step": step})
        elif isinstance(callback, TrackioCallback) and getattr(callback, "_initialized", False):
            callback._trackio.log({tag: callback._trackio.Image(str(path)), "train/global_step": step})
        elif isinstance(callback, CometCallback) and getattr(callback, "_experiment", None) is not None:
            callback._experiment.log_image(str(path), name=tag, step=step)
        elif isinstance(callback, MLflowCallback) and getattr(callback, "_initialized", False):
            callback._ml_flow.log_artifact(str(path))
        else:
            continue
        logged.append(type(callback).__name__)
    return logged
