"""Transactional output folders: one writer at a time, and a reader finds the old result or the new one, never a mix.

Every writer of hf-ext (the commands and the `save_pretrained` of its artefacts) goes through three pieces:

- [`output_lock`]: an exclusive lock on an output folder, held in a hidden file beside it (`.<name>.lock`, holding
  the pid, host and command of the run). A second run into the same folder fails at once with an
  [`OutputLockedError`] naming that run. The operating system releases the lock when its process dies, so a killed
  run never leaves a stale lock.
- [`install_files`] / [`replace_directory`]: move a finished staging folder's files into place. Before the first
  move, a journal (`.<name>.hf-ext-journal.json`, beside the folder) lists what is about to change and where the
  files being replaced are kept; removing the journal is the commit point. A run killed before it leaves a journal,
  and the next writer (or loader) of the folder rolls the half-made change back with [`recover`], restoring the
  previous result.
- [`remove_litter`]: the staging folders, backups and run folders of killed runs beside an output folder are removed
  by the next run that holds its lock.

A symbolic link to a folder is written through: the folder it points to receives the result, the link stays.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path


__all__ = [
    "OutputLockedError",
    "install_files",
    "lock_path",
    "output_lock",
    "recover",
    "remove_litter",
    "replace_directory",
    "resolve_output",
]

logger = logging.getLogger(__name__)

# The suffixes of what a writer leaves beside `<name>` while it runs (hidden: `.<name>.<random><suffix>`).
STAGING_SUFFIX = ".partial"
BACKUP_SUFFIX = ".old"
RUN_SUFFIX = ".hf-ext-run"


class OutputLockedError(RuntimeError):
    """Another run is writing the same output folder."""


def resolve_output(path: str | os.PathLike) -> Path:
    """The folder a writer should work on for `path`: `~` expanded and a symbolic link followed, so that the link is
    written through instead of being replaced by a folder."""
    path = Path(path).expanduser()
    return path.resolve() if path.is_symlink() else path


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the output folder `path`: `.<name>.lock` beside it."""
    path = resolve_output(path)
    return path.parent / f".{path.name}.lock"


def journal_path(path: str | os.PathLike) -> Path:
    path = resolve_output(path)
    return path.parent / f".{path.name}.hf-ext-journal.json"


def run_folder(path: str | os.PathLike) -> Path:
    """The folder a training run into `path` works in (checkpoints included) until it swaps it into place."""
    path = resolve_output(path)
    return path.parent / f".{path.name}{RUN_SUFFIX}"


# Locks this process holds: path -> [file descriptor, depth]. A writer calling another writer on the same folder
# (a command saving a model into the folder it locked) re-enters the lock instead of waiting for itself.
_held: dict[Path, list] = {}
_held_guard = threading.Lock()


