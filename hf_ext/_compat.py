"""What differs between the transformers releases hf-ext supports, in one place.

transformers 5.24 renamed the KV cache argument and output field `past_key_values` to `cache` (the old name is
deprecated, to be removed in 5.40); 5.23 and earlier know only `past_key_values`. hf-ext's code is written with the
new name and passes the cache to a transformers model through [`cache_kwargs`], so that it never uses a deprecated
argument on the newest release and still runs on the older ones.
"""

from __future__ import annotations

import dataclasses


__all__ = ["CACHE_NAME", "cache_kwargs", "model_output_cache", "named_cache_field", "pop_cache"]


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
