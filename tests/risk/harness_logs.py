"""Hand-made harness logs with known contents, written in each harness's own layout and format (read from their
documentation and source): lm-eval `--log_samples` folders, Inspect `.eval` / `.json` logs, lighteval details."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_lm_eval_run(
    root: Path,
    model: str,
    task: str,
    values: dict[str, list],
    *,
    date: str = "2026-01-01T10-00-00.000001",
    model_args: dict | None = None,
    higher_is_better: dict[str, bool] | None = None,
    doc_ids: list[int] | None = None,
    filters: tuple[str, ...] = ("none",),
    prompts: list[str] | None = None,
) -> Path:
    """One lm-eval run of one task: `results_<date>.json` and `samples_<task>_<date>.jsonl` in the model's folder.

    `values` maps a metric to its per-document values (in the order of `doc_ids`, default 0..n-1); each filter
    gets the same values."""
    folder = root / model.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(values.values())))
    doc_ids = list(range(n)) if doc_ids is None else doc_ids
    prompts = prompts or [f"Question {i}?" for i in doc_ids]
    lines = []
    for label in filters:
        for position, doc_id in enumerate(doc_ids):
            doc = {"question": prompts[position], "answer": "yes"}
            record = {
                "doc_id": doc_id,
                "doc": doc,
                "target": "yes",
                "arguments": {"gen_args_0": {"arg_0": doc["question"], "arg_1": " yes"}},
                "resps": [[["-1.5", "False"]]],
                "filtered_resps": [["-1.5", "False"]],
                "filter": label,
                "metrics": list(values),
                "doc_hash": digest(json.dumps(doc, indent=2)),
                "prompt_hash": digest(doc["question"]),
                "target_hash": digest("yes"),
            }
            record.update({metric: column[position] for metric, column in values.items()})
            lines.append(json.dumps(record))
    (folder / f"samples_{task}_{date}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    higher = higher_is_better or dict.fromkeys(values, True)
    results = {
        "results": {task: {"alias": task}},
        "higher_is_better": {task: higher},
        "config": {"model": "hf", "model_args": {"pretrained": model, **(model_args or {})}},
        "model_name": model,
        "model_name_sanitized": model.replace("/", "__"),
    }
    results_file = folder / f"results_{date}.json"
    if results_file.exists():  # several tasks of one run share the results file
        previous = json.loads(results_file.read_text())
        previous["results"].update(results["results"])
        previous["higher_is_better"].update(results["higher_is_better"])
        results = previous
    results_file.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return folder


def inspect_log(
    task: str,
    model: str,
    samples: list[tuple],
    *,
    status: str = "success",
    model_args: dict | None = None,
    created: str = "2026-01-01T10:00:00+00:00",
) -> dict:
    """An Inspect log as a dict; `samples` holds `(id, epoch, scores)` with `scores` = `{scorer: value}`."""
    return {
        "version": 2,
        "status": status,
        "eval": {
            "task": task,
            "task_id": "T1",
            "run_id": "R1",
            "created": created,
            "model": model,
            "model_args": model_args or {},
            "dataset": {"name": "qa", "samples": len({s[0] for s in samples})},
            "config": {"epochs": max(s[1] for s in samples)},
        },
        "results": {"total_samples": len(samples), "scores": []},
        "samples": [
            {
                "id": sample_id,
                "epoch": epoch,
                "input": f"input of {sample_id}",
                "target": "A",
                "scores": {scorer: {"value": value, "answer": "A"} for scorer, value in scores.items()},
            }
            for sample_id, epoch, scores in samples
        ],
    }


def write_inspect_eval(path: Path, log: dict) -> Path:
    """`log` as a `.eval` archive (deflate members): header.json, summaries.json and one file per sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {key: value for key, value in log.items() if key != "samples"}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("_journal/start.json", json.dumps({"version": 2, "eval": log["eval"]}))
        for sample in log["samples"]:
            archive.writestr(f"samples/{sample['id']}_epoch_{sample['epoch']}.json", json.dumps(sample))
        archive.writestr("summaries.json", json.dumps(log["samples"]))
        archive.writestr("header.json", json.dumps(header))
    return path


def write_inspect_json(path: Path, log: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=2), encoding="utf-8")
    return path


def write_lighteval_run(
    root: Path,
    model: str,
    task: str,
    values: dict[str, list],
    *,
    date: str = "2026-01-01T10-00-00.000001",
    higher_is_better: dict[str, bool] | None = None,
    queries: list[str] | None = None,
) -> None:
    """lighteval's `details/<model>/<date>/details_<task>_<date>.parquet` and `results/<model>/results_<date>.json`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(next(iter(values.values())))
    queries = queries or [f"Question {i}?" for i in range(n)]
    docs = [
        {"query": queries[i], "choices": [" yes", " no"], "gold_index": 0, "id": str(i), "task_name": task}
        for i in range(n)
    ]
    metrics = [{name: column[i] for name, column in values.items()} for i in range(n)]
    responses = [{"logprobs": [-1.0, -2.0], "text": []} for _ in range(n)]
    table = pa.table({"doc": docs, "metric": metrics, "model_response": responses})
    details = root / "details" / model / date
    details.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, details / f"details_{task}_{date}.parquet")
    higher = higher_is_better or dict.fromkeys(values, True)
    results = {
        "config_general": {"model_name": model, "model_config": {"model_name": model, "batch_size": 4}},
        "results": {task: {name: sum(column) / n for name, column in values.items()}},
        "config_tasks": {
            task: {
                "name": task.split("|")[0],
                "metrics": [{"metric_name": name, "higher_is_better": flag} for name, flag in higher.items()],
            }
        },
    }
    folder = root / "results" / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"results_{date}.json").write_text(json.dumps(results), encoding="utf-8")
