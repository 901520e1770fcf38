"""Checks of what a user gives together with a model: a tokenizer that fits its embeddings, dataset columns
without missing values. Each raises a `ValueError` naming what was given and what was expected, before any
expensive work (tokenizing a dataset, a training step) starts.
"""

from __future__ import annotations

from collections.abc import Iterable


__all__ = [
    "check_no_missing_values",
    "check_tokenizer_fits",
    "embedding_rows",
    "safetensors_load_error",
    "token_id_bound",
]

# Rows of an IterableDataset inspected for missing values (a stream cannot be scanned whole before training).
_STREAM_ROWS = 64


def token_id_bound(tokenizer) -> int:
    """One more than the largest token id `tokenizer` can produce (its added tokens included)."""
    vocab = tokenizer.get_vocab()
    return max(max(vocab.values(), default=-1) + 1, len(tokenizer))


def embedding_rows(model) -> int | None:
    """How many token ids `model` can embed and predict: the rows of its input embeddings and of its output head
    (the smaller), or `None` when it exposes neither."""
    rows = []
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is None:
            continue
        count = getattr(module, "num_embeddings", None) or getattr(module, "out_features", None)
        weight = getattr(module, "weight", None)
        if count is None and weight is not None and weight.ndim == 2:
            count = weight.shape[0]
        if count is not None:
            rows.append(int(count))
    return min(rows) if rows else None


def check_tokenizer_fits(
    tokenizer,
    model,
    *,
    tokenizer_name: str = "processing_class",
    model_name: str = "model",
    rows: int | None = None,
) -> None:
    """Raise `ValueError` when `tokenizer` can produce a token id that `model` cannot embed or predict.

    A tokenizer smaller than the embedding matrix is fine (embedding matrices are often padded, e.g. to a multiple of
    64); only ids beyond the matrix are an error (they fail deep in torch with `index out of range in self`).

    Args:
        tokenizer: A tokenizer, or a processor holding one as `.tokenizer`.
        model: The model (its embeddings are measured), or its name when `rows` is given.
        tokenizer_name, model_name (`str`): What the message calls them (the user's argument names).
        rows (`int`, *optional*): The number of embedding rows, when `model` is not loaded (e.g. from its config).
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a ProcessorMixin holds its text tokenizer
    rows = embedding_rows(model) if rows is None else rows
    if rows is None or tokenizer is None:
        return
    bound = token_id_bound(tokenizer)
    if bound > rows:
        source = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        model_source = model if isinstance(model, str) else None
        model_source = model_source or getattr(getattr(model, "config", None), "_name_or_path", None)
        raise ValueError(
            f"The {tokenizer_name} ({source}) produces token ids up to {bound - 1}, but the {model_name} "
            f"({model_source or type(model).__name__}) embeds only {rows} tokens (ids 0..{rows - 1}): the tokenizer "
            "does not belong to this model. Pass the model's own tokenizer, or call "
            "model.resize_token_embeddings(len(tokenizer)) after adding tokens to it."
        )


def check_no_missing_values(dataset, columns: Iterable[str], name: str = "train_dataset") -> None:
    """Raise `ValueError` naming the column and the first row where one of `columns` holds a missing value (`None`).

    A `datasets.Dataset` is checked whole from its Arrow null counts (no row is decoded unless one is missing); an
    `IterableDataset` is checked on its first rows.
    """
    from datasets import Dataset

    columns = [c for c in columns if c in (getattr(dataset, "column_names", None) or columns)]
    if isinstance(dataset, Dataset):
        table = dataset.data
        for column in columns:
            if table.column(column).null_count == 0:  # no null anywhere in the table, so none in this view
                continue
            for row, value in enumerate(dataset[column]):
                if value is None:
                    _raise_missing(name, column, row)
        return
    for row, example in zip(range(_STREAM_ROWS), dataset):
        for column in columns:
            if column in example and example[column] is None:
                _raise_missing(name, column, row)


def _raise_missing(name: str, column: str, row: int):
    raise ValueError(
        f"{name} column {column!r} has a missing value (None) at row {row}; expected a value in every row. Drop or "
        f"fill such rows first, e.g. {name}.filter(lambda example: example[{column!r}] is not None)."
    )


def safetensors_load_error(name_or_path, error: Exception, *, subfolder: str = "") -> ValueError:
    """The error to raise when loading the checkpoint `name_or_path` failed with safetensors' own error (a
    `SafetensorError`, e.g. "incomplete metadata, file not fully covered", which names no file): it names the
    truncated or corrupt `.safetensors` file of the checkpoint's folder (a local folder, or a Hub repo's copy in the
    cache), and says to write or download it again.
    """
    import os
    from pathlib import Path

    from .serialization import open_safetensors

    folder = Path(os.fspath(name_or_path)).expanduser() / subfolder
    if not folder.is_dir():  # a Hub id: its files in the Hub cache, if any
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(name_or_path), local_files_only=True)) / subfolder
        except Exception:  # not cached, or not a repo id: nothing more to name than the checkpoint
            folder = None
    for file in sorted(folder.glob("*.safetensors")) if folder is not None and folder.is_dir() else ():
        try:
            with open_safetensors(file):
                pass
        except ValueError as named:  # names the file
            return ValueError(f"Cannot load the checkpoint {str(name_or_path)!r}: {named}")
    return ValueError(
        f"Cannot load the checkpoint {str(name_or_path)!r}: one of its safetensors files cannot be read ({error}). A "
        "file is truncated or corrupt (an interrupted download or copy?); write or download it again."
    )
