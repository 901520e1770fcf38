"""Portability grid: the suite's statistical assertions over seeds, thread counts and CPU kernel families.

A test that trains, samples or resamples states its thresholds through `tests/portable.py`'s `expect`. This script
runs those tests (by default the tests marked `real`, `slow` or `effect` of every test file that imports
`tests.portable`) once per configuration of the grid, each in a fresh `HF_EXT_CACHE` (so every trained artefact is trained again under that
configuration), collects every figure they asserted, and writes, per figure, the threshold, the value in each
configuration, the worst case and its margin to `benchmarks/results/portability.md`.

The axes:

- seed (`HF_EXT_TEST_SEED`, read by `tests/portable.py`): the seed of the training / sampling / resampling runs;
- torch threads per test process (`HF_EXT_TEST_THREADS`, read by `tests/conftest.py`): another count sums in
  another order;
- kernel family (`ATEN_CPU_CAPABILITY`): `default` and `avx2` run the kernels of older CPUs on this one; `native`
  leaves the variable unset (this machine's own family: AVX-512 where the CPU has it).

`--design axes` (the default) runs the baseline (first value of every axis) and every other value of each axis with
the others at baseline; `--design full` runs every combination. The raw figures of every configuration are kept in
a JSON file beside the report (`portability.json`); `--resume` skips the configurations already measured there (with
the same test selection), so a grid too long for one sitting can be completed piece by piece.

    python benchmarks/portability.py [--seeds 0 1 2] [--threads 1 2] [--capabilities native default avx2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "portability.md"


@dataclass(frozen=True)
class Configuration:
    seed: int
    threads: int
    capability: str  # "native" leaves ATEN_CPU_CAPABILITY unset

    @property
    def label(self) -> str:
        return f"seed {self.seed}, {self.threads} thr, {self.capability}"

    def environment(self, cache: Path, figures: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if self.capability != "native":
            env["ATEN_CPU_CAPABILITY"] = self.capability
        env.update(
            HF_EXT_TEST_SEED=str(self.seed),
            HF_EXT_TEST_THREADS=str(self.threads),
            HF_EXT_CACHE=str(cache),
            HF_EXT_FIGURES=str(figures),
        )
        return env


def configurations(seeds, threads, capabilities, design: str) -> list[Configuration]:
    if design == "full":
        return [Configuration(*values) for values in itertools.product(seeds, threads, capabilities)]
    baseline = Configuration(seeds[0], threads[0], capabilities[0])
    grid = [baseline]
    grid += [Configuration(s, baseline.threads, baseline.capability) for s in seeds[1:]]
    grid += [Configuration(baseline.seed, t, baseline.capability) for t in threads[1:]]
    grid += [Configuration(baseline.seed, baseline.threads, c) for c in capabilities[1:]]
    return grid


def run_configuration(config: Configuration, selection: list[str], workers: str) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory(prefix="hf-ext-portability-") as scratch:
        figures = Path(scratch) / "figures.jsonl"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", workers, *selection]
        start = time.monotonic()
        completed = subprocess.run(
            command,
            cwd=ROOT,
            env=config.environment(Path(scratch) / "cache", figures),
            capture_output=True,
            text=True,
        )
        summary = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else completed.stderr[-500:]
        run = {"returncode": completed.returncode, "summary": summary, "minutes": (time.monotonic() - start) / 60}
        if completed.returncode:
            failures = [line for line in completed.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
            run["failures"] = failures
        records = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    return records, run


def statistical_test_files() -> list[str]:
    """The test files whose assertions go through `tests/portable.py` (they import it)."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("test_*.py")
        if "from tests.portable import" in path.read_text(encoding="utf-8") and path.name != "test_portable.py"
    )


def margin(record: dict, value: float) -> float:
    """How far `value` is inside the record's bounds (negative: outside)."""
    margins = []
    if record["at_least"] is not None:
        margins.append(value - record["at_least"])
    if record["at_most"] is not None:
        margins.append(record["at_most"] - value)
    return min(margins)


def bounds(record: dict) -> str:
    parts = []
    if record["at_least"] is not None:
        parts.append(f">= {record['at_least']:.4g}")
    if record["at_most"] is not None:
        parts.append(f"<= {record['at_most']:.4g}")
    return ", ".join(parts)


