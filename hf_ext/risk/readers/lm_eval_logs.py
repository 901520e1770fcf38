"""Reader of lm-evaluation-harness per-sample logs (`lm_eval ... --log_samples --output_path DIR`).

lm-eval writes, for each model, a folder `DIR/<model name, sanitized>/` holding one `results_<date>.json` per run
(aggregated results, `higher_is_better` for every metric of every task, the model's name and arguments) and one
`samples_<task>_<date>.jsonl` per task of the run: a JSON object per document with its `doc_id`, a `doc_hash` of
its content, the `filter` the metrics were computed after, the list of `metrics`, and each metric's value. This
module parses those files only; lm-eval need not be installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .records import LOG_DATE, HarnessLogError, SampleScores, holds_log_files, log_files


__all__ = ["is_lm_eval_log", "read_lm_eval"]

HARNESS = "lm-eval"
_SAMPLES = re.compile(rf"^samples_(?P<task>.+)_(?P<date>{LOG_DATE})\.jsonl$")
_RESULTS = re.compile(rf"^results_(?P<date>{LOG_DATE})\.json$")


def is_lm_eval_log(path: Path) -> bool:
    """Whether `path` is an lm-eval samples file, or a folder holding some (at any depth)."""
    return holds_log_files(path, _SAMPLES, "samples_*.jsonl")


def _sample_files(path: Path) -> list[Path]:
    return log_files(
        path,
        _SAMPLES,
        "samples_*.jsonl",
        not_a_log="not an lm-eval per-sample log; expected a file named samples_<task>_<date>.jsonl (written by "
        "lm_eval --log_samples) or the --output_path folder",
        none_found="no lm-eval per-sample logs found (samples_<task>_<date>.jsonl); run lm_eval with --log_samples "
        "and --output_path, and point to that folder",
    )


def _model_args(config: dict) -> dict:
    args = config.get("model_args") or {}
    if isinstance(args, str):  # older releases log the command-line string "pretrained=...,dtype=..."
        pairs = (item.partition("=") for item in args.split(",") if item.strip())
        args = {key.strip(): value.strip() for key, _, value in pairs}
    return {str(key): value for key, value in args.items()}


def _model_identity(results: dict | None, folder: Path) -> tuple[str, tuple, dict]:
    if results is None:
        return folder.name, (folder.name,), {"name": folder.name}
    config = results.get("config") or {}
    args = _model_args(config)
    name = str(results.get("model_name") or args.get("pretrained") or args.get("model") or folder.name)
    other = {key: value for key, value in args.items() if key not in ("pretrained", "model")}
    key = (name, json.dumps(other, sort_keys=True, default=str))
    return name, key, {"name": name, "model": config.get("model"), "arguments": other}


def _load_results(file: Path) -> dict:
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HarnessLogError(f"{file}: not a readable lm-eval results file ({error})") from None
    if not isinstance(results, dict) or "results" not in results:
        raise HarnessLogError(f"{file}: not an lm-eval results file (no 'results' key)")
    return results


def _scalar(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def read_lm_eval(path: str | Path) -> tuple[list[SampleScores], list[str]]:
    """Read lm-eval per-sample logs.

    Args:
        path (`str` or `Path`): An lm-eval `--output_path` folder (one or several models, any depth), a model's
            folder, or one `samples_<task>_<date>.jsonl` file.

    Returns:
        The [`SampleScores`] read (one per model, run, task and metric) and the metrics skipped, each with the
        reason (metrics whose per-sample values are not numbers, such as corpus-level BLEU).

    Raises:
        HarnessLogError: when `path` holds no lm-eval per-sample log, or a line is not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        raise HarnessLogError(f"{path}: no such file or folder")
    records, skipped = [], []
    results_cache: dict[Path, dict | None] = {}
    for file in _sample_files(path):
        match = _SAMPLES.match(file.name)
        task, date = match["task"], match["date"]
        results_file = file.with_name(f"results_{date}.json")
        if results_file not in results_cache:
            results_cache[results_file] = _load_results(results_file) if results_file.is_file() else None
        results = results_cache[results_file]
        model, model_key, info = _model_identity(results, file.parent)
        higher = ((results or {}).get("higher_is_better") or {}).get(task, {})
        found, bad = _parse_samples(file)
        for metric, (ids, hashes, values) in found.items():
            base = metric.split(",")[0]
            direction = None if base not in higher else ("max" if higher[base] else "min")
            records.append(
                SampleScores(
                    harness=HARNESS,
                    model=model,
                    model_key=model_key,
                    task=task,
                    metric=metric,
                    ids=ids,
                    values=np.asarray(values, dtype=np.float64),
                    direction=direction,
                    source=str(file),
                    run=date,
                    item_hashes=hashes,
                    model_info=info,
                )
            )
        skipped += [f"{task}/{metric} ({file.name}): {reason}" for metric, reason in bad.items()]
    return records, skipped


