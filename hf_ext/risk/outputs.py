"""All-or-nothing output folders: a report is built under a temporary name and renamed into place, so a reader
finds either the previous complete report or the new complete one, never a mix of both runs' files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(path: str | os.PathLike, *, marker: str = "report.md") -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; when the block succeeds, it replaces `path` entirely.

    Args:
        path (`str` or `os.PathLike`): The output folder.
        marker (`str`, *optional*, defaults to `"report.md"`): A file that an earlier report left in `path`. An
            existing non-empty `path` without it is not replaced (it may hold someone's files).

    Raises:
        ValueError: when `path` is a file, or a non-empty folder that is not an earlier report; before anything is
            written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"output_dir: {path} exists and is a file; expected a folder (new, empty, or a previous report)"
        )
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ValueError(
            f"output_dir: {path} holds files but no {marker}, so it is not an earlier report; refusing to replace it. "
            "Choose a new or empty folder."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
        if path.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, previous / "report")
            try:
                os.replace(staging, path)
            except OSError:
                os.replace(previous / "report", path)  # put the earlier report back
                raise
            finally:
                shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
