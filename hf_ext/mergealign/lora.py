"""PEFT LoRA adapters as MergeAlign inputs: tau = scaled B @ A, without writing a merged model.

An adapter trained on the base model *is* a task vector in factored form: for every adapted weight W,
`tau_W = scaling * B @ A` (transposed for embeddings and `fan_in_fan_out` layers), and for every module the
adapter saves whole (`modules_to_save`, a resized embedding), `tau_W = W_saved - W_base`. [`LoraAdapter`] reads
`adapter_config.json` and `adapter_model.safetensors` and gives these per-tensor vectors; it never builds the
merged model.

In a mergekit configuration an adapter is written like any mergekit LoRA input, `model: base+path/to/adapter`,
or simply `model: path/to/adapter` (applied to the merge's `base_model`). `hf-ext merge` serves such an input
tensor by tensor, as the base tensor plus the adapter's update in float32, where mergekit alone would first save
a merged copy of the whole model (`--lora-merge-cache`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .vectors import accumulation_dtype, lora_delta


__all__ = ["AdapterTensorLoader", "LoraAdapter", "lora_task_vector"]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model."


class LoraAdapter:
    """A PEFT LoRA adapter, read as per-tensor task vectors.

    Args:
        folder (`str` or `os.PathLike`): The adapter folder (`adapter_config.json` + `adapter_model.safetensors`).

    Raises:
        `ValueError`: The adapter is not a plain LoRA (DoRA, LoRA biases, `target_parameters`, trainable token
            indices and layer replication change the weights in ways that are not `B @ A`).
    """

    def __init__(self, folder: str | os.PathLike):
        from ..serialization import load_tensors

        self.folder = Path(folder)
        config_path = self.folder / "adapter_config.json"
        weights_path = self.folder / ADAPTER_WEIGHTS_NAME
        if not config_path.is_file():
            raise ValueError(f"{self.folder} is not a PEFT adapter folder: it has no adapter_config.json.")
        if not weights_path.is_file():
            raise ValueError(
                f"The adapter {self.folder} has no {ADAPTER_WEIGHTS_NAME} (only safetensors adapters are read)."
            )
        self.config = json.loads(config_path.read_text(encoding="utf-8"))
        self._check_config()
        tensors = load_tensors(weights_path)
        non_finite = [
            key for key, tensor in tensors.items() if tensor.is_floating_point() and not tensor.isfinite().all()
        ]
        if non_finite:
            raise ValueError(
                f"The adapter {self.folder} holds NaN or infinite values in {len(non_finite)} tensor(s) "
                f"({', '.join(non_finite[:3])}{' ...' if len(non_finite) > 3 else ''}); its task vector would be NaN."
            )
        self.factors: dict[str, dict[str, torch.Tensor]] = {}  # weight name -> {"A", "B", "embedding"}
        self.saved: dict[str, torch.Tensor] = {}  # weight name -> whole tensor saved by the adapter
        for key, tensor in tensors.items():
            name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
            for marker, factor, embedding in (
                (".lora_A.weight", "A", False),
                (".lora_B.weight", "B", False),
                (".lora_embedding_A", "A", True),
                (".lora_embedding_B", "B", True),
            ):
                if name.endswith(marker):
                    module = name[: -len(marker)]
                    entry = self.factors.setdefault(f"{module}.weight", {"module": module, "embedding": embedding})
                    entry[factor] = tensor
                    break
            else:
                if ".lora_" in name:
                    raise ValueError(f"The adapter {self.folder} holds {key!r}, which is not a LoRA A / B factor.")
                self.saved[name.replace(".base_layer.", ".")] = tensor
        incomplete = sorted(name for name, entry in self.factors.items() if not {"A", "B"} <= set(entry))
        if incomplete:
            raise ValueError(f"The adapter {self.folder} lacks the A or B factor of {incomplete[:3]}.")

    def _check_config(self) -> None:
        config = self.config
        unsupported = {
            "peft_type": config.get("peft_type", "LORA") != "LORA",
            "use_dora": bool(config.get("use_dora")),
            "lora_bias": bool(config.get("lora_bias")),
            "bias": config.get("bias", "none") not in ("none", None),
            "target_parameters": bool(config.get("target_parameters")),
            "trainable_token_indices": bool(config.get("trainable_token_indices")),
            "layer_replication": bool(config.get("layer_replication")),
        }
        problems = [f"{key}={config.get(key)!r}" for key, bad in unsupported.items() if bad]
        if problems:
            raise ValueError(
                f"The adapter {self.folder} is not a plain LoRA adapter ({', '.join(problems)}); MergeAlign reads "
                "adapters whose update is scaled B @ A (peft_type='LORA', use_dora=False, lora_bias=False, "
                "bias='none'). Merge such an adapter into its base with PEFT's merge_and_unload() first."
            )

    @property
    def weight_names(self) -> list[str]:
        """The weights this adapter changes (by a LoRA update or a saved replacement)."""
        return sorted(set(self.factors) | set(self.saved))

    def scaling(self, module: str, rank: int) -> float:
        """`lora_alpha / r` (or `/ sqrt(r)` with rank-stabilised LoRA), honouring `alpha_pattern`."""
        from peft.utils.other import get_pattern_key

        alpha_pattern = self.config.get("alpha_pattern") or {}
        alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), self.config.get("lora_alpha", 8))
        return alpha / math.sqrt(rank) if self.config.get("use_rslora") else alpha / rank

    def delta(self, name: str, device: str | torch.device | None = None) -> torch.Tensor | None:
        """The LoRA update of weight `name` (float32, laid out like the weight, on `device`: the CPU by default), or
        `None` if it has none.

        Computed on each call (a rank-r product), so that a large model's updates are never all held at once."""
        entry = self.factors.get(name)
        if entry is None:
            return None
        a, b = entry["A"], entry["B"]
        if device is not None:
            a, b = a.to(device), b.to(device)
        return lora_delta(
            a,
            b,
            self.scaling(entry["module"], a.shape[0]),
            fan_in_fan_out=bool(self.config.get("fan_in_fan_out")) and not entry["embedding"],
            embedding=entry["embedding"],
        )

    def task_vector(self, name: str, base: torch.Tensor) -> torch.Tensor | None:
        """`theta_adapted - theta_base` for weight `name` (float32), or `None` where the adapter changes nothing."""
        delta = self.delta(name, device=base.device)
        saved = self.saved.get(name)
        if saved is None:
            return delta
        dtype = accumulation_dtype(base.dtype)
        tau = saved.to(base.device).to(dtype) - base.to(dtype)
        return tau if delta is None else tau.add_(delta)

    def apply(self, name: str, base: torch.Tensor) -> torch.Tensor:
        """The adapted weight `name`, in float32 (float64 for a float64 base): the saved replacement or the base,
        plus the LoRA update."""
        delta = self.delta(name)
        saved = self.saved.get(name)
        dtype = accumulation_dtype(base.dtype)
        weight = (saved if saved is not None else base).to(dtype)
        return weight if delta is None else weight + delta.to(dtype)

    def check_shapes(self, base_shapes: dict[str, tuple[int, ...]], *, role: str = "input") -> None:
        """Raise a `ValueError` when the adapter targets a weight the base lacks, or one of another shape."""
        problems, mismatches = [], []
        for name in self.weight_names:
            if name not in base_shapes:
                problems.append(f"{name} (not in the base)")
                continue
            entry = self.factors.get(name)
            if entry is not None:
                a, b = entry["A"], entry["B"]
                shape = (b.shape[0], a.shape[1])
                if entry["embedding"] or (self.config.get("fan_in_fan_out") and not entry["embedding"]):
                    shape = shape[::-1]
                if shape != tuple(base_shapes[name]):
                    problems.append(f"{name}: update {shape} vs {tuple(base_shapes[name])} in the base")
                    mismatches.append((name, shape, tuple(base_shapes[name])))
            saved = self.saved.get(name)
            if saved is not None and tuple(saved.shape) != tuple(base_shapes[name]):
                problems.append(f"{name}: saved {tuple(saved.shape)} vs {tuple(base_shapes[name])} in the base")
                mismatches.append((name, tuple(saved.shape), tuple(base_shapes[name])))
        if problems:
            from .weights import vocabulary_hint

            raise ValueError(
                f"The {role} adapter {self.folder} does not fit the base model: {'; '.join(problems[:3])}"
                f"{' ...' if len(problems) > 3 else ''}.{vocabulary_hint(mismatches)} Was it trained on another base?"
            )


