"""The tested version range: constraints.txt, pyproject's lower bounds, and `hf-ext env`'s check."""

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from hf_ext import versions
from hf_ext.cli import main
from hf_ext.versions import STACK, supported_minimums, version_report


ROOT = Path(__file__).resolve().parents[1]


def _core_requirements():
    return [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def test_constraints_pin_every_requirement_inside_its_range():
    pins = versions.tested_versions(ROOT / "constraints.txt")
    assert pins, "constraints.txt pins nothing"
    for requirement in _core_requirements():
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is required but not pinned in constraints.txt"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (name, pins[name])


def test_constraints_pin_torch_without_a_build_label():
    assert "+" not in versions.tested_versions(ROOT / "constraints.txt")["torch"]


def test_minimums_come_from_the_installed_requirements():
    minimums = supported_minimums()
    for requirement in _core_requirements():
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        if lower and requirement.name in STACK:
            assert minimums[requirement.name] == lower[0]


def test_report_flags_versions_outside_the_range():
    installed = {name: "1.0" for name in STACK}
    installed |= {"transformers": "5.22.0", "trl": "1.17.0", "peft": "0.21.0+local", "datasets": None}
    report = version_report(
        installed=installed,
        minimums={"transformers": "5.23", "trl": "1.16", "peft": "0.21"},
        tested={"transformers": "5.24.0", "trl": "1.16.0", "peft": "0.21.0"},
    )
    assert report["transformers"] == ("5.22.0", "older than supported (>= 5.23)")
    assert report["trl"] == ("1.17.0", "newer than tested (1.16.0)")
    assert report["peft"] == ("0.21.0+local", None)
    assert report["datasets"] == ("not installed", None)
    assert report["torch"] == ("1.0", None)


def test_env_says_whether_the_installed_stack_is_inside_the_tested_range(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    outside = [name for name, (_, problem) in version_report().items() if problem]
    if outside:
        assert f"- Tested range: {', '.join(outside)} outside it" in out
    else:
        assert "- Tested range: every package above is inside it" in out
