"""`hf-ext seal-rank`: fine-tune with SEAL's bilevel data ranker and save one score per fine-tuning example.

```bash
hf-ext seal-rank --config trainers/seal.yaml
hf-ext seal-rank --num_processes 2 --config trainers/seal.yaml        # under `accelerate launch`
```

The options are the fields of [`SEALRankArguments`], [`~hf_ext.seal.SEALConfig`] and TRL's `ModelConfig`
(`--config recipe.yaml` and `--any_field value`, as with `trl sft`); the model and both datasets are required.
Fixture ids (`hf-ext-testing/seal-aligned`, `hf-ext-testing/seal-planted-safe` / `-finetune`, see
`hf_ext.testing`) are built offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_ext.scripts.utils import (
    CommandError,
    dataclass_parser,
    launch_or_run,
    load_any_dataset,
    parse_dataclasses,
    run_command,
)


__all__ = ["HELP", "SEALRankArguments", "main", "make_parser", "seal_rank"]

NAME = "seal-rank"
HELP = "SEAL: fine-tune with a bilevel data ranker and save one score per fine-tuning example"


@dataclass
class SEALRankArguments:
    """What `hf-ext seal-rank` reads and writes, besides the `SEALConfig` and TRL's `ModelConfig`."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "The fine-tuning set to rank, required: a Hub id, a local folder or a .json/.jsonl/.parquet file."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The fine-tuning set's configuration."})
    dataset_train_split: str = field(default="train", metadata={"help": "The fine-tuning set's split."})
    safe_dataset_config: str | None = field(default=None, metadata={"help": "The safe set's configuration."})
    safe_dataset_split: str = field(default="train", metadata={"help": "The safe set's split."})
    scores_dir: str | None = field(
        default=None, metadata={"help": "Where to save the scores (default: <output_dir>/seal_scores)."}
    )
    scores_repo_id: str | None = field(default=None, metadata={"help": "Also push the scores to this Hub repo."})


def seal_rank(script_args: SEALRankArguments, args, model_args) -> int:
    """Train the ranker and save the model and the scores; returns the exit status."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    from hf_ext.seal.trainer import SEALTrainer
    from hf_ext.testing import resolve_model_name_or_path

    if args.safe_dataset_name is None:
        raise CommandError("--safe_dataset_name is required: the safe / aligned reference set")
    if model_args.model_name_or_path is None:
        raise CommandError("--model_name_or_path is required")
    if script_args.dataset_name is None:
        raise CommandError("--dataset_name is required: the fine-tuning set to rank")
    train_dataset = load_any_dataset(
        script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split
    )
    safe_dataset = load_any_dataset(
        args.safe_dataset_name, script_args.safe_dataset_config, script_args.safe_dataset_split
    )
    path = resolve_model_name_or_path(model_args.model_name_or_path)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from hf_ext.quantization import load_quantized

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


def make_parser():
    """The parser of `hf-ext seal-rank`."""
    from trl import ModelConfig

    from hf_ext.seal.config import SEALConfig

    return dataclass_parser(NAME, HELP, (SEALRankArguments, SEALConfig, ModelConfig))


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext seal-rank [--num_processes N | --accelerate_config FILE] OPTIONS`; returns the exit status."""

    def run(rest: list[str]) -> int:
        return run_command(NAME, lambda: seal_rank(*parse_dataclasses(make_parser(), rest)))

    return launch_or_run(NAME, "hf_ext.scripts.seal_rank", argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
