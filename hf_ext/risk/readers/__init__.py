"""Readers of the per-sample logs of evaluation harnesses: lm-evaluation-harness, Inspect and lighteval.

[`read_harness_logs`] reads any mix of them into [`HarnessLogs`], which matches every model's scores item by item
([`HarnessLogs.paired`]) for [`~hf_ext.risk.compare_harness_logs`]. The readers parse files only: none of the
harnesses needs to be installed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from .inspect_logs import is_inspect_log, read_inspect
from .lighteval_logs import is_lighteval_log, read_lighteval
from .lm_eval_logs import is_lm_eval_log, read_lm_eval
from .records import DIRECTIONS, HarnessLogError, HarnessLogs, PairedScores, SampleScores


__all__ = [
    "HARNESSES",
    "HarnessLogError",
    "HarnessLogs",
    "PairedScores",
    "SampleScores",
    "detect_harness",
    "read_harness_logs",
    "read_inspect",
    "read_lighteval",
    "read_lm_eval",
]

_READERS = {"lm-eval": read_lm_eval, "inspect": read_inspect, "lighteval": read_lighteval}
_DETECTORS = {"lm-eval": is_lm_eval_log, "inspect": is_inspect_log, "lighteval": is_lighteval_log}
HARNESSES = tuple(_READERS)
"""The harnesses whose logs can be read."""
RUNS = ("error", "latest", "repeats")


def detect_harness(path: str | os.PathLike) -> str:
    """Which harness wrote the logs at `path`: `"lm-eval"`, `"inspect"` or `"lighteval"`.

    Raises:
        HarnessLogError: when `path` does not exist, holds no harness log, or holds logs of several harnesses.
    """
    path = Path(path)
    if not path.exists():
        raise HarnessLogError(f"{path}: no such file or folder")
    found = [name for name, detect in _DETECTORS.items() if detect(path)]
    if not found:
        raise HarnessLogError(
            f"{path}: not a harness log: found no lm-eval samples_<task>_<date>.jsonl (lm_eval --log_samples), no "
            "Inspect .eval / .json log, and no lighteval details_<task>_<date>.parquet (lighteval --save-details)"
        )
    if len(found) > 1:
        raise HarnessLogError(
            f"{path}: holds logs of several harnesses ({', '.join(found)}); point to each harness's folder, or say "
            "which to read (harness=..., --harness)"
        )
    return found[0]


def _display_name(name: str) -> str:
    looks_like_path = name.startswith(("/", "./", "../", "~")) or (len(name) > 2 and name[1:3] in (":\\", ":/"))
    return Path(name.rstrip("/\\")).name or name if looks_like_path else name


def _name_models(records: list[SampleScores]) -> None:
    """Give every distinct model a distinct display name: its name (a path's last part), then, where two differ
    only in their arguments (e.g. one loaded in 4-bit), the arguments that tell them apart."""
    keys = list(dict.fromkeys(record.model_key for record in records))
    info = {record.model_key: record for record in records}
    by_name = defaultdict(list)
    for key in keys:
        by_name[_display_name(info[key].model)].append(key)
    names = {}
    for base, group in by_name.items():
        if len(group) == 1:
            names[group[0]] = base
            continue
        arguments = [info[key].model_info.get("arguments") or {} for key in group]
        every = sorted({name for args in arguments for name in args})
        differing = [name for name in every if len({str(args.get(name)) for args in arguments}) > 1]
        for key, args in zip(group, arguments):
            label = ", ".join(f"{name}={args.get(name)}" for name in differing if name in args)
            # same arguments (e.g. two checkpoints both called "model"): their full names tell them apart
            names[key] = f"{base} ({label})" if label else (base if differing else info[key].model)
    if len(set(names.values())) < len(names):
        clash = sorted(name for name in set(names.values()) if list(names.values()).count(name) > 1)
        raise HarnessLogError(
            f"several models would be named {clash}; name each log folder explicitly (sources={{'name': path}}, or "
            "name=path on the command line)"
        )
    for record in records:
        record.model = names[record.model_key]


def _select_runs(records: list[SampleScores], runs: str) -> list[SampleScores]:
    groups = defaultdict(list)
    for record in records:
        groups[(record.model, record.task, record.metric)].append(record)
    kept = []
    for (model, task, _), group in groups.items():
        found = sorted({record.run for record in group})
        if len(found) > 1 and runs == "error":
            files = sorted({record.source for record in group})
            raise HarnessLogError(
                f"model {model!r} has {len(found)} runs of task {task!r} ({', '.join(files)}); keep the newest "
                "(runs='latest', --runs latest) or compare them as repeated runs, e.g. seeds (runs='repeats', "
                "--runs repeats), or move the others away"
            )
        if runs == "latest":
            group = [record for record in group if record.run == found[-1]]
        kept += group
    return kept


def _apply_directions(records: list[SampleScores], directions: Mapping[str, str]) -> None:
    pairs = {(record.task, record.metric) for record in records}
    for key, direction in directions.items():
        if direction not in DIRECTIONS:
            raise HarnessLogError(
                f"directions[{key!r}]: expected 'max' (larger is better) or 'min' (smaller is better), got {direction!r}"
            )
        task, _, metric = key.rpartition("/")
        matched = [(t, m) for t, m in pairs if (m == key) or (task and t == task and m == metric)]
        if not matched:
            available = sorted({m for _, m in pairs})
            raise HarnessLogError(
                f"directions: {key!r} matches no metric of the logs; give 'metric' or 'task/metric', metrics: {available}"
            )
    for record in records:
        exact = directions.get(f"{record.task}/{record.metric}")
        record.direction = exact or directions.get(record.metric, record.direction)


def read_harness_logs(
    sources,
    *,
    harness: str = "auto",
    directions: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    runs: str = "error",
) -> HarnessLogs:
    """Read the per-sample logs of evaluation harnesses: lm-eval (`--log_samples`), Inspect (`.eval` / `.json`) and
    lighteval (`--save-details`), several models, tasks and metrics at once.

    Args:
        sources (path, sequence of paths, or `Mapping[str, path]`): Log folders or files. A folder may hold the logs
            of several models (an lm-eval `--output_path`, an Inspect `--log-dir`); a mapping names the model of
            each source (each must then hold one model).
        harness (`str`, *optional*, defaults to `"auto"`): `"lm-eval"`, `"inspect"`, `"lighteval"`, or `"auto"` to
            recognise each source by its files.
        directions (`Mapping[str, str]`, *optional*): `"max"` / `"min"` per metric (`"acc"`) or per task and metric
            (`"facts/toxicity"`), overriding or completing what the logs say (lm-eval and lighteval log each metric's
            direction; Inspect's correct / incorrect scores and built-in scorers are larger-is-better).
        tasks, metrics (sequence of `str`, *optional*): Keep only these tasks / metrics.
        runs (`str`, *optional*, defaults to `"error"`): When a model has several runs of a task: `"error"`,
            `"latest"` (keep the newest), or `"repeats"` (repeated runs such as seeds: their values of an item form
            a cluster).

    Returns:
        [`HarnessLogs`].

    Raises:
        HarnessLogError: with the file and what was expected, for a path that is not a harness log, unreadable
            records, an unknown task / metric / direction, or runs that need a decision.

    Example:

    ```python
    >>> from hf_ext.risk import read_harness_logs
    >>> logs = read_harness_logs({"base": "lm-eval-out/base", "tuned": "lm-eval-out/tuned"})  # doctest: +SKIP
    >>> logs.paired("arc_easy", "acc").values  # doctest: +SKIP
    {'base': array([1., 0., ...]), 'tuned': array([1., 1., ...])}

    ```
    """
    if harness not in ("auto", *HARNESSES):
        raise HarnessLogError(f"harness: expected 'auto' or one of {HARNESSES}, got {harness!r}")
    if runs not in RUNS:
        raise HarnessLogError(f"runs: expected one of {RUNS}, got {runs!r}")
    for name, names in (("tasks", tasks), ("metrics", metrics)):
        if isinstance(names, str):
            raise TypeError(f"{name} must be a list of names, got one string ({names!r}); wrap it: [{names!r}]")
    if isinstance(sources, (str, os.PathLike)):
        named = [(None, sources)]
    elif isinstance(sources, Mapping):
        named = [(str(name), path) for name, path in sources.items()]
    else:
        named = [(None, path) for path in sources]
    if not named:
        raise HarnessLogError("sources: no log folder or file given")
    records, skipped = [], []
    for name, path in named:
        kind = detect_harness(path) if harness == "auto" else harness
        found, left_out = _READERS[kind](path)
        if name is not None:
            models = sorted({record.model for record in found})
            if len({record.model_key for record in found}) > 1:
                raise HarnessLogError(
                    f"{path}: named {name!r}, but it holds the logs of {len(models)} models ({', '.join(models)}); "
                    "give each model its own folder, or leave the source unnamed"
                )
            for record in found:
                record.model_key = ("named", name)
                record.model = name
                record.model_info = {**record.model_info, "arguments": {}}
        records += found
        skipped += left_out
    if not records:
        raise HarnessLogError(
            "the logs hold no per-sample numeric metric" + (f"; left out: {'; '.join(skipped)}" if skipped else "")
        )
    _name_models([record for record in records if record.model_key[0] != "named"])
    named_names = {record.model for record in records if record.model_key[0] == "named"}
    clash = named_names & {record.model for record in records if record.model_key[0] != "named"}
    if clash:
        raise HarnessLogError(f"the name(s) {sorted(clash)} are given to a source and also found in another log")
    if tasks is not None:
        unknown = sorted(set(tasks) - {record.task for record in records})
        if unknown:
            raise HarnessLogError(
                f"tasks: {unknown} not in the logs; the tasks are {sorted({record.task for record in records})}"
            )
        records = [record for record in records if record.task in set(tasks)]
    if metrics is not None:
        unknown = sorted(set(metrics) - {record.metric for record in records})
        if unknown:
            raise HarnessLogError(
                f"metrics: {unknown} not in the logs; the metrics are {sorted({record.metric for record in records})}"
            )
        records = [record for record in records if record.metric in set(metrics)]
    _apply_directions(records, dict(directions or {}))
    return HarnessLogs(_select_runs(records, runs), skipped)
