"""Model and dataset cards, and pushing artefacts to the Hugging Face Hub.

Cards are rendered from the templates in `model_cards/<name>.md` (Jinja, as `huggingface_hub` renders
them) with `ModelCardData` / `DatasetCardData` metadata: `library_name: hf-ext`, tags, base model, datasets,
license, and the method's configuration under the `hf_ext` key. Pushing is `huggingface_hub`'s ordinary
`create_repo` + `upload_folder`.

Artefacts that are not transformers models (a SASA probe, SEAL scores, ...) inherit [`HubMixin`] and get
`save_pretrained` / `from_pretrained` / `push_to_hub` with a card, like a model.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import ClassVar


__all__ = ["HubMixin", "card_template_names", "make_card", "push_folder", "resolve_folder", "save_card"]

LIBRARY_NAME = "hf-ext"
METHODS = ("aot", "larimar", "sasa", "mergealign", "seal", "risk")
"""The hf-ext methods a card can name (`make_card(method=...)`)."""


def _templates_folder():
    """`hf_ext/model_cards/` in an installed wheel (the build copies the repository's top-level `model_cards/` there);
    the repository's `model_cards/` in a source checkout or an editable install."""
    packaged = resources.files("hf_ext").joinpath("model_cards")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "model_cards"


def card_template_names() -> list[str]:
    """Names of the card templates shipped in `model_cards/`."""
    return sorted(p.name[: -len(".md")] for p in _templates_folder().iterdir() if p.name.endswith(".md"))


def _template_text(template: str) -> str:
    path = _templates_folder().joinpath(f"{template}.md")
    if not path.is_file():
        raise ValueError(f"No card template named {template!r}; expected one of {card_template_names()}.")
    return path.read_text(encoding="utf-8")


def make_card(
    template: str = "default",
    *,
    method: str | None = None,
    repo_type: str = "model",
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    license: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
    method_config: dict | None = None,
    **context,
):
    """Render a card from `model_cards/<template>.md`.

    Args:
        template (`str`, *optional*, defaults to `"default"`):
            Template name (see [`card_template_names`]).
        method (`str`, *optional*):
            The hf-ext method that made the artefact, one of [`METHODS`] (`"aot"`, `"larimar"`, ...); added to the
            tags and metadata. Another name is a `ValueError`.
        repo_type (`str`, *optional*, defaults to `"model"`):
            `"model"` gives a `ModelCard`, `"dataset"` a `DatasetCard`.
        base_model, datasets, license:
            Hub metadata.
        tags (`list[str]`, *optional*):
            Extra tags; `hf-ext` and the method are always added.
        method_config (`dict`, *optional*):
            The method's configuration; stored in the metadata under `hf_ext.config` and shown in the card.
        context:
            Further template variables (`title`, `summary`, `usage`, `details`, or a template's own).

    Returns:
        `huggingface_hub.ModelCard` or `huggingface_hub.DatasetCard`.
    """
    from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

    if method is not None and method not in METHODS:
        raise ValueError(f"method={method!r} is not an hf-ext method; expected one of {list(METHODS)} or None.")
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of tags, got one string ({tags!r}); wrap it in a list.")
    all_tags = [LIBRARY_NAME] + ([method] if method else []) + [t for t in tags if t not in (LIBRARY_NAME, method)]
    hf_ext_meta = {"method": method, "version": _version()}
    if method_config is not None:
        hf_ext_meta["config"] = _jsonable(method_config)
    if repo_type == "model":
        card_data = ModelCardData(
            library_name=LIBRARY_NAME,
            base_model=base_model,
            datasets=datasets,
            license=license,
            tags=all_tags,
            hf_ext=hf_ext_meta,
        )
        card_class = ModelCard
    elif repo_type == "dataset":
        card_data = DatasetCardData(license=license, tags=all_tags, hf_ext=hf_ext_meta)
        if datasets is not None:
            card_data.source_datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        card_class = DatasetCard
    else:
        raise ValueError(f"repo_type={repo_type!r} is not supported; expected 'model' or 'dataset'.")
    context.setdefault("title", f"{method or LIBRARY_NAME} {repo_type}")
    context.setdefault("summary", "")
    if method_config is not None:
        context.setdefault("method_config", json.dumps(_jsonable(method_config), indent=2, sort_keys=True))
    return card_class.from_template(card_data, template_str=_template_text(template), **context)


def _version() -> str:
    from . import __version__

    return __version__


def _jsonable(obj):
    """A JSON-friendly copy of a config: dataclasses and objects with `to_dict` become dicts, enums their value,
    anything else unknown its string."""
    import dataclasses
    import enum

    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def save_card(card, save_directory: str | os.PathLike) -> Path:
    """Write `card` as `README.md` in `save_directory`, atomically."""
    from .serialization import write_text

    return write_text(Path(save_directory) / "README.md", str(card))


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
):
    """Create `repo_id` if needed and upload every file of `folder` in one commit; returns the `CommitInfo`.

    The files go in a single `HfApi.create_commit`, like `upload_folder` does (without its extra round trip to
    validate the card's YAML, which hf-ext renders from `ModelCardData` itself).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    if not operations:
        raise ValueError(f"Nothing to push: {folder} has no files.")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True).repo_id
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        repo_type=repo_type,
        revision=revision,
        commit_message=commit_message or f"Upload with {LIBRARY_NAME}",
        create_pr=create_pr,
    )


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    token: str | bool | None = None,
    allow_patterns: list[str] | None = None,
    what: str = "name_or_path",
) -> Path:
    """A local folder as is, tried first; otherwise a Hub repo downloaded (or found in the cache) with
    `snapshot_download`.

    Raises:
        `FileNotFoundError`: `name_or_path` can only be a local path (see [`~hf_ext.paths.resolve_local_or_hub`]) and
            nothing is there.
        `NotADirectoryError`: it is an existing file, not a folder.
        `OSError`: it is not a local path and the Hub could not give the repo; the message says both, with what
            the Hub said.
    """
    from .paths import hub_load_error, resolve_local_or_hub

    text = os.fspath(name_or_path)
    resolved = resolve_local_or_hub(text, what)
    local = Path(resolved)
    if local.exists():
        if not local.is_dir():
            raise NotADirectoryError(f"{what}={text!r} is a file; expected a folder (or a Hub {repo_type} repo id).")
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                resolved, repo_type=repo_type, revision=revision, token=token, allow_patterns=allow_patterns
            )
        )
    except Exception as error:  # not found, gated, offline, no network: huggingface_hub raises many kinds
        raise hub_load_error(text, what, error, repo_type) from error


class HubMixin:
    """`save_pretrained` / `from_pretrained` / `push_to_hub` for an artefact that is not a transformers model.

    A subclass implements `_save_files(folder)`, `_load_files(folder, **kwargs)` (a classmethod) and
    `model_card()`, and sets `hub_files` (the patterns to download) and, for a dataset-like artefact,
    `hub_repo_type = "dataset"`. Writers should use `hf_ext.serialization` so every file lands atomically.
    """

    hub_files: ClassVar[list[str] | None] = None
    hub_repo_type: ClassVar[str] = "model"

    def _save_files(self, save_directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load_files(cls, folder: Path, **kwargs):
        raise NotImplementedError

    def model_card(self):
        """The card written next to the files; override to describe the artefact."""
        return make_card(repo_type=self.hub_repo_type, title=type(self).__name__)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_kwargs,
    ) -> Path:
        """Save the artefact and its card (`README.md`) to `save_directory`; with `push_to_hub`, upload it too.

        All or nothing: the files are written to a staging folder beside `save_directory` and moved into it once all
        are written, so a failure leaves `save_directory` as it was. As with transformers' `save_pretrained`, saving
        into a folder that already holds this kind of artefact replaces it: the files of an earlier save
        (`hub_files`) are replaced or removed, files of any other kind are kept (see
        [`~hf_ext.serialization.install_files`]). The commands refuse a non-empty folder unless asked to replace it.
        """
        from .serialization import staged_save

        save_directory = Path(save_directory).expanduser()
        with staged_save(save_directory, replace=self.hub_files or ()) as staging:
            self._save_files(staging)
            save_card(self.model_card(), staging)
        if push_to_hub:
            push_folder(save_directory, repo_id or save_directory.name, repo_type=self.hub_repo_type, **push_kwargs)
        return save_directory

    def push_to_hub(self, repo_id: str, **push_kwargs):
        """Save to a temporary folder and upload it to `repo_id` in one commit (see [`push_folder`])."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return push_folder(tmp, repo_id, repo_type=self.hub_repo_type, **push_kwargs)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None, **kwargs
    ):
        """Load from a local folder (tried first) or a Hub repo (see [`resolve_folder`] for the errors). A local folder
        that a save left half-made (killed) is first rolled back to the save before it."""
        from .transactions import recover_before_loading

        recover_before_loading(name_or_path)
        folder = resolve_folder(
            name_or_path,
            repo_type=cls.hub_repo_type,
            revision=revision,
            token=token,
            allow_patterns=cls.hub_files,
        )
        return cls._load_files(folder, **kwargs)
