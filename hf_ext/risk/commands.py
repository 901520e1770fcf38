"""`hf-ext risk`: a risk-aware comparison of models from a CSV / JSONL of per-sample metrics."""

from __future__ import annotations

import argparse

from ..cli import Command, CommandError, FunctionCommand


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="CSV or JSONL file: one row per sample, with a model column and metric columns")
    parser.add_argument("--model-column", default="model", help="column naming the model of each row (default: model)")
    parser.add_argument(
        "--metrics",
        required=True,
        help="metric columns with their direction, e.g. 'reward' or 'toxicity:min,fluency:max' (default direction: "
        "max = larger is better); several metrics are aggregated into a portfolio",
    )
    parser.add_argument(
        "--weights", default=None, help="portfolio weights, e.g. 'toxicity=2,fluency=1' (default: uniform)"
    )
    parser.add_argument(
        "--sample-column",
        default=None,
        help="column identifying the prompt of each row; when given, the models' samples are matched on it (paired test)",
    )
    parser.add_argument(
        "--format", choices=("csv", "jsonl"), default=None, help="input format (default: from the extension)"
    )
    parser.add_argument("--orders", default="1,2", help="dominance orders to test (default: 1,2)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (default: 0.05)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap rounds (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--output-dir", default="risk-report", help="where report.md and its plots go")


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
    rows: list[dict], model_column: str, metrics: dict[str, str], sample_column: str | None = None
) -> dict[str, dict[str, list[float]]]:
    """Group rows into `{model: {metric: values}}`, matched on `sample_column` when given."""
    if not rows:
        raise CommandError("input: the file holds no rows")
    needed = [model_column, *metrics] + ([sample_column] if sample_column else [])
    missing = [column for column in needed if column not in rows[0]]
    if missing:
        raise CommandError(f"input: missing column(s) {missing}; the columns are {sorted(rows[0])}")
    grouped: dict[str, dict] = {}
    for number, row in enumerate(rows, start=1):
        model = str(row[model_column])
        values = {}
        for metric in metrics:
            try:
                values[metric] = float(row[metric])
            except (TypeError, ValueError):
                raise CommandError(
                    f"input: row {number}, column {metric!r}: expected a number, got {row[metric]!r}"
                ) from None
        key = str(row[sample_column]) if sample_column else len(grouped.get(model, {}))
        if key in grouped.setdefault(model, {}):
            raise CommandError(f"input: row {number}: model {model!r} has sample {key!r} twice")
        grouped[model][key] = values
    if sample_column:
        keys = [set(samples) for samples in grouped.values()]
        common = set.intersection(*keys)
        if any(k != common for k in keys):
            raise CommandError(
                f"input: with --sample-column every model needs the same samples; {len(common)} are shared, "
                f"sizes per model: { {m: len(s) for m, s in grouped.items()} }"
            )
        order = sorted(common)
    return {
        model: {metric: [samples[key][metric] for key in (order if sample_column else samples)] for metric in metrics}
        for model, samples in grouped.items()
    }


def _risk(args: argparse.Namespace) -> int:
    from .portfolio import portfolio
    from .report import write_report

    metrics = _parse_metrics(args.metrics)
    weights = _parse_weights(args.weights, metrics)
    try:
        orders = [int(order) for order in args.orders.split(",") if order.strip()]
    except ValueError:
        raise CommandError(f"--orders: expected a comma-separated list of 1 and 2, got {args.orders!r}") from None
    if not orders or any(order not in (1, 2) for order in orders):
        raise CommandError(f"--orders: expected a comma-separated list of 1 and 2, got {args.orders!r}")
    grouped = collect_samples(read_rows(args.input, args.format), args.model_column, metrics, args.sample_column)
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
        report, results = write_report(
            samples,
            args.output_dir,
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
    print(f"Report: {report}")
    return 0


def get_commands() -> list[Command]:
    return [
        FunctionCommand(
            "risk",
            "rank models by stochastic dominance of per-sample metrics (CSV / JSONL) into a Markdown report",
            _configure,
            _risk,
        )
    ]
