"""The layout's rules (DESIGN.md, "Layout"), checked on the source: what a component may import, one list of public
names per package, no fixture in the public namespace, extras that say what to install."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
METHODS = ("aot", "larimar", "mergealign", "risk", "sasa", "seal")
EDGE = ("hf_ext.testing", "hf_ext.demo", "hf_ext.scripts", "hf_ext.real_models", "hf_ext.cli", "examples")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), as absolute names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize("method", METHODS)
def test_components_import_no_fixture_demo_script_or_other_method(method):
    offending = []
    for path in sorted((ROOT / "hf_ext" / method).rglob("*.py")):
        for module in imported_modules(path):
            other_method = any(module.startswith(f"hf_ext.{m}") for m in METHODS if m != method)
            if module.startswith(EDGE) or other_method:
                offending.append(f"{path.relative_to(ROOT)}: {module}")
    assert offending == []


def test_fixture_ids_appear_in_no_component():
    files = [p for m in METHODS for p in (ROOT / "hf_ext" / m).rglob("*.py")]
    files += [ROOT / "hf_ext" / name for name in ("quantization.py", "hub.py", "serialization.py", "caching.py")]
    assert [str(p.relative_to(ROOT)) for p in files if "hf-ext-testing" in p.read_text(encoding="utf-8")] == []


@pytest.mark.parametrize("package", [f"hf_ext.{m}" for m in METHODS] + ["hf_ext.testing"])
def test_one_list_of_public_names_per_package(package):
    module = importlib.import_module(package)
    listed = sorted(name for names in module._import_structure.values() for name in names)
    assert sorted(set(module.__all__) & set(listed)) == listed
    for name in listed:
        defining = importlib.import_module(
            f"{package}.{next(k for k, v in module._import_structure.items() if name in v)}"
        )
        assert getattr(module, name) is getattr(defining, name)
        assert name in getattr(defining, "__all__", [name])


def test_top_level_namespace_is_the_methods_and_helpers_without_fixtures():
    import hf_ext
    import hf_ext.testing

    method_names = {name for m in METHODS for name in importlib.import_module(f"hf_ext.{m}").__all__}
    assert method_names <= set(hf_ext.__all__)
    assert set(hf_ext.__all__).isdisjoint(hf_ext.testing.__all__)
    assert not any(name.startswith(("tiny_", "build_tiny", "Planted", "planted")) for name in hf_ext.__all__)


def test_a_missing_extra_names_the_extra_to_install():
    code = (
        "import sys; sys.modules['mergekit'] = None\n"
        "import hf_ext\n"
        "assert 'merge' in hf_ext.__all__\n"
        "for attempt in (lambda: __import__('hf_ext.mergealign'), lambda: hf_ext.merge):\n"
        "    try:\n"
        "        attempt()\n"
        "    except ImportError as error:\n"
        "        print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(
        "hf_ext.mergealign needs mergekit" in line and 'pip install "hf-ext[mergealign]"' in line for line in lines
    )


def test_demo_and_examples_list_their_stages_explicitly():
    from hf_ext.demo import DEMO_STAGES

    assert [s.name for s in DEMO_STAGES] == ["foundation", "aot", "larimar", "sasa", "mergealign", "seal", "risk"]
    from examples.run_real import REAL_STAGES

    assert [s.name for s in REAL_STAGES] == ["aot", "larimar", "larimar-natural", "sasa", "mergealign", "seal", "risk"]
    for method in METHODS:
        assert (ROOT / "examples" / method / "README.md").is_file()


@pytest.mark.parametrize("package", [f"hf_ext.{m}" for m in METHODS] + ["hf_ext.testing"])
def test_no_public_name_is_also_a_submodule_name(package):
    # Importing submodule `x` of a lazy package sets the package's attribute `x` to the module, hiding a public `x`.
    module = importlib.import_module(package)
    submodules = {p.stem for p in Path(module.__file__).parent.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert sorted(submodules & set(module.__all__)) == []
