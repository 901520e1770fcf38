"""Reader of Inspect evaluation logs (`inspect eval ... --log-dir DIR`): `.eval` archives and `.json` logs.

An Inspect log holds one task run on one model: `eval` (task name, model name and arguments, run id, date), the
run's `status`, and each sample's `id`, `epoch` and `scores` (per scorer, a `value`: `"C"` / `"I"` / `"P"` / `"N"`
for correct / incorrect / partial / no answer, a number, a boolean, or a dict of several named values). A `.eval`
file is a zip archive with `header.json`, `summaries.json` (every sample's id, epoch and scores) and
`samples/<id>_epoch_<n>.json`; recent Inspect releases compress its members with Zstandard, which needs the
`zstandard` package (`pip install "hf-ext[harness]"`). A `.json` log is the same content as one JSON object
(`inspect log convert --to json`). This module parses those files only; Inspect need not be installed.

Epochs are repeats of the same sample: they become clusters of the paired comparison.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

from .records import HarnessLogError, SampleScores


__all__ = ["is_inspect_log", "read_inspect", "score_to_float"]

HARNESS = "inspect"
# Inspect's letter values: correct, incorrect, partially correct, no answer (its own `value_to_float` reads them so)
_LETTERS = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}
_WORDS = {"yes": 1.0, "true": 1.0, "no": 0.0, "false": 0.0}
# Built-in scorers whose numeric values grow with quality
_LARGER_IS_BETTER = {
    "answer",
    "choice",
    "exact",
    "f1",
    "includes",
    "match",
    "math",
    "model_graded_fact",
    "model_graded_qa",
    "pattern",
}


def score_to_float(value) -> float | None:
    """A score value as a number: `C` / `I` / `P` / `N` as 1 / 0 / 0.5 / 0, booleans and yes / no as 1 / 0,
    numbers (and numeric strings) as they are; `None` for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text in _LETTERS:
            return _LETTERS[text]
        if text.lower() in _WORDS:
            return _WORDS[text.lower()]
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _is_log_json(file: Path) -> bool:
    try:
        with file.open(encoding="utf-8") as handle:
            head = handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return head.lstrip().startswith("{") and '"eval"' in head and ('"version"' in head or '"status"' in head)


def is_inspect_log(path: Path) -> bool:
    """Whether `path` is an Inspect log (`.eval`, or a `.json` log), or a folder holding some."""
    if path.is_file():
        return path.suffix == ".eval" or (path.suffix == ".json" and _is_log_json(path))
    return any(True for _ in path.rglob("*.eval")) or any(_is_log_json(file) for file in path.rglob("*.json"))


def _log_files(path: Path) -> list[Path]:
    if path.is_file():
        if not is_inspect_log(path):
            raise HarnessLogError(
                f"{path}: not an Inspect log; expected a .eval file or a .json log (an object with 'eval' and "
                "'samples'), as written by `inspect eval --log-dir`"
            )
        return [path]
    files = sorted(path.rglob("*.eval")) + sorted(file for file in path.rglob("*.json") if _is_log_json(file))
    if not files:
        raise HarnessLogError(f"{path}: no Inspect log found (.eval files or .json logs written by `inspect eval`)")
    return files


def _read_member(archive: zipfile.ZipFile, file: Path, name: str) -> bytes:
    info = archive.getinfo(name)
    try:
        return archive.read(info)
    except NotImplementedError:
        if info.compress_type != 93:  # 93: Zstandard
            raise HarnessLogError(
                f"{file}: member {name} uses zip compression method {info.compress_type}, which cannot be read"
            ) from None
    try:
        import zstandard
    except ImportError:
        raise HarnessLogError(
            f"{file}: this .eval log is compressed with Zstandard (recent Inspect releases); install `zstandard` "
            "(pip install 'hf-ext[harness]') or convert it: inspect log convert --to json"
        ) from None
    with file.open("rb") as handle:  # the member's raw bytes: after its local header (30 bytes, name, extra field)
        handle.seek(info.header_offset)
        header = handle.read(30)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        raw = handle.read(info.compress_size)
    return zstandard.ZstdDecompressor().decompress(raw, max_output_size=info.file_size)


