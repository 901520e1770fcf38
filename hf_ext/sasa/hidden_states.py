"""What SASA needs from a causal LM: its decoder body, hidden states at a layer, and positions as `generate` makes them.

The probe and the processor both read hidden states through [`hidden_states_at`] on the model's decoder body (the
module under the LM head), so a probe fitted here measures exactly the states the processor later sees. The LM
head is never run: SASA needs only the hidden states.
"""

from __future__ import annotations

import inspect

import torch

from .._compat import CACHE_NAME


__all__ = [
    "SUPPORTED_ATTENTION",
    "attention_implementation",
    "causal_lm_of",
    "decoder_body",
    "decoder_layers",
    "hidden_states_at",
    "model_signature",
    "positions_from_mask",
]

SUPPORTED_ATTENTION = ("eager", "sdpa")
"""Attention implementations that take the additive 4-D mask of the candidate forward."""


def causal_lm_of(model):
    """The transformers causal LM inside `model`: `model` itself, or the base model of a PEFT wrapper."""
    seen = set()
    while hasattr(model, "get_base_model") and id(model) not in seen:
        seen.add(id(model))
        inner = model.get_base_model()
        if inner is model:
            break
        model = inner
    return model


def decoder_body(model):
    """The decoder stack under the LM head (e.g. `LlamaModel`, `GPT2Model`); raises `ValueError` when `model` has
    none that can return hidden states."""
    lm = causal_lm_of(model)
    config = getattr(lm, "config", None)
    name = type(lm).__name__
    if config is None or not isinstance(lm, torch.nn.Module):
        raise ValueError(f"{name} is not a transformers model: SASA needs a causal LM with a config.")
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model; SASA supports decoder-only causal LMs.")
    body = getattr(lm, "base_model", None)
    if body is None or body is lm or not isinstance(body, torch.nn.Module):
        raise ValueError(
            f"{name} cannot return hidden states: it has no decoder body under its LM head "
            "(`model.base_model`), which SASA reads hidden states from."
        )
    parameters = inspect.signature(body.forward).parameters
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [k for k in (CACHE_NAME, "position_ids", "attention_mask") if k not in parameters]
    if missing and not accepts_kwargs:
        raise ValueError(f"{type(body).__name__}.forward does not take {missing}; SASA cannot run candidate forwards.")
    if "output_hidden_states" not in parameters and not accepts_kwargs:
        raise ValueError(f"{type(body).__name__} cannot return hidden states (no `output_hidden_states` argument).")
    return body


def text_config(model):
    lm = causal_lm_of(model)
    config = lm.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_implementation(model) -> str | None:
    config = text_config(model)
    return getattr(config, "_attn_implementation", None) or getattr(config, "attn_implementation", None)


def model_signature(model) -> dict:
    """What identifies the model a probe was fitted on: its name or path and its architecture."""
    config = text_config(model)
    return {
        "model_name_or_path": getattr(causal_lm_of(model).config, "_name_or_path", None) or None,
        "model_type": getattr(config, "model_type", None),
        "hidden_size": int(config.hidden_size),
        "num_hidden_layers": int(config.num_hidden_layers),
        "vocab_size": int(config.vocab_size) if getattr(config, "vocab_size", None) is not None else None,
    }


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as `generate` makes them from a 2-D padding mask: `cumsum(mask) − 1`, 0 on padding."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


class _StopForward(Exception):
    """Raised by the pre-hook of [`hidden_states_at`] once the requested hidden states are in hand."""


def decoder_layers(body) -> torch.nn.ModuleList | None:
    """The decoder layers of a decoder body (`layers`, or `h` in GPT-2 style bodies); `None` when it has neither."""
    layers = getattr(body, "layers", None)
    if layers is None:
        layers = getattr(body, "h", None)  # GPT-2 style bodies
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0 else None


def hidden_states_at(body, layer: int, **inputs) -> torch.Tensor:
    """Run `body(**inputs)` and return the hidden states of `layer` (`-1`: the last layer, i.e. the LM head's
    input), shape `(batch, seq, hidden)`.

    `hidden_states[i]` is the input of decoder layer `i` (`i = 0`: the embeddings), so for an intermediate layer the
    forward stops right there, before decoder layer `i` runs: the layers above it cost nothing (and leave a KV cache
    passed in `inputs` untouched). Bodies without a `layers` / `h` module list run whole, with
    `output_hidden_states=True`.
    """
    if layer == -1:
        return body(**inputs, return_dict=True).last_hidden_state
    layers = decoder_layers(body)
    index = layer if layer >= 0 else layer + len(layers) + 1 if layers is not None else None
    if layers is not None and 0 <= index < len(layers):
        captured = []

        def grab(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _StopForward

        handle = layers[index].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            body(**inputs, return_dict=True)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if captured:
            return captured[0]
    outputs = body(**inputs, output_hidden_states=True, return_dict=True)
    if outputs.hidden_states is None:
        raise ValueError(f"{type(body).__name__} returned no hidden states.")
    return outputs.hidden_states[layer]