def _describe_holder(lock_file: Path) -> str:
    try:
        holder = json.loads(lock_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process (it has not written its pid yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}: {holder.get('command', '?')}"


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(path: Path, lock_file: Path) -> int:
    """Lock `lock_file` (created if needed) and write this process's description into it; the file may be unlinked
    by its previous holder between our open and our lock, so the lock counts only if the path still names the file
    we locked."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise OutputLockedError(
                f"The output folder {path} is being written by another run ({_describe_holder(lock_file)}). Wait for "
                f"it to finish, or choose another folder. (The lock is {lock_file}; it is released when that process "
                "ends, even if it is killed.)"
            )
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_file))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python",
        "started": time.time(),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)
    return fd


def _release(lock_file: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_file)  # while still holding it: a waiting process re-checks the path and opens a new file
    os.close(fd)


def _enter(path: Path, recover_interrupted: bool) -> Path:
    """Take (or re-enter) the lock of `path`; returns its key, the absolute path (the working directory may change
    before the lock is released)."""
    key = path.absolute()
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
            return key
    key.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(key, lock_path(key))
    with _held_guard:
        _held[key] = [fd, 1]
    if recover_interrupted:
        recover(key)
    return key


def _exit(key: Path) -> None:
    with _held_guard:
        entry = _held[key]
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
    _release(lock_path(key), entry[0])


def is_main_process() -> bool:
    """Under torchrun / accelerate every process runs the command; the main one (`RANK` 0, or no launcher) prepares
    and writes the output folders and holds their locks."""
    return int(os.environ.get("RANK", "0")) == 0


def _locks_apply() -> bool:
    return os.name == "posix" and is_main_process()  # `fcntl` locks: POSIX systems


@contextmanager
def output_lock(path: str | os.PathLike, *, recover_interrupted: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of the output folder `path` for the block, and yield the folder to write
    ([`resolve_output`]). Re-entrant within a process. On acquiring it, a change to the folder that a killed run
    left half-made is rolled back ([`recover`]) unless `recover_interrupted=False`.

    Raises:
        OutputLockedError: another process holds the lock; the message names it (pid, host, command, start).
    """
    path = resolve_output(path)
    if not _locks_apply():
        yield path
        return
    key = _enter(path, recover_interrupted)
    try:
        yield path
    finally:
        _exit(key)


# The keys of the locks taken by `hold_output_lock`, released together by `release_process_locks`.
_process_locks: list[Path] = []


def hold_output_lock(path: str | os.PathLike) -> Path:
    """Take the lock of `path` for the rest of the process (a command's output folder, locked when its arguments are
    checked, before any work), until [`release_process_locks`]; the operating system releases it when the process
    ends in any case."""
    path = resolve_output(path)
    if _locks_apply():
        _process_locks.append(_enter(path, recover_interrupted=True))
    return path


def release_process_locks() -> None:
    """Release the locks taken with [`hold_output_lock`] (a command calls it when it ends; tests between runs)."""
    while _process_locks:
        _exit(_process_locks.pop())


def holds_lock(path: str | os.PathLike) -> bool:
    """Whether this process holds the lock of `path`."""
    return resolve_output(path).absolute() in _held


def fault_point(point: str) -> None:
    """A named point of a write, for the fault-injection tests (`tests/faults/`): with `HF_EXT_FAULT_POINT=<point>`
    the process kills itself there (SIGKILL: no cleanup runs), with `<point>:pause` it sleeps
    `HF_EXT_FAULT_PAUSE` seconds (default 60) there, holding its lock. Points: `staged` (the new files are
    written, nothing moved), `journaled` (the journal is written), `moving` (half the files moved), `committed`
    (the journal is removed, the backup not yet)."""
    wanted = os.environ.get("HF_EXT_FAULT_POINT")
    if wanted == point:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"{point}:pause":
        time.sleep(float(os.environ.get("HF_EXT_FAULT_PAUSE", "60")))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_journal(path: Path, journal: dict) -> None:
    file = journal_path(path)
    tmp = file.with_name(file.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(journal, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, file)


def _commit(path: Path) -> None:
    journal_path(path).unlink()


def recover(path: str | os.PathLike) -> bool:
    """Roll back a change to the folder `path` that a killed run left half-made (a journal beside it), restoring the
    files it was replacing; returns whether there was one. Call it holding the folder's lock ([`output_lock`] does)."""
    path = resolve_output(path)
    file = journal_path(path)
    tmp = file.with_name(file.name + ".tmp")
    if tmp.exists():
        tmp.unlink()  # a journal never completed: nothing was moved yet
    if not file.exists():
        return False
    journal = json.loads(file.read_text(encoding="utf-8"))
    backup = path.parent / journal["backup"]
    if journal["kind"] == "swap":
        if (backup / path.name).exists():
            if path.exists() or path.is_symlink():
                _remove(path)
            os.replace(backup / path.name, path)
    else:
        staging = path.parent / journal["staging"]
        for name in journal["installed"]:
            moved_in = not (staging / name).exists() and not (staging / name).is_symlink()
            if moved_in and ((path / name).exists() or (path / name).is_symlink()):
                _remove(path / name)
        if backup.is_dir():
            for entry in backup.iterdir():
                os.replace(entry, path / entry.name)
    _remove(backup)
    staging = journal.get("staging")
    if staging:
        _remove(path.parent / staging)
    file.unlink()
    logger.warning(
        "%s: an earlier write into this folder was interrupted before it finished; its half-made change was rolled "
        "back and the folder holds the result from before it.",
        path,
    )
    return True


def remove_litter(path: str | os.PathLike, *, keep_run_folder: bool = False) -> list[Path]:
    """Remove what killed runs left beside the output folder `path` (staging folders, backups and, unless
    `keep_run_folder`, the working folder of an interrupted training run); returns what was removed. Call it holding
    the folder's lock and after [`recover`]."""
    path = resolve_output(path)
    if not path.parent.is_dir():
        return []
    removed = []
    # `tempfile.mkdtemp`'s names: the prefix, 8 random characters, the suffix (so "a.b"'s are not "a"'s)
    litter = re.compile(
        rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}({re.escape(STAGING_SUFFIX)}|{re.escape(BACKUP_SUFFIX)})"
    )
    for entry in path.parent.iterdir():
        name = entry.name
        stale = litter.fullmatch(name) is not None
        if name == run_folder(path).name and not keep_run_folder:
            stale = True
            logger.warning(
                "Removing %s, the checkpoints of an earlier training run into %s that did not finish (resume it with "
                "--resume_from_checkpoint instead of starting over to keep them).",
                entry,
                path,
            )
        if stale and name not in _own_staging:
            _remove(entry)
            removed.append(entry)
    return removed


# Staging folders this process is building right now (never litter).
_own_staging: set[str] = set()


def new_staging(path: str | os.PathLike) -> Path:
    """A new, empty, hidden folder beside `path` (same filesystem, so it can be renamed onto `path` in one step),
    with the permissions a plain `mkdir` would give it."""
    path = resolve_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=STAGING_SUFFIX, dir=path.parent))
    mask = os.umask(0)
    os.umask(mask)
    staging.chmod(0o777 & ~mask)
    _own_staging.add(staging.name)
    return staging


