"""`hf-ext aot`: train with AOT from a recipe, as `trl dpo` does.

```bash
hf-ext aot --config trainers/aot.yaml
hf-ext aot --config trainers/aot.yaml --aot_variant unpaired --dataset_name hf-ext-testing/synthetic-unpaired
hf-ext aot --num_processes 2 --config trainers/aot.yaml            # under `accelerate launch`: global sort under DDP
python -m hf_ext.scripts.aot --config trainers/aot.yaml            # the same command, run as a module
```

The options are the fields of [`~hf_ext.aot.AOTConfig`], of TRL's `ModelConfig` (`model_name_or_path`, `use_peft`,
`lora_r`, `load_in_4bit`, ...) and of TRL's `ScriptArguments` (`dataset_name`, `dataset_train_split`, ...);
`model_name_or_path` and `dataset_name` are required. Fixture ids (`hf-ext-testing/<name>`, see `hf_ext.testing`)
are built offline; anything else is tried as a local path first (a folder, or a .json / .jsonl / .parquet / .csv
file of preferences), then as a Hub id.

`output_dir` must be absent or empty, or `--overwrite_output_dir` given (the folder is then emptied when training
starts), unless the run resumes a checkpoint. Checkpoints land in `output_dir` during training; the final model,
card and plot are written beside them at the end, `config.json` last. A run that fails leaves its checkpoints
(resume with `--resume_from_checkpoint`) and no final model.
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_ext.scripts.utils import (
    OVERWRITE_OUTPUT_HELP,
    CommandError,
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


__all__ = ["HELP", "load_preference_dataset", "main", "make_parser", "run_aot"]

NAME = "aot"
HELP = "align a causal LM with AOT (alignment via optimal transport), paired or unpaired preference data"


def _dataclass_types() -> tuple:
    from dataclasses import dataclass, field

    from trl import ModelConfig, ScriptArguments

    from hf_ext.aot.config import AOTConfig

    @dataclass
    class AOTScriptArguments(ScriptArguments):
        dataset_name: str | None = field(
            default=None,
            metadata={
                "help": "The preference dataset, required: a local folder or .json / .jsonl / .parquet / .csv file, "
                "or a Hub id; 'hf-ext-testing/synthetic-preferences' (paired) and 'hf-ext-testing/synthetic-unpaired' "
                "(prompt / completion / label) are built offline."
            },
        )
        overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_OUTPUT_HELP})
        synthetic_train_size: int = field(
            default=256, metadata={"help": "Number of training examples of an offline synthetic dataset."}
        )

    @dataclass
    class AOTModelArguments(ModelConfig):
        model_name_or_path: str | None = field(
            default=None,
            metadata={
                "help": "Model checkpoint (Hub id or folder), required; 'hf-ext-testing/<name>' builds a tiny model "
                "offline."
            },
        )

    return AOTScriptArguments, AOTConfig, AOTModelArguments


def load_preference_dataset(script_args):
    """The `DatasetDict` named by `script_args.dataset_name`: a fixture built offline, a local folder or data file
    (tried first), or a Hub dataset."""
    from hf_ext.testing import FIXTURE_DATASETS, load_fixture_dataset

    name = script_args.dataset_name
    if name is None:
        raise CommandError("--dataset_name is required; expected a Hub dataset, a local path or one of "
                           f"{list(FIXTURE_DATASETS)}")  # fmt: skip
    if name in FIXTURE_DATASETS:
        return load_fixture_dataset(name, size=script_args.synthetic_train_size)
    return load_any_dataset(name, script_args.dataset_config, streaming=script_args.dataset_streaming)


def run_aot(script_args, training_args, model_args) -> int:
    """Train with [`~hf_ext.aot.AOTTrainer`], save the model (with its card and reward-quantile plot) to
    `output_dir`, and push it when `push_to_hub` is set."""
    from trl import get_peft_config, get_quantization_config

    from hf_ext.aot.trainer import AOTTrainer

    if model_args.model_name_or_path is None:
        raise CommandError("--model_name_or_path is required (a Hub id, a folder or a hf-ext-testing/<name> fixture)")
    if script_args.dataset_name is None:
        load_preference_dataset(script_args)  # the error naming what is expected
    output_dir = check_training_output(training_args, script_args.overwrite_output_dir)
    model_path = resolve_name_or_path(model_args.model_name_or_path, "model_name_or_path")

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        model_init_kwargs["device_map"] = {"": str(training_args.device)}
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}

    dataset = load_preference_dataset(script_args)
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    if train_split not in dataset:
        raise CommandError(f"dataset_train_split={train_split!r} is not a split of {script_args.dataset_name}; "
                           f"expected one of {list(dataset)}.")  # fmt: skip
    try:
        trainer = AOTTrainer(
            model=model_path,
            args=training_args,
            train_dataset=dataset[train_split],
            eval_dataset=dataset[test_split]
            if training_args.eval_strategy != "no" and test_split in dataset
            else None,
            peft_config=get_peft_config(model_args),
            quantization_config=quantization_config,
        )
    except load_errors() as error:  # say whether it was a local folder (which file) or a Hub id
        raise load_error(model_args.model_name_or_path, model_path, "model_name_or_path", error) from None
    except (ValueError, TypeError) as error:  # the trainer's checks of the data and the tokenizer, before any step
        raise CommandError(str(error)) from None
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_training_output(trainer, lambda folder: trainer.save_model(str(folder)), output_dir)
    trainer.accelerator.print(f"Model, card and reward-quantile plot saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}.")
    return 0


def make_parser():
    """The parser of `hf-ext aot`: `AOTScriptArguments`, [`~hf_ext.aot.AOTConfig`] and TRL's `ModelConfig`."""
    return dataclass_parser(NAME, HELP, _dataclass_types())


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext aot [--num_processes N | --accelerate_config FILE] OPTIONS`; returns the exit status."""

    def run(rest: list[str]) -> int:
        return run_command(NAME, lambda: run_aot(*parse_dataclasses(make_parser(), rest)))

    return launch_or_run(NAME, "hf_ext.scripts.aot", argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
