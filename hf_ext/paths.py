"""Where a name points: a local file or folder first, a Hub repo id only when it cannot be a local path.

`transformers`, `datasets` and `huggingface_hub` take any string that is not an existing folder for a Hub id, so a
typo'd local path comes back as "Couldn't reach ... on the Hub" or "Repo id must use alphanumeric chars". Every
hf-ext entry point that takes a `name_or_path` calls [`resolve_local_or_hub`] first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


__all__ = ["hub_load_error", "looks_like_local_path", "resolve_local_or_hub"]

# Suffixes of files a user hands to hf-ext (data, tensors, configurations); a Hub id never ends with one of them.
_FILE_SUFFIXES = {
    ".arrow",
    ".bin",
    ".csv",
    ".gguf",
    ".json",
    ".jsonl",
    ".md",
    ".parquet",
    ".pt",
    ".safetensors",
    ".txt",
    ".yaml",
    ".yml",
}
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_local_path(name: str | os.PathLike) -> bool:
    """Whether `name` can only be meant as a local path: absolute, relative with `./` / `../` / `~`, more than one
    `/`, a backslash, or a file suffix such as `.jsonl` or `.safetensors`."""
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    if text in (".", "..") or text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in text:
        return True
    if text.count("/") > 1 or os.path.isabs(text):
        return True
    return Path(text).suffix.lower() in _FILE_SUFFIXES


def resolve_local_or_hub(name: str | os.PathLike, what: str = "name_or_path") -> str:
    """`name` as an existing local path (`~` expanded), or unchanged when it can be a Hub repo id.

    Raises `FileNotFoundError` when `name` can only be a local path and nothing is there, and `ValueError` when it is
    neither a local path nor a valid Hub id; both messages name `what` and say which was tried.
    """
    text = os.fspath(name)
    if not text:
        raise ValueError(f"{what} is empty; expected a local folder or file, or a Hub repo id such as 'owner/name'.")
    local = Path(text).expanduser()
    if local.exists():
        return str(local)
    if looks_like_local_path(name):
        where = local.resolve()
        hint = f" ({local.parent.resolve()} does not exist either)" if not local.parent.exists() else ""
        raise FileNotFoundError(
            f"{what}={text!r}: no such file or folder {where}{hint}; tried it as a local path (it is not a Hub repo "
            "id, which looks like 'owner/name')."
        )
    if not _HUB_ID.match(text) or ".." in text or "--" in text:
        raise ValueError(
            f"{what}={text!r} is neither a local file or folder (nothing at {local.resolve()}) nor a valid Hub repo "
            "id ('owner/name': letters, digits, '-', '_', '.')."
        )
    return text


def hub_load_error(name: str | os.PathLike, what: str, error: BaseException, repo_type: str = "model") -> OSError:
    """The error to raise when `name`, which [`resolve_local_or_hub`] took for a Hub repo id, could not be loaded from
    the Hub: it says that `name` is not a local path, and what the Hub (or the library asking it) said."""
    text = os.fspath(name)
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return OSError(
        f"{what}={text!r} is not a local path (nothing at {Path(text).expanduser().resolve()}), so it was tried as a "
        f"Hub {repo_type} repo id, and the Hub said: {said}"
    )
