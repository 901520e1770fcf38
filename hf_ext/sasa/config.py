"""Configurations of the `hf-ext sasa-fit` and `hf-ext sasa-generate` commands (parsed by `TrlParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sampling import NORMALIZATIONS


__all__ = ["SASAFitConfig", "SASAGenerateConfig", "PLANTED_MODEL_ID"]

PLANTED_MODEL_ID = "hf-ext-testing/sasa-planted"
JUDGES = ("profanity-check",)
"""Judges `hf-ext sasa-fit` knows by name (from Python, any callable judge works)."""
"""Model id of the tiny model trained on the planted-toxicity task (built offline on first use)."""


@dataclass
class SASAFitConfig:
    """Fit a [`SASAProbe`] on labelled texts and save it (`hf-ext sasa-fit`)."""

    model_name_or_path: str = field(
        default=PLANTED_MODEL_ID,
        metadata={
            "help": f"Causal LM (Hub id or folder); '{PLANTED_MODEL_ID}' and 'hf-ext-testing/<name>' build offline."
        },
    )
    output_dir: str = field(
        default="sasa-probe", metadata={"help": "Where to save the probe (safetensors + JSON + card)."}
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
        metadata={"help": "The judge that labels texts_file / the continuations: 'profanity-check' (offline)."},
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
    push_to_hub: bool = field(default=False, metadata={"help": "Also push the probe to the Hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo id to push to (default: output_dir's name)."}
    )

    def __post_init__(self):
        if self.shrinkage != "auto":
            try:
                value = float(self.shrinkage)
            except (TypeError, ValueError):
                value = None
            if value is None or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"shrinkage={self.shrinkage!r} is out of range; expected 'auto' or a float in [0, 1]."
                )
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} is out of range; expected an integer >= 1.")
        if self.max_length < 1:
            raise ValueError(f"max_length={self.max_length} is out of range; expected an integer >= 1.")
        if self.max_texts is not None and self.max_texts < 2:
            raise ValueError(f"max_texts={self.max_texts} is out of range; expected an integer >= 2 or None.")
        if self.layer != "auto":
            try:
                int(self.layer)
            except ValueError:
                raise ValueError(f"layer={self.layer!r} is not supported; expected 'auto' or an integer.") from None
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} is out of range; expected a float in (0, 1)."
            )
        if self.judge not in JUDGES:
            raise ValueError(f"judge={self.judge!r} is not supported; expected one of {list(JUDGES)}.")
        if not 0.0 < self.judge_threshold <= 1.0:
            raise ValueError(f"judge_threshold={self.judge_threshold} is out of range; expected a float in (0, 1].")
        for name in ("num_continuations", "max_new_tokens", "min_prefix_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is out of range; expected an integer >= 1.")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} is out of range; expected a float > 0.")
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


@dataclass
class SASAGenerateConfig:
    """Generate continuations with a [`SASALogitsProcessor`] (`hf-ext sasa-generate`)."""

    probe: str = field(
        default="sasa-probe", metadata={"help": "Folder or Hub repo of the probe (from `hf-ext sasa-fit`)."}
    )
    model_name_or_path: str = field(
        default=PLANTED_MODEL_ID,
        metadata={"help": f"Causal LM the probe was fitted on; '{PLANTED_MODEL_ID}' builds offline."},
    )
    prompts_file: str | None = field(default=None, metadata={"help": "Text file of prompts, one per line."})
    prompt: list[str] = field(default_factory=list, metadata={"help": "Prompts given on the command line."})
    output_file: str = field(
        default="sasa-generations.jsonl", metadata={"help": "Where to write the continuations (JSON lines)."}
    )
    beta: float = field(default=10.0, metadata={"help": "Strength of the tilt (>= 0; 0 = plain nucleus sampling)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus of the candidate set, in (0, 1]."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0), also for the nucleus."})
    max_candidates: int = field(default=50, metadata={"help": "Cap on the candidates per step (>= 1)."})
    normalize: str = field(
        default="softmax", metadata={"help": f"Margin normalization: one of {list(NORMALIZATIONS)}."}
    )
    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or greedy search (False)."})
    num_beams: int = field(default=1, metadata={"help": "Beam search with this many beams (with do_sample=False)."})
    max_new_tokens: int = field(default=20, metadata={"help": "Tokens to generate per continuation."})
    num_return_sequences: int = field(default=1, metadata={"help": "Continuations per prompt."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Random seed of the sampling."})
    compare: bool = field(default=False, metadata={"help": "Also generate without SASA (same seed) for comparison."})
    trace_plot: str | None = field(default=None, metadata={"help": "PNG of the margin along the first generation."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the model in 4-bit (bitsandbytes)."})

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} is out of range; expected a float >= 0.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} is out of range; expected a float in (0, 1].")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} is out of range; expected a float > 0.")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates={self.max_candidates} is out of range; expected an integer >= 1.")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={self.normalize!r} is not supported; expected one of {list(NORMALIZATIONS)}.")
        for name in ("num_beams", "max_new_tokens", "num_return_sequences", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is out of range; expected an integer >= 1.")
        if self.num_beams > 1 and self.do_sample:
            raise ValueError(f"num_beams={self.num_beams} needs do_sample=False (beam search).")
        if self.num_return_sequences > self.num_beams and not self.do_sample:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} is out of range without sampling; expected at most "
                f"num_beams={self.num_beams}."
            )
        if self.prompts_file is None and not self.prompt:
            raise ValueError("No prompts: set prompts_file or give --prompt.")