def _parse_samples(file: Path):
    """`{metric: (ids, hashes or None, values)}` and `{metric: reason}` for the metrics left out."""
    fast = _parse_samples_arrow(file)
    return fast if fast is not None else _parse_samples_json(file)


def _parse_samples_arrow(file: Path):
    """The same as [`_parse_samples_json`], with pyarrow's multithreaded JSON reader reading only the fields needed;
    `None` whenever the file is anything but plain (then the line-by-line reader decides, with its messages)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pj
    except ImportError:
        return None
    with file.open(encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), None)
    try:
        names = json.loads(first)["metrics"] if first else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if not names or not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        return None
    fields = [
        pa.field("doc_id", pa.int64()),
        pa.field("doc_hash", pa.string()),
        pa.field("filter", pa.string()),
        pa.field("metrics", pa.list_(pa.string())),
    ] + [pa.field(name, pa.float64()) for name in names if name not in ("doc_id", "doc_hash", "filter", "metrics")]
    options = pj.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(file, parse_options=options)
    except (pa.ArrowException, OSError):
        return None  # e.g. a boolean or list value where a number was expected
    if table.num_rows == 0 or any(table.column(field.name).null_count for field in fields if field.name != "doc_hash"):
        return None
    listed = table.column("metrics")
    lengths = pc.list_value_length(listed).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(listed).to_numpy(zero_copy_only=False)
    if np.any(lengths != len(names)) or not np.array_equal(
        flat, np.tile(np.array(names, dtype=object), table.num_rows)
    ):
        return None  # some record lists other metrics than the first
    ids = table.column("doc_id").to_numpy().astype(str)
    hashes = np.asarray(table.column("doc_hash").to_pylist(), dtype=object)
    labels = np.asarray(table.column("filter").to_pylist(), dtype=object)
    found = {}
    for label in dict.fromkeys(labels.tolist()):
        rows = labels == label
        for name in names:
            metric = name if label == "none" else f"{name},{label}"
            values = table.column(name).to_numpy()[rows]
            digests = hashes[rows]
            keep = None if all(d is None or d == "" for d in digests) else [str(d or "") for d in digests]
            found[metric] = (ids[rows].tolist(), keep, values.tolist())
    return found, {}


def _parse_samples_json(file: Path):
    found: dict[str, tuple[list, list, list]] = {}
    bad: dict[str, str] = {}
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id, names = row["doc_id"], row["metrics"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise HarnessLogError(
                    f"{file}:{number}: not an lm-eval per-sample record (expected a JSON object with doc_id, "
                    f"metrics and each metric's value; {type(error).__name__}: {error})"
                ) from None
            label = row.get("filter", "none")
            for name in names:
                metric = name if label == "none" else f"{name},{label}"
                if metric in bad:
                    continue
                value = _scalar(row.get(name))
                if value is None:
                    bad[metric] = (
                        f"per-sample values are not numbers (e.g. {str(row.get(name))[:60]!r}): a corpus-level metric"
                    )
                    found.pop(metric, None)
                    continue
                ids, hashes, values = found.setdefault(metric, ([], [], []))
                ids.append(str(doc_id))
                hashes.append(str(row.get("doc_hash", "")))
                values.append(value)
    for metric, (ids, hashes, values) in found.items():
        if not any(hashes):
            found[metric] = (ids, None, values)
    return found, bad
