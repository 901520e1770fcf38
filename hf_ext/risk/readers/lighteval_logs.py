"""Reader of lighteval details (`lighteval ... --output-dir DIR --save-details`).

lighteval writes `DIR/details/<model name>/<date>/details_<task>_<date>.parquet`, one row per document: a `doc`
struct (its `id`, `query`, `choices`, `gold_index`, ...), the `model_response`, and a `metric` struct with the
document's value of every sample-level metric; and `DIR/results/<model name>/results_<date>.json`, whose
`config_tasks` give each metric's `higher_is_better` and whose `config_general` names the model. This module parses
those files only (with pyarrow, which `datasets` installs); lighteval need not be installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from .records import LOG_DATE, HarnessLogError, SampleScores, holds_log_files, log_files


__all__ = ["is_lighteval_log", "read_lighteval"]

HARNESS = "lighteval"
_DETAILS = re.compile(rf"^details_(?P<task>.+)_(?P<date>{LOG_DATE})\.parquet$")


def is_lighteval_log(path: Path) -> bool:
    """Whether `path` is a lighteval details file, or a folder holding some."""
    return holds_log_files(path, _DETAILS, "details_*.parquet")


def _details_files(path: Path) -> list[Path]:
    return log_files(
        path,
        _DETAILS,
        "details_*.parquet",
        not_a_log="not a lighteval details file; expected details_<task>_<date>.parquet (written by lighteval with "
        "--save-details) or its --output-dir folder",
        none_found="no lighteval details found (details_<task>_<date>.parquet); run lighteval with --save-details "
        "and point to its --output-dir",
    )


def _find_results(details: Path, date: str) -> dict | None:
    # details/<model>/<date>/file -> results/<model>/results_<date>.json, searched upwards from the details folder
    for parent in details.parents:
        if parent.name == "details":
            relative = details.parent.parent.relative_to(parent)
            candidate = parent.parent / "results" / relative / f"results_{date}.json"
            if candidate.is_file():
                try:
                    return json.loads(candidate.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError) as error:
                    raise HarnessLogError(f"{candidate}: not a readable lighteval results file ({error})") from None
            return None
    return None


def _directions(results: dict | None, task: str) -> dict[str, str]:
    config = ((results or {}).get("config_tasks") or {}).get(task) or {}
    out = {}
    for metric in config.get("metrics") or []:
        if not isinstance(metric, dict):
            continue
        names, higher = metric.get("metric_name"), metric.get("higher_is_better")
        if isinstance(higher, dict):  # a group of metrics computed together
            out.update({str(name): "max" if flag else "min" for name, flag in higher.items()})
        elif isinstance(higher, bool):
            for name in names if isinstance(names, list) else [names]:
                out[str(name)] = "max" if higher else "min"
    return out


def _digest(doc: dict) -> str:
    content = json.dumps([doc.get("query"), doc.get("choices"), doc.get("gold_index")], sort_keys=True, default=str)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def read_lighteval(path: str | Path) -> tuple[list[SampleScores], list[str]]:
    """Read lighteval details.

    Args:
        path (`str` or `Path`): A lighteval `--output-dir` (any depth), or one `details_<task>_<date>.parquet`.

    Returns:
        The [`SampleScores`] read (one per model, run, task and metric) and the metrics skipped, with the reason.

    Raises:
        HarnessLogError: when `path` holds no lighteval details, or a file lacks the `doc` / `metric` columns.
    """
    path = Path(path)
    if not path.exists():
        raise HarnessLogError(f"{path}: no such file or folder")
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise HarnessLogError("reading lighteval details needs pyarrow (pip install pyarrow)") from None
    records, skipped = [], []
    for file in _details_files(path):
        match = _DETAILS.match(file.name)
        task, date = match["task"], match["date"]
        try:
            table = parquet.read_table(file, columns=["doc", "metric"])
        except Exception as error:  # pyarrow raises several types for a file that is not parquet or lacks columns
            raise HarnessLogError(
                f"{file}: not a lighteval details file (expected parquet columns 'doc' and 'metric'; {error})"
            ) from None
        results = _find_results(file, date)
        general = (results or {}).get("config_general") or {}
        model = str(general.get("model_name") or file.parent.parent.name)
        model_config = general.get("model_config") or {}
        arguments = (
            {k: v for k, v in model_config.items() if k != "model_name"} if isinstance(model_config, dict) else {}
        )
        model_key = (model, json.dumps(arguments, sort_keys=True, default=str))
        directions = _directions(results, task)
        docs, metrics = table.column("doc").to_pylist(), table.column("metric").to_pylist()
        ids, hashes = [], []
        for position, doc in enumerate(docs):
            doc = doc or {}
            ids.append(str(doc.get("id") if doc.get("id") not in (None, "") else position))
            hashes.append(_digest(doc))
        names = list(dict.fromkeys(name for row in metrics if row for name in row))
        for name in names:
            values = [row.get(name) if row else None for row in metrics]
            numbers = [float(v) if isinstance(v, (bool, int, float)) else None for v in values]
            if any(v is None for v in numbers):
                example = next(v for v, n in zip(values, numbers) if n is None)
                skipped.append(f"{task}/{name} ({file.name}): values are not numbers (e.g. {str(example)[:60]!r})")
                continue
            records.append(
                SampleScores(
                    harness=HARNESS,
                    model=model,
                    model_key=model_key,
                    task=task,
                    metric=name,
                    ids=list(ids),
                    values=np.asarray(numbers, dtype=np.float64),
                    direction=directions.get(name),
                    source=str(file),
                    run=date,
                    item_hashes=list(hashes),
                    model_info={"name": model, "arguments": arguments},
                )
            )
    return records, skipped
