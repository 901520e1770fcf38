"""Mutation testing of the math modules (`make mutate`): mutmut over each module of `[tool.mutmut] only_mutate` in
pyproject.toml, against the fast unit tests of `pytest_add_cli_args_test_selection` (for each mutant, mutmut runs
only the selected tests that reach the mutated function). Prints and writes to benchmarks/results/mutation.md, per
module: the mutants, how many the tests killed (a timeout is a kill: the mutant never finished), how many survived,
how many of those are listed as equivalent in benchmarks/mutation/equivalent.py (with the reason), and the score
`killed / (mutants - equivalent)`; then every survivor not listed, as its diff.

    python benchmarks/mutation/run.py [--modules larimar/memory risk/dominance ...] [--max-children 2]

Needs mutmut in the environment (`make mutate` installs the pinned version). mutmut copies the tree into
`mutants/` (ignored by git) and keeps its results there, so a module run alone updates its row and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "mutation.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from equivalent import EQUIVALENT  # noqa: E402


KILLED = {"killed", "timeout", "segfault"}


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [path.removeprefix("hf_ext/").removesuffix(".py") for path in config["only_mutate"]]


def survivors_of(module: str) -> list[str]:
    """The mutants of `module` that were not killed in the last run (to run again after new tests)."""
    os.chdir(ROOT)
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    data = SourceFileMutationData(path=Path("hf_ext") / f"{module}.py")
    data.load()
    return [
        name
        for name, code in data.exit_code_by_key.items()
        if status_by_exit_code[code] not in KILLED and status_by_exit_code[code] != "not checked"
    ]


def run_module(module: str, max_children: int, only_survivors: bool = False) -> float:
    """Run mutmut over one module (or over its last survivors only); the wall time in seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    names = survivors_of(module) if only_survivors else ["hf_ext." + module.replace("/", ".") + ".*"]
    if not names:
        return 0.0
    start = time.perf_counter()
    mutmut = Path(sys.executable).with_name("mutmut")
    subprocess.run([str(mutmut), "run", "--max-children", str(max_children), *names], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def changed_lines(diff: str) -> tuple[str, str]:
    """The removed and the added lines of a mutant's diff, stripped (what equivalent.py matches on)."""
    lines = diff.splitlines()[2:]
    before = " / ".join(line[1:].strip() for line in lines if line.startswith("-"))
    after = " / ".join(line[1:].strip() for line in lines if line.startswith("+"))
    return before, after


def equivalence(module: str, function: str, before: str, after: str) -> str | None:
    for entry in EQUIVALENT:
        if (entry["module"], entry["function"], entry["before"], entry["after"]) == (module, function, before, after):
            return entry["reason"]
    return None


def collect(module: str) -> dict | None:
    """The results of the last run over `module`, or None when it has not been run."""
    os.chdir(ROOT)  # mutmut's helpers read pyproject.toml and mutants/ from the working directory
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    path = Path("hf_ext") / f"{module}.py"
    if not (Path("mutants") / f"{path}.meta").exists():
        return None
    data = SourceFileMutationData(path=path)
    data.load()
    counts = {"mutants": 0, "killed": 0, "timeout": 0, "survived": 0, "equivalent": 0, "not run": 0}
    survivors, equivalents = [], []
    for name, code in sorted(data.exit_code_by_key.items(), key=lambda item: _natural(item[0])):
        status = status_by_exit_code[code]
        counts["mutants"] += 1
        if status in KILLED:
            counts["killed"] += 1
            counts["timeout"] += status == "timeout"
            continue
        if status == "not checked":
            counts["not run"] += 1
            continue
        diff = get_diff_for_mutant(name, path=path)
        function = name.rpartition(".")[2].removeprefix("x_").partition("__mutmut_")[0]
        before, after = changed_lines(diff)
        reason = equivalence(module, function, before, after)
        if reason is None:
            counts["survived"] += 1  # "survived", or "no tests" (no selected test reaches the function)
            survivors.append((name, status, function, before, after))
        else:
            counts["equivalent"] += 1
            equivalents.append((function, before, after, reason))
    counts["score"] = counts["killed"] / max(1, counts["mutants"] - counts["equivalent"] - counts["not run"])
    return {"counts": counts, "survivors": survivors, "equivalents": equivalents}


def _natural(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def _code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`" if text else "(nothing)"


def write_report(results: dict[str, dict | None], times: dict[str, float], max_children: int) -> str:
    import mutmut

    lines = [
        "# Mutation testing of the math modules",
        "",
        f"`make mutate` (benchmarks/mutation/run.py): mutmut {mutmut.__version__} over each module, against the fast "
        "unit tests of `[tool.mutmut]` in pyproject.toml (for each mutant, the selected tests that reach its "
        f"function), {max_children} workers. Score = killed / (mutants - equivalent); a timeout counts as killed. "
        "The text of `raise` statements is not mutated (the conditions are). Equivalent mutants are listed in "
        "benchmarks/mutation/equivalent.py with the reason. mutmut leaves decorated functions alone: larimar/memory.py "
        "and aot/losses.py apply their wrappers (autocast off, `torch.no_grad`) after the definitions so that they are "
        "mutated; `aot.losses._coupling` and `risk.violation.pair_geometry` (`lru_cache`) are not mutated. A module "
        "whose run was stopped shows its mutants not yet tested as 'not run' (left out of its score).",
        "",
        "| module | mutants | killed (of which timeouts) | survived | equivalent | score | wall time of the last run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for module, result in results.items():
        if result is None:
            lines.append(f"| {module} | not run | | | | | |")
            continue
        c = result["counts"]
        if c["not run"] == c["mutants"]:
            lines.append(f"| {module} | {c['mutants']} (none run yet) | | | | | |")
            continue
        wall = f"{times[module] / 60:.1f} min" if module in times else ""
        partial = f" ({c['not run']} not run)" if c["not run"] else ""
        lines.append(
            f"| {module} | {c['mutants']}{partial} | {c['killed']} ({c['timeout']}) | {c['survived']} | {c['equivalent']} | "
            f"{100 * c['score']:.1f} % | {wall} |"
        )
    lines += ["", "## Equivalent mutants", "", "| module | function | code | mutant | why it is equivalent |"]
    lines.append("|---|---|---|---|---|")
    for module, result in results.items():
        for function, before, after, reason in (result or {}).get("equivalents", []):
            lines.append(f"| {module} | {function} | {_code(before)} | {_code(after)} | {reason} |")
    lines += ["", "## Surviving mutants", ""]
    any_survivor = False
    for module, result in results.items():
        for name, status, _function, before, after in (result or {}).get("survivors", []):
            any_survivor = True
            lines.append(f"- {module} `{name.rpartition('.')[2]}` ({status}): {_code(before)} -> {_code(after)}")
    if not any_survivor:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", help="e.g. larimar/memory risk/dominance (default: all)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from mutants/")
    parser.add_argument("--survivors", action="store_true", help="run only the mutants that survived the last run")
    args = parser.parse_args(argv)
    all_modules = modules()
    unknown = sorted(set(args.modules or ()) - set(all_modules))
    if unknown:
        parser.error(f"--modules: {unknown} are not in [tool.mutmut] only_mutate ({all_modules})")
    times_file = ROOT / "mutants" / "wall-times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    if not args.report_only:
        for module in args.modules or all_modules:
            print(f"== mutmut: {module}", flush=True)
            elapsed = run_module(module, args.max_children, args.survivors)
            if not args.survivors:
                times[module] = elapsed
            times_file.write_text(json.dumps(times))
    results = {module: collect(module) for module in all_modules}
    report = write_report(results, times, args.max_children)
    RESULTS.write_text(report)
    print(report.split("\n## Equivalent")[0])
    print(f"Written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
