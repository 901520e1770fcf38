"""`hf-ext seal-rank` (train the ranker, save the scores) and `hf-ext seal-filter` (filter a dataset with them).

```bash
hf-ext seal-rank --config trainers/seal.yaml
hf-ext seal-filter --config processors/seal_filter.yaml
```

Both parse dataclasses with `TrlParser`, so `--config recipe.yaml` and `--any_field value` work as with `trl sft`.
Offline names: the model `hf-ext-testing/seal-aligned` (the planted task's aligned tiny model) and the datasets
`hf-ext-testing/seal-planted-safe` / `hf-ext-testing/seal-planted-finetune` are built on the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..cli import CommandError, DataclassCommand


PLANTED_PREFIX = "hf-ext-testing/seal-"


@dataclass
class SEALRankArguments:
    """What `hf-ext seal-rank` reads and writes, besides the `SEALConfig` and TRL's `ModelConfig`."""

    dataset_name: str = field(
        default="hf-ext-testing/seal-planted-finetune",
        metadata={"help": "The fine-tuning set to rank: a Hub id, a local folder or a .json/.jsonl/.parquet file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The fine-tuning set's configuration."})
    dataset_train_split: str = field(default="train", metadata={"help": "The fine-tuning set's split."})
    safe_dataset_config: str | None = field(default=None, metadata={"help": "The safe set's configuration."})
    safe_dataset_split: str = field(default="train", metadata={"help": "The safe set's split."})
    scores_dir: str | None = field(
        default=None, metadata={"help": "Where to save the scores (default: <output_dir>/seal_scores)."}
    )
    scores_repo_id: str | None = field(default=None, metadata={"help": "Also push the scores to this Hub repo."})


