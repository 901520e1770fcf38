"""The versions of the Hugging Face stack hf-ext was tested with, and how the installed ones compare.

The supported range of each package starts at hf-ext's own requirement (the oldest release the suite passed on) and
ends at the release pinned in `constraints.txt` (the newest the suite passed on, written by
`make refresh-constraints`). `hf-ext env` prints the comparison; outside the range hf-ext may still work, but
nothing says it does.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path


__all__ = ["STACK", "supported_minimums", "tested_versions", "version_report"]

STACK = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "mergekit",
    "evaluate",
    "huggingface-hub",
    "safetensors",
)
"""The packages whose versions `hf-ext env` reports and checks."""

CONSTRAINTS_FILE = "constraints.txt"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints_path() -> Path | None:
    """`constraints.txt` inside the installed wheel, or at the root of a source checkout (editable install)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / CONSTRAINTS_FILE, package.parent / CONSTRAINTS_FILE):
        if candidate.is_file():
            return candidate
    return None


def tested_versions(path: str | Path | None = None) -> dict[str, str]:
    """`{package: version}` pinned in the constraints file (empty when none is found)."""
    path = Path(path) if path is not None else _constraints_path()
    if path is None:
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[_normalize(name)] = version.strip()
    return pins


def supported_minimums() -> dict[str, str]:
    """`{package: oldest supported version}` from hf-ext's own requirements (`name>=version`)."""
    try:
        requirements = metadata.requires("hf-ext") or []
    except metadata.PackageNotFoundError:
        return {}
    minimums = {}
    for requirement in requirements:
        if ";" in requirement:  # extras and environment markers
            continue
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([^,\s]+)", requirement)
        if match:
            minimums[_normalize(match.group(1))] = match.group(2)
    return minimums


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_report(
    installed: dict[str, str | None] | None = None,
    minimums: dict[str, str] | None = None,
    tested: dict[str, str] | None = None,
) -> dict[str, tuple[str, str | None]]:
    """`{package: (installed version, problem or None)}` for the packages of [`STACK`].

    A problem is "older than supported (>= X)" or "newer than tested (X)"; the defaults read the installed
    distributions, hf-ext's requirements and the constraints file.
    """
    from packaging.version import Version

    minimums = supported_minimums() if minimums is None else minimums
    tested = tested_versions() if tested is None else tested
    report = {}
    for name in STACK:
        version = installed.get(name) if installed is not None else _installed(name)
        if version is None:
            report[name] = ("not installed", None)
            continue
        public = Version(Version(version).public)
        key = _normalize(name)
        problem = None
        if key in minimums and public < Version(minimums[key]):
            problem = f"older than supported (>= {minimums[key]})"
        elif key in tested and public > Version(Version(tested[key]).public):
            problem = f"newer than tested ({tested[key]})"
        report[name] = (version, problem)
    return report
