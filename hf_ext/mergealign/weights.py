"""Reading checkpoints tensor by tensor, and the base / domain / alignment triple as task vectors.

A [`CheckpointWeights`] is a lazy view of a model folder's safetensors files (one file or a sharded index): the
names and shapes come from the headers, and a tensor is read only when asked for. [`TaskVectors`] pairs a base
with a domain and an alignment input, each a full model folder or a PEFT LoRA adapter, and yields, tensor by
tensor, the base and the two task vectors in float32 — which is what the similarity report and the alpha sweep
need, without ever holding a whole model besides the one being scored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .vectors import accumulation_dtype


__all__ = ["CheckpointWeights", "TaskVectors", "is_adapter_folder", "resolve_input"]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a local PEFT adapter folder (it has an `adapter_config.json`)."""
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG_NAME))


def resolve_input(name_or_path: str | os.PathLike) -> Path:
    """A local folder for a model or adapter: a local path first (a missing one is a `FileNotFoundError`), a Hub id
    downloaded (or found in its cache) otherwise (see `hf_ext.hub.resolve_folder`)."""
    from ..hub import resolve_folder

    return resolve_folder(
        name_or_path, allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja", "*.model"]
    )


class CheckpointWeights:
    """The safetensors weights of a model folder, read lazily.

    Args:
        folder (`str` or `os.PathLike`): A folder with `model.safetensors` or `model.safetensors.index.json`.
    """

    def __init__(self, folder: str | os.PathLike):
        from ..serialization import open_safetensors

        self.folder = Path(folder)
        index = self.folder / SAFE_WEIGHTS_INDEX_NAME
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        elif (self.folder / SAFE_WEIGHTS_NAME).is_file():
            weight_map = None
        else:
            raise ValueError(
                f"{self.folder} has no {SAFE_WEIGHTS_NAME} nor {SAFE_WEIGHTS_INDEX_NAME}: MergeAlign reads safetensors "
                "checkpoints (convert .bin checkpoints with `save_pretrained(..., safe_serialization=True)`)."
            )
        self._handles = {}
        self._file_of: dict[str, str] = {}
        files = sorted(set(weight_map.values())) if weight_map is not None else [SAFE_WEIGHTS_NAME]
        for file in files:
            handle = open_safetensors(self.folder / file)
            self._handles[file] = handle
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                self._file_of[name] = file
        self.names: list[str] = list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._file_of[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return self._handles[self._file_of[name]].get_slice(name).get_dtype()

    def get(self, name: str) -> torch.Tensor:
        from safetensors import SafetensorError

        from ..serialization import safetensors_error

        file = self._file_of[name]
        try:
            return self._handles[file].get_tensor(name)
        except SafetensorError as error:
            raise safetensors_error(self.folder / file, error) from None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self.shape(name) for name in self.names}


@dataclass
class _Input:
    """One side of the merge: a full checkpoint, or a LoRA adapter over `base`."""

    weights: CheckpointWeights | None = None
    adapter: object | None = None  # hf_ext.mergealign.lora.LoraAdapter

    def task_vector(self, name: str, base: torch.Tensor) -> torch.Tensor | None:
        """`theta - base` in the accumulation dtype, or `None` when this input leaves the tensor unchanged."""
        if self.adapter is not None:
            return self.adapter.task_vector(name, base)
        tensor = self.weights.get(name).to(base.device)  # moved in its stored dtype, upcast where `base` lives
        dtype = accumulation_dtype(torch.promote_types(tensor.dtype, base.dtype))
        return tensor.to(dtype) - base.to(dtype)


