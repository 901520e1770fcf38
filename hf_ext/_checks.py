"""Checks of what a user gives together with a model: a tokenizer that fits its embeddings, dataset columns
without missing values, empty texts or chat messages a template cannot render, a checkpoint that holds every weight
its config needs (and a truncated safetensors file named). Each raises a `ValueError` naming what was given and what
was expected, before any expensive work (loading weights, tokenizing a dataset, a training step) starts.
"""

from __future__ import annotations

from collections.abc import Iterable


__all__ = [
    "check_chat_messages",
    "check_checkpoint_weights",
    "check_loading_info",
    "check_no_empty_texts",
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


def _shown_rows(rows: list[int], total: int | None) -> str:
    """`row 3`, or `rows 1, 3, 8, ... (12 of 400 rows)`."""
    shown = ", ".join(str(row) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
    if len(rows) == 1:
        return f"row {shown}"
    if total is None:
        return f"rows {shown} ({len(rows)} among the first {_STREAM_ROWS} rows of the stream)"
    return f"rows {shown} ({len(rows)} of {total} rows)"


def _arrow_column(dataset, column: str):
    """The column of a `datasets.Dataset` (of its view: `select`, `shuffle`, ...) as a pyarrow `ChunkedArray`."""
    return dataset.with_format("arrow")[column]


def _column_values(dataset, column: str):
    """`(row, value)` of every row of a `Dataset` or a list of examples, or of the first rows of an
    `IterableDataset`."""
    from datasets import Dataset

    if isinstance(dataset, Dataset):
        return enumerate(dataset[column])
    if isinstance(dataset, (list, tuple)):
        return ((row, example.get(column)) for row, example in enumerate(dataset))
    return ((row, example.get(column)) for row, example in zip(range(_STREAM_ROWS), dataset))


def _num_rows(dataset) -> int | None:
    """The number of rows, `None` for a stream."""
    from datasets import Dataset

    return len(dataset) if isinstance(dataset, (Dataset, list, tuple)) else None


def _message_text(message) -> str | None:
    """The text of a chat message's content: a string, or the text parts of a list of parts (`None` when the content
    holds a part that is not text, e.g. an image, which is not empty)."""
    content = message.get("content") if hasattr(message, "get") else None
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content if isinstance(content, (list, tuple)) else ():
        if not hasattr(part, "get") or part.get("type", "text") != "text":
            return None
        texts.append(part.get("text") or "")
    return "".join(texts)


def _is_empty(value, last_message: bool) -> bool:
    """Whether a text, or a list of chat messages (their last one with `last_message`), holds no visible text."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        messages = list(value)[-1:] if last_message else list(value)
        texts = [_message_text(message) for message in messages]
        return all(text is not None and not text.strip() for text in texts)
    return False


def check_no_empty_texts(
    dataset, columns: Iterable[str], name: str = "train_dataset", *, last_message: bool = False, what: str = "text"
) -> None:
    """Raise `ValueError` naming the column and the rows where one of `columns` holds an empty or whitespace-only
    text, which would be tokenized to nothing (or to special tokens only) and trained on or scored silently.

    A value is a string, or a list of chat messages (empty when none of them has text content; with `last_message`,
    when the last one, the answer, has none). A `datasets.Dataset` is checked whole (strings with pyarrow, without
    decoding a row), and so is a list of examples; an `IterableDataset` on its first rows.

    Args:
        dataset: A `datasets.Dataset`, an `IterableDataset` or a list of examples (dicts).
        columns: The columns to check (those the dataset lacks are skipped).
        name (`str`): What the message calls the dataset (the user's argument name).
        last_message (`bool`, *optional*, defaults to `False`): For chat messages, check the last message only.
        what (`str`, *optional*, defaults to `"text"`): What the message calls a value (e.g. `"answer"`).
    """
    from datasets import Dataset

    names = getattr(dataset, "column_names", None)
    for column in [c for c in columns if names is None or c in names]:
        rows, text = None, False
        if isinstance(dataset, Dataset):
            import pyarrow as pa
            import pyarrow.compute as pc

            values = _arrow_column(dataset, column)
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), False)
                rows, text = empty.to_numpy(zero_copy_only=False).nonzero()[0].tolist(), True
            elif (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)) and len(values):
                flat = pc.list_flatten(values)
                if (
                    pc.min(pc.list_value_length(values)).as_py()  # every row has a message
                    and pa.types.is_struct(flat.type)
                    and flat.type.get_field_index("content") >= 0
                    and pa.types.is_string(flat.type.field("content").type)
                    and pc.struct_field(flat, "content").null_count == 0
                    and not pc.any(pc.equal(pc.utf8_trim_whitespace(pc.struct_field(flat, "content")), "")).as_py()
                ):
                    rows = []  # text in every message of every row: no row to decode
        if rows is None:
            found = [(row, value) for row, value in _column_values(dataset, column) if _is_empty(value, last_message)]
            rows, text = [row for row, _ in found], bool(found) and isinstance(found[0][1], str)
        if rows:
            total = _num_rows(dataset)
            if text:
                kind = "'' or whitespace only"
                fix = f", e.g. {name}.filter(lambda example: example[{column!r}].strip() != '')"
            else:
                kind = "its last message has no text" if last_message else "its messages have no text"
                fix = ""
            raise ValueError(
                f"{name} column {column!r} holds an empty {what} ({kind}) at {_shown_rows(rows, total)}: there is "
                f"nothing there to learn or score. Drop or fill such rows first{fix}."
            )


def check_chat_messages(dataset, columns: Iterable[str], name: str = "train_dataset") -> None:
    """Raise `ValueError` naming the column, the row and the message where a list of chat messages in one of
    `columns` holds a message that a chat template cannot render: not a mapping, no string `role`, or a `content` of
    `None` (allowed only beside `tool_calls`). Without this check, a chat template fails deep in jinja
    (`'dict object' has no attribute 'content'`), naming no row.

    Columns whose values are not lists (plain text) are skipped. A `datasets.Dataset` is checked whole (from pyarrow
    null counts; no row is decoded unless one is missing), and so is a list of examples; an `IterableDataset` on its
    first rows.
    """
    from datasets import Dataset

    names = getattr(dataset, "column_names", None)
    for column in [c for c in columns if names is None or c in names]:
        if isinstance(dataset, Dataset):
            import pyarrow as pa
            import pyarrow.compute as pc

            values = _arrow_column(dataset, column)
            if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
                continue
            flat = pc.list_flatten(values)
            if pa.types.is_struct(flat.type) and flat.null_count == 0:
                fields = {flat.type.field(i).name for i in range(flat.type.num_fields)}
                if {"role", "content"} <= fields and all(
                    pc.struct_field(flat, field).null_count == 0 for field in ("role", "content")
                ):
                    continue  # every message has a role and a content
        for row, messages in _column_values(dataset, column):
            if not isinstance(messages, (list, tuple)):
                continue
            for index, message in enumerate(messages):
                problem = None
                if not hasattr(message, "get"):
                    problem = f"is a {type(message).__name__}, not a mapping with 'role' and 'content'"
                elif not isinstance(message.get("role"), str):
                    problem = f"has role {message.get('role')!r}; expected a string such as 'user' or 'assistant'"
                elif message.get("content") is None and not message.get("tool_calls"):
                    problem = f"(role {message['role']!r}) has content None; expected a string (or a list of parts)"
                if problem:
                    raise ValueError(
                        f"{name} column {column!r}, row {row}, message {index} {problem}. A chat template cannot "
                        "render it; fill it in or drop the row first."
                    )


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


def check_loading_info(
    loading_info: dict, name_or_path, model_class: str, *, expected_missing: Iterable[str] = ()
) -> None:
    """Raise `ValueError` when `from_pretrained(..., output_loading_info=True)` reports weights missing from the
    checkpoint `name_or_path`: transformers initialises them at random and only logs it, so a `config.json` that
    describes more than the weights hold (a layer added, a size changed) trains from noise without an error.

    Args:
        loading_info (`dict`): What `from_pretrained` returned with `output_loading_info=True` (its `missing_keys` are
            already those the model does not declare optional, `_keys_to_ignore_on_load_missing`).
        name_or_path: The checkpoint, as the user named it.
        model_class (`str`): The class it was loaded into.
        expected_missing (`Iterable[str]`, *optional*): Regular expressions of weights that are meant to start fresh
            (e.g. a value head or a new classifier), searched in each missing key.
    """
    import re

    patterns = [re.compile(pattern) for pattern in expected_missing]
    missing = sorted(key for key in loading_info.get("missing_keys") or () if not any(p.search(key) for p in patterns))
    if missing:
        shown = ", ".join(missing[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6 else "")
        raise ValueError(
            f"The checkpoint {str(name_or_path)!r} lacks {len(missing)} weight(s) that {model_class}, as its "
            f"config.json describes it, needs: {shown}. transformers would initialise them at random and training "
            "would start from noise there. Its config.json does not match its weights (a layer added, a size "
            "changed?): use the config.json saved with these weights. To train such a model on purpose, load it "
            "yourself and pass the model object."
        )


def check_checkpoint_weights(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """Before a model named by `name_or_path` is loaded for training: raise `ValueError` (see [`check_loading_info`])
    when its checkpoint lacks weights that the model its `config.json` describes needs.

    The model is built on the `meta` device (no weight is read or allocated), with the architecture TRL's trainers
    load (`config.architectures[0]`, else `AutoModelForCausalLM`). A checkpoint that cannot be loaded that way (an
    adapter folder, a quantized or remote-code checkpoint the meta device does not take) is left to the real loading,
    which reports its own errors.
    """
    import transformers
    from transformers.utils import logging as hf_logging

    try:
        config = transformers.AutoConfig.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError):
        return
    architecture = getattr(transformers, (config.architectures or [""])[0], None) or transformers.AutoModelForCausalLM
    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the real loading logs its report
    hf_logging.disable_progress_bar()
    try:
        _, loading_info = architecture.from_pretrained(
            name_or_path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device_map="meta",
            output_loading_info=True,
            use_kernels=False,  # transformers >= 5.25 kernelizes by default where `kernels` is installed: not on meta
        )
    except Exception:  # noqa: BLE001 - e.g. a quantization config the meta device does not take: left to the real load
        return
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    check_loading_info(loading_info, name_or_path, architecture.__name__)
