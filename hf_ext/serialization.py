"""Safe, atomic files: tensors as safetensors, everything else as JSON, never pickle.

Every writer here writes to a temporary file in the target's folder and renames it into place, so a crash
or a full disk never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import transactions


__all__ = [
    "OutputExistsError",
    "atomic_directory",
    "atomic_path",
    "check_output_directory",
    "install_files",
    "is_own_card",
    "load_json",
    "load_tensors",
    "open_safetensors",
    "safetensors_error",
    "save_json",
    "save_tensors",
    "staged_save",
    "staging_directory",
    "write_text",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_directory(path: str | os.PathLike, suffix: str = ".partial") -> Path:
    """A new, empty, hidden folder beside `path` (same filesystem, so it can be renamed onto `path` in one step), with
    the permissions a plain `mkdir` would give it (`tempfile.mkdtemp` makes it private to its owner)."""
    return transactions.new_staging(path)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds, move it onto `path` atomically (with the
    permissions a plain `open` would give a new file, not `mkstemp`'s owner-only ones)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class OutputExistsError(FileExistsError):
    """The output folder of a run already holds files and replacing them was not asked for."""


def check_output_directory(
    path: str | os.PathLike, *, overwrite: bool = False, option: str = "overwrite=True"
) -> Path:
    """Check, before any work, that `path` can receive a run's output: absent, an empty folder, or (with `overwrite`)
    a folder whose whole content the run will replace. An existing file, or a non-empty folder without `overwrite`,
    is an error naming the path, a few of its files and `option` (the flag that allows replacing it)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"The output folder {path} is an existing file; expected a folder (or a new name).")
    if overwrite and path.is_dir() and _holds_more_than_a_run(path):
        raise OutputExistsError(
            f"The output folder {path} is the working directory, one of its parents, the home folder or a root; "
            f"replacing it ({option}) would replace everything in it. Choose a folder of its own for the output."
        )
    if path.is_dir() and not overwrite:
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise OutputExistsError(
                f"The output folder {path} already holds {len(entries)} entries ({shown}); a new run would leave "
                f"them beside its own files. Choose a new folder, or pass {option} to replace the folder's content."
            )
    return path


def _holds_more_than_a_run(path: Path) -> bool:
    """Whether replacing `path` as a whole would take more than a run's output with it: the working directory or a
    parent of it, the home folder, or a filesystem root."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    return (
        resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or resolved.parent == resolved
    )


@contextmanager
def atomic_directory(
    path: str | os.PathLike, *, overwrite: bool = False, option: str = "overwrite=True"
) -> Iterator[Path]:
    """Yield a fresh staging folder next to `path`; when the block succeeds, it becomes `path` in one rename.

    All or nothing: a block that raises leaves `path` as it was, and no file of an earlier run survives beside the
    new ones (the previous folder is replaced as a whole, which needs `overwrite` when it is not empty; see
    [`check_output_directory`], called first so the error comes before any work). The folder's lock is held
    throughout (a second writer fails at once, see [`~hf_ext.transactions.output_lock`]); a symbolic link is
    written through; what killed runs left beside `path` is cleaned up first.
    """
    with transactions.output_lock(path) as folder:
        path = check_output_directory(folder, overwrite=overwrite, option=option)
        transactions.remove_litter(path, keep_run_folder=True)
        staging = transactions.new_staging(path)
        try:
            yield staging
            transactions.replace_directory(staging, path)
        finally:
            transactions.discard_staging(staging)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_json(path: str | os.PathLike, obj) -> Path:
    """Write `obj` as indented, key-sorted JSON to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def load_json(path: str | os.PathLike):
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Save a dict of tensors to a safetensors file atomically (tensors are made contiguous first)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def safetensors_error(path: str | os.PathLike, error: Exception) -> ValueError:
    """The error to raise for a safetensors file that cannot be read: it names the file (safetensors' own message,
    e.g. "incomplete metadata", does not)."""
    return ValueError(
        f"Cannot read the safetensors file {path}: {error}. The file is truncated or corrupt (an interrupted download "
        "or copy?); write or download it again."
    )


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """Load every tensor of a safetensors file; a missing file is a `FileNotFoundError` and a truncated or corrupt
    one a `ValueError`, both naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"No safetensors file at {path}.")
    try:
        return load_file(str(path), device=device)
    except SafetensorError as error:
        raise safetensors_error(path, error) from None


def open_safetensors(path: str | os.PathLike, framework: str = "pt"):
    """`safetensors.safe_open(path)`, with a truncated or corrupt file reported as a `ValueError` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework=framework)
    except SafetensorError as error:
        raise safetensors_error(path, error) from None


