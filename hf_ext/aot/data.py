"""Data for AOT: dataset formats and their checks, and the collator.

[`~hf_ext.aot.AOTTrainer`] takes the two preference formats of TRL:

- **paired** (as `DPOTrainer`): `prompt` / `chosen` / `rejected` (or `chosen` / `rejected` with an implicit
  prompt), standard or conversational;
- **unpaired** (as `KTOTrainer`): `prompt` / `completion` / `label`, with `label` a bool (`True` for a desirable
  completion), standard or conversational.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin

from .._checks import check_chat_messages, check_no_empty_texts, check_no_missing_values


__all__ = [
    "DataCollatorForAOT",
    "dataset_format",
    "validate_preference_dataset",
]

PAIRED_COLUMNS = ("chosen", "rejected")
PAIRED_TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
UNPAIRED_COLUMNS = ("prompt", "completion", "label")
UNPAIRED_TOKENIZED_COLUMNS = ("prompt_ids", "completion_ids", "label")


def _column_names(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if names is None:  # an IterableDataset whose features are unknown
        names = list(next(iter(dataset)).keys())
    return list(names)


def dataset_format(dataset) -> str | None:
    """`"paired"`, `"unpaired"`, or `None` when the columns match neither format."""
    columns = set(_column_names(dataset))
    if set(PAIRED_COLUMNS) <= columns or set(PAIRED_TOKENIZED_COLUMNS) <= columns:
        return "paired"
    if set(UNPAIRED_COLUMNS) <= columns or set(UNPAIRED_TOKENIZED_COLUMNS) <= columns:
        return "unpaired"
    return None


def validate_preference_dataset(dataset, name: str = "train_dataset", aot_variant: str | None = None) -> str:
    """Check a preference dataset before any expensive work; returns its format (`"paired"` or `"unpaired"`).

    Raises `ValueError` naming the dataset and what is wrong: no rows, missing columns, a missing value (`None`) in
    one of the format's columns (naming the column and the row), a chat message a template cannot render (`content`
    `None`; naming the row and the message), an empty or whitespace-only answer (`chosen`, `rejected` or
    `completion`; naming the column and the rows), `chosen == rejected` in every row (no preference to learn), a
    `label` column that does not hold booleans, or an unpaired dataset given to `aot_variant="paired"`. A few rows
    with `chosen == rejected` are a `UserWarning` that counts them. A `datasets.Dataset` is checked whole; an
    `IterableDataset` on its first rows.
    """
    from datasets import Dataset, IterableDataset

    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"{name} must be a datasets.Dataset or IterableDataset; got {type(dataset).__name__}.")
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"{name} is empty; expected at least one preference example.")
    if isinstance(dataset, IterableDataset) and next(iter(dataset), None) is None:
        raise ValueError(f"{name} is empty; expected at least one preference example.")
    columns = _column_names(dataset)
    kind = dataset_format(dataset)
    if kind is None:
        raise ValueError(
            f"{name} has columns {columns}, which match no preference format; expected paired columns "
            f"{list(PAIRED_COLUMNS)} (with an optional 'prompt') or unpaired columns {list(UNPAIRED_COLUMNS)}."
            + _missing_hint(columns)
        )
    format_columns = dict.fromkeys(("prompt", *PAIRED_COLUMNS, *PAIRED_TOKENIZED_COLUMNS, *UNPAIRED_TOKENIZED_COLUMNS))
    check_no_missing_values(dataset, [c for c in (*format_columns, "completion") if c in columns], name)
    answers = [c for c in ("chosen", "rejected", "completion") if c in columns]
    check_chat_messages(dataset, [c for c in ("prompt", *answers) if c in columns], name)
    # The answer is the last message of a conversational one (with an implicit prompt, the conversation's last turn).
    check_no_empty_texts(dataset, answers, name, last_message=True, what="answer")
    if kind == "paired" and set(PAIRED_COLUMNS) <= set(columns):
        _check_preferences_differ(dataset, name)
    if kind == "unpaired":
        _check_labels(dataset, name)
        if aot_variant == "paired":
            raise ValueError(
                f"aot_variant='paired' needs paired data (prompt / chosen / rejected), but {name} is unpaired "
                "(prompt / completion / label); set aot_variant='unpaired'."
            )
    return kind


def _equal_answer_rows(dataset) -> tuple[list[int], int]:
    """The rows where `chosen == rejected`, and how many rows were compared (a stream: its first rows)."""
    from datasets import Dataset

    from .._checks import _STREAM_ROWS

    if not isinstance(dataset, Dataset):
        examples = [example for _, example in zip(range(_STREAM_ROWS), dataset)]
        return [i for i, example in enumerate(examples) if example["chosen"] == example["rejected"]], len(examples)
    import pyarrow as pa
    import pyarrow.compute as pc

    view = dataset.with_format("arrow")
    chosen, rejected = view["chosen"], view["rejected"]
    if chosen.type == rejected.type and (pa.types.is_string(chosen.type) or pa.types.is_large_string(chosen.type)):
        equal = pc.fill_null(pc.equal(chosen, rejected), False).to_numpy(zero_copy_only=False)
        return equal.nonzero()[0].tolist(), len(dataset)
    pairs = zip(dataset["chosen"], dataset["rejected"])  # conversational: lists of messages
    return [row for row, (good, bad) in enumerate(pairs) if good == bad], len(dataset)


def _check_preferences_differ(dataset, name: str) -> None:
    """`chosen == rejected` in every row is an error (nothing to prefer: every margin is 0 whatever the model); in
    some rows, a warning counting them."""
    from datasets import Dataset

    rows, total = _equal_answer_rows(dataset)
    if not rows:
        return
    shown = ", ".join(str(row) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
    whole = isinstance(dataset, Dataset)
    if whole and len(rows) == total:
        raise ValueError(
            f"{name} has chosen == rejected in every one of its {total} rows: there is no preference to learn (the "
            "margin of every pair is 0, whatever the model). Check that 'chosen' and 'rejected' hold the preferred "
            "and the dispreferred answer of each prompt."
        )
    among = f"of {total} rows" if whole else f"among the first {total} rows of the stream"
    warnings.warn(
        f"{name} has chosen == rejected in {len(rows)} {among} (rows {shown}): such a pair carries no preference "
        "(its margin is 0 whatever the model) and only dilutes the batches it is in. Drop them first, e.g. "
        f"{name}.filter(lambda example: example['chosen'] != example['rejected']).",
        UserWarning,
        stacklevel=3,
    )


def _missing_hint(columns: list[str]) -> str:
    present = set(columns)
    hints = []
    for expected in (("prompt", *PAIRED_COLUMNS), UNPAIRED_COLUMNS):
        overlap = present & set(expected)
        if overlap and len(overlap) < len(expected):
            missing = [c for c in expected if c not in present]
            hints.append(f" Missing column(s) {missing} for the format {list(expected)}.")
    return "".join(hints)


def _check_labels(dataset, name: str) -> None:
    from datasets import Dataset, Value

    feature = getattr(dataset, "features", None) or {}
    feature = feature.get("label") if hasattr(feature, "get") else None
    if isinstance(feature, Value) and feature.dtype == "bool":
        return
    values = dataset["label"] if isinstance(dataset, Dataset) else [row["label"] for _, row in zip(range(64), dataset)]
    for value in values:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            continue
        raise ValueError(
            f"{name} column 'label' must hold booleans (True for a desirable completion, False for an undesirable "
            f"one); found {value!r} of type {type(value).__name__}."
        )


def _pad(sequences: list[list[int]], value: int, pad_to_multiple_of: int | None) -> torch.Tensor:
    from trl.trainer.utils import pad

    return pad(
        [torch.tensor(s, dtype=torch.long) for s in sequences],
        padding_value=value,
        padding_side="right",
        pad_to_multiple_of=pad_to_multiple_of,
    )


@dataclass
class DataCollatorForAOT(DataCollatorMixin):
    """Collates tokenized preference examples of either format, padding on the right.

    - Paired examples (`prompt_ids`, `chosen_ids`, `rejected_ids`) are collated as TRL's
      `DataCollatorForPreference`: the first half of the batch holds the chosen sequences, the second half the
      rejected ones (with `ref_chosen_logps` / `ref_rejected_logps` when present).
    - Unpaired examples (`prompt_ids`, `completion_ids`, `label`) give one sequence each and a bool `label` tensor
      (with `ref_logps` when present); a batch may hold any mix of labels, all `True` or all `False` included.

    Both give `input_ids`, `attention_mask` and `completion_mask` (1 on the completion tokens).

    Args:
        pad_token_id (`int`): Token id used for padding.
        max_length (`int`, *optional*): Sequences are truncated to this length (keeping the start) before padding.
        pad_to_multiple_of (`int`, *optional*): Pad the length to a multiple of this value.
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "chosen_ids" in examples[0]:
            completions = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
            prompts = [e["prompt_ids"] for e in examples] * 2
        else:
            completions = [e["completion_ids"] for e in examples]
            prompts = [e["prompt_ids"] for e in examples]
        sequences = [p + c for p, c in zip(prompts, completions)]
        masks = [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)]
        if self.max_length is not None:
            sequences = [s[: self.max_length] for s in sequences]
            masks = [m[: self.max_length] for m in masks]
        output = {
            "input_ids": _pad(sequences, self.pad_token_id, self.pad_to_multiple_of),
            "attention_mask": _pad([[1] * len(s) for s in sequences], 0, self.pad_to_multiple_of),
            "completion_mask": _pad(masks, 0, self.pad_to_multiple_of),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps", "ref_logps"):
            if key in examples[0]:
                output[key] = torch.tensor([e[key] for e in examples])
        if "label" in examples[0]:
            output["label"] = torch.tensor([bool(e["label"]) for e in examples])
        return output
