"""A Markdown report of a risk-aware comparison: ranking tables, violation-ratio heat maps, quantile and TVaR
curves, and mean-risk figures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .dominance import RelativeDominanceResult, check_samples, relative_dominance
from .measures import DEFAULT_LEVELS, mean_risk_table
from .plots import plot_epsilon_heatmap, plot_quantile_curves, plot_tvar_curves


__all__ = ["mean_risk_markdown", "write_report"]


def mean_risk_markdown(samples: Mapping[str, object], levels: Sequence[float] = DEFAULT_LEVELS) -> str:
    """Mean-risk figures of each model as a Markdown table (larger is better in every column but `std`)."""
    table = mean_risk_table(samples, levels)
    columns = list(next(iter(table.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, figures in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{figures[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)


def write_report(
    samples: Mapping[str, object],
    output_dir: str | os.PathLike,
    *,
    orders: Sequence[int] = (1, 2),
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    paired: bool = False,
    seed: int | None = 0,
    levels: Sequence[float] = DEFAULT_LEVELS,
    title: str = "Risk-aware comparison",
    notes: str = "",
    progress: bool = False,
) -> tuple[Path, dict[int, RelativeDominanceResult]]:
    """Run the relative test at each order and write `report.md` with its plots into `output_dir`.

    Returns:
        The report's path and the results by order.
    """
    from ..serialization import save_json, write_text

    checked = check_samples(samples, paired=paired)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {
        order: relative_dominance(
            checked, order=order, alpha=alpha, n_bootstrap=n_bootstrap, paired=paired, seed=seed, progress=progress
        )
        for order in orders
    }
    sizes = ", ".join(f"{name}: {values.size}" for name, values in checked.items())
    lines = [f"# {title}", "", f"{len(checked)} models ({sizes} samples). Larger scores are better.", ""]
    if notes:
        lines += [notes, ""]
    quantiles = plot_quantile_curves(checked, output_dir / "quantiles.png")
    tvars = plot_tvar_curves(checked, output_dir / "tvar.png")
    for order, result in results.items():
        name = "first" if order == 1 else "second"
        heatmap = plot_epsilon_heatmap(result, output_dir / f"epsilon_order{order}.png")
        lines += [f"## Relative {name}-order stochastic dominance", "", result.to_markdown(), ""]
        lines += [f"![violation ratios, order {order}]({heatmap.name})", ""]
    lines += ["## Mean-risk figures", "", mean_risk_markdown(checked, levels), ""]
    lines += ["## Quantile and TVaR curves", "", f"![quantiles]({quantiles.name})", "", f"![TVaR]({tvars.name})", ""]
    save_json(output_dir / "results.json", {f"order{order}": result.to_dict() for order, result in results.items()})
    report = write_text(output_dir / "report.md", "\n".join(lines))
    return report, results