def report(grid: list[Configuration], results: dict[Configuration, tuple[list[dict], dict]], selection) -> str:
    import torch

    rows: dict[tuple[str, str], dict] = {}
    for config in grid:
        for record in results[config][0]:
            key = (record["test"], record["figure"])
            row = rows.setdefault(key, {"record": record, "values": {}})
            row["values"].setdefault(config, []).append(record["value"])
    lines = [
        "# Portability grid",
        "",
        "The suite's statistical assertions (`tests/portable.py`'s `expect`) measured over seeds, torch threads and",
        "CPU kernel families (`ATEN_CPU_CAPABILITY`), each configuration in a fresh `HF_EXT_CACHE` (every trained",
        "artefact trained again). Written by `python benchmarks/portability.py`.",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; native kernels: "
        f"{torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}",
        f"- tests: `{' '.join(selection)}`",
        "",
        "| configuration | result | minutes |",
        "|---|---|---|",
    ]
    for config in grid:
        run = results[config][1]
        lines.append(f"| {config.label} | {run['summary']} | {run['minutes']:.1f} |")
    failures = [(c, f) for c in grid for f in results[c][1].get("failures", [])]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {c.label}: `{f}`" for c, f in failures]
    header = " | ".join(c.label for c in grid)
    lines += [
        "",
        "Per figure: the threshold, the value in each configuration (several values: the test ran it several times),",
        "the worst case over the grid and its margin to the threshold (negative: the assertion failed there).",
        "",
        f"| test | figure | threshold | {header} | worst | margin |",
        "|---|---|---|" + "---|" * len(grid) + "---|---|",
    ]
    for (test, figure), row in sorted(rows.items()):
        record = row["record"]
        seen = [v for values in row["values"].values() for v in values]
        worst = min(seen, key=lambda v: margin(record, v))
        cells = ["/".join(f"{v:.3g}" for v in row["values"][c]) if c in row["values"] else "—" for c in grid]
        lines.append(
            f"| `{test.split('::', 1)[-1]}` | {figure} | {bounds(record)} | {' | '.join(cells)} | {worst:.3g} "
            f"| {margin(record, worst):+.3g} |"
        )
    return "\n".join(lines) + "\n"


def load_measured(path: Path, selection: list[str]) -> dict[Configuration, tuple[list[dict], dict]]:
    """The configurations already measured in the raw file `path` for the same test selection."""
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("selection") != selection:
        return {}
    return {Configuration(**entry["configuration"]): (entry["records"], entry["run"]) for entry in raw["results"]}


def save_measured(path: Path, selection: list[str], results: dict[Configuration, tuple[list[dict], dict]]) -> None:
    from dataclasses import asdict

    entries = [
        {"configuration": asdict(config), "run": run, "records": records} for config, (records, run) in results.items()
    ]
    text = json.dumps({"selection": selection, "results": entries}, indent=1)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text + "\n", encoding="utf-8")
    staging.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--capabilities", nargs="+", default=["native", "default", "avx2"])
    parser.add_argument("--design", choices=["axes", "full"], default="axes")
    parser.add_argument("--marker", default="real or slow or effect", help="pytest -m expression of the tests")
    parser.add_argument(
        "--tests",
        nargs="*",
        default=None,
        help="test paths or node ids (default: every test file that imports tests.portable)",
    )
    parser.add_argument("--workers", default="2", help="pytest-xdist workers per configuration")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the configurations already measured")
    args = parser.parse_args(argv)

    selection = [*(args.tests or statistical_test_files()), "-m", args.marker]
    grid = configurations(args.seeds, args.threads, args.capabilities, args.design)
    raw = args.output.with_suffix(".json")
    results = load_measured(raw, selection) if args.resume else {}
    grid += [c for c in results if c not in grid]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for number, config in enumerate(grid, start=1):
        if config in results:
            print(f"[{number}/{len(grid)}] {config.label}: measured before ({results[config][1]['summary']})")
            continue
        print(f"[{number}/{len(grid)}] {config.label} ...", flush=True)
        results[config] = run_configuration(config, selection, args.workers)
        print(f"    {results[config][1]['summary']} ({results[config][1]['minutes']:.1f} min)", flush=True)
        # the raw figures and the report so far, after every configuration: an interrupted grid keeps its measures
        save_measured(raw, selection, results)
        done = [c for c in grid if c in results]
        args.output.write_text(report(done, results, selection), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0 if all(results[c][1]["returncode"] == 0 for c in grid) else 1


if __name__ == "__main__":
    sys.exit(main())
