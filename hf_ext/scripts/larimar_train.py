"""`hf-ext larimar-train`: build a Larimar from an encoder and a causal LM (or load one) and train it with `Trainer`.

```bash
hf-ext larimar-train --config trainers/larimar.yaml
hf-ext larimar-train --config trainers/larimar.yaml --max_steps 50 --output_dir my-larimar
hf-ext larimar-train --num_processes 2 --config trainers/larimar.yaml   # under `accelerate launch`
```

Either `model_name_or_path` (a Larimar to continue training) or both `encoder_name_or_path` and
`decoder_name_or_path` (a new one) are required, and so is `dataset_name`; fixture ids (`hf-ext-testing/<name>`,
see `hf_ext.testing`) are built offline; other names are tried as local paths first, then as Hub ids.

`output_dir` must be absent or empty, or `--overwrite_output_dir` given (the folder is then emptied when training
starts), unless the run resumes a checkpoint. The final model and processor are written beside the checkpoints at
the end, `config.json` last; a run that fails leaves its checkpoints and no final model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_ext._validation import check_range
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


__all__ = ["HELP", "LarimarScriptArguments", "main", "make_parser", "train"]

NAME = "larimar-train"
HELP = "train a Larimar (episodic-memory LM) with transformers' Trainer"


@dataclass
class LarimarScriptArguments:
    """What `hf-ext larimar-train` builds and trains on (the `Trainer` options are `TrainingArguments`')."""

    encoder_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Encoder of a new model (any `AutoModel`); `hf-ext-testing/<name>` builds a tiny one offline."
        },
    )
    decoder_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Causal decoder of a new model (any `AutoModelForCausalLM`, e.g. GPT-2 or Llama-family)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue training this Larimar instead of building a new one."}
    )
    latent_size: int = field(default=128, metadata={"help": "Latent size C of a new model."})
    memory_size: int = field(default=128, metadata={"help": "Memory slots K of a new model."})
    center_latents: bool = field(default=True, metadata={"help": "Centre the pooled encoder output (new model)."})
    pooling: str = field(default="mean", metadata={"help": "Encoder pooling of a new model: pooler, cls or mean."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Train everything but the encoder."})
    freeze_decoder: bool = field(
        default=False,
        metadata={
            "help": "Keep the decoder (and its head) frozen and train only the memory path; a new model's projections "
            "into the decoder then start at zero, so training starts from the pretrained decoder."
        },
    )
    mask_empty_slot: bool | None = field(
        default=None,
        metadata={
            "help": "New model: a zero latent (empty memory, out of scope) hides the memory slot (default: only "
            "with memory_readout=text, which needs it)."
        },
    )
    scope_threshold: float | None = field(
        default=0.5, metadata={"help": "New model: cosine distance beyond which a query reads nothing (None: off)."}
    )
    memory_readout: str = field(
        default="latent",
        metadata={
            "help": "New model: what a read gives the decoder, 'latent' (the paper's memory slot) or 'text' (hf-ext's: "
            "the stored text of the item the prompt addresses, placed before the prompt; 'context' is its former "
            "name)."
        },
    )
    text_template: str = field(
        default="New fact: {memory}\n",
        metadata={"help": "New model, memory_readout=text: how the text read is placed ({memory} is the text)."},
    )
    context_template: str | None = field(
        default=None, metadata={"help": "Deprecated name of text_template (the same setting)."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset (Hub id or local folder) with a text column, required; 'hf-ext-testing/larimar-facts' "
            "builds `num_episodes` episodes of synthetic facts offline."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_name`."})
    text_field: str = field(default="text", metadata={"help": "Column with the texts to memorise and decode."})
    prompt_field: str | None = field(
        default="prompt", metadata={"help": "Column with each text's prompt (enables the query term); optional."}
    )
    num_episodes: int = field(default=200, metadata={"help": "Episodes of 'hf-ext-testing/larimar-facts' to build."})
    episode_size: int = field(default=16, metadata={"help": "Items written into one memory during training."})
    kl_zero_ratio: float = field(default=0.5, metadata={"help": "Fraction of training with the KL weight at 0."})
    kl_increase_ratio: float = field(
        default=0.25, metadata={"help": "Fraction of training over which the KL weight ramps up to 1."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_OUTPUT_HELP})

    def __post_init__(self):
        for name in ("latent_size", "memory_size", "num_episodes"):
            check_range(name, getattr(self, name), ge=1, integer=True)
        check_range("episode_size", self.episode_size, ge=2, integer=True)
        if self.pooling not in ("pooler", "cls", "mean"):
            raise ValueError(f"pooling={self.pooling!r} is not supported; expected 'pooler', 'cls' or 'mean'.")
        for name in ("kl_zero_ratio", "kl_increase_ratio"):
            check_range(name, getattr(self, name), ge=0, le=1)


def _load_tokenizer(path: str, name: str, what: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except load_errors() as error:
        raise load_error(name, path, what, error) from None


def _load_model(script_args: LarimarScriptArguments):
    """`(model, processor)`: the Larimar to continue training, or a new one from an encoder and a decoder (each
    name tried as a local path first)."""
    from transformers import AutoModelForCausalLM

    from hf_ext.larimar.processing_larimar import LarimarProcessor

    if script_args.model_name_or_path:
        name = script_args.model_name_or_path
        path = resolve_name_or_path(name, "model_name_or_path")
        from hf_ext._checks import check_loading_info

        try:
            model, loading_info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
            check_loading_info(loading_info, name, type(model).__name__)  # weights of its config it lacks
            return model, LarimarProcessor.from_pretrained(path)
        except load_errors() as error:
            raise load_error(name, path, "model_name_or_path", error) from None
        except ValueError as error:  # missing or truncated weights, a memory file (named) that does not fit
            raise CommandError(f"model_name_or_path={name!r}: {error}") from None
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    paths = {
        what: resolve_name_or_path(getattr(script_args, what), what)
        for what in ("encoder_name_or_path", "decoder_name_or_path")
    }
    tokenizers = [_load_tokenizer(path, getattr(script_args, what), what) for what, path in paths.items()]
    try:
        model = LarimarForCausalLM.from_encoder_decoder_pretrained(
            paths["encoder_name_or_path"],
            paths["decoder_name_or_path"],
            latent_size=script_args.latent_size,
            memory_size=script_args.memory_size,
            center_latents=script_args.center_latents,
            pooling=script_args.pooling,
            episode_size=script_args.episode_size,
            mask_empty_slot=script_args.mask_empty_slot,
            scope_threshold=script_args.scope_threshold,
            memory_readout=script_args.memory_readout,
            **(
                {"context_template": script_args.context_template}
                if script_args.context_template is not None
                else {"text_template": script_args.text_template}
            ),
        )
    except load_errors() as error:
        raise CommandError(f"cannot load the encoder or the decoder: {error}") from None
    except (ValueError, TypeError) as error:  # e.g. a decoder checkpoint without a language-modeling head
        raise CommandError(str(error)) from None
    if script_args.freeze_decoder:
        import torch

        with torch.no_grad():  # z = 0 conditions nothing: training starts from the pretrained decoder
            model.model.prefix_projection.weight.zero_()
            if model.model.embedding_projection is not None:
                model.model.embedding_projection.weight.zero_()
    return model, LarimarProcessor(*tokenizers)


def train(script_args: LarimarScriptArguments, training_args) -> int:
    """Run `larimar-train`; returns the exit status."""
    from transformers import Trainer

    import hf_ext  # noqa: F401  (registers Larimar with the Auto classes)
    from hf_ext.larimar.training import LarimarEpisodeCollator, LarimarKLAnnealingCallback

    if training_args.per_device_train_batch_size % script_args.episode_size:
        raise CommandError(
            f"per_device_train_batch_size={training_args.per_device_train_batch_size} is not a multiple of "
            f"episode_size={script_args.episode_size}."
        )
    if script_args.model_name_or_path is None and None in (
        script_args.encoder_name_or_path,
        script_args.decoder_name_or_path,
    ):
        raise CommandError(
            "give --model_name_or_path (a Larimar to continue training), or --encoder_name_or_path and "
            "--decoder_name_or_path (a new one)"
        )
    if script_args.dataset_name is None:
        raise CommandError("--dataset_name is required (a Hub id, a folder, or hf-ext-testing/larimar-facts)")
    output_dir = check_training_output(training_args, script_args.overwrite_output_dir)

    from hf_ext.testing import FIXTURE_DATASETS, load_fixture_dataset

    if script_args.dataset_name in FIXTURE_DATASETS:
        dataset = load_fixture_dataset(
            script_args.dataset_name,
            size=script_args.num_episodes,
            episode_size=script_args.episode_size,
            seed=training_args.seed,
        )["train"]
        # Synthetic episodes hold facts with distinct prompts: keep them whole.
        training_args.train_sampling_strategy = "sequential"
    else:
        dataset = load_any_dataset(script_args.dataset_name, split=script_args.dataset_split)
    if script_args.text_field not in dataset.column_names:
        raise CommandError(f"The dataset has no column {script_args.text_field!r} (columns: {dataset.column_names}).")
    model, processor = _load_model(script_args)
    try:
        processor.check_model(model)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if script_args.freeze_encoder:
        model.model.encoder.requires_grad_(False)
    if script_args.freeze_decoder:
        model.model.decoder.requires_grad_(False)
        model.lm_head.requires_grad_(False)
    if model.config.memory_readout == "text":
        # Its objective trains the addressing alone: every other part would get no gradient, which DDP refuses.
        if script_args.prompt_field is None or script_args.prompt_field not in dataset.column_names:
            raise CommandError(
                "memory_readout=text trains the addressing from each text's query: give --prompt_field, a column "
                f"of the dataset (columns: {dataset.column_names})."
            )
        from hf_ext.larimar.training import freeze_all_but_addressing

        freeze_all_but_addressing(model, train_encoder=not script_args.freeze_encoder)
    # The collator reads the raw text columns, and episodes must stay whole.
    training_args.remove_unused_columns = False
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=LarimarEpisodeCollator(
            processor,
            text_field=script_args.text_field,
            prompt_field=script_args.prompt_field,
            episode_size=script_args.episode_size,
        ),
        callbacks=[LarimarKLAnnealingCallback(script_args.kl_zero_ratio, script_args.kl_increase_ratio)],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    def write(folder: Path) -> None:
        trainer.save_model(str(folder))
        if trainer.args.should_save:
            processor.save_pretrained(str(folder))

    save_training_output(trainer, write, output_dir)
    print(f"Saved the Larimar model and its processor to {training_args.output_dir}")
    return 0


def make_parser():
    """The parser of `hf-ext larimar-train`: [`LarimarScriptArguments`] and `TrainingArguments`."""
    from transformers import TrainingArguments

    return dataclass_parser(NAME, HELP, (LarimarScriptArguments, TrainingArguments))


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext larimar-train [--num_processes N | --accelerate_config FILE] OPTIONS`; returns the exit status."""

    def run(rest: list[str]) -> int:
        return run_command(NAME, lambda: train(*parse_dataclasses(make_parser(), rest)))

    return launch_or_run(NAME, "hf_ext.scripts.larimar_train", argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
