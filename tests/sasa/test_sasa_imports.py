"""hf_ext/sasa has no import circle: every module imports alone, the graph of its modules' imports (every import
statement, at any depth) has no cycle, and no module hides an import of hf-ext below module level."""

import ast
import subprocess
import sys
from pathlib import Path

from hf_ext.sasa import _import_structure
from tests.test_layout import imported_modules


ROOT = Path(__file__).resolve().parents[2]
SASA = ROOT / "hf_ext" / "sasa"
PACKAGE = "hf_ext.sasa"
MODULES = sorted(path.stem for path in SASA.glob("*.py") if path.stem != "__init__")
DEFINED_IN = {name: module for module, names in _import_structure.items() for name in names}


def sasa_dependencies(module: str) -> set[str]:
    """The modules of hf_ext/sasa that `module` imports anywhere in its file (a public name imported from the package
    counts as its defining module)."""
    out = set()
    for name in imported_modules(SASA / f"{module}.py"):
        if not name.startswith(f"{PACKAGE}."):
            continue
        head = name[len(PACKAGE) + 1 :].split(".")[0]
        head = DEFINED_IN.get(head, head)
        if head in MODULES and head != module:
            out.add(head)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as `[a, b, ..., a]`, or `None`."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_of_hf_ext_sasa_has_no_cycle():
    graph = {module: sasa_dependencies(module) for module in MODULES}
    assert find_cycle(graph) is None
    # the graph is read right: the edges of the circle there once was (evaluation -> processor -> probe -> evaluation,
    # the last one hidden in a function) are seen, the last one now going to the sampling module
    assert "processor" in graph["evaluation"] and "probe" in graph["processor"]
    assert graph["probe"] >= {"continuations", "fingerprint"} and "evaluation" not in graph["probe"]


def test_the_cycle_finder_finds_the_circle_that_was_there():
    graph = {"evaluation": {"processor"}, "processor": {"probe"}, "probe": {"evaluation"}, "lda": set()}
    assert find_cycle(graph) == ["evaluation", "processor", "probe", "evaluation"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_hf_ext_below_module_level():
    hidden = []
    for path in sorted(SASA.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for inner in ast.walk(node):
                relative = isinstance(inner, ast.ImportFrom) and inner.level > 0
                absolute = isinstance(inner, (ast.Import, ast.ImportFrom)) and any(
                    name.startswith("hf_ext")
                    for name in ([inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
                    + [alias.name for alias in getattr(inner, "names", [])]
                )
                if relative or absolute:
                    hidden.append(f"{path.name}:{inner.lineno} in {node.name}")
    assert hidden == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # One fresh interpreter (nothing of hf-ext loaded, unlike this test process); before each module, every hf_ext
    # module is dropped from sys.modules, so each is imported alone, exactly as `python -c "import hf_ext.sasa.X"`
    # would. The third-party stack (torch, transformers) stays loaded between modules: it takes no part in a circle
    # of ours, and importing it once instead of once per module keeps the test at seconds.
    code = (
        "import sys, importlib, traceback\n"
        "import torch, transformers, numpy\n"
        "failed = []\n"
        f"for module in {MODULES!r}:\n"
        "    for name in [n for n in sys.modules if n == 'hf_ext' or n.startswith('hf_ext.')]:\n"
        "        del sys.modules[name]\n"
        "    try:\n"
        "        importlib.import_module('hf_ext.sasa.' + module)\n"
        "    except Exception:\n"
        "        failed.append(module + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed) or 'ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