def discard_staging(staging: Path) -> None:
    _own_staging.discard(staging.name)
    _remove(staging)


def _new_backup(path: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=BACKUP_SUFFIX, dir=path.parent))


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where the system or the
    filesystem cannot, so that the caller falls back to two journaled renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_current_directory, rename_exchange = -100, 2
    if renameat2(at_current_directory, os.fsencode(first), at_current_directory, os.fsencode(second), rename_exchange):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(code, os.strerror(code), str(second))
    return True


def replace_directory(staging: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make the finished folder `staging` become `path`, replacing what `path` held as a whole. On Linux the two are
    exchanged in one atomic step (a reader finds the old folder or the new one at `path`, at every instant);
    elsewhere in two journaled renames (killed between them, the next [`recover`] puts the previous folder back)."""
    staging, path = Path(staging), resolve_output(path)
    fault_point("staged")
    if not (path.exists() or path.is_symlink()):
        os.replace(staging, path)
        _own_staging.discard(staging.name)
        return path
    if path.is_dir() and not path.is_symlink() and _exchange(staging, path):
        fault_point("committed")
        discard_staging(staging)  # it holds the previous folder now
        return path
    backup = _new_backup(path)
    _write_journal(path, {"kind": "swap", "backup": backup.name, "staging": staging.name})
    fault_point("journaled")
    os.replace(path, backup / path.name)
    fault_point("moving")
    os.replace(staging, path)
    _commit(path)
    fault_point("committed")
    _own_staging.discard(staging.name)
    _remove(backup)
    return path


def install_files(staging: str | os.PathLike, target: str | os.PathLike, *, replace: Iterable[str] = ()) -> Path:
    """Move what `staging` holds into the folder `target`, as a `save_pretrained` into an existing folder does.

    `target` absent: `staging` becomes `target` in one rename. `target` a folder: each entry of `staging` replaces the
    entry of the same name, and the entries of `target` matching a pattern of `replace` (`fnmatch` patterns: the files
    of the artefact being saved) that the new save did not write are removed, so no file of an earlier save of the
    same artefact survives beside the new ones; other files are kept. The change is journaled: a run killed before
    it ends leaves `target` as it was once [`recover`] runs (the next writer or loader does). `staging` is gone
    afterwards.
    """
    staging, target = Path(staging), resolve_output(target)
    replace = tuple(replace)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is an existing file; expected a folder (or a new name).")
    fault_point("staged")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        _own_staging.discard(staging.name)
        return target
    new = sorted(entry.name for entry in staging.iterdir())
    replaced = [
        entry.name
        for entry in target.iterdir()
        if entry.name in new or any(fnmatch(entry.name, pattern) for pattern in replace)
    ]
    backup = _new_backup(target)
    _write_journal(target, {"kind": "install", "backup": backup.name, "staging": staging.name, "installed": new})
    fault_point("journaled")
    for name in replaced:
        os.replace(target / name, backup / name)
    for index, name in enumerate(new):
        if index == len(new) // 2:
            fault_point("moving")
        os.replace(staging / name, target / name)
    _commit(target)
    fault_point("committed")
    discard_staging(staging)
    _remove(backup)
    return target


def interrupted(path: str | os.PathLike) -> bool:
    """Whether a write into `path` was interrupted and not yet rolled back (a loader should [`recover`] first)."""
    return journal_path(path).exists()


def recover_before_loading(path: str | os.PathLike) -> None:
    """For loaders: if a write into the local folder `path` was interrupted, roll it back (under the folder's lock)
    so that the folder is loaded as it was before that write, never half-changed."""
    path = Path(path).expanduser()
    if not path.is_dir() or not interrupted(path):
        return
    try:
        with output_lock(path):
            pass  # taking the lock recovers
    except OutputLockedError:
        pass  # its writer is still running: it will finish or be rolled back later
