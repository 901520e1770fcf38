"""Safe, atomic files: tensors as safetensors, everything else as JSON, never pickle.

Every writer here writes to a temporary file in the target's folder and renames it into place, so a crash
or a full disk never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


__all__ = ["atomic_path", "load_json", "load_tensors", "save_json", "save_tensors", "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds, move it onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """Load every tensor of a safetensors file."""
    from safetensors.torch import load_file

    return load_file(str(path), device=device)
