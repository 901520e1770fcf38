"""The portability grid's pieces: `tests/portable.expect` and the grid of `benchmarks/portability.py`."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from tests.portable import expect


def _portability():
    """`benchmarks/portability.py`, a script outside any package, loaded as a module."""
    if "portability" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "portability.py"
        spec = importlib.util.spec_from_file_location("portability", path)
        sys.modules["portability"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["portability"]


def test_expect_asserts_the_bounds_and_records_every_figure(tmp_path, monkeypatch):
    log = tmp_path / "figures.jsonl"
    monkeypatch.setenv("HF_EXT_FIGURES", str(log))
    expect("recall", 0.9, at_least=0.8)
    expect("ratio", 1.02, at_least=0.9, at_most=1.1)
    with pytest.raises(AssertionError, match=r"recall = 0.7, expected >= 0.8"):
        expect("recall", 0.7, at_least=0.8)
    with pytest.raises(AssertionError, match=r"ratio = 1.2, expected <= 1.1"):
        expect("ratio", 1.2, at_most=1.1)
    with pytest.raises(AssertionError, match="is NaN"):
        expect("nan", float("nan"), at_most=1.0)
    with pytest.raises(ValueError, match="needs at_least or at_most"):
        expect("unbounded", 1.0)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # a figure is recorded before it is judged: the failing ones too, so the grid sees how far off they were
    assert [(r["figure"], r["value"]) for r in records[:4]] == [
        ("recall", 0.9),
        ("ratio", 1.02),
        ("recall", 0.7),
        ("ratio", 1.2),
    ]
    assert records[4]["figure"] == "nan" and math.isnan(records[4]["value"]) and len(records) == 5
    assert records[1]["at_least"] == 0.9 and records[1]["at_most"] == 1.1
    assert all(r["test"].endswith("test_expect_asserts_the_bounds_and_records_every_figure") for r in records)


def test_expect_writes_nothing_outside_the_grid(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_EXT_FIGURES", raising=False)
    monkeypatch.chdir(tmp_path)
    expect("recall", 0.9, at_least=0.8)
    assert list(tmp_path.iterdir()) == []


def test_grid_designs():
    portability = _portability()
    axes = portability.configurations([0, 1, 2], [1, 2], ["native", "default", "avx2"], "axes")
    labels = [(c.seed, c.threads, c.capability) for c in axes]
    # the baseline, then every other value of one axis with the others at the baseline
    assert labels == [
        (0, 1, "native"),
        (1, 1, "native"),
        (2, 1, "native"),
        (0, 2, "native"),
        (0, 1, "default"),
        (0, 1, "avx2"),
    ]
    full = portability.configurations([0, 1, 2], [1, 2], ["native", "default", "avx2"], "full")
    assert len(full) == len(set(full)) == 18 and set(axes) <= set(full)


def test_configuration_environment(tmp_path, monkeypatch):
    portability = _portability()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    native = portability.Configuration(2, 1, "native").environment(tmp_path / "cache", tmp_path / "f.jsonl")
    assert "ATEN_CPU_CAPABILITY" not in native  # the machine's own kernels, whatever the caller's environment says
    assert (native["HF_EXT_TEST_SEED"], native["HF_EXT_TEST_THREADS"]) == ("2", "1")
    assert native["HF_EXT_CACHE"] == str(tmp_path / "cache")
    foreign = portability.Configuration(0, 2, "default").environment(tmp_path / "cache", tmp_path / "f.jsonl")
    assert foreign["ATEN_CPU_CAPABILITY"] == "default"


def test_report_takes_the_worst_case_against_the_threshold():
    portability = _portability()
    grid = portability.configurations([0, 1], [1], ["native"], "axes")
    low = {"test": "t.py::test_a", "figure": "recall", "at_least": 0.8, "at_most": None}
    high = {"test": "t.py::test_b", "figure": "ratio", "at_least": None, "at_most": 1.1}
    results = {
        grid[0]: ([{**low, "value": 0.95}, {**high, "value": 1.0}], {"summary": "2 passed", "minutes": 1.0}),
        grid[1]: (
            [{**low, "value": 0.85}, {**high, "value": 1.15}],
            {"summary": "1 failed, 1 passed", "minutes": 1.0, "failures": ["FAILED t.py::test_b"]},
        ),
    }
    text = portability.report(grid, results, ["tests"])
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| `test_")}
    assert rows["recall"].endswith("| 0.95 | 0.85 | 0.85 | +0.05 |")
    assert rows["ratio"].endswith("| 1 | 1.15 | 1.15 | -0.05 |")
    assert "- seed 1, 1 thr, native: `FAILED t.py::test_b`" in text


def test_measured_configurations_round_trip_and_resume_skips_them(tmp_path, monkeypatch):
    portability = _portability()
    grid = portability.configurations([0, 1], [1], ["native"], "axes")
    record = {"test": "t.py::test_a", "figure": "recall", "value": 0.9, "at_least": 0.8, "at_most": None}
    measured = {grid[0]: ([record], {"returncode": 0, "summary": "1 passed", "minutes": 2.0})}
    raw = tmp_path / "portability.json"
    portability.save_measured(raw, ["tests/t.py", "-m", "slow"], measured)
    assert portability.load_measured(raw, ["tests/t.py", "-m", "slow"]) == measured
    assert portability.load_measured(raw, ["tests/other.py", "-m", "slow"]) == {}  # another selection: start over

    ran = []

    def run_configuration(config, selection, workers):
        ran.append(config)
        return [{**record, "value": 0.85}], {"returncode": 0, "summary": "1 passed", "minutes": 1.0}

    monkeypatch.setattr(portability, "run_configuration", run_configuration)
    args = ["--seeds", "0", "1", "--threads", "1", "--capabilities", "native", "--output", str(tmp_path / "p.md")]
    args += ["--tests", "tests/t.py", "--marker", "slow", "--resume"]
    (tmp_path / "p.json").write_bytes(raw.read_bytes())
    assert portability.main(args) == 0
    assert ran == [grid[1]]  # the baseline was measured before
    assert set(portability.load_measured(tmp_path / "p.json", ["tests/t.py", "-m", "slow"])) == set(grid)
    assert "| 0.9 | 0.85 | 0.85 | +0.05 |" in (tmp_path / "p.md").read_text()
