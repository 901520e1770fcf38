"""`AOTConfig`: the configuration of [`~hf_ext.aot.AOTTrainer`], a `trl.DPOConfig` with AOT's own fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import DPOConfig

from hf_ext._validation import check_range

from .._compat import adopt_activation_checkpointing
from .losses import COSTS


__all__ = ["AOT_VARIANTS", "AOTConfig"]

AOT_VARIANTS = ("paired", "unpaired")
_TRL_LOSS_TYPES = {"paired": "aot", "unpaired": "aot_unpaired"}


def _default_bf16() -> bool:
    """bf16 where the accelerator supports it (as `DPOConfig`), else full precision (CPU-only machines)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return hasattr(torch, "xpu") and torch.xpu.is_available()


@dataclass
class AOTConfig(DPOConfig):
    r"""
    Configuration class for the [`~hf_ext.aot.AOTTrainer`].

    AOT (alignment via optimal transport, [Melnyk et al., 2024](https://huggingface.co/papers/2406.05882)) asks the
    distribution of rewards of good answers to dominate the distribution of rewards of bad answers in the first
    stochastic order, and relaxes the violation into a one-dimensional optimal-transport loss computed by sorting.
    This class adds AOT's parameters to [`~trl.DPOConfig`]; every other parameter (the reference model,
    `precompute_ref_log_probs`, `max_length`, the [`~transformers.TrainingArguments`]) means what it means there.

    Parameters:
        > Parameters that control the AOT loss

        aot_variant (`str`, *optional*, defaults to `"paired"`):
            `"paired"` (TRL's `"aot"`): the distribution of the policy's log-ratio margins
            `log πθ(y⁺|x) - log πθ(y⁻|x)` must dominate the reference model's. Needs a paired dataset
            (`prompt` / `chosen` / `rejected`). `"unpaired"` (TRL's `"aot_unpaired"`): the implicit rewards
            `log πθ(y|x) - log π_ref(y|x)` of desirable completions must dominate those of undesirable ones. Takes
            an unpaired dataset (`prompt` / `completion` / `label`, KTO-style, any number of positives and
            negatives per batch) or a paired one, whose chosen and rejected completions are then unpaired on the
            fly.
        aot_cost (`str`, *optional*, defaults to `"logistic"`):
            Convex relaxation `h` of the violation, applied to `s = beta * (Q_u(t) - Q_v(t))`: `"logistic"`
            (`-log σ(s - margin)`, TRL's), `"hinge"` (`max(0, margin - s)`), `"squared_hinge"`
            (`max(0, margin - s)²`) or `"least_squares"` (`(margin - s)²`).
        beta (`float`, *optional*, defaults to `0.01`):
            Scale of the reward differences (the paper's default is 0.01; `DPOConfig`'s is 0.1).
        aot_margin (`float`, *optional*, defaults to `0.0`):
            Margin asked of the scaled quantile differences: the cost is zero (hinge) or small only when
            `beta * (Q_u(t) - Q_v(t)) >= aot_margin`.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            `ε` of the logistic cost, `-(1 - ε) log σ(s) - ε log σ(-s)` (conservative AOT), in `[0, 0.5]`. Only
            for `aot_cost="logistic"`.
        aot_soft_sort_temperature (`float`, *optional*):
            If set, sort with a differentiable relaxation of the sort (NeuralSort) at this temperature instead of
            the hard sort, so that every sample gets a gradient from its neighbours' quantiles.
        aot_global_sort (`bool`, *optional*, defaults to `True`):
            Under several processes, gather the rewards of every process (with an autograd-aware all-gather) and
            sort the global batch, so that the loss and the gradients equal those of one process holding the whole
            batch. AOT's quantiles are estimated from the sorted batch: the larger, the better.

    > [!NOTE]
    > These parameters have default values different from [`~trl.DPOConfig`]:
    > - `beta`: Defaults to `0.01` (the AOT paper's) instead of `0.1`.
    > - `bf16`: Defaults to `True` only where the accelerator supports it, so the same config runs on a CPU.
    > - `loss_type`: Set from `aot_variant` (`["aot"]` or `["aot_unpaired"]`); any other value is an error.
    """

    beta: float = field(
        default=0.01,
        metadata={
            "help": "Scale of the reward differences inside the AOT cost: s = beta * (Q_u(t) - Q_v(t)). The AOT "
            "paper's default is 0.01."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Whether to use bf16 (mixed) precision instead of 32-bit. If not set, defaults to `True` where "
            "the accelerator supports bf16 (and `fp16` is not set), else `False`."
        },
    )
    loss_type: list[str] | None = field(
        default=None,
        metadata={
            "help": "Set from `aot_variant`: `['aot']` for 'paired', `['aot_unpaired']` for 'unpaired'. Any other "
            "value is an error."
        },
    )
    aot_variant: str = field(
        default="paired",
        metadata={
            "help": "'paired': the policy's log-ratio margins must dominate the reference model's (prompt / chosen "
            "/ rejected data). 'unpaired': rewards of desirable completions must dominate those of undesirable ones "
            "(prompt / completion / label data, or paired data unpaired on the fly).",
            "choices": list(AOT_VARIANTS),
        },
    )
    aot_cost: str = field(
        default="logistic",
        metadata={
            "help": "Convex relaxation of the dominance violation: 'logistic' (TRL's), 'hinge', 'squared_hinge' or "
            "'least_squares'.",
            "choices": list(COSTS),
        },
    )
    aot_margin: float = field(
        default=0.0,
        metadata={"help": "Margin asked of the scaled quantile differences: beta * (Q_u(t) - Q_v(t)) >= aot_margin."},
    )
    aot_soft_sort_temperature: float | None = field(
        default=None,
        metadata={
            "help": "If set (> 0), sort with a differentiable NeuralSort relaxation at this temperature instead of "
            "the hard sort."
        },
    )
    aot_global_sort: bool = field(
        default=True,
        metadata={
            "help": "Under several processes, gather every process's rewards with an autograd-aware all-gather and "
            "sort the global batch (loss and gradients equal one process on the concatenated batch)."
        },
    )

    def __post_init__(self):
        self._validate_aot()
        adopt_activation_checkpointing(self)
        if self.bf16 is None:
            self.bf16 = not self.fp16 and not self.use_cpu and _default_bf16()
        super().__post_init__()

    def _validate_aot(self) -> None:
        if self.aot_variant not in AOT_VARIANTS:
            raise ValueError(
                f"aot_variant={self.aot_variant!r} is not supported; expected one of {list(AOT_VARIANTS)}."
            )
        if self.aot_cost not in COSTS:
            raise ValueError(f"aot_cost={self.aot_cost!r} is not supported; expected one of {list(COSTS)}.")
        check_range("beta", self.beta, gt=0, hint="(AOT's default: 0.01)")
        check_range("aot_margin", self.aot_margin)
        check_range(
            "aot_soft_sort_temperature", self.aot_soft_sort_temperature, gt=0, optional=True, hint="(None: hard sort)"
        )
        check_range("label_smoothing", self.label_smoothing, ge=0, le=0.5)
        if self.label_smoothing != 0.0 and self.aot_cost != "logistic":
            raise ValueError(
                f"label_smoothing={self.label_smoothing!r} only applies to aot_cost='logistic', not "
                f"aot_cost={self.aot_cost!r}; expected label_smoothing=0.0."
            )
        expected = _TRL_LOSS_TYPES[self.aot_variant]
        loss_type = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
        if loss_type is not None and list(loss_type) != [expected]:
            raise ValueError(
                f"loss_type={self.loss_type!r} does not match aot_variant={self.aot_variant!r}; leave loss_type unset "
                f"(AOTConfig sets it to ['{expected}'])."
            )
        self.loss_type = [expected]
        if self.loss_weights is not None:
            raise ValueError(f"loss_weights={self.loss_weights!r} is not supported by AOT; expected None.")
        if self.ld_alpha is not None:
            raise ValueError(f"ld_alpha={self.ld_alpha!r} is not supported by AOT; expected None.")
        if self.f_divergence_type != "reverse_kl":
            raise ValueError(
                f"f_divergence_type={self.f_divergence_type!r} is not supported by AOT; expected 'reverse_kl'."
            )
        if self.use_weighting:
            raise ValueError(
                "use_weighting=True is not supported by AOT: the loss sorts the samples, which would misalign "
                "per-pair weights; expected False."
            )
