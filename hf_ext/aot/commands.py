"""`hf-ext aot`: train with AOT from a recipe, as `trl dpo` does.

```bash
hf-ext aot --config trainers/aot.yaml
hf-ext aot --config trainers/aot.yaml --aot_variant unpaired --dataset_name hf-ext-testing/synthetic-unpaired
accelerate launch -m hf_ext.cli aot --config trainers/aot.yaml      # several processes: global sort under DDP
```

The options are the fields of [`~hf_ext.aot.AOTConfig`], of TRL's `ModelConfig` (`model_name_or_path`, `use_peft`,
`lora_r`, `load_in_4bit`, ...) and of TRL's `ScriptArguments` (`dataset_name`, `dataset_train_split`, ...). Model ids
`hf-ext-testing/<name>` and the dataset names [`SYNTHETIC_DATASETS`] are built offline; anything else is loaded from
the Hub or a local path.
"""

from __future__ import annotations

from ..cli import Command, DataclassCommand


__all__ = ["SYNTHETIC_DATASETS", "get_commands", "load_preference_dataset", "run_aot"]

SYNTHETIC_DATASETS = {
    "hf-ext-testing/synthetic-preferences": {"unpaired": False},
    "hf-ext-testing/synthetic-unpaired": {"unpaired": True, "positive_fraction": 0.6},
}
"""Dataset names built offline by [`~hf_ext.aot.data.synthetic_preference_dataset`] (train and test splits)."""


def _dataclass_types() -> tuple:
    from dataclasses import dataclass, field

    from trl import ModelConfig, ScriptArguments

    from .config import AOTConfig

    @dataclass
    class AOTScriptArguments(ScriptArguments):
        dataset_name: str | None = field(
            default="hf-ext-testing/synthetic-preferences",
            metadata={
                "help": "Path or Hub name of the preference dataset; 'hf-ext-testing/synthetic-preferences' (paired) "
                "and 'hf-ext-testing/synthetic-unpaired' (prompt / completion / label) are built offline."
            },
        )
        synthetic_train_size: int = field(
            default=256, metadata={"help": "Number of training examples of an offline synthetic dataset."}
        )

    @dataclass
    class AOTModelArguments(ModelConfig):
        model_name_or_path: str | None = field(
            default="hf-ext-testing/tiny-llama",
            metadata={
                "help": "Model checkpoint (Hub id or folder); 'hf-ext-testing/<name>' builds a tiny model offline."
            },
        )

    return AOTScriptArguments, AOTConfig, AOTModelArguments


def load_preference_dataset(script_args):
    """The `DatasetDict` named by `script_args.dataset_name`: an offline synthetic one or `datasets.load_dataset`."""
    from datasets import DatasetDict, load_dataset

    from .data import synthetic_preference_dataset

    name = script_args.dataset_name
    if name in SYNTHETIC_DATASETS:
        size = script_args.synthetic_train_size
        if size < 1:
            raise ValueError(f"synthetic_train_size={size} must be >= 1.")
        kwargs = SYNTHETIC_DATASETS[name]
        return DatasetDict(
            {
                script_args.dataset_train_split: synthetic_preference_dataset(size, split="train", **kwargs),
                script_args.dataset_test_split: synthetic_preference_dataset(
                    max(size // 4, 8), split="test", **kwargs
                ),
            }
        )
    if name is None:
        raise ValueError("dataset_name is required; expected a Hub dataset, a local path or one of "
                         f"{sorted(SYNTHETIC_DATASETS)}.")  # fmt: skip
    return load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)


def run_aot(script_args, training_args, model_args) -> int:
    """Train with [`~hf_ext.aot.AOTTrainer`], save the model (with its card and reward-quantile plot) to
    `output_dir`, and push it when `push_to_hub` is set."""
    from trl import get_peft_config, get_quantization_config

    from ..testing import resolve_model_name_or_path
    from .trainer import AOTTrainer

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
        raise ValueError(f"dataset_train_split={train_split!r} is not a split of {script_args.dataset_name}; "
                         f"expected one of {list(dataset)}.")  # fmt: skip
    trainer = AOTTrainer(
        model=resolve_model_name_or_path(model_args.model_name_or_path),
        args=training_args,
        train_dataset=dataset[train_split],
        eval_dataset=dataset[test_split] if training_args.eval_strategy != "no" and test_split in dataset else None,
        peft_config=get_peft_config(model_args),
        quantization_config=quantization_config,
    )
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model, card and reward-quantile plot saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}.")
    return 0


def get_commands() -> list[Command]:
    return [
        DataclassCommand(
            "aot",
            "align a causal LM with AOT (alignment via optimal transport), paired or unpaired preference data",
            _dataclass_types,
            run_aot,
        )
    ]