def _load_eval_archive(file: Path) -> dict:
    try:
        archive = zipfile.ZipFile(file)
    except (OSError, zipfile.BadZipFile) as error:
        raise HarnessLogError(f"{file}: not an Inspect .eval log (not a zip archive: {error})") from None
    with archive:
        names = set(archive.namelist())
        if "header.json" not in names and "_journal/start.json" not in names:
            raise HarnessLogError(f"{file}: not an Inspect .eval log (no header.json inside)")
        log = json.loads(
            _read_member(archive, file, "header.json" if "header.json" in names else "_journal/start.json")
        )
        if "summaries.json" in names:
            samples = json.loads(_read_member(archive, file, "summaries.json"))
        else:
            parts = sorted(name for name in names if name.startswith("_journal/summaries/"))
            if parts:
                samples = [s for part in parts for s in json.loads(_read_member(archive, file, part))]
            else:
                samples = [
                    json.loads(_read_member(archive, file, name))
                    for name in sorted(names)
                    if name.startswith("samples/") and name.endswith(".json")
                ]
    log["samples"] = samples
    return log


def _load(file: Path) -> dict:
    if file.suffix == ".eval":
        return _load_eval_archive(file)
    try:
        log = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HarnessLogError(f"{file}: not a readable Inspect .json log ({error})") from None
    if not isinstance(log, dict) or "eval" not in log:
        raise HarnessLogError(f"{file}: not an Inspect log (no 'eval' key)")
    return log


def _digest(sample: dict) -> str:
    content = json.dumps([sample.get("input"), sample.get("target")], sort_keys=True, default=str)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def read_inspect(path: str | Path) -> tuple[list[SampleScores], list[str]]:
    """Read Inspect logs.

    Args:
        path (`str` or `Path`): A log folder (any depth), a `.eval` file or a `.json` log.

    Returns:
        The [`SampleScores`] read (one per log and scorer value; epochs as repeats) and the scores skipped, each
        with the reason.

    Raises:
        HarnessLogError: when `path` holds no Inspect log, or a log did not finish (`status` other than
            `"success"`: its samples would not match the other models').
    """
    path = Path(path)
    if not path.exists():
        raise HarnessLogError(f"{path}: no such file or folder")
    records, skipped = [], []
    for file in _log_files(path):
        log = _load(file)
        spec = log["eval"]
        status = log.get("status", "success")
        if status != "success":
            raise HarnessLogError(
                f"{file}: this Inspect run did not finish (status {status!r}); re-run or retry it "
                "(inspect eval-retry) before comparing, or leave the file out"
            )
        task, model = str(spec.get("task", "task")), str(spec.get("model", "model"))
        args = spec.get("model_args") or {}
        model_key = (model, json.dumps(args, sort_keys=True, default=str))
        run = str(spec.get("created") or spec.get("run_id") or file.stem)
        found: dict[str, tuple[list, list, list, list]] = {}
        bad: dict[str, str] = {}
        graded: dict[str, bool] = {}  # whether every value of the metric was one of Inspect's letters
        for sample in log.get("samples") or []:
            for scorer, score in (sample.get("scores") or {}).items():
                value = score.get("value") if isinstance(score, dict) else score
                parts = value.items() if isinstance(value, dict) else [(None, value)]
                for key, part in parts:
                    metric = scorer if key is None else f"{scorer}/{key}"
                    if metric in bad:
                        continue
                    number = score_to_float(part)
                    if number is None:
                        bad[metric] = f"values are not numbers or C/I/P/N (e.g. {str(part)[:60]!r})"
                        found.pop(metric, None)
                        continue
                    graded[metric] = graded.get(metric, True) and isinstance(part, str) and part.strip() in _LETTERS
                    ids, epochs, hashes, values = found.setdefault(metric, ([], [], [], []))
                    ids.append(str(sample.get("id")))
                    epochs.append(int(sample.get("epoch", 1)))
                    hashes.append(_digest(sample))
                    values.append(number)
        if not found and not bad:
            raise HarnessLogError(f"{file}: the log holds no scored sample (was it run with --no-score?)")
        for metric, (ids, epochs, hashes, values) in found.items():
            # correct / incorrect letters, or a built-in scorer's numbers: larger is better; otherwise unknown
            direction = "max" if graded[metric] or metric.split("/")[0] in _LARGER_IS_BETTER else None
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
                    run=run,
                    repeats=epochs,
                    item_hashes=hashes,
                    model_info={"name": model, "arguments": args},
                )
            )
        skipped += [f"{task}/{metric} ({file.name}): {reason}" for metric, reason in bad.items()]
    return records, skipped
