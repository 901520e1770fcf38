"""Configuration of [`SEALTrainer`]."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from .._compat import adopt_activation_checkpointing
from .._validation import check_range


__all__ = ["SEALConfig"]


@dataclass
class SEALConfig(TrainingArguments):
    r"""
    Configuration class for [`SEALTrainer`]: the [`~transformers.TrainingArguments`] of the model's training, plus
    SEAL's data ranker (Shen et al., "SEAL: Safety-enhanced Aligned LLM Fine-tuning via Bilevel Data Selection",
    ICLR 2025).

    The model is trained on `λ · f_safe + (1 - λ) · mean_i σ_i(ω) ℓ_i` (a safe batch and a weighted fine-tuning
    batch per step) and the ranker's logits ω on `mean_i σ_i(ω) ℓ_i` (the losses detached). λ starts at
    `upper_level_weight` and drops by `upper_level_weight_decay` every epoch.

    Parameters:
        ranker_learning_rate (`float`, *optional*, defaults to `1.0`):
            Learning rate of the ranker's logits (the paper uses `5e-3` with Adam).
        ranker_optimizer (`str`, *optional*, defaults to `"sgd"`):
            Optimiser of the logits: `"sgd"` or `"adam"` (the paper's, betas `ranker_adam_beta1`,
            `ranker_adam_beta2`). SGD is the default because its steps keep the size of each example's loss
            difference, while Adam moves every logit by about the same step, which coarsens the ranking
            (`benchmarks/results/seal.md`: on the planted task Adam keeps 4 of 32 harmful examples, SGD none).
        ranker_adam_beta1 (`float`, *optional*, defaults to `0.9`):
            Adam's β1 for the ranker.
        ranker_adam_beta2 (`float`, *optional*, defaults to `0.95`):
            Adam's β2 for the ranker.
        weighting (`str`, *optional*, defaults to `"softmax"`):
            How logits become example weights: `"softmax"` (`N · softmax(ω)`) or `"sigmoid"` (`2 · sigmoid(ω)`).
            Sigmoid weighting with Adam moves every logit by about the same step, which gives a near-random ranking:
            it warns.
        upper_level_weight (`float`, *optional*, defaults to `1.0`):
            λ in the first epoch, in [0, 1]: the weight of the safe-set loss in the model's objective.
        upper_level_weight_decay (`float`, *optional*, defaults to `0.03`):
            How much λ drops at the start of every later epoch (λ never goes below 0).
        algorithm (`str`, *optional*, defaults to `"penalty"`):
            `"penalty"`: the paper's practical first-order method. `"full"`: also train an auxiliary model θ̂ on the
            weighted fine-tuning loss alone (a second LoRA adapter on the same base, so it needs a PEFT model) and
            update the ranker on the excess loss `ℓ_i(θ) - ℓ_i(θ̂)`.
        keep_ratio (`float`, *optional*, defaults to `0.8`):
            The fraction p of the fine-tuning set to keep, in (0, 1]; used by [`SEALTrainer.filter`] and recorded
            with the scores.
        safe_batch_size (`int`, *optional*):
            Safe examples per device and step; `per_device_train_batch_size` by default. The safe set cycles.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Sequences are cut to this many tokens (`None`: no limit).
        aux_adapter_name (`str`, *optional*, defaults to `"seal_aux"`):
            Name of the auxiliary LoRA adapter of the full algorithm.
        safe_dataset_name (`str`, *optional*):
            A name for the safe set, recorded with the scores and in the dataset card.
        dataset_num_proc (`int`, *optional*):
            Processes used to hash and tokenize the datasets.
        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the model is given as a string.

    > [!NOTE]
    > These parameters have default values different from [`~transformers.TrainingArguments`]:
    > - `learning_rate`: Defaults to `1e-5` instead of `5e-5` (the paper's).
    > - `logging_steps`: Defaults to `10` instead of `500`.
    > - `num_train_epochs`: Defaults to `3` (the paper's).
    > - `remove_unused_columns`: Defaults to `False`: SEAL keeps its own columns.
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    learning_rate: float = field(default=1e-5, metadata={"help": "The initial learning rate of the model (AdamW)."})
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in (0, 1) for a fraction of all steps)."},
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Total number of training epochs."})
    remove_unused_columns: bool | None = field(
        default=False, metadata={"help": "SEAL keeps the columns it needs itself; leave this False."}
    )

    ranker_learning_rate: float = field(
        default=1.0, metadata={"help": "Learning rate of the ranker's logits (the paper: 5e-3 with Adam)."}
    )
    ranker_optimizer: str = field(
        default="sgd",
        metadata={"help": "Optimiser of the ranker's logits (the paper: adam).", "choices": ["sgd", "adam"]},
    )
    ranker_adam_beta1: float = field(default=0.9, metadata={"help": "Adam's beta1 for the ranker."})
    ranker_adam_beta2: float = field(default=0.95, metadata={"help": "Adam's beta2 for the ranker."})
    weighting: str = field(
        default="softmax",
        metadata={
            "help": "How logits become example weights: softmax (N * softmax) or sigmoid (2 * sigmoid).",
            "choices": ["softmax", "sigmoid"],
        },
    )
    upper_level_weight: float = field(
        default=1.0, metadata={"help": "Lambda in the first epoch: the weight of the safe-set loss, in [0, 1]."}
    )
    upper_level_weight_decay: float = field(
        default=0.03, metadata={"help": "How much lambda drops at the start of every later epoch, in [0, 1]."}
    )
    algorithm: str = field(
        default="penalty",
        metadata={
            "help": "penalty (first-order penalty method) or full (auxiliary LoRA adapter, excess-loss ranker).",
            "choices": ["penalty", "full"],
        },
    )
    keep_ratio: float = field(default=0.8, metadata={"help": "Fraction p of the fine-tuning set to keep, in (0, 1]."})
    safe_batch_size: int | None = field(
        default=None,
        metadata={"help": "Safe examples per device and step (default: per_device_train_batch_size)."},
    )
    max_length: int | None = field(default=1024, metadata={"help": "Cut sequences to this many tokens."})
    aux_adapter_name: str = field(
        default="seal_aux", metadata={"help": "Name of the auxiliary LoRA adapter (full algorithm)."}
    )
    safe_dataset_name: str | None = field(
        default=None, metadata={"help": "A name for the safe set, recorded with the scores and the dataset card."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes used to hash and tokenize the datasets."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for AutoModelForCausalLM.from_pretrained when the model is a string."},
    )

    def __post_init__(self):
        self._validate_seal()
        adopt_activation_checkpointing(self)
        super().__post_init__()

    def _validate_seal(self) -> None:
        check_range("ranker_learning_rate", self.ranker_learning_rate, gt=0)
        if self.ranker_optimizer not in ("adam", "sgd"):
            raise ValueError(f"ranker_optimizer={self.ranker_optimizer!r} is not supported; expected 'adam' or 'sgd'.")
        for name in ("ranker_adam_beta1", "ranker_adam_beta2"):
            check_range(name, getattr(self, name), ge=0, lt=1)
        if self.weighting not in ("softmax", "sigmoid"):
            raise ValueError(f"weighting={self.weighting!r} is not supported; expected 'softmax' or 'sigmoid'.")
        check_range("upper_level_weight", self.upper_level_weight, ge=0, le=1)
        check_range("upper_level_weight_decay", self.upper_level_weight_decay, ge=0, le=1)
        if self.algorithm not in ("penalty", "full"):
            raise ValueError(f"algorithm={self.algorithm!r} is not supported; expected 'penalty' or 'full'.")
        check_range("keep_ratio", self.keep_ratio, gt=0, le=1)
        check_range("safe_batch_size", self.safe_batch_size, ge=1, integer=True, optional=True)
        check_range("max_length", self.max_length, ge=2, integer=True, optional=True)
        if self.weighting == "sigmoid" and self.ranker_optimizer == "adam":
            warnings.warn(
                "weighting='sigmoid' with ranker_optimizer='adam' gives a near-random ranking: every logit's gradient "
                "has the same sign, so Adam moves each one by about the same step. Use weighting='softmax', or "
                "ranker_optimizer='sgd'.",
                UserWarning,
                stacklevel=3,
            )