def lora_task_vector(adapter: str | os.PathLike, base: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The task vector of a PEFT LoRA adapter, `{weight name: tau}` in float32, for the weights it changes.

    Args:
        adapter (`str` or `os.PathLike`): The adapter folder (or Hub id).
        base (`str` or `os.PathLike`, *optional*):
            The base model; needed only when the adapter saves whole modules (`modules_to_save`), whose vector is
            `saved - base`. Defaults to the adapter's `base_model_name_or_path`. When given (or needed), every weight
            the adapter changes is checked against it first.

    Raises:
        `ValueError`: the adapter is not a plain LoRA, holds NaN / inf, or does not fit the base (the tensor and both
            shapes are named).
    """
    from .weights import CheckpointWeights, resolve_input

    lora = LoraAdapter(resolve_input(adapter))
    weights = None
    if base is not None or lora.saved:
        weights = CheckpointWeights(resolve_input(base or lora.config["base_model_name_or_path"]))
        lora.check_shapes(weights.shapes())
    vectors = {name: lora.delta(name) for name in lora.factors}
    if lora.saved:
        for name in lora.saved:
            vectors[name] = lora.task_vector(name, weights.get(name))
    return vectors


class AdapterTensorLoader:
    """A mergekit tensor loader for `base+adapter`: the base checkpoint's tensors with the adapter applied.

    It stands in for mergekit's `LazyTensorLoader` in `LoaderCache` (same `index`, `get_tensor`, `flush`), so
    that mergekit reads the adapted model tensor by tensor instead of merging the adapter into a saved copy.
    Adapted tensors come out in float32 (float64 for a float64 base); mergekit casts them to the configuration's
    `dtype` when one is set.
    """

    def __init__(self, base_loader, adapter: LoraAdapter):
        self.base_loader = base_loader
        self.adapter = adapter
        self.index = base_loader.index
        self._changed = set(adapter.weight_names)

    def get_tensor(self, key: str, device: str = "cpu", aliases=None, raise_on_missing: bool = True):
        tensor = self.base_loader.get_tensor(key, device=device, aliases=aliases, raise_on_missing=raise_on_missing)
        if tensor is None or key not in self._changed:
            return tensor
        return self.adapter.apply(key, tensor).to(device)

    def flush(self) -> None:
        self.base_loader.flush()
