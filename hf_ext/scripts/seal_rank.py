"""`hf-ext seal-rank`: fine-tune with SEAL's bilevel data ranker and save one score per fine-tuning example.

```bash
hf-ext seal-rank --config trainers/seal.yaml
hf-ext seal-rank --num_processes 2 --config trainers/seal.yaml        # under `accelerate launch`
```

The options are the fields of [`SEALRankArguments`], [`~hf_ext.seal.SEALConfig`] and TRL's `ModelConfig`
(`--config recipe.yaml` and `--any_field value`, as with `trl sft`); the model and both datasets are required.
Fixture ids (`hf-ext-testing/seal-aligned`, `hf-ext-testing/seal-planted-safe` / `-finetune`, see
`hf_ext.testing`) are built offline; other names are tried as local paths first, then as Hub ids.

`output_dir` must be absent or empty, or `--overwrite_output_dir` given (the folder is then emptied when training
starts), unless the run resumes a checkpoint; so must a separate `scores_dir`, which is replaced as a whole. The
final model and the scores (`<output_dir>/seal_scores` by default) are written at the end, `config.json` last; a
run that fails leaves its checkpoints and neither a final model nor scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_ext.scripts.utils import (
    OVERWRITE_OUTPUT_HELP,
    CommandError,
    check_output,
    check_training_output,
    dataclass_parser,
    launch_or_run,
    load_any_dataset,
    load_error,
    load_errors,
    parse_dataclasses,
    resolve_name_or_path,
    run_command,
    save_training_output,
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
            "help": "The fine-tuning set to rank, required: a local folder or .json / .jsonl / .parquet / .csv file, "
            "or a Hub id."
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
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": OVERWRITE_OUTPUT_HELP + " It also allows replacing a non-empty scores_dir."}
    )


def seal_rank(script_args: SEALRankArguments, args, model_args) -> int:
    """Train the ranker and save the model and the scores; returns the exit status."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    from hf_ext._checks import check_loading_info
    from hf_ext.seal.trainer import SEALTrainer
    from hf_ext.serialization import atomic_directory

    if args.safe_dataset_name is None:
        raise CommandError("--safe_dataset_name is required: the safe / aligned reference set")
    if model_args.model_name_or_path is None:
        raise CommandError("--model_name_or_path is required")
    if script_args.dataset_name is None:
        raise CommandError("--dataset_name is required: the fine-tuning set to rank")
    output_dir = check_training_output(args, script_args.overwrite_output_dir)
    if script_args.scores_dir is not None:
        check_output(script_args.scores_dir, script_args.overwrite_output_dir)
    train_dataset = load_any_dataset(
        script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split
    )
    safe_dataset = load_any_dataset(
        args.safe_dataset_name,
        script_args.safe_dataset_config,
        script_args.safe_dataset_split,
        what="safe_dataset_name",
    )
    name = model_args.model_name_or_path
    path = resolve_name_or_path(name, "model_name_or_path")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise CommandError("a 4-bit / 8-bit model needs adapters: add --use_peft (QLoRA)")
    try:
        if model_args.load_in_4bit or model_args.load_in_8bit:
            from hf_ext.quantization import load_quantized

            model, loading_info = load_quantized(
                path,
                bits=4 if model_args.load_in_4bit else 8,
                quant_type=model_args.bnb_4bit_quant_type,
                double_quant=model_args.use_bnb_nested_quant,
                prepare_for_training=True,
                gradient_checkpointing=args.gradient_checkpointing,
                output_loading_info=True,
            )
        else:
            dtype = model_args.dtype if model_args.dtype not in (None, "auto") else None
            model, loading_info = AutoModelForCausalLM.from_pretrained(
                path, revision=model_args.model_revision, dtype=dtype, output_loading_info=True
            )
        check_loading_info(loading_info, name, type(model).__name__)  # weights of the config the checkpoint lacks
        tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    except load_errors() as error:
        raise load_error(name, path, "model_name_or_path", error) from None
    except ValueError as error:  # a checkpoint without some weights, a head that is not a causal LM's
        raise CommandError(str(error)) from None
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
    scores = trainer.scores()

    def write(folder: Path) -> None:
        trainer.save_model(str(folder))
        if trainer.args.should_save and script_args.scores_dir is None:
            scores.save_pretrained(folder / "seal_scores")

    save_training_output(trainer, write, output_dir)
    if trainer.args.should_save:
        scores_dir = Path(script_args.scores_dir or os.path.join(args.output_dir, "seal_scores"))
        if script_args.scores_dir is not None:
            with atomic_directory(scores_dir, overwrite=script_args.overwrite_output_dir) as staging:
                scores.save_pretrained(staging)
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