class TaskVectors:
    """A base model and the domain and alignment task vectors, read tensor by tensor.

    Args:
        base (`str` or `os.PathLike`): The base model (folder or Hub id).
        domain, alignment (`str` or `os.PathLike`):
            The domain expert and the aligned model: full models, or PEFT LoRA adapters trained on `base` (then
            tau = scaled B @ A; no merged model is ever written).
    """

    def __init__(self, base: str | os.PathLike, domain: str | os.PathLike, alignment: str | os.PathLike):
        self.base_path = resolve_input(base)
        self.base = CheckpointWeights(self.base_path)
        self.domain = self._open("domain", domain)
        self.alignment = self._open("alignment", alignment)
        self._check_shapes()

    def _open(self, role: str, name_or_path) -> _Input:
        from .lora import LoraAdapter

        folder = resolve_input(name_or_path)
        if is_adapter_folder(folder):
            return _Input(adapter=LoraAdapter(folder))
        return _Input(weights=CheckpointWeights(folder))

    def _check_shapes(self) -> None:
        base_shapes = self.base.shapes()
        for role, side in (("domain", self.domain), ("alignment", self.alignment)):
            if side.adapter is not None:
                side.adapter.check_shapes(base_shapes, role=role)
            else:
                check_same_shapes(base_shapes, side.weights.shapes(), role=role, path=side.weights.folder)

    @property
    def names(self) -> list[str]:
        """The tensor names of the base checkpoint, in file order."""
        return list(self.base.names)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        for name in self.names:
            yield (name, *self[name])

    def __getitem__(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`(base, tau_domain, tau_alignment)` for one tensor, on the CPU; a task vector is `None` where it is zero (a
        LoRA adapter that does not touch the tensor). The base keeps its dtype; the vectors are float32."""
        return self.get(name)

    def get(
        self, name: str, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`(base, tau_domain, tau_alignment)` of tensor `name`, computed on `device` (default: the CPU).

        The inputs travel in their stored dtype and are upcast on `device`: a sweep on a GPU merges there instead of
        computing float32 task vectors on the CPU and copying them over. Elementwise float32 arithmetic is the same
        on every device, so the merge is too."""
        base = self.base.get(name)
        if device is not None:
            base = base.to(device)
        return base, self.domain.task_vector(name, base), self.alignment.task_vector(name, base)


def check_same_shapes(
    base_shapes: dict[str, tuple[int, ...]],
    other_shapes: dict[str, tuple[int, ...]],
    *,
    role: str,
    path,
    require_all: bool = True,
) -> None:
    """Raise a `ValueError` listing the tensors that `other` holds with a different shape than the base (and, with
    `require_all`, those of the base it lacks)."""
    missing = [name for name in base_shapes if name not in other_shapes] if require_all else []
    mismatched = [
        f"{name}: {other_shapes[name]} vs {base_shapes[name]} in the base"
        for name in base_shapes
        if name in other_shapes and other_shapes[name] != base_shapes[name]
    ]
    problems = []
    hint = vocabulary_hint(
        (name, other_shapes[name], base_shapes[name])
        for name in base_shapes
        if name in other_shapes and other_shapes[name] != base_shapes[name]
    )
    if mismatched:
        problems.append(
            f"{len(mismatched)} tensor(s) differ in shape ({'; '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''})"
        )
    if missing:
        problems.append(
            f"{len(missing)} tensor(s) of the base are missing ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})"
        )
    if problems:
        raise ValueError(
            f"The {role} model {path} does not match the base model: {' and '.join(problems)}.{hint} MergeAlign needs "
            "both models fine-tuned from the same base architecture."
        )


_EMBEDDING_MARKERS = ("embed", "lm_head", "wte", "word_embeddings", "output.weight")


def vocabulary_hint(mismatches) -> str:
    """A sentence for an error message when the mismatched tensors include an embedding table or an LM head that
    differ only in their number of rows (the vocabulary); `""` otherwise. `mismatches` yields `(name, shape,
    base_shape)`."""
    for name, shape, base_shape in mismatches:
        if (
            any(marker in name for marker in _EMBEDDING_MARKERS)
            and len(shape) == len(base_shape) == 2
            and shape[1:] == base_shape[1:]
        ):
            return (
                f" The vocabularies differ ({shape[0]} rows in {name} vs {base_shape[0]} in the base): the fine-tune "
                "resized its embeddings (added tokens); merge models that share the base's vocabulary."
            )
    return ""
