"""What differs between the transformers releases hf-ext supports, in one place.

transformers 5.24 renamed two things, deprecating the old names:
- the KV cache argument and output field `past_key_values` -> `cache` (removal in 5.40). hf-ext's code is written
  with the new name and passes the cache to a transformers model through [`cache_kwargs`];
- gradient checkpointing -> activation checkpointing: `gradient_checkpointing_enable` ->
  `activation_checkpointing_enable` and the `TrainingArguments` field `gradient_checkpointing` ->
  `activation_checkpointing` (removal in v6). hf-ext enables it through [`enable_activation_checkpointing`], and
  its TRL-derived configs move TRL's value to the new field ([`adopt_activation_checkpointing`]).
So hf-ext never uses a deprecated name on the newest release and still runs on the older ones.
"""

from __future__ import annotations

import dataclasses


__all__ = [
    "CACHE_NAME",
    "activation_checkpointing_arg",
    "adopt_activation_checkpointing",
    "cache_kwargs",
    "enable_activation_checkpointing",
    "model_output_cache",
    "named_cache_field",
    "pop_cache",
]


def _installed_cache_name() -> str:
    from transformers.modeling_outputs import BaseModelOutputWithPast

    names = {field.name for field in dataclasses.fields(BaseModelOutputWithPast)}
    return "cache" if "cache" in names else "past_key_values"


CACHE_NAME: str = _installed_cache_name()
"""The name the installed transformers gives the KV cache, in model arguments and outputs: `"cache"` from 5.24 on,
`"past_key_values"` before."""

_LEGACY_NAMES = ("past_key_values", "cache_params")


def cache_kwargs(cache) -> dict:
    """`{CACHE_NAME: cache}`: the keyword that hands `cache` to a transformers model's `forward`."""
    return {CACHE_NAME: cache}


def model_output_cache(outputs):
    """The cache a transformers model returned (`None` when it returned none)."""
    return outputs.get(CACHE_NAME) if hasattr(outputs, "get") else getattr(outputs, CACHE_NAME, None)


def pop_cache(kwargs: dict, cache=None):
    """Take a cache passed under its pre-5.24 names out of `kwargs` (transformers < 5.24's `generate` passes
    `past_key_values=`); returns `cache`, or the one found. Both at once is an error, as in transformers."""
    for name in _LEGACY_NAMES:
        if name in kwargs:
            legacy = kwargs.pop(name)
            if legacy is not None:
                if cache is not None:
                    raise ValueError(f"Pass the KV cache once: got both `cache` and `{name}`; use `cache`.")
                cache = legacy
    return cache


def named_cache_field(cls):
    """Class decorator, under `@dataclass`, for a `ModelOutput` written with a field `cache`: renames the field to
    `past_key_values` on transformers < 5.24, where `generate` reads the cache from outputs under that name."""
    if CACHE_NAME == "cache":
        return cls
    annotations = {(CACHE_NAME if name == "cache" else name): kind for name, kind in cls.__annotations__.items()}
    setattr(cls, CACHE_NAME, cls.__dict__["cache"])
    delattr(cls, "cache")
    cls.__annotations__ = annotations
    return cls


def enable_activation_checkpointing(model, checkpointing_kwargs: dict | None = None) -> None:
    """Turn on activation (gradient) checkpointing of a transformers model, under the installed release's name."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=checkpointing_kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)


def activation_checkpointing_arg() -> str:
    """The `TrainingArguments` field that turns checkpointing on: `"activation_checkpointing"` on transformers >=
    5.24, `"gradient_checkpointing"` before (for configs hf-ext builds of TRL's own classes, e.g. `DPOConfig`)."""
    from transformers import TrainingArguments

    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def adopt_activation_checkpointing(args) -> None:
    """Before `TrainingArguments.__post_init__`: move `gradient_checkpointing(_kwargs)` to
    `activation_checkpointing(_kwargs)` when the installed transformers has the new fields and the new one is unset.

    TRL's configs still default `gradient_checkpointing=True`, which transformers >= 5.24 warns about on every config
    built; the value is kept, only its field changes (transformers then mirrors it back to the old name).
    """
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if hasattr(args, new) and getattr(args, new) is None and getattr(args, old, None) is not None:
            setattr(args, new, getattr(args, old))
            setattr(args, old, None)
