"""`hf-ext sasa-fit`: fit a SASA probe on a model's own hidden states and save it.

```bash
hf-ext sasa-fit --config processors/sasa_fit.yaml        # fit a probe, save it to output_dir
python -m hf_ext.scripts.sasa_fit --config processors/sasa_fit.yaml
```

The texts come from two files (desired / undesired), a labelled dataset, or a judge labelling unlabelled texts or
the model's own continuations of prompts. Model fixture ids (`hf-ext-testing/<name>`) are built offline; other
names are tried as local paths first, then as Hub ids. `output_dir` must be absent or empty, or
`--overwrite_output_dir` given (checked before the model loads); the probe is written all at once.

With `--check_prompts FILE`, the fitted probe is checked before it is saved ([`check_steering`]): SASA at
`--check_beta` against the same sampling at beta 0 on those held-out prompts, scored by `--judge`. A probe whose
steering raises the judge's mean toxicity is not saved (exit status 2) unless `--allow_harmful`; the check's figures
are saved in the probe's `fit_info["steering_check"]`.

```bash
hf-ext sasa-fit --config processors/sasa_fit.yaml --check_prompts processors/data/sasa_planted_prompts.txt \
    --judge hf-ext-testing/sasa-planted --check_beta 4 --check_normalize none
```
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
    load_causal_lm,
    parse_dataclasses,
    read_lines,
    run_command,
)


__all__ = ["HELP", "SASAFitConfig", "fit", "main", "make_parser"]

NAME = "sasa-fit"
HELP = "fit a SASA probe on desired / undesired texts"
JUDGES = ("profanity-check", "hf-ext-testing/sasa-planted")
"""Judges `hf-ext sasa-fit` knows by name (from Python, any callable judge works): the offline `alt-profanity-check`
classifier, and the planted task's exact judge (a fixture, for the offline recipes)."""


