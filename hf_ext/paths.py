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

    Raises `FileNotFoundError` when `name` can only be a local path and nothing is there, or when it reads as a Hub id
    `owner/name` whose `owner` is a folder of the working directory (a local path that exists in part: a typo in a
    local name, far likelier than a Hub owner named like a local folder); and `ValueError` when it is neither a local
    path nor a valid Hub id. The messages name `what` and say which was tried.
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
    if "/" in text and local.parent.is_dir():
        raise FileNotFoundError(
            f"{what}={text!r}: no such file or folder {local.resolve()}; tried it as a local path, since its folder "
            f"{local.parent.resolve()} exists here (it was not looked up as a Hub repo id). Check the name in that "
            f"folder; to load the Hub repo {text!r} instead, run from a folder without a {local.parent} folder."
        )
    if not _HUB_ID.match(text) or ".." in text or "--" in text:
        raise ValueError(
            f"{what}={text!r} is neither a local file or folder (nothing at {local.resolve()}) nor a valid Hub repo "
            "id ('owner/name': letters, digits, '-', '_', '.')."
        )
    return text


def hub_load_error(name: str | os.PathLike, what: str, error: BaseException, repo_type: str = "model") -> OSError:
    """The error to raise when `name`, which [`resolve_local_or_hub`] took for a Hub repo id, could not be loaded from
    the Hub: it says that `name` is not a local path, and what the Hub (or the library asking it) said.

    When the Hub could not be asked (offline mode, `HF_HUB_OFFLINE=1`, or no connection), it names both places looked
    in, the local path and the Hub cache folder of the repo, and says how to get the files there."""
    text = os.fspath(name)
    if str(error).startswith(f"{what}={text!r} "):  # already this error (from a loader of hf-ext's)
        return error if isinstance(error, OSError) else OSError(str(error))
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    local = Path(text).expanduser().resolve()
    offline = _offline_mode()
    if not (offline or _is_connection_error(error)):
        return OSError(
            f"{what}={text!r} is not a local path (nothing at {local}), so it was tried as a Hub {repo_type} repo id, "
            f"and the Hub said: {said}"
        )
    cache = _hub_cache_folder(text, repo_type)
    held = "does not exist" if cache is None or not cache.exists() else "holds no complete copy of it"
    cache_text = f"the Hub cache folder {cache} {held}" if cache is not None else "it is not in the Hub cache"
    download = f"hf download {text}" + ("" if repo_type == "model" else f" --repo-type {repo_type}")
    if offline:
        why = "offline mode is on (HF_HUB_OFFLINE=1), so the Hub was not asked"
        fix = f"download it once while online (`{download}`) or unset HF_HUB_OFFLINE"
    else:
        why = f"the Hub could not be reached ({said})"
        fix = (
            "check the network (or HF_ENDPOINT / proxy settings), or download it where the Hub can be reached "
            f"(`{download}`)"
        )
    return OSError(
        f"{what}={text!r} was found neither as a local path nor in the Hub cache: nothing at {local} (relative to "
        f"the working directory {Path.cwd()}), and {cache_text}; {why}. Pass the path of a local {repo_type} folder, "
        f"or {fix}."
    )


def _offline_mode() -> bool:
    """Whether huggingface_hub (hence transformers and datasets) runs offline: `HF_HUB_OFFLINE` (as read when it was
    imported, or set since)."""
    from huggingface_hub import constants

    if getattr(constants, "HF_HUB_OFFLINE", False):
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _is_connection_error(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says that the Hub could not be reached."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return True
        if "couldn't connect" in str(error).lower():  # transformers' message for a connection failure
            return True
        error = error.__cause__ or error.__context__
    return False


def _hub_cache_folder(repo_id: str, repo_type: str) -> Path | None:
    """The folder of the Hub cache that would hold `repo_id` (`<HF_HUB_CACHE>/models--owner--name`)."""
    from huggingface_hub import constants

    try:
        from huggingface_hub.file_download import repo_folder_name

        return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    except (ImportError, ValueError):
        return None
