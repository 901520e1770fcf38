"""What the readers of harness logs return: per-sample scores, and their alignment across models (pure numpy).

A reader turns one harness's files into [`SampleScores`]: the values of one metric of one model on one task, each
with the id of the item (prompt, document) it scores, the run it comes from and, where the harness repeats an item
(Inspect's epochs), the repeat. [`HarnessLogs`] holds them all and matches them across models item by item:
[`HarnessLogs.paired`] returns the values of every model in one order, with the item of each value as its cluster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


__all__ = ["HarnessLogError", "HarnessLogs", "PairedScores", "SampleScores"]

DIRECTIONS = ("max", "min")


class HarnessLogError(ValueError):
    """A file or folder is not a usable harness log, or logs do not match across models; the message says which
    file, what was found and what was expected."""


@dataclass
class SampleScores:
    """The per-sample values of one metric, for one model on one task, as one harness run logged them.

    Attributes:
        harness (`str`): `"lm-eval"`, `"inspect"` or `"lighteval"`.
        model (`str`): The model's display name.
        model_key (`tuple`): What identifies the model across files: its name and its loading arguments (two
            runs of one checkpoint, one of them quantized, are two models).
        task (`str`): Task name, as the harness writes it.
        metric (`str`): Metric name (lm-eval: `metric` or `metric,filter` for filters other than `none`; Inspect:
            the scorer's name, or `scorer/key` for scorers that return several values).
        ids (`list[str]`): The item each value scores (lm-eval's `doc_id`, Inspect's sample id, lighteval's doc id).
        values (`np.ndarray`): The values, float64.
        direction (`str` or `None`): `"max"` when larger is better, `"min"` when smaller is, `None` when the log
            does not say.
        source (`str`): The file the values were read from.
        run (`str`): The run (date or run id) the file belongs to.
        repeats (`list[int]`, *optional*): Repeat of each value within its item (Inspect's epoch), if any.
        item_hashes (`list[str]`, *optional*): A digest of each item's content, to check that models were given
            the same items.
        model_info (`dict`): What the log says about the model (name, arguments).
    """

    harness: str
    model: str
    model_key: tuple
    task: str
    metric: str
    ids: list[str]
    values: np.ndarray
    direction: str | None
    source: str
    run: str
    repeats: list[int] | None = None
    item_hashes: list[str] | None = None
    model_info: dict = field(default_factory=dict)


@dataclass
class PairedScores:
    """The values of one metric of every model, matched item by item ([`HarnessLogs.paired`]).

    Attributes:
        task, metric (`str`): What they measure.
        direction (`str`): `"max"` or `"min"`.
        values (`dict[str, np.ndarray]`): Per model, its values in a common order (the raw values, not negated).
        ids (`list[str]`): The item of each position.
        clusters (`np.ndarray` or `None`): Item code of each position when items have several values (repeats,
            several runs), else `None`.
        repeats (`int`): Values per item.
    """

    task: str
    metric: str
    direction: str
    values: dict[str, np.ndarray]
    ids: list[str]
    clusters: np.ndarray | None
    repeats: int

    @property
    def n_items(self) -> int:
        return len(self.ids) // self.repeats


LOG_DATE = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?"
"""The timestamp lm-eval and lighteval put in their log file names."""


def holds_log_files(path, pattern, glob: str) -> bool:
    """Whether `path` is a log file whose name matches `pattern`, or a folder holding some (at any depth)."""
    if path.is_file():
        return bool(pattern.match(path.name))
    return any(pattern.match(file.name) for file in path.rglob(glob))


def log_files(path, pattern, glob: str, not_a_log: str, none_found: str) -> list:
    """The log files at `path` (one file, or every match below a folder, sorted); `HarnessLogError` with
    `f"{path}: {not_a_log}"` or `f"{path}: {none_found}"` otherwise."""
    if path.is_file():
        if not pattern.match(path.name):
            raise HarnessLogError(f"{path}: {not_a_log}")
        return [path]
    files = sorted(file for file in path.rglob(glob) if pattern.match(file.name))
    if not files:
        raise HarnessLogError(f"{path}: {none_found}")
    return files


def _preview(items: Iterable[str], limit: int = 6) -> str:
    items = sorted(items, key=_natural)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _natural(text: str):
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


class HarnessLogs:
    """Per-sample scores of several models, tasks and metrics read from harness logs ([`read_harness_logs`]).

    Attributes:
        scores (`list[SampleScores]`): Everything read.
        skipped (`list[str]`): Metrics left out, each with the reason (e.g. corpus-level metrics, which have no
            per-sample value).
    """

    def __init__(self, scores: list[SampleScores], skipped: list[str] | None = None):
        if not scores:
            raise HarnessLogError("no per-sample scores were read")
        self.scores = scores
        self.skipped = list(skipped or [])
        self._index: dict[tuple[str, str], dict[str, list[SampleScores]]] = defaultdict(lambda: defaultdict(list))
        for record in scores:
            self._index[(record.task, record.metric)][record.model].append(record)

    @property
    def models(self) -> list[str]:
        """Model names, in the order they were read."""
        return list(dict.fromkeys(record.model for record in self.scores))

    @property
    def tasks(self) -> list[str]:
        """Task names, in the order they were read."""
        return list(dict.fromkeys(record.task for record in self.scores))

    @property
    def harnesses(self) -> list[str]:
        """The harnesses the logs come from."""
        return list(dict.fromkeys(record.harness for record in self.scores))

    def metrics(self, task: str) -> list[str]:
        """The metrics logged for `task`."""
        return list(dict.fromkeys(record.metric for record in self.scores if record.task == task))

    def direction(self, task: str, metric: str) -> str | None:
        """`"max"`, `"min"`, or `None` when no log says (and none was given)."""
        found = {record.direction for record in self._records(task, metric)} - {None}
        if len(found) > 1:
            raise HarnessLogError(
                f"task {task!r}, metric {metric!r}: the logs disagree on its direction ({sorted(found)}); give it "
                f"explicitly (directions={{{metric!r}: 'max' or 'min'}})"
            )
        return found.pop() if found else None

    def _records(self, task: str, metric: str) -> list[SampleScores]:
        if (task, metric) not in self._index:
            raise HarnessLogError(
                f"no scores for task {task!r}, metric {metric!r}; the logs hold "
                + "; ".join(f"{t}: {', '.join(self.metrics(t))}" for t in self.tasks)
            )
        return [record for records in self._index[(task, metric)].values() for record in records]

    def sources(self, task: str, metric: str) -> list[str]:
        """The files the scores of `task` / `metric` come from."""
        return list(dict.fromkeys(record.source for record in self._records(task, metric)))

    def paired(self, task: str, metric: str, *, missing: str = "error") -> PairedScores:
        """Match the values of every model on `task` / `metric` item by item.

        Args:
            task, metric (`str`): What to match.
            missing (`str`, *optional*, defaults to `"error"`): What to do with items that some models lack:
                `"error"` raises naming them, `"drop"` keeps the items every model has.

        Returns:
            [`PairedScores`], positions ordered by item, then by repeat.

        Raises:
            HarnessLogError: when the models were not scored on the same items (naming the missing ids), when an
                item's content differs between models, when items have different numbers of values, or when the
                direction of the metric is unknown.
        """
        if missing not in ("error", "drop"):
            raise ValueError(f"missing: expected 'error' or 'drop', got {missing!r}")
        direction = self.direction(task, metric)
        if direction is None:
            raise HarnessLogError(
                f"task {task!r}, metric {metric!r}: its direction is unknown (the log of "
                f"{self.sources(task, metric)[0]} does not say whether larger is better); give it as "
                f"directions={{{metric!r}: 'max'}} or {{'{task}/{metric}': 'min'}} (--directions {metric}=max)"
            )
        per_model = self._index[(task, metric)]
        if len(per_model) < 2:
            raise HarnessLogError(
                f"task {task!r}, metric {metric!r}: only {len(per_model)} model(s) ({', '.join(per_model)}) logged "
                "it; at least 2 are needed to compare"
            )
        tables = {model: _model_table(model, task, metric, records) for model, records in per_model.items()}
        items = {model: np.unique(table[0]) for model, table in tables.items()}
        common = items[next(iter(items))]
        for found in items.values():
            common = np.intersect1d(common, found)
        if any(found.size != common.size for found in items.values()) and (missing == "error" or not common.size):
            every = np.unique(np.concatenate(list(items.values())))
            lines = [
                f"model {model!r} lacks {_preview(np.setdiff1d(every, found).tolist())}"
                for model, found in items.items()
                if found.size != every.size
            ]
            raise HarnessLogError(
                f"task {task!r}, metric {metric!r}: the models were not scored on the same samples ("
                + "; ".join(lines)
                + f"; {common.size} shared); run them on the same items (same --limit / dataset), or keep the "
                "shared ones (missing='drop', --missing drop)"
            )
        if not common.size:
            raise HarnessLogError(f"task {task!r}, metric {metric!r}: no sample was logged")
        kept = {}
        for model, (ids, values, hashes) in tables.items():
            keep = np.isin(ids, common)
            kept[model] = (ids[keep], values[keep], None if hashes is None else hashes[keep])
        _check_same_items(task, metric, kept)
        repeats = {model: np.unique(np.unique(ids, return_counts=True)[1]) for model, (ids, _, _) in kept.items()}
        counts = np.unique(np.concatenate(list(repeats.values())))
        if counts.size > 1:
            detail = "; ".join(f"{model!r}: {found.tolist()}" for model, found in repeats.items())
            raise HarnessLogError(
                f"task {task!r}, metric {metric!r}: items have different numbers of values (epochs, seeds or runs) "
                f"across models or items ({detail}); a paired comparison needs the same number for every item"
            )
        repeat = int(counts[0])
        values = {model: table[1] for model, table in kept.items()}
        position_ids = kept[next(iter(kept))][0].tolist()
        clusters = np.repeat(np.arange(common.size), repeat) if repeat > 1 else None
        return PairedScores(task, metric, direction, values, position_ids, clusters, repeat)

    def directions(self) -> dict[str, str | None]:
        """`{"task/metric": direction}` of every task and metric (`None` where unknown)."""
        return {
            f"{task}/{metric}": self.direction(task, metric) for task in self.tasks for metric in self.metrics(task)
        }

    def to_columns(self) -> dict[str, list]:
        """Every value as columns `models`, `tasks`, `metrics`, `sample_ids`, `scores` (one row per value; an item's
        repeats are consecutive rows with the same id), e.g. for the `evaluate` module's `add_batch`."""
        columns = {"models": [], "tasks": [], "metrics": [], "sample_ids": [], "scores": []}
        for record in self.scores:
            n = len(record.ids)
            order = sorted(range(n), key=lambda i: (record.ids[i], (record.repeats or [0] * n)[i]))
            columns["models"] += [record.model] * n
            columns["tasks"] += [record.task] * n
            columns["metrics"] += [record.metric] * n
            columns["sample_ids"] += [record.ids[i] for i in order]
            columns["scores"] += [float(record.values[i]) for i in order]
        return columns

    @classmethod
    def from_columns(
        cls,
        models: list[str],
        tasks: list[str],
        metrics: list[str],
        sample_ids: list[str],
        scores: list[float],
        directions: Mapping[str, str | None] | None = None,
    ) -> HarnessLogs:
        """Build logs from columns (one row per value): the inverse of [`to_columns`]. A sample id repeated for the
        same model, task and metric is a repeat of that item. `directions` maps `"task/metric"` or `"metric"` to
        `"max"` / `"min"`."""
        lengths = {len(models), len(tasks), len(metrics), len(sample_ids), len(scores)}
        if len(lengths) != 1:
            raise HarnessLogError(f"columns: expected equal lengths, got {sorted(lengths)}")
        directions = dict(directions or {})
        grouped: dict[tuple, tuple[list, list, list]] = {}
        seen: dict[tuple, int] = defaultdict(int)
        for model, task, metric, item, value in zip(models, tasks, metrics, sample_ids, scores):
            key = (str(model), str(task), str(metric))
            ids, repeats, values = grouped.setdefault(key, ([], [], []))
            repeat = seen[key + (str(item),)]
            seen[key + (str(item),)] += 1
            ids.append(str(item))
            repeats.append(repeat)
            values.append(float(value))
        records = []
        for (model, task, metric), (ids, repeats, values) in grouped.items():
            direction = directions.get(f"{task}/{metric}", directions.get(metric))
            if direction not in (None, *DIRECTIONS):
                raise HarnessLogError(f"directions[{task}/{metric}]: expected 'max' or 'min', got {direction!r}")
            records.append(
                SampleScores(
                    harness="columns",
                    model=model,
                    model_key=(model,),
                    task=task,
                    metric=metric,
                    ids=ids,
                    values=np.asarray(values, dtype=np.float64),
                    direction=direction,
                    source="columns",
                    run="0",
                    repeats=repeats if max(repeats) > 0 else None,
                )
            )
        return cls(records)

    def summary(self) -> list[dict]:
        """One row per task and metric: models, items, values per item, direction and the harnesses."""
        rows = []
        for task in self.tasks:
            for metric in self.metrics(task):
                records = self._records(task, metric)
                rows.append(
                    {
                        "task": task,
                        "metric": metric,
                        "models": len({r.model for r in records}),
                        "samples": max(len(set(r.ids)) for r in records),
                        "direction": self.direction(task, metric),
                        "harness": ", ".join(sorted({r.harness for r in records})),
                    }
                )
        return rows

    def __repr__(self) -> str:
        return (
            f"HarnessLogs(harnesses={self.harnesses}, models={self.models}, "
            f"tasks={ {task: self.metrics(task) for task in self.tasks} })"
        )


def _model_table(model: str, task: str, metric: str, records: list[SampleScores]):
    """One model's values sorted by item, then run, then repeat: `(ids, values, content digests or None)`."""
    records = sorted(records, key=lambda r: r.run)
    ids = np.concatenate([np.asarray(r.ids, dtype=str) for r in records])
    runs = np.concatenate([np.full(len(r.ids), i) for i, r in enumerate(records)])
    repeats = np.concatenate(
        [np.asarray(r.repeats if r.repeats else np.zeros(len(r.ids)), dtype=np.int64) for r in records]
    )
    values = np.concatenate([np.asarray(r.values, dtype=np.float64) for r in records])
    order = np.lexsort((repeats, runs, ids))
    ids, runs, repeats, values = ids[order], runs[order], repeats[order], values[order]
    twice = np.flatnonzero((ids[1:] == ids[:-1]) & (runs[1:] == runs[:-1]) & (repeats[1:] == repeats[:-1]))
    if twice.size:
        record = records[runs[twice[0]]]
        repeat = f" (repeat {repeats[twice[0]]})" if record.repeats else ""
        raise HarnessLogError(
            f"{record.source}: model {model!r}, task {task!r}, metric {metric!r}: sample {ids[twice[0]]!r}{repeat} "
            "is logged twice"
        )
    _check_finite(model, task, metric, records, ids, runs, values)
    hashes = None
    if all(r.item_hashes is not None for r in records):
        hashes = np.concatenate([np.asarray(r.item_hashes, dtype=object) for r in records])[order]
        differ = np.flatnonzero((ids[1:] == ids[:-1]) & (hashes[1:] != hashes[:-1]))
        if differ.size:
            raise HarnessLogError(
                f"{records[runs[differ[0] + 1]].source}: model {model!r}, task {task!r}: sample {ids[differ[0]]!r} has "
                "different content in two runs or repeats of the same model"
            )
    return ids, values, hashes


_ITEM_NAMES = {"lm-eval": "doc_id", "inspect": "sample id", "lighteval": "doc id"}
"""What each harness calls the id of an item, as the messages name it."""


def _check_finite(model: str, task: str, metric: str, records: list[SampleScores], ids, runs, values) -> None:
    """A NaN or infinite value (a failed generation or judge, a metric of an empty answer) is an error naming the file,
    the model, the task, the metric and the ids of the items it scores, before any test."""
    bad = np.flatnonzero(~np.isfinite(values))
    if not bad.size:
        return
    sources = list(dict.fromkeys(records[run].source for run in runs[bad]))
    item = _ITEM_NAMES.get(records[runs[bad[0]]].harness, "sample id")
    kinds = ", ".join(sorted({str(value) for value in values[bad]}))
    raise HarnessLogError(
        f"{'; '.join(sources)}: model {model!r}, task {task!r}, metric {metric!r}: {bad.size} of {values.size} "
        f"value(s) are not finite ({kinds}), at {item} {_preview(ids[bad].tolist())}; a dominance test needs a "
        "number for every sample. Fix or rerun those samples, or leave the metric out (--metrics / metrics=...)."
    )


def _check_same_items(task: str, metric: str, kept: Mapping) -> None:
    reference_model, reference = None, None
    for model, (ids, _, hashes) in kept.items():
        if hashes is None:
            continue
        firsts = np.r_[True, ids[1:] != ids[:-1]]
        digests = hashes[firsts]
        if reference is None:
            reference_model, reference, reference_ids = model, digests, ids[firsts]
            continue
        differ = np.flatnonzero(digests != reference)
        if differ.size:
            raise HarnessLogError(
                f"task {task!r}, metric {metric!r}: models {reference_model!r} and {model!r} were given different "
                f"content for the same sample id(s) {_preview(reference_ids[differ].tolist())}; were they run on "
                "different versions of the task or dataset?"
            )