@dataclass
class SEALFilterArguments:
    """Options of `hf-ext seal-filter`."""

    scores: str = field(
        default="seal-output/seal_scores", metadata={"help": "The SEAL scores: a folder or a Hub dataset repo."}
    )
    dataset_name: str = field(
        default="hf-ext-testing/seal-planted-finetune",
        metadata={"help": "The dataset to filter: a Hub id, a local folder or a .json/.jsonl/.parquet file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    split: str | None = field(default=None, metadata={"help": "One split to filter (default: every split)."})
    keep_ratio: float = field(default=0.8, metadata={"help": "The fraction p to keep, in (0, 1]."})
    output_dir: str = field(default="seal-filtered", metadata={"help": "Where the filtered dataset and its card go."})
    allow_missing: bool = field(default=False, metadata={"help": "Drop rows without a score instead of failing."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for hashing and filtering."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the filtered dataset to this repo."})

    def __post_init__(self):
        if not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio={self.keep_ratio} must be in (0, 1].")


def load_any_dataset(name: str, config: str | None = None, split: str | None = None):
    """A dataset by Hub id, local folder (`save_to_disk`), local data file, or planted-task name."""
    import datasets

    if name.startswith(PLANTED_PREFIX):
        from .planted import planted_datasets

        kind = name[len(PLANTED_PREFIX) :]
        if kind not in ("planted-safe", "planted-finetune"):
            raise CommandError(f"unknown planted dataset {name!r}; expected {PLANTED_PREFIX}planted-safe or -finetune")
        safe, finetune = planted_datasets()
        dataset = safe if kind == "planted-safe" else finetune
        return dataset if split is not None else datasets.DatasetDict({"train": dataset})
    path = Path(name)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = datasets.load_from_disk(str(path))
        if split is not None and isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        return dataset
    if path.is_file():
        builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise CommandError(f"cannot read {name}: expected a .json, .jsonl, .parquet or .csv file")
        return datasets.load_dataset(builder, data_files=str(path), split=split)
    return datasets.load_dataset(name, config, split=split)


def _resolve_model(name: str) -> str:
    if name == f"{PLANTED_PREFIX}aligned":
        from .planted import aligned_model_dir

        return str(aligned_model_dir())
    from ..testing import resolve_model_name_or_path

    return resolve_model_name_or_path(name)


def _seal_rank(script_args: SEALRankArguments, args, model_args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    from .trainer import SEALTrainer

    if args.safe_dataset_name is None:
        raise CommandError("--safe_dataset_name is required: the safe / aligned reference set")
    if model_args.model_name_or_path is None:
        raise CommandError("--model_name_or_path is required")
    train_dataset = load_any_dataset(
        script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split
    )
    safe_dataset = load_any_dataset(
        args.safe_dataset_name, script_args.safe_dataset_config, script_args.safe_dataset_split
    )
    path = _resolve_model(model_args.model_name_or_path)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from ..quantization import load_quantized

        model = load_quantized(
            path,
            bits=4 if model_args.load_in_4bit else 8,
            quant_type=model_args.bnb_4bit_quant_type,
            double_quant=model_args.use_bnb_nested_quant,
            prepare_for_training=True,
            gradient_checkpointing=args.gradient_checkpointing,
        )
        if not model_args.use_peft:
            raise CommandError("a 4-bit / 8-bit model needs adapters: add --use_peft (QLoRA)")
    else:
        dtype = model_args.dtype if model_args.dtype not in (None, "auto") else None
        model = AutoModelForCausalLM.from_pretrained(path, revision=model_args.model_revision, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    try:
        trainer = SEALTrainer(
            model,
            args=args,
            train_dataset=train_dataset,
            safe_dataset=safe_dataset,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    scores = trainer.scores()
    if trainer.args.should_save:
        scores_dir = Path(script_args.scores_dir or os.path.join(args.output_dir, "seal_scores"))
        scores.save_pretrained(scores_dir)
        kept = scores.num_kept(args.keep_ratio)
        print(f"SEAL scores of {len(scores)} examples saved to {scores_dir}; p = {args.keep_ratio} keeps {kept}.")
        if script_args.scores_repo_id:
            scores.push_to_hub(script_args.scores_repo_id)
    return 0


def _seal_filter(filter_args: SEALFilterArguments) -> int:
    import datasets

    from ..plotting import figure, save_figure
    from .selection import SEALScores, seal_filter

    try:
        scores = SEALScores.from_pretrained(filter_args.scores)
    except Exception as error:  # a missing folder, an unknown repo, no network: one line, no traceback
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"cannot load SEAL scores from {filter_args.scores!r}: {first_line}") from None
    dataset = load_any_dataset(filter_args.dataset_name, filter_args.dataset_config, filter_args.split)
    try:
        kept = seal_filter(
            dataset,
            scores,
            filter_args.keep_ratio,
            allow_missing=filter_args.allow_missing,
            num_proc=filter_args.num_proc,
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    output_dir = Path(filter_args.output_dir)
    kept.save_to_disk(str(output_dir))
    if isinstance(dataset, datasets.DatasetDict):
        kept_counts = {split: len(kept[split]) for split in kept}
        dropped_counts = {split: len(dataset[split]) - len(kept[split]) for split in kept}
    else:
        kept_counts, dropped_counts = len(kept), len(dataset) - len(kept)
    card = scores.dataset_card(
        filter_args.keep_ratio, kept=kept_counts, dropped=dropped_counts, source_dataset=filter_args.dataset_name
    )
    card.save(str(output_dir / "README.md"))
    fig, ax = figure()
    ax.hist(scores.scores.numpy(), bins=30, color="tab:blue")
    threshold = card.data.to_dict()["hf_ext"]["config"]
    ax.set_title(f"SEAL scores (keep p = {filter_args.keep_ratio}: {threshold['kept']} kept)")
    ax.set_xlabel("score")
    ax.set_ylabel("examples")
    save_figure(fig, output_dir / "seal_scores.png")
    print(f"Kept {kept_counts} rows, dropped {dropped_counts}; saved to {output_dir}.")
    if filter_args.push_to_hub:
        kept.push_to_hub(filter_args.push_to_hub)
    return 0


def _rank_types():
    from trl import ModelConfig

    from .config import SEALConfig

    return (SEALRankArguments, SEALConfig, ModelConfig)


def get_commands():
    return [
        DataclassCommand(
            "seal-rank",
            "SEAL: fine-tune with a bilevel data ranker and save one score per fine-tuning example",
            _rank_types,
            _seal_rank,
        ),
        DataclassCommand(
            "seal-filter",
            "SEAL: keep the top p of a dataset by its SEAL scores (Dataset / DatasetDict), with a dataset card",
            lambda: (SEALFilterArguments,),
            _seal_filter,
        ),
    ]