CARD = "README.md"


def is_own_card(path: str | os.PathLike) -> bool:
    """Whether the `README.md` at `path` is a card hf-ext wrote (its metadata has the `hf_ext:` block every hf-ext card
    carries, see `hf_ext.hub.make_card`): only such a card is refreshed by a save; any other is the user's and is
    kept."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if not text.startswith("---"):
        return False
    front_matter = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    return any(line.rstrip() == "hf_ext:" for line in front_matter.splitlines())


def _keep_files_we_did_not_write(staging: Path, target: Path, replace: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Before installing `staging` into the existing folder `target`: a file there that this kind of save did not
    write is never replaced. A user's `README.md` is kept (the save's card is left out, with a warning); any other such
    file is an error naming it, raised before anything moves. Returns the patterns of `replace` that may go."""
    import logging
    from fnmatch import fnmatch

    if (target / CARD).exists() and not is_own_card(target / CARD):
        replace = tuple(pattern for pattern in replace if not fnmatch(CARD, pattern))
    for entry in sorted(staging.iterdir()):
        existing = target / entry.name
        if not (existing.exists() or existing.is_symlink()):
            continue
        if entry.name == CARD:
            if not is_own_card(existing):
                entry.unlink()
                logging.getLogger(__name__).warning(
                    "%s holds a README.md that hf-ext did not write; it is kept, and this save's card is not written.",
                    target,
                )
            continue
        if not any(fnmatch(entry.name, pattern) for pattern in replace):
            raise FileExistsError(
                f"{what}={str(target)!r} already holds {entry.name}, which this save would replace but did not write "
                "(it is not a file of this kind of artefact). Save into another folder, or move that file first."
            )
    return replace


@contextmanager
def staged_save(
    target: str | os.PathLike, *, replace: Iterable[str] = (), what: str = "save_directory"
) -> Iterator[Path]:
    """Yield a staging folder beside the folder `target`; when the block succeeds, move its files into `target` with
    [`install_files`] (the earlier files of the kinds in `replace` go, other files stay). A block that raises leaves
    `target` as it was. An existing file at `target` is an error naming `what`, raised before the block runs.

    The folder's lock is held throughout; a file in `target` that this kind of save did not write (outside
    `replace`, or a `README.md` that is not an hf-ext card) is never replaced; a symbolic link is written through.
    """
    replace = tuple(replace)
    target = Path(target).expanduser()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{what}={str(target)!r} is an existing file; expected a folder.")
    with transactions.output_lock(target) as folder:
        transactions.remove_litter(folder, keep_run_folder=True)
        staging = transactions.new_staging(folder)
        try:
            yield staging
            if folder.is_dir():
                replace = _keep_files_we_did_not_write(staging, folder, replace, what)
            transactions.install_files(staging, folder, replace=replace)
        finally:
            transactions.discard_staging(staging)


def install_files(staging: str | os.PathLike, target: str | os.PathLike, *, replace: Iterable[str] = ()) -> Path:
    """Move what `staging` holds into the folder `target` (see [`~hf_ext.transactions.install_files`]: journaled, an
    interrupted install is rolled back by the next writer or loader)."""
    return transactions.install_files(staging, target, replace=replace)
