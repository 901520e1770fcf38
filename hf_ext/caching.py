"""Build-once folders: tiny models, trained demo models, converted checkpoints.

Everything hf-ext builds rather than downloads (the tiny models of `hf_ext.testing`, the small models the methods'
demos and tests train, the converted real checkpoint) is kept in a folder named after a fingerprint of how it was
built, under [`default_cache_dir`]. [`build_once`] makes such a folder safe to share: the build is written to a
staging folder beside the target and renamed into place, so nobody ever sees half of it, and a file lock makes
concurrent processes (pytest-xdist workers, `accelerate launch` ranks) build it once and wait for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


__all__ = ["build_once", "cache_root", "default_cache_dir", "hash_recipe"]


def default_cache_dir() -> Path:
    """Where built models are kept: `$HF_EXT_CACHE`, else `~/.cache/hf_ext`."""
    return Path(os.environ.get("HF_EXT_CACHE", Path.home() / ".cache" / "hf_ext"))


def hash_recipe(recipe: dict) -> str:
    """A short name for how something was built: 12 hex digits of the SHA-256 of `recipe` as canonical JSON (keys
    sorted), so the same settings give the same folder whatever their order."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` when given, else [`default_cache_dir`]."""
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def build_once(target: str | os.PathLike, build: Callable[[Path], None], *, marker: str = "config.json") -> Path:
    """Return the folder `target`, calling `build(staging_folder)` first if it holds no `marker` file yet.

    `build` writes everything into the empty folder it is given, `marker` included; that folder is then renamed
    to `target` in one step. Concurrent callers wait on a lock (`target` + ".lock") while one of them builds.
    """
    from filelock import FileLock

    target = Path(target)
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if (target / marker).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(staging)
            if not (staging / marker).exists():
                raise RuntimeError(f"Building {target} wrote no {marker!r}; the build is incomplete.")
            if target.exists():  # left over from an interrupted build of an older version
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
