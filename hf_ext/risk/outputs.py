"""All-or-nothing output folders: a report is built under a temporary name and renamed into place, so a reader
finds either the previous complete report or the new complete one, never a mix of both runs' files (the staging and
the guards of [`hf_ext.serialization.atomic_directory`]: an earlier report is replaced, never the working directory,
home or a root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import serialization


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
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"output_dir: {path} exists and is a file; expected a folder (new, empty, or a previous report)"
        )
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ValueError(
            f"output_dir: {path} holds files but no {marker}, so it is not an earlier report; refusing to replace it. "
            "Choose a new or empty folder."
        )
    earlier_report = path.is_dir() and (path / marker).is_file()
    option = f"an earlier report, as its {marker} says"
    try:  # e.g. the working directory holding an earlier report: never replaced as a whole
        serialization.check_output_directory(path, overwrite=earlier_report, option=option)
    except OSError as error:
        raise ValueError(f"output_dir: {error}") from None
    with serialization.atomic_directory(path, overwrite=earlier_report, option=option) as staging:
        yield staging
