"""The one range check of hf-ext: a configuration value, an argument, a command option; and the check that an
output folder can be written.

Every range check raises the same `ValueError`, naming the field, the value and what was expected, e.g.
`batch_size=0 is out of range; expected an integer >= 1.` NaN and infinities are never in range; `True` is not an
integer.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path


__all__ = ["check_range", "check_writable_directory", "warn_deprecated"]


def _format(number) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def _expectation(integer: bool, ge, gt, le, lt, optional: bool) -> str:
    kind = "an integer" if integer else "a number"
    low = ("[", ge) if ge is not None else ("(", gt) if gt is not None else None
    high = ("]", le) if le is not None else (")", lt) if lt is not None else None
    if low and high:
        text = f"{kind} in {low[0]}{_format(low[1])}, {_format(high[1])}{high[0]}"
    elif low:
        text = f"{kind} {'>=' if low[0] == '[' else '>'} {_format(low[1])}"
    elif high:
        text = f"{kind} {'<=' if high[0] == ']' else '<'} {_format(high[1])}"
    else:
        text = f"a finite {kind[2:] if kind.startswith('a ') else kind[3:]}"
    return text + (" or None" if optional else "")


def check_range(
    name: str,
    value,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    integer: bool = False,
    optional: bool = False,
    hint: str = "",
) -> None:
    """Raise `ValueError` unless `value` is a finite number (an integer with `integer=True`) within the bounds.

    Args:
        name (`str`): The field or argument, as the user wrote it.
        value: The value to check.
        ge, gt, le, lt (`float`, *optional*): Inclusive / exclusive lower and upper bounds.
        integer (`bool`, *optional*, defaults to `False`): Only integers (not `bool`) are in range.
        optional (`bool`, *optional*, defaults to `False`): `None` is allowed.
        hint (`str`, *optional*): Appended to the message (e.g. the method's usual value).
    """
    if value is None and optional:
        return
    kinds = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if valid:
        valid = (
            (ge is None or value >= ge)
            and (gt is None or value > gt)
            and (le is None or value <= le)
            and (lt is None or value < lt)
        )
    if not valid:
        expected = _expectation(integer, ge, gt, le, lt, optional)
        raise ValueError(f"{name}={value!r} is out of range; expected {expected}{f' {hint}' if hint else ''}.")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _read_only_file_system(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


def check_writable_directory(path: str | os.PathLike, *, replaced_whole: bool = True) -> Path:
    """Raise before any work when this process could not write the output folder `path`.

    The folder itself when it exists, or else the nearest folder above it that exists (where it will be created), must
    be writable; with `replaced_whole` (a folder built beside its final place and renamed onto it), the folder that
    holds `path` must be writable too. A `PermissionError` names the folder that is not writable and says what to do;
    a `NotADirectoryError` names a file standing where a folder of the path should be.

    Args:
        path (`str` or `os.PathLike`): The output folder (`~` expanded; relative to the working directory).
        replaced_whole (`bool`, *optional*, defaults to `True`): Whether the output is written beside `path` and
            renamed onto it (`hf_ext.serialization.atomic_directory`) rather than written inside it.

    Returns:
        `Path`: `path`, with `~` expanded.
    """
    path = Path(path).expanduser()
    absolute = Path(os.path.abspath(path))
    existing = _nearest_existing(absolute)
    if existing == absolute and not existing.is_dir():
        raise NotADirectoryError(
            f"The output folder {absolute} is an existing file; expected a folder (or a new name)."
        )
    if not existing.is_dir():
        raise NotADirectoryError(
            f"The output folder {absolute} cannot be created: {existing} is an existing file, not a folder. Choose "
            "another output folder."
        )
    needed = [existing]
    if replaced_whole and existing == absolute and absolute.parent != absolute:
        needed.insert(0, absolute.parent)  # the staging folder is created there, and renamed onto `path`
    for folder in needed:
        if not os.access(folder, os.W_OK | os.X_OK):
            if folder == absolute:
                where = "it is not writable by this user"
            elif absolute.exists():
                where = f"the folder holding it, {folder}, is not writable by this user (the output is built there)"
            else:
                where = f"{folder}, where it would be created, is not writable by this user"
            if _read_only_file_system(folder):
                raise PermissionError(
                    f"The output folder {absolute} cannot be written: {where} (it is on a read-only file system). "
                    "Choose an output folder on a writable file system."
                )
            raise PermissionError(
                f"The output folder {absolute} cannot be written: {where} (permission denied). Choose an output "
                f"folder you can write to, or make {folder} writable (e.g. chmod u+w {folder})."
            )
    return path


_LIBRARY_PREFIXES = ("hf_ext", "huggingface_hub", "transformers")


def warn_deprecated(message: str) -> None:
    """A `FutureWarning` attributed to the first caller outside hf-ext and the libraries it plugs into (the
    user's line), however deep the deprecated name is reached (dataclass wrappers, `from_pretrained`, ...)."""
    import sys
    import warnings

    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _LIBRARY_PREFIXES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FutureWarning, stacklevel=level)
