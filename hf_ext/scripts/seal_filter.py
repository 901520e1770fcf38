"""`hf-ext seal-filter`: keep the top p of a dataset by its SEAL scores, with a dataset card and a histogram.

```bash
hf-ext seal-filter --config processors/seal_filter.yaml
hf-ext seal-filter --scores out/seal_scores --dataset_name data.jsonl --keep_ratio 0.8 --output_dir kept
```

The scores and the dataset are tried as local paths first, then as Hub repos. `output_dir` must be absent or empty,
or `--overwrite_output_dir` given; it is written all at once (a failed run leaves it as it was).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_ext._validation import check_range
from hf_ext.scripts.utils import (
    CommandError,
    check_output,
    dataclass_parser,
    load_any_dataset,
    parse_dataclasses,
    run_command,
)


__all__ = ["HELP", "SEALFilterArguments", "main", "make_parser", "seal_filter"]

NAME = "seal-filter"
HELP = "SEAL: keep the top p of a dataset by its SEAL scores (Dataset / DatasetDict), with a dataset card"


@dataclass
class SEALFilterArguments:
    """Options of `hf-ext seal-filter`."""

    scores: str | None = field(
        default=None,
        metadata={"help": "The SEAL scores, required: the folder `hf-ext seal-rank` wrote, or a Hub dataset repo."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "The dataset to filter, required: a local folder or .json / .jsonl / .parquet / .csv file, or a "
            "Hub id."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    split: str | None = field(default=None, metadata={"help": "One split to filter (default: every split)."})
    keep_ratio: float = field(default=0.8, metadata={"help": "The fraction p to keep, in (0, 1]."})
    output_dir: str = field(default="seal-filtered", metadata={"help": "Where the filtered dataset and its card go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the content of a non-empty output_dir (refused without it)."}
    )
    allow_missing: bool = field(default=False, metadata={"help": "Drop rows without a score instead of failing."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for hashing and filtering."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the filtered dataset to this repo."})

    def __post_init__(self):
        for name in ("scores", "dataset_name"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required.")
        check_range("keep_ratio", self.keep_ratio, gt=0, le=1)


def seal_filter(filter_args: SEALFilterArguments) -> int:
    """Filter the dataset by its scores and save it with a card and a histogram; returns the exit status."""
    import datasets

    from hf_ext.plotting import figure, save_figure
    from hf_ext.seal.filtering import SEALScores
    from hf_ext.seal.filtering import seal_filter as filter_by_scores
    from hf_ext.serialization import atomic_directory

    check_output(filter_args.output_dir, filter_args.overwrite_output_dir)
    try:  # a local folder first, then a Hub dataset repo (see `hf_ext.hub.resolve_folder`)
        scores = SEALScores.from_pretrained(filter_args.scores)
    except (OSError, ValueError) as error:  # a missing folder, not a scores folder, an unknown repo: one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"cannot load SEAL scores from scores={filter_args.scores!r}: {first_line}") from None
    dataset = load_any_dataset(filter_args.dataset_name, filter_args.dataset_config, filter_args.split)
    try:
        kept = filter_by_scores(
            dataset,
            scores,
            filter_args.keep_ratio,
            allow_missing=filter_args.allow_missing,
            num_proc=filter_args.num_proc,
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    if isinstance(dataset, datasets.DatasetDict):
        kept_counts = {split: len(kept[split]) for split in kept}
        dropped_counts = {split: len(dataset[split]) - len(kept[split]) for split in kept}
    else:
        kept_counts, dropped_counts = len(kept), len(dataset) - len(kept)
    card = scores.dataset_card(
        filter_args.keep_ratio, kept=kept_counts, dropped=dropped_counts, source_dataset=filter_args.dataset_name
    )
    output_dir = Path(filter_args.output_dir)
    with atomic_directory(output_dir, overwrite=filter_args.overwrite_output_dir) as staging:
        _save_quietly(kept, staging, rows=sum(kept_counts.values()) if isinstance(kept_counts, dict) else kept_counts)
        card.save(str(staging / "README.md"))
        fig, ax = figure()
        ax.hist(scores.scores.numpy(), bins=30, color="tab:blue")
        threshold = card.data.to_dict()["hf_ext"]["config"]
        ax.set_title(f"SEAL scores (keep p = {filter_args.keep_ratio}: {threshold['kept']} kept)")
        ax.set_xlabel("score")
        ax.set_ylabel("examples")
        save_figure(fig, staging / "seal_scores.png")
    print(f"Kept {kept_counts} rows, dropped {dropped_counts}; saved to {output_dir}.")
    if filter_args.push_to_hub:
        kept.push_to_hub(filter_args.push_to_hub)
    return 0


QUIET_SAVE_ROWS = 100_000
"""Datasets with fewer rows are saved without `save_to_disk`'s progress bar (a fraction of a second of work, which
`datasets` shows a bar for whatever the delay of the command's bars)."""


def _save_quietly(dataset, folder: Path, rows: int) -> None:
    import datasets

    quiet = rows < QUIET_SAVE_ROWS and not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        dataset.save_to_disk(str(folder))
    finally:
        if quiet:
            datasets.enable_progress_bars()


def make_parser():
    """The parser of `hf-ext seal-filter`."""
    return dataclass_parser(NAME, HELP, (SEALFilterArguments,))


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext seal-filter OPTIONS`; returns the exit status."""
    return run_command(NAME, lambda: seal_filter(*parse_dataclasses(make_parser(), argv)))


if __name__ == "__main__":
    raise SystemExit(main())
