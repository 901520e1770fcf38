"""The report of a comparison from harness logs: one page, in Markdown and HTML, with its plots and results.json.

The page leads with what a reader wants first: the ranking of the models across tasks, then every significant
claim in words (with its direction and adjusted p-value), then the comparisons that too few samples left
undecided. Per task and metric follow the means, the ranking table, McNemar's table for 0/1 metrics, and the
quantile and tail-value-at-risk plots (the curves first- and second-order dominance compare).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import numpy as np

from .harness import CORRECTION_NAMES, ORDER_NAMES, PORTFOLIO, HarnessComparison, View
from .outputs import atomic_directory


__all__ = ["render_html", "render_markdown", "report_blocks", "write_harness_report"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "view"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def _view_caption(view: View) -> str:
    if view.metric == PORTFOLIO:
        return (
            f"portfolio of {', '.join(view.metrics)} (empirical-CDF scores, weighted geometric mean; larger is better)"
        )
    return "larger is better" if view.direction == "max" else "lower is better (negated for the tests and plots)"


def report_blocks(comparison: HarnessComparison, images: dict[str, dict[str, str]] | None = None) -> list[tuple]:
    """The report as a list of blocks (`("h1", text)`, `("p", text)`, `("ul", items)`, `("table", header, rows)`,
    `("img", file, alt)`), rendered by [`render_markdown`] and [`render_html`].

    Args:
        comparison ([`HarnessComparison`]): What to report.
        images (`dict`, *optional*): Per view name, its plot files (`{"quantiles": ..., "tvar": ..., "order1": ...}`).
    """
    images = images or {}
    settings = comparison.settings
    correction = settings["correction"]
    orders = settings["orders"]
    blocks: list[tuple] = [("h1", "Risk-aware ranking from evaluation-harness logs")]
    tasks = list(dict.fromkeys(view.task for view in comparison.views))
    blocks.append(
        (
            "p",
            f"{len(comparison.models)} models, {len(tasks)} task(s), read from {', '.join(settings['harnesses'])} logs. "
            f"Paired relative stochastic-dominance tests of order {', '.join(map(str, orders))} "
            f"({settings['n_bootstrap']} paired bootstrap rounds, seed {settings['seed']}; a cluster bootstrap where items "
            f"have several values), McNemar's exact test for 0/1 metrics; {CORRECTION_NAMES[correction]} correction "
            f"over all {settings['family_size']} pairwise claims at alpha = {settings['alpha']}.",
        )
    )

    blocks.append(("h2", "Ranking"))
    header = ["rank"] + [f"{ORDER_NAMES[order]} order" for order in orders]
    rows = [
        [str(rank + 1)] + [comparison.rankings[order][rank] for order in orders]
        for rank in range(len(comparison.models))
    ]
    blocks.append(("table", header, rows))
    primary = ", ".join(settings["primary_views"].values())
    text = (
        "Across tasks: the Borda aggregation of each task's ranking (by significant dominances, ties by relative "
        f"violation ratio), on {primary}. Each task's own ranking and tests follow below."
    )
    if not any(claim.significant and claim.test == "dominance" for claim in comparison.claims):
        text += (
            " No dominance is significant: the rankings order the models by their relative violation ratios alone, "
            "a description of these samples, not a tested order."
        )
    blocks.append(("p", text))
    means_header = ["model"] + [
        f"{view.name} ({'↑' if view.direction == 'max' else '↓'})"
        for view in comparison.views
        if view.metric != PORTFOLIO
    ]
    means_rows = [
        [model] + [_fmt(view.raw_means[model]) for view in comparison.views if view.metric != PORTFOLIO]
        for model in comparison.models
    ]
    blocks += [
        ("p", "Mean of each metric (↑ larger is better, ↓ smaller is better):"),
        ("table", means_header, means_rows),
    ]

    significant = comparison.significant_claims()
    blocks.append(("h2", f"Significant claims ({len(significant)} of {len(comparison.claims)})"))
    if significant:
        blocks.append(("ul", [claim.statement(correction) for claim in significant]))
    else:
        blocks.append(("p", "No pairwise claim is significant at this level."))

    if comparison.warnings:
        blocks.append(("h2", "Too few samples to decide"))
        blocks.append(("ul", list(comparison.warnings)))

    for view in comparison.views:
        blocks.append(("h2", view.name))
        repeats = f", {view.repeats} values per item (cluster bootstrap over items)" if view.repeats > 1 else ""
        blocks.append(("p", f"{view.n_items} items{repeats}; {_view_caption(view)}."))
        header = ["model"] + (["mean"] if view.metric != PORTFOLIO else [])
        for order in orders:
            header += [f"rank ({ORDER_NAMES[order]})", f"relative ε ({ORDER_NAMES[order]})", "dominates"]
        rows = []
        for model in view.scores:
            row = [model] + ([_fmt(view.raw_means[model])] if view.metric != PORTFOLIO else [])
            for order in orders:
                result = view.results[order]
                row += [
                    str(result.rank_of(model)),
                    _fmt(float(result.relative_epsilon[result.models.index(model)])),
                    ", ".join(result.dominated_by(model)) or "—",
                ]
            rows.append(row)
        blocks.append(("table", header, rows))
        if view.mcnemar is not None:
            names = list(view.scores)
            rows = []
            for i, a in enumerate(names):
                for j in range(i + 1, len(names)):
                    b = names[j]
                    rows.append(
                        [
                            f"{a} vs {b}",
                            str(int(view.mcnemar["wins"][i, j])),
                            str(int(view.mcnemar["wins"][j, i])),
                            _fmt(float(view.mcnemar["effect"][i, j])),
                            _p(float(view.mcnemar["pvalue"][i, j])),
                        ]
                    )
            blocks.append(("p", "McNemar's exact test (items only the first model gets right / only the second):"))
            blocks.append(
                ("table", ["pair", "first only", "second only", "accuracy difference", "p (unadjusted)"], rows)
            )
        files = images.get(view.name, {})
        for key, alt in (("quantiles", "quantile functions"), ("tvar", "tail value at risk")):
            if key in files:
                blocks.append(("img", files[key], f"{view.name}: {alt}"))
        for order in orders:
            if f"order{order}" in files:
                blocks.append(("img", files[f"order{order}"], f"{view.name}: violation ratios, order {order}"))

    undecided = [claim for claim in comparison.claims if not claim.significant]
    if undecided:
        blocks.append(("h2", f"Undecided comparisons ({len(undecided)})"))
        blocks.append(
            (
                "p",
                f"Minimum detectable effect (MDE): with power {settings['power']:.0%} at the family's effective level "
                f"{settings['effective_level']:.2g}; in |Δε| for dominance, in accuracy for McNemar. Guard distance: "
                "the smallest gap between the two distributions' CDFs (for a 0/1 metric, the accuracy difference) "
                "the Kolmogorov-Smirnov guard can find at that level. Flagged as too few samples when the guard "
                "distance (dominance with the guard) or the MDE (McNemar; dominance without the guard) is above "
                f"min_effect = {settings['min_effect']}.",
            )
        )
        rows = [
            [
                claim.view,
                f"order {claim.order}" if claim.test == "dominance" else "McNemar",
                f"{claim.winner} vs {claim.loser}",
                _fmt(claim.effect),
                _p(claim.pvalue),
                _p(claim.adjusted_pvalue),
                _fmt(claim.mde),
                _fmt(claim.guard_distance),
                "too few samples" if claim.underpowered else "",
            ]
            for claim in undecided
        ]
        header = ["view", "test", "pair", "effect", "p", "adjusted p", "MDE", "guard distance", ""]
        blocks.append(("table", header, rows))
    if comparison.skipped:
        blocks.append(("h2", "Metrics left out"))
        blocks.append(("ul", list(comparison.skipped)))
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    """The blocks of [`report_blocks`] as Markdown."""
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(map(_md_cell, header)) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 46%; margin: 0.3rem; vertical-align: top; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
"""


