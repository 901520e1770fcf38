"""The runner of `hf-ext demo` (and of the real-model experiments in `examples/`): stages, each in its own folder.

A stage is a [`DemoStage`]: `run(context) -> StageResult`. The stages run in the order given, each in its own
folder under the output directory, and the tour ends with a summary table on the terminal and `report.md` (with the
stages' plots) in the output directory. A stage that raises is reported as failed and the others still run; the
exit status is non-zero when any stage failed.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_ext.logging_utils import configure_command_output


__all__ = ["DemoContext", "DemoStage", "StageResult", "run_demo"]


@dataclass
class DemoContext:
    """What a stage gets: its own output folder, the seed, whether to use the real offline models, and the results
    of the stages that ran before it in this tour (by stage name)."""

    output_dir: Path
    seed: int = 0
    real: bool = False
    previous: dict[str, StageResult] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"  {message}", flush=True)


@dataclass
class StageResult:
    """What a stage reports.

    Args:
        headline (`str`): One line for the summary table (the stage's key before / after figure).
        figures (`dict[str, float | str]`): Named figures, shown as a table in the report.
        plots (`list[Path]`): PNGs the stage wrote (inside its output folder).
        details (`str`): Free Markdown for the report.
        samples (`dict[str, list[float]]`): Per-sample scores (higher is better) of the models the stage compares,
            by model name, every list over the same items in the same order; the risk stage ranks them by
            stochastic dominance.
        samples_description (`str`): What one sample score is (e.g. "log-probability of the true answer").
    """

    headline: str
    figures: dict[str, float | str] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    details: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    samples_description: str = ""


@dataclass
class DemoStage:
    """One stage of the tour: `run(context) -> StageResult`."""

    name: str
    title: str
    run: Callable[[DemoContext], StageResult]


@dataclass
class _Outcome:
    stage: DemoStage
    seconds: float
    result: StageResult | None = None
    error: str | None = None


def run_demo(
    output_dir: str | os.PathLike = "hf-ext-demo",
    stages: list[str] | None = None,
    real: bool = False,
    seed: int = 0,
    available: Sequence[DemoStage] | None = None,
) -> int:
    """Run the stages of `available` (default: `hf_ext.demo.DEMO_STAGES`; all, or those named in `stages`), print
    a summary table and write `report.md`. `real` says the stages use the real offline models (the report says so).

    Returns the exit status: 0 when every stage succeeded, 1 otherwise.
    """
    configure_command_output()  # before a stage imports tqdm: no progress bar for a tiny model's loading
    if available is None:
        from hf_ext.demo import DEMO_STAGES as available
    from hf_ext.transactions import output_lock

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(output_dir):  # one demo at a time per folder; its stages write their own subfolders
        selected = [s for s in available if stages is None or s.name in stages]
        outcomes = []
        previous: dict[str, StageResult] = {}
        for stage in selected:
            print(f"== {stage.name}: {stage.title}", flush=True)
            context = DemoContext(output_dir=output_dir / stage.name, seed=seed, real=real, previous=dict(previous))
            context.output_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            try:
                outcome = _Outcome(stage, 0.0, result=stage.run(context))
            except Exception:
                outcome = _Outcome(stage, 0.0, error=traceback.format_exc())
                print(outcome.error, flush=True)
            outcome.seconds = time.perf_counter() - start
            outcomes.append(outcome)
            if outcome.result is not None:
                previous[stage.name] = outcome.result
        print(_summary_table(outcomes), flush=True)
        report = _write_report(output_dir, outcomes, real=real)
        print(f"Report: {report}")
        return 0 if all(outcome.error is None for outcome in outcomes) else 1


def _summary_table(outcomes: list[_Outcome]) -> str:
    rows = [("stage", "status", "seconds", "headline")]
    for o in outcomes:
        headline = o.result.headline if o.result else o.error.strip().splitlines()[-1]
        rows.append((o.stage.name, "ok" if o.error is None else "FAILED", f"{o.seconds:.1f}", headline))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _write_report(output_dir: Path, outcomes: list[_Outcome], real: bool) -> Path:
    from hf_ext.serialization import write_text

    lines = [
        "# hf-ext demo",
        "",
        f"Models: {'real offline models' if real else 'tiny offline models'}. Generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "| stage | status | seconds | headline |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        headline = o.result.headline if o.result else "failed"
        lines.append(f"| {o.stage.name} | {'ok' if o.error is None else 'FAILED'} | {o.seconds:.1f} | {headline} |")
    for o in outcomes:
        lines += ["", f"## {o.stage.name}: {o.stage.title}", ""]
        if o.error is not None:
            lines += ["```", o.error.rstrip(), "```"]
            continue
        if o.result.figures:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {key} | {value} |" for key, value in o.result.figures.items()]
        if o.result.details:
            lines += ["", o.result.details]
        for plot in o.result.plots:
            relative = Path(plot).resolve().relative_to(output_dir.resolve())
            lines += ["", f"![{relative.stem}]({relative.as_posix()})"]
    return write_text(output_dir / "report.md", "\n".join(lines) + "\n")