@dataclass
class SASAFitConfig:
    """Fit a [`SASAProbe`] on labelled texts and save it (`hf-ext sasa-fit`)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Causal LM (Hub id or folder), required; 'hf-ext-testing/<name>' fixtures build offline."},
    )
    output_dir: str = field(
        default="sasa-probe", metadata={"help": "Where to save the probe (safetensors + JSON + card)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the content of a non-empty output_dir (refused without it)."}
    )
    desired_file: str | None = field(
        default=None, metadata={"help": "Text file of desired (e.g. non-toxic) texts, one per line."}
    )
    undesired_file: str | None = field(
        default=None, metadata={"help": "Text file of undesired (e.g. toxic) texts, one per line."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Instead of the files: a `datasets` dataset (Hub id or local path) with a text and a label column."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of the dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the dataset."})
    text_column: str = field(default="text", metadata={"help": "Column of the dataset holding the texts."})
    label_column: str = field(default="toxicity", metadata={"help": "Column of the dataset holding the labels."})
    label_threshold: float = field(
        default=0.5, metadata={"help": "A text is undesired when its label is >= this value (0/1 labels: 0.5)."}
    )
    max_texts: int | None = field(
        default=None, metadata={"help": "Use at most this many texts per class (the first ones); all by default."}
    )
    texts_file: str | None = field(
        default=None,
        metadata={
            "help": "Instead of labelled texts: a file of unlabelled texts (one per line), labelled by the judge."
        },
    )
    prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "Instead of labelled texts: a file of prompts (one per line); the model's own continuations of "
            "them are labelled by the judge. Provocative prompts make it write some undesired text to learn from."
        },
    )
    judge: str = field(
        default="profanity-check",
        metadata={
            "help": "The judge that labels texts_file / the continuations and scores the steering check: "
            "'profanity-check' (offline) or 'hf-ext-testing/sasa-planted' (the planted task's exact judge)."
        },
    )
    judge_threshold: float = field(
        default=0.5, metadata={"help": "A text the judge scores >= this value is undesired."}
    )
    num_continuations: int = field(default=8, metadata={"help": "Continuations sampled per prompt (prompts_file)."})
    max_new_tokens: int = field(default=24, metadata={"help": "Length of each sampled continuation (prompts_file)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the continuations."})
    prefixes: bool = field(
        default=True,
        metadata={"help": "With the judge: also fit on every word prefix of each text, each judged on its own."},
    )
    min_prefix_words: int = field(default=2, metadata={"help": "Shortest prefix, in words."})
    layer: str = field(
        default="auto",
        metadata={
            "help": "Index into the model's hidden states (-1: last layer), or 'auto': the layer whose held-out "
            "texts the probe separates best."
        },
    )
    balance: bool = field(default=True, metadata={"help": "Weigh both classes equally in the covariance."})
    validation_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of the texts held out to measure (and choose the layer by)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampling and of the held-out split."})
    shrinkage: str = field(
        default="auto", metadata={"help": "Covariance shrinkage: 'auto' (Ledoit-Wolf) or a float in [0, 1]."}
    )
    batch_size: int = field(default=16, metadata={"help": "Texts per forward pass."})
    max_length: int = field(default=512, metadata={"help": "Truncation length in tokens."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the model in 4-bit (bitsandbytes)."})
    check_prompts: str | None = field(
        default=None,
        metadata={
            "help": "Held-out prompts (one per line, not the fitting ones): check the probe's steering before saving "
            "it (SASA at check_beta against beta 0, scored by the judge); a probe that raises the mean toxicity is "
            "not saved."
        },
    )
    check_beta: float = field(default=10.0, metadata={"help": "Strength the check samples at (> 0): yours."})
    check_top_p: float = field(default=0.9, metadata={"help": "The processor's top_p in the check."})
    check_temperature: float = field(default=1.0, metadata={"help": "The processor's temperature in the check."})
    check_max_candidates: int = field(default=50, metadata={"help": "The processor's candidate cap in the check."})
    check_normalize: str = field(
        default="softmax", metadata={"help": "The processor's margin normalization in the check: 'softmax' or 'none'."}
    )
    check_seeds: list[int] = field(
        default_factory=lambda: [0], metadata={"help": "Seeds of the check's sampling (each adds continuations)."}
    )
    check_num_return_sequences: int = field(default=4, metadata={"help": "Continuations per check prompt and seed."})
    check_max_new_tokens: int = field(default=20, metadata={"help": "Length of each continuation of the check."})
    allow_harmful: bool = field(
        default=False,
        metadata={
            "help": "Save a probe whose steering raised the judge's mean toxicity in the check (with a warning)."
        },
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Also push the probe to the Hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo id to push to (default: output_dir's name)."}
    )

    def __post_init__(self):
        if self.model_name_or_path is None:
            raise ValueError("model_name_or_path is required (a Hub id, a folder or a hf-ext-testing/<name> fixture).")
        if self.shrinkage != "auto":
            try:
                value = float(self.shrinkage)
            except (TypeError, ValueError):
                raise ValueError(
                    f"shrinkage={self.shrinkage!r} is out of range; expected 'auto' or a number in [0, 1]."
                ) from None
            check_range("shrinkage", value, ge=0, le=1, hint="(or 'auto')")
        check_range("batch_size", self.batch_size, ge=1, integer=True)
        check_range("max_length", self.max_length, ge=1, integer=True)
        check_range("max_texts", self.max_texts, ge=2, integer=True, optional=True)
        if self.layer != "auto":
            try:
                int(self.layer)
            except ValueError:
                raise ValueError(f"layer={self.layer!r} is not supported; expected 'auto' or an integer.") from None
        check_range("validation_fraction", self.validation_fraction, gt=0, lt=1)
        if self.judge not in JUDGES:
            raise ValueError(f"judge={self.judge!r} is not supported; expected one of {list(JUDGES)}.")
        check_range("judge_threshold", self.judge_threshold, gt=0, le=1)
        for name in ("num_continuations", "max_new_tokens", "min_prefix_words"):
            check_range(name, getattr(self, name), ge=1, integer=True)
        check_range("temperature", self.temperature, gt=0)
        check_range("check_beta", self.check_beta, gt=0)
        check_range("check_top_p", self.check_top_p, gt=0, le=1)
        check_range("check_temperature", self.check_temperature, gt=0)
        for name in ("check_max_candidates", "check_num_return_sequences", "check_max_new_tokens"):
            check_range(name, getattr(self, name), ge=1, integer=True)
        if self.check_normalize not in ("softmax", "none"):
            raise ValueError(
                f"check_normalize={self.check_normalize!r} is not supported; expected 'softmax' or 'none'."
            )
        if not self.check_seeds or len(set(self.check_seeds)) != len(self.check_seeds):
            raise ValueError(f"check_seeds={self.check_seeds!r} must be one or more distinct integers.")
        files = (self.desired_file is not None, self.undesired_file is not None)
        sources = {
            "desired_file / undesired_file": any(files),
            "dataset_name": self.dataset_name is not None,
            "texts_file / prompts_file": self.texts_file is not None or self.prompts_file is not None,
        }
        if sum(sources.values()) != 1:
            raise ValueError(
                f"Give exactly one source of texts: {' or '.join(sources)} (got {[k for k, v in sources.items() if v]})."
            )
        if sources["desired_file / undesired_file"] and files != (True, True):
            raise ValueError(
                "desired_file and undesired_file are both required (got "
                f"desired_file={self.desired_file!r}, undesired_file={self.undesired_file!r})."
            )

    @property
    def layer_value(self) -> int | str:
        return "auto" if self.layer == "auto" else int(self.layer)

    @property
    def labelled_by_judge(self) -> bool:
        return self.texts_file is not None or self.prompts_file is not None

    @property
    def shrinkage_value(self) -> float | str:
        return "auto" if self.shrinkage == "auto" else float(self.shrinkage)


def _labelled_texts(config) -> tuple[list[str], list[str]]:
    if config.dataset_name is None:
        desired = read_lines(config.desired_file, "desired_file")
        undesired = read_lines(config.undesired_file, "undesired_file")
    else:
        dataset = load_any_dataset(config.dataset_name, config.dataset_config, config.dataset_split)
        for column in (config.text_column, config.label_column):
            if column not in dataset.column_names:
                raise CommandError(f"column {column!r} is not in the dataset; it has {dataset.column_names}.")
        desired, undesired = [], []
        for text, label in zip(dataset[config.text_column], dataset[config.label_column]):
            if isinstance(text, str) and text.strip() and label is not None:
                (undesired if float(label) >= config.label_threshold else desired).append(text)
    if config.max_texts is not None:
        desired, undesired = desired[: config.max_texts], undesired[: config.max_texts]
    if not desired or not undesired:
        raise CommandError(f"need texts of both classes; got {len(desired)} desired and {len(undesired)} undesired.")
    return desired, undesired


def _judge_inputs(config) -> tuple[list[str] | None, list[str] | None]:
    texts = read_lines(config.texts_file, "texts_file") if config.texts_file else None
    prompts = read_lines(config.prompts_file, "prompts_file") if config.prompts_file else None
    if texts is not None and prompts is not None and len(texts) != len(prompts):
        raise CommandError(
            f"texts_file has {len(texts)} lines and prompts_file {len(prompts)}: with both, line i of texts_file "
            "continues line i of prompts_file."
        )
    return texts, prompts


def make_judge(name: str):
    """The judge `--judge NAME` names (see [`JUDGES`])."""
    if name == "profanity-check":
        from hf_ext.sasa.evaluation import ProfanityCheckJudge

        return ProfanityCheckJudge()
    from hf_ext.testing.sasa import PlantedToxicityTask

    return PlantedToxicityTask().judge


def _check(config, model, tokenizer, probe, prompts: list[str], judge):
    from hf_ext.sasa.steering import check_steering

    return check_steering(
        model,
        tokenizer,
        probe,
        prompts,
        judge,
        beta=config.check_beta,
        top_p=config.check_top_p,
        temperature=config.check_temperature,
        max_candidates=config.check_max_candidates,
        normalize=config.check_normalize,
        seeds=config.check_seeds,
        num_return_sequences=config.check_num_return_sequences,
        max_new_tokens=config.check_max_new_tokens,
        batch_size=config.batch_size,
        allow_harmful=config.allow_harmful,
    )


def fit(config) -> int:
    """Fit the probe `config` describes, check its steering if asked, and save it; returns the exit status."""
    from hf_ext.sasa.probe import SASAProbe
    from hf_ext.sasa.steering import HarmfulSteeringError
    from hf_ext.serialization import atomic_directory

    options = dict(
        layer=config.layer_value,
        balance=config.balance,
        validation_fraction=config.validation_fraction,
        shrinkage=config.shrinkage_value,
        batch_size=config.batch_size,
        max_length=config.max_length,
    )
    check_output(config.output_dir, config.overwrite_output_dir)
    # bad data and a missing judge package fail before the model loads
    if config.labelled_by_judge:
        texts, prompts = _judge_inputs(config)
    else:
        desired, undesired = _labelled_texts(config)
    check_prompts = read_lines(config.check_prompts, "check_prompts") if config.check_prompts else None
    judge = make_judge(config.judge) if config.labelled_by_judge or check_prompts else None
    model, tokenizer = load_causal_lm(config.model_name_or_path, config.load_in_4bit)
    try:
        if config.labelled_by_judge:
            probe = SASAProbe.fit_from_judge(
                model,
                tokenizer,
                judge,
                texts,
                prompts=prompts,
                num_continuations=config.num_continuations,
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                threshold=config.judge_threshold,
                prefixes=config.prefixes,
                min_prefix_words=config.min_prefix_words,
                seed=config.seed,
                **options,
            )
        else:
            probe = SASAProbe.fit(model, tokenizer, desired, undesired, seed=config.seed, **options)
        check = _check(config, model, tokenizer, probe, check_prompts, judge) if check_prompts else None
    except HarmfulSteeringError as error:
        raise CommandError(f"{error} The probe was not saved to {config.output_dir}.") from None
    except ValueError as error:
        raise CommandError(str(error)) from None
    if check is not None:
        probe.fit_info["steering_check"] = check.to_dict()
    if config.model_name_or_path != probe.model_info.get("model_name_or_path"):
        probe.model_info["model_id"] = config.model_name_or_path
    with atomic_directory(config.output_dir, overwrite=config.overwrite_output_dir) as staging:
        probe.save_pretrained(staging)
    folder = Path(config.output_dir)
    if config.push_to_hub:
        probe.push_to_hub(config.hub_model_id or folder.name)
    info = probe.fit_info
    held_out = (
        f", held-out AUC {info['held_out_auc']:.3f} / balanced accuracy {info['held_out_balanced_accuracy']:.3f}"
        if "held_out_auc" in info
        else ""
    )
    print(
        f"SASA probe: {info['num_desired']} desired / {info['num_undesired']} undesired texts, layer {probe.layer} "
        f"({info['layer_selection']}), shrinkage {info['shrinkage']:.4f}, training accuracy "
        f"{info['train_accuracy']:.3f}{held_out}; saved to {folder}"
    )
    if check is not None:
        print(f"Steering check: {check.summary()}")
    return 0


def make_parser():
    """The parser of `hf-ext sasa-fit`."""
    return dataclass_parser(NAME, HELP, (SASAFitConfig,))


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext sasa-fit OPTIONS`; returns the exit status."""
    return run_command(NAME, lambda: fit(*parse_dataclasses(make_parser(), argv)))


if __name__ == "__main__":
    raise SystemExit(main())
