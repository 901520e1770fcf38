"""`hf-ext risk`: a risk-aware ranking of models from the per-sample logs of evaluation harnesses (lm-eval,
Inspect, lighteval), or from a CSV / JSONL table of per-sample metrics."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hf_ext.scripts.utils import PROG, CommandError, run_command


__all__ = ["HELP", "collect_samples", "main", "make_parser", "read_rows"]

NAME = "risk"
HELP = (
    "rank models by stochastic dominance from harness logs (lm-eval, Inspect, lighteval) or a CSV / JSONL table of "
    "per-sample metrics, into a Markdown / HTML report"
)


_EPILOG = """\
inputs:
  harness logs   lm-eval --output_path folders (run with --log_samples), Inspect log folders or .eval / .json
                 logs, lighteval --output-dir folders (run with --save-details); a folder may hold several models.
                 Prefix an input with NAME= to name the model it holds, e.g. base=out/base 4bit=out/4bit.
  a table        one CSV / TSV / JSONL file with a model column and metric columns (needs --metrics).

examples:
  hf-ext risk lm-eval-out/ --output-dir risk-report
  hf-ext risk base=logs/base.eval tuned=logs/tuned.eval --directions toxicity=min --runs repeats
  hf-ext risk lm-eval-out/ inspect-logs/ --tasks facts_mc,facts_qa --correction holm --orders 2
  hf-ext risk scores.jsonl --metrics toxicity:min,fluency:max --sample-column prompt_id
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="harness log folders / files ([NAME=]PATH), or one CSV / JSONL table of per-sample metrics",
    )
    parser.add_argument(
        "--harness",
        choices=("auto", "lm-eval", "inspect", "lighteval", "table"),
        default="auto",
        help="what the inputs are (default: recognised from their files)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="metrics with their direction, e.g. 'reward' or 'toxicity:min,fluency:max' (default direction: max = "
        "larger is better). A table needs it; for harness logs it selects metrics (default: all) and may set "
        "their direction",
    )
    parser.add_argument(
        "--directions",
        default=None,
        help="harness logs: direction of metrics the logs do not describe, or overrides, e.g. "
        "'toxicity=min,task/score=max'",
    )
    parser.add_argument("--tasks", default=None, help="harness logs: comma-separated tasks to keep (default: all)")
    parser.add_argument(
        "--runs",
        choices=("error", "latest", "repeats"),
        default="error",
        help="harness logs: when a model has several runs of a task, stop (error), keep the newest (latest), or "
        "compare them as repeated runs such as seeds, resampled per item (repeats); default: error",
    )
    parser.add_argument(
        "--missing",
        choices=("error", "drop"),
        default="error",
        help="harness logs: items some models lack: stop and name them (error) or keep the shared ones (drop)",
    )
    parser.add_argument(
        "--correction",
        choices=("bh", "holm", "bonferroni", "none"),
        default="bh",
        help="harness logs: multiple-comparison correction over all pairwise claims (default: bh, "
        "Benjamini-Hochberg; holm / bonferroni: family-wise error)",
    )
    parser.add_argument(
        "--weights", default=None, help="portfolio weights, e.g. 'toxicity=2,fluency=1' (default: uniform)"
    )
    parser.add_argument("--no-portfolio", action="store_true", help="harness logs: no per-task metrics portfolio")
    parser.add_argument("--no-mcnemar", action="store_true", help="harness logs: no McNemar test for 0/1 metrics")
    parser.add_argument(
        "--guard",
        choices=("ks", "none"),
        default="ks",
        help="harness logs: Kolmogorov-Smirnov guard of the relative test (default: ks; none: the paper's plain test)",
    )
    parser.add_argument(
        "--power", type=float, default=0.8, help="harness logs: power of the minimum detectable effects (default: 0.8)"
    )
    parser.add_argument(
        "--min-effect",
        type=float,
        default=0.1,
        help="harness logs: smallest effect worth detecting; undecided comparisons whose minimum detectable effect "
        "is larger are reported as having too few samples (default: 0.1)",
    )
    parser.add_argument("--no-html", action="store_true", help="harness logs: write report.md only, no report.html")
    parser.add_argument("--model-column", default="model", help="table: column naming the model of each row")
    parser.add_argument(
        "--sample-column",
        default=None,
        help="table: column identifying the prompt of each row; when given, the models' samples are matched on it "
        "(paired test)",
    )
    parser.add_argument(
        "--format", choices=("csv", "jsonl"), default=None, help="table: input format (default: from the extension)"
    )
    parser.add_argument("--orders", default="1,2", help="dominance orders to test (default: 1,2)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap rounds (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument(
        "--output-dir",
        default="risk-report",
        help="the report's folder (report.md, report.html, results.json, plots); replaced as a whole",
    )


def _parse_metrics(text: str) -> dict[str, str]:
    metrics = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, direction = item.partition(":")
        direction = direction.strip() or "max"
        if direction not in ("max", "min"):
            raise CommandError(f"--metrics: direction of {name!r} must be 'max' or 'min', got {direction!r}")
        metrics[name.strip()] = direction
    if not metrics:
        raise CommandError(f"--metrics: expected at least one metric column, got {text!r}")
    return metrics


def _parse_weights(text: str | None, metrics: dict[str, str]) -> dict[str, float] | None:
    if text is None:
        return None
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise CommandError(f"--weights: expected metric=number, got {item!r}") from None
    unknown = sorted(set(weights) - set(metrics))
    if unknown:
        raise CommandError(f"--weights: unknown metric(s) {unknown}; the metrics are {sorted(metrics)}")
    return weights


def read_rows(path: str, fmt: str | None = None) -> list[dict]:
    """Rows of a CSV (header line) or JSONL (one object per line) file."""
    import csv
    import json
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"input: no such file {path!r}")
    fmt = fmt or ("csv" if file.suffix.lower() in (".csv", ".tsv") else "jsonl")
    with file.open(encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            return list(csv.DictReader(handle, delimiter="\t" if file.suffix.lower() == ".tsv" else ","))
        rows = []
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise CommandError(f"{path}:{number}: not a JSON object ({error})") from None
        return rows


def collect_samples(
    rows: list[dict],
    model_column: str,
    metrics: dict[str, str],
    sample_column: str | None = None,
    *,
    source: str = "input",
) -> dict[str, dict[str, list[float]]]:
    """Group rows into `{model: {metric: values}}`, matched on `sample_column` when given. A value that is not a
    finite number is a [`CommandError`] naming `source` (the file), the row, its model and sample, and the column."""
    import math

    if not rows:
        raise CommandError(f"{source}: the file holds no rows")
    needed = [model_column, *metrics] + ([sample_column] if sample_column else [])
    missing = [column for column in needed if column not in rows[0]]
    if missing:
        raise CommandError(f"{source}: missing column(s) {missing}; the columns are {sorted(rows[0])}")
    grouped: dict[str, dict] = {}
    for number, row in enumerate(rows, start=1):
        model = str(row[model_column])
        values = {}
        for metric in metrics:
            try:
                values[metric] = float(row[metric])
            except (TypeError, ValueError):
                raise CommandError(
                    f"{source}: row {number}, column {metric!r}: expected a number, got {row[metric]!r}"
                ) from None
            if not math.isfinite(values[metric]):
                sample = f", sample {str(row[sample_column])!r}" if sample_column else ""
                raise CommandError(
                    f"{source}: row {number} (model {model!r}{sample}), column {metric!r}: {values[metric]} is not a "
                    "finite number; a dominance test needs a number for every sample. Fix or drop that row."
                )
        key = str(row[sample_column]) if sample_column else len(grouped.get(model, {}))
        if key in grouped.setdefault(model, {}):
            raise CommandError(f"{source}: row {number}: model {model!r} has sample {key!r} twice")
        grouped[model][key] = values
    if sample_column:
        keys = [set(samples) for samples in grouped.values()]
        common = set.intersection(*keys)
        if any(k != common for k in keys):
            raise CommandError(
                f"{source}: with --sample-column every model needs the same samples; {len(common)} are shared, "
                f"sizes per model: { {m: len(s) for m, s in grouped.items()} }"
            )
        order = sorted(common)
    return {
        model: {metric: [samples[key][metric] for key in (order if sample_column else samples)] for metric in metrics}
        for model, samples in grouped.items()
    }


def _parse_orders(text: str) -> list[int]:
    try:
        orders = [int(order) for order in text.split(",") if order.strip()]
    except ValueError:
        raise CommandError(f"--orders: expected a comma-separated list of 1 and 2, got {text!r}") from None
    if not orders or any(order not in (1, 2) for order in orders):
        raise CommandError(f"--orders: expected a comma-separated list of 1 and 2, got {text!r}")
    return orders


def _parse_directions(text: str | None) -> dict[str, str]:
    directions = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, direction = item.partition("=")
        if direction.strip() not in ("max", "min"):
            raise CommandError(f"--directions: expected metric=max or metric=min, got {item!r}")
        directions[name.strip()] = direction.strip()
    return directions


def _split_inputs(inputs: list[str]) -> tuple[list[tuple[str | None, str]], bool]:
    """`(name or None, path)` of every input, and whether the input is a table of per-sample metrics."""
    named = []
    for text in inputs:
        name, sep, path = text.partition("=")
        if sep and name and not Path(text).exists():
            named.append((name, path))
        else:
            named.append((None, text))
    tables = [
        path
        for _, path in named
        if Path(path).suffix.lower() in (".csv", ".tsv")
        or (Path(path).suffix.lower() == ".jsonl" and not Path(path).name.startswith("samples_"))
    ]
    return named, bool(tables)


def _check_arguments(args: argparse.Namespace) -> None:
    """The numeric options in range and the output folder writable and locked for this run (a second run into it
    fails here, naming this one), before any input is read or any folder written."""
    from hf_ext._validation import check_range, check_writable_directory
    from hf_ext.transactions import OutputLockedError, hold_output_lock

    try:
        check_range("--alpha", args.alpha, gt=0, lt=1, hint="(a significance level)")
        check_range("--power", args.power, gt=0, lt=1)
        check_range("--min-effect", args.min_effect, gt=0)
        check_range("--n-bootstrap", args.n_bootstrap, ge=1, integer=True)
        check_writable_directory(args.output_dir)  # the report is built beside it, then renamed onto it
        hold_output_lock(args.output_dir)
    except (ValueError, OSError, OutputLockedError) as error:
        raise CommandError(str(error)) from None


def _check_inputs(named: list[tuple[str | None, str]]) -> None:
    """Every input is an existing local file or folder (risk reads no Hub repo)."""
    for name, path in named:
        if not Path(path).expanduser().exists():
            shown = f"{name}={path}" if name else path
            raise CommandError(
                f"input {shown!r}: no such file or folder {Path(path).expanduser().resolve()}; expected harness log "
                "folders / files or one CSV / JSONL table on this machine."
            )


def _risk(args: argparse.Namespace) -> int:
    _check_arguments(args)
    orders = _parse_orders(args.orders)
    named, is_table = _split_inputs(args.inputs)
    _check_inputs(named)
    if args.harness == "table" or (args.harness == "auto" and is_table):
        if len(named) != 1 or named[0][0] is not None:
            raise CommandError(
                f"a table of per-sample metrics is read alone (one CSV / JSONL file, no NAME=), got {args.inputs}"
            )
        return _risk_table(args, named[0][1], orders)
    return _risk_logs(args, named, orders)


def _risk_logs(args: argparse.Namespace, named: list[tuple[str | None, str]], orders: list[int]) -> int:
    import sys
    import warnings

    from hf_ext.risk.harness import UnderpoweredComparisonWarning, compare_harness_logs
    from hf_ext.risk.harness_report import write_harness_report
    from hf_ext.risk.readers import read_harness_logs

    metrics, directions = None, {}
    if args.metrics:
        metrics = _parse_metrics(args.metrics)
        # a direction written next to a metric (name:min) is given; a bare name only selects it
        directions = {name: metrics[name] for name in metrics if f"{name}:" in args.metrics}
    directions.update(_parse_directions(args.directions))
    weights = None
    if args.weights:
        weights = {}
        for item in filter(None, (part.strip() for part in args.weights.split(","))):
            name, _, value = item.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise CommandError(f"--weights: expected metric=number, got {item!r}") from None
    sources = [path for _, path in named]
    if any(name is not None for name, _ in named):
        if any(name is None for name, _ in named):
            raise CommandError("name every input (NAME=PATH) or none of them")
        sources = {name: path for name, path in named}
        if len(sources) != len(named):
            raise CommandError(f"each input needs a distinct NAME, got {[name for name, _ in named]}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    try:
        logs = read_harness_logs(
            sources,
            harness=args.harness,
            directions=directions,
            tasks=tasks,
            metrics=list(metrics) if metrics else None,
            runs=args.runs,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnderpoweredComparisonWarning)
            comparison = compare_harness_logs(
                logs,
                orders=orders,
                alpha=args.alpha,
                correction=None if args.correction == "none" else args.correction,
                n_bootstrap=args.n_bootstrap,
                seed=args.seed,
                weights=weights,
                with_portfolio=not args.no_portfolio,
                mcnemar=not args.no_mcnemar,
                guard=None if args.guard == "none" else args.guard,
                power=args.power,
                min_effect=args.min_effect,
                missing=args.missing,
                progress=True,
            )
        report = write_harness_report(comparison, args.output_dir, html_page=not args.no_html)
    except ValueError as error:
        raise CommandError(str(error)) from None
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    for order, ranking in comparison.rankings.items():
        print(f"order {order}: {' > '.join(ranking)}")
    statements = comparison.statements()
    print(f"{len(statements)} significant claim(s) of {len(comparison.claims)}:")
    for statement in statements:
        print(f"  {statement}")
    print(f"Report: {report}")
    return 0


def _risk_table(args: argparse.Namespace, path: str, orders: list[int]) -> int:
    from hf_ext.risk.aggregation import portfolio
    from hf_ext.risk.outputs import atomic_directory
    from hf_ext.risk.report import write_report

    if not args.metrics:
        raise CommandError("--metrics: a table of per-sample metrics needs the metric columns, e.g. --metrics reward")
    metrics = _parse_metrics(args.metrics)
    weights = _parse_weights(args.weights, metrics)
    grouped = collect_samples(
        read_rows(path, args.format), args.model_column, metrics, args.sample_column, source=path
    )
    try:
        if len(metrics) == 1:
            ((metric, direction),) = metrics.items()
            sign = 1.0 if direction == "max" else -1.0
            samples = {model: [sign * v for v in values[metric]] for model, values in grouped.items()}
            notes = f"Metric: `{metric}`" + (" (negated: smaller is better)." if sign < 0 else ".")
        else:
            samples = portfolio(grouped, metrics, weights)
            spec = ", ".join(f"`{m}` ({d})" for m, d in metrics.items())
            notes = f"Metrics portfolio (empirical-CDF normalised, weighted geometric mean) of {spec}."
        with atomic_directory(args.output_dir) as staging:
            _, results = write_report(
                samples,
                staging,
                orders=orders,
                alpha=args.alpha,
                n_bootstrap=args.n_bootstrap,
                paired=args.sample_column is not None,
                seed=args.seed,
                notes=notes,
                progress=True,
            )
    except ValueError as error:
        raise CommandError(str(error)) from None
    for order, result in results.items():
        print(f"order {order}: {' > '.join(result.ranking)}")
    print(f"Report: {Path(args.output_dir) / 'report.md'}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The parser of `hf-ext risk`."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {NAME}", description=HELP)
    _configure(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext risk INPUT... [options]`; returns the exit status."""
    args = make_parser().parse_args(None if argv is None else list(argv))
    return run_command(NAME, lambda: _risk(args))


if __name__ == "__main__":
    raise SystemExit(main())
