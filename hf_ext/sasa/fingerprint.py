"""A fingerprint of the weights a probe reads through, so that a probe is never used with another model of the same width.

A probe is a direction in one model's hidden-state space: on another model with the same hidden size (another
checkpoint of the architecture, a fine-tune, a random initialisation) it still yields margins, but they mean
nothing and can steer *towards* the undesired side. The architecture and the name or path cannot tell such models
apart (a local copy has another path, a fine-tune the same config), so the probe also records a few values of the
weights themselves: the input embedding, the decoder layer whose output it reads (for the last layer, also the
final norm), [`SAMPLES`] values each at fixed pseudo-random positions.

They are compared with a tolerance far above rounding: the same model loaded in bfloat16 / float16, with PEFT
adapters on top, or in 4-bit / 8-bit (whose quantized matrices are left out: only floating-point tensors are
sampled, and only the tensors both fingerprints hold are compared) matches; another model's weights differ by
their whole size.
"""

from __future__ import annotations

import hashlib
import math

import torch

from .hidden_states import causal_lm_of, decoder_body, decoder_layers


__all__ = ["SAMPLES", "compare_fingerprints", "model_fingerprint"]

SAMPLES = 16
"""Values sampled from each tensor."""
RTOL = 2e-2
"""Relative tolerance of the comparison (bfloat16 rounds to 4e-3)."""
ATOL = 1e-3
"""Absolute tolerance, relative to the largest sampled value of the tensor (float16 loses small values)."""


def _sample(tensor: torch.Tensor, count: int = SAMPLES) -> list[float] | None:
    """`count` values of `tensor` at positions fixed by its size (the same positions in every model of that shape);
    `None` for a tensor that cannot be read (quantized storage, offloaded to the meta device)."""
    if not isinstance(tensor, torch.Tensor) or not tensor.dtype.is_floating_point or tensor.device.type == "meta":
        return None
    numel = tensor.numel()
    if numel == 0:
        return None
    generator = torch.Generator().manual_seed(numel)
    positions = torch.randint(0, numel, (min(count, numel),), generator=generator)
    values = tensor.detach().reshape(-1)[positions.to(tensor.device)].float().cpu()
    return [float(v) for v in values]


def _parameters(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The module's own weights by a name that PEFT does not change (adapter weights left out)."""
    out = {}
    for name, parameter in module.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        out[f"{prefix}.{name.replace('.base_layer', '')}"] = parameter
    return out


def model_fingerprint(model, layer: int) -> dict:
    """The fingerprint of the weights that produce `model`'s hidden states at `layer` (an index into its hidden
    states, `-1`: the last layer).

    Returns:
        `dict` with `layer`, `samples` (tensor name -> sampled values) and `digest` (a short hash of the sampled values
        rounded to bfloat16, to name the model in messages).
    """
    lm = causal_lm_of(model)
    body = decoder_body(model)
    tensors = {"embedding": lm.get_input_embeddings().weight}
    layers = decoder_layers(body)
    if layers is not None:
        index = layer if layer >= 0 else layer + len(layers) + 1
        if index >= 1:
            tensors |= _parameters(layers[index - 1], f"layer.{index - 1}")
        if index == len(layers):  # the last layer's hidden states are also normalised by the final norm
            inside = {id(p) for p in layers.parameters()} | {id(tensors["embedding"])}
            final = {n: p for n, p in body.named_parameters() if id(p) not in inside and "lora_" not in n}
            tensors |= {f"final.{name}": p for name, p in final.items()}
    samples = {name: values for name, tensor in tensors.items() if (values := _sample(tensor)) is not None}
    digest = hashlib.sha256()
    for name in sorted(samples):
        rounded = torch.tensor(samples[name]).to(torch.bfloat16).float()
        digest.update(name.encode() + rounded.numpy().tobytes())
    return {"layer": int(layer), "samples": samples, "digest": digest.hexdigest()[:16]}


def compare_fingerprints(saved: dict, current: dict) -> str | None:
    """`None` when two fingerprints (of the same layer) match; otherwise what differs, in words.

    Only the tensors both hold are compared; with none in common, `None` (nothing to tell them apart with).
    """
    common = sorted(set(saved.get("samples", {})) & set(current.get("samples", {})))
    differing = []
    for name in common:
        a = torch.tensor(saved["samples"][name], dtype=torch.float64)
        b = torch.tensor(current["samples"][name], dtype=torch.float64)
        if a.shape != b.shape:
            differing.append((name, math.inf))
            continue
        scale = float(a.abs().max())
        tolerance = RTOL * a.abs() + ATOL * scale
        if bool(((a - b).abs() > tolerance).any()):
            differing.append((name, float(((a - b).abs() / (a.abs() + ATOL * scale + 1e-30)).max())))
    if not differing:
        return None
    shown = ", ".join(f"{name} (relative difference up to {diff:.2g})" for name, diff in differing[:3])
    return f"{len(differing)} of {len(common)} sampled weight tensors differ: {shown}"