def render_html(blocks: list[tuple], title: str = "Risk-aware ranking") -> str:
    """The blocks of [`report_blocks`] as a self-contained HTML page (images referenced by relative path)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            header, rows = block[1], block[2]
            head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            out.append(f'<img src="{html.escape(block[1])}" alt="{html.escape(block[2])}">')
    out.append("</body></html>")
    return "\n".join(out)


def write_harness_report(
    comparison: HarnessComparison,
    output_dir: str | os.PathLike,
    *,
    html_page: bool = True,
    plots: bool = True,
) -> Path:
    """Write the report of a [`HarnessComparison`]: `report.md`, `report.html`, `results.json` and the plots.

    The folder is built under a temporary name and renamed into place: it replaces an earlier report entirely
    (no file of an earlier run survives), and a folder that is not an earlier report is never replaced.

    Args:
        comparison ([`HarnessComparison`]): From [`~hf_ext.risk.compare_harness_logs`].
        output_dir (`str` or `os.PathLike`): The report's folder.
        html_page (`bool`, *optional*, defaults to `True`): Also write `report.html`.
        plots (`bool`, *optional*, defaults to `True`): Quantile and TVaR curves of every view, and violation-ratio
            heat maps (PNG).

    Returns:
        `Path` of `report.md`.
    """
    from ..serialization import save_json, write_text
    from .plots import plot_epsilon_heatmap, plot_quantile_curves, plot_tvar_curves

    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as staging:
        images: dict[str, dict[str, str]] = {}
        if plots:
            for view in comparison.views:
                slug = _slug(f"{view.task}__{view.metric}")
                label = view.metric if view.direction == "max" else f"-{view.metric} (negated: lower is better)"
                files = {
                    "quantiles": plot_quantile_curves(
                        view.scores,
                        staging / f"{slug}_quantiles.png",
                        title=f"{view.name}: quantile functions",
                        ylabel=label,
                    ).name,
                    "tvar": plot_tvar_curves(
                        view.scores,
                        staging / f"{slug}_tvar.png",
                        title=f"{view.name}: tail value at risk",
                        ylabel=f"TVaR of {label}",
                    ).name,
                }
                for order, result in view.results.items():
                    files[f"order{order}"] = plot_epsilon_heatmap(
                        result,
                        staging / f"{slug}_epsilon_order{order}.png",
                        title=f"{view.name}: ε(row, column), order {order} (* significant)",
                    ).name
                images[view.name] = files
        blocks = report_blocks(comparison, images)
        save_json(staging / "results.json", comparison.to_dict())
        if html_page:
            write_text(staging / "report.html", render_html(blocks))
        write_text(staging / "report.md", render_markdown(blocks))
    return output_dir / "report.md"
