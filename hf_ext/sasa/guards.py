"""Options of `generate` that would cut SASA's distribution a second time, and how the processor finds them.

[`SASALogitsProcessor`] samples from its own nucleus: it computes the nucleus (`top_p` at its `temperature`, at most
`max_candidates` tokens), tilts the candidates' scores and sets every other token to `-inf`. `generate` applies its
own warpers (temperature, top-k, top-p, min-p, typical, epsilon, eta, top-h) *after* user processors, so a `top_p` /
`top_k` of `generate`'s would cut the tilted distribution again, and a `temperature` other than the processor's
would sample at another temperature than the one its nucleus was computed at. [`sampling_conflicts`] names each
such option and what to do instead.

`generate` does not hand its configuration to logits processors. Its decoding loops (`_sample`, `_beam_search`,
`_assisted_decoding`) call the processor list with the configuration they run with in hand, as their local
`generation_config`: the call's keyword arguments merged over `model.generation_config` and transformers' global
defaults (a `top_k` of 50 when nobody set one). [`calling_generation_config`] reads it from the calling frames;
where none is found (a standalone call, a custom decoding loop) nothing is checked.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from transformers import GenerationConfig


__all__ = ["TRUNCATING_OPTIONS", "calling_generation_config", "sampling_conflicts"]

TRUNCATING_OPTIONS = {
    "min_p": lambda value: value is not None,
    "typical_p": lambda value: value is not None and value < 1.0,
    "epsilon_cutoff": lambda value: value is not None and 0.0 < value < 1.0,
    "eta_cutoff": lambda value: value is not None and 0.0 < value < 1.0,
    "top_h": lambda value: value is not None,
}
"""`generate`'s other truncating warpers: option -> whether a value adds the warper (as `generate` decides)."""

SEARCH_DEPTH = 8
"""Frames above the processor searched for `generate`'s configuration."""


def calling_generation_config(depth: int = SEARCH_DEPTH, skip: int = 2) -> GenerationConfig | None:
    """The `GenerationConfig` of the `generate` call that is running the caller, or `None` outside `generate`.

    Looks for a local named `generation_config` holding a `GenerationConfig` in the `depth` frames above the
    caller's caller (`skip=2`: above the function that calls this one).
    """
    try:
        frame = sys._getframe(skip)
    except ValueError:  # fewer frames than `skip`
        return None
    for _ in range(depth):
        if frame is None:
            return None
        config = frame.f_locals.get("generation_config")
        if isinstance(config, GenerationConfig):
            return config
        frame = frame.f_back
    return None


def sampling_conflicts(
    options: GenerationConfig | Mapping,
    *,
    top_p: float,
    temperature: float,
    max_candidates: int | None,
    filters: bool = True,
    source: str = "generate samples",
) -> list[str]:
    """What in `generate`'s `options` would change the distribution a SASA processor hands it, one message each.

    Args:
        options (`GenerationConfig` or `Mapping`): The configuration `generate` runs with (a `GenerationConfig`:
            nothing is reported unless it samples, `do_sample=True`), or keyword arguments for `generate`.
        top_p, temperature, max_candidates: The processor's nucleus settings.
        filters (`bool`, *optional*, defaults to `True`): Whether the processor filters out every non-candidate
            (`filter_non_candidates`). If not, `generate`'s own truncation is what cuts the tail, and only the
            temperature is checked.
        source (`str`, *optional*): How the messages name what samples with the options.

    Returns:
        `list[str]`: one message per conflicting option, naming it, its value and what to do; empty when the
        options leave SASA's distribution as it is. `top_k` conflicts only when it keeps fewer tokens than the
        processor's candidates (`top_k >= max_candidates` cuts nothing).
    """
    if isinstance(options, GenerationConfig) and not options.do_sample:
        return []

    def get(name):
        return options.get(name) if isinstance(options, Mapping) else getattr(options, name, None)

    messages = []
    where = f"{source} with"
    value = get("temperature")
    value = 1.0 if value is None else float(value)  # generate samples at 1.0 without a temperature
    given = not isinstance(options, Mapping) or "temperature" in options  # kwargs without one get the processor's
    if given and abs(value - temperature) > 1e-6 * max(1.0, temperature):
        messages.append(
            f"{where} temperature={value:g} but the SASALogitsProcessor computed its nucleus at temperature="
            f"{temperature:g}: pass the same temperature to both (SASALogitsProcessor(..., temperature={value:g}) "
            f"or generate(..., temperature={temperature:g}))."
        )
    if not filters:
        return messages
    value = get("top_p")
    if value is not None and value < 1.0:
        messages.append(
            f"{where} top_p={value:g}, a second nucleus cut after SASA's tilt (the SASALogitsProcessor already samples "
            f"from its own nucleus, top_p={top_p:g}): leave generate's top_p unset (top_p=None) and set the "
            "processor's top_p instead."
        )
    value = get("top_k")
    if value is not None and value != 0 and (max_candidates is None or value < max_candidates):
        cap = "its whole nucleus (max_candidates=None)" if max_candidates is None else f"up to {max_candidates}"
        messages.append(
            f"{where} top_k={value}, which keeps only the {value} highest tilted scores of SASA's candidates ({cap}; "
            "transformers' default is top_k=50 when neither the call nor model.generation_config sets one): pass "
            "top_k=None to generate and bound the candidates with the processor's max_candidates instead."
        )
    for name, truncates in TRUNCATING_OPTIONS.items():
        value = get(name)
        if truncates(value):
            messages.append(
                f"{where} {name}={value:g}, which filters SASA's distribution again after the tilt: leave {name} "
                "unset (None) when sampling with SASA."
            )
    return messages
