"""hf-ext: IBM Research methods as native Hugging Face components.

The public API is imported lazily: `import hf_ext` is cheap, and `hf_ext.X` imports only the module that
defines `X`. Every package lists its public names once (its `_import_structure`); this namespace holds the
shared helpers below and every method's names, derived from those lists:

- `hf_ext.quantization`: `load_quantized`, `bnb_config`, `prepare_for_kbit_training` (4-/8-bit on CPU and CUDA);
- `hf_ext.hub`: `make_card`, `save_card`, `push_folder`, `HubMixin` (cards and the Hub);
- `hf_ext.serialization`: `save_tensors`, `load_tensors`, `save_json`, `load_json` (safe, atomic files);
- the methods: `hf_ext.aot`, `hf_ext.larimar`, `hf_ext.sasa`, `hf_ext.seal`, `hf_ext.mergealign` (extra
  `[mergealign]`) and `hf_ext.risk` (extra `[risk]`): `AOTTrainer`, `LarimarForCausalLM`, `SASALogitsProcessor`, ...

Test fixtures (tiny models, synthetic tasks) are in `hf_ext.testing`, not here.
"""

from __future__ import annotations

import importlib

from ._imports import MissingExtraError, lazy_attributes


__version__ = "0.1.0"

METHOD_PACKAGES = ("aot", "larimar", "mergealign", "risk", "sasa", "seal")
"""The method packages whose public names this namespace re-exports."""

_import_structure: dict[str, list[str]] = {
    "quantization": ["bnb_config", "keep_4bit_trainable", "load_quantized", "prepare_for_kbit_training"],
    "hub": ["HubMixin", "make_card", "push_folder", "save_card"],
    "serialization": ["load_json", "load_tensors", "save_json", "save_tensors"],
}
"""The shared helpers' public names, by module."""


def _public_names() -> dict[str, str]:
    """Public name -> the module or package that defines it (the method packages' lists, read from them)."""
    names = {name: module for module, module_names in _import_structure.items() for name in module_names}
    for package in METHOD_PACKAGES:
        try:
            package_names = importlib.import_module(f".{package}", __name__).__all__
        except MissingExtraError as error:  # its names stay listed; using one raises the error naming the extra
            package_names = error.names
        for name in package_names:
            if name in names:
                raise RuntimeError(f"hf_ext: {name!r} is public in both {names[name]} and {package}")
            names[name] = package
    return names


_NAMES = _public_names()
__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())


def _register_models() -> None:
    # Larimar: `model_type="larimar"` loads with AutoConfig / AutoModel / AutoModelForCausalLM once hf_ext is
    # imported. Nothing is imported here: the registration runs when transformers' Auto classes are imported.
    from .larimar.auto import register_on_import

    register_on_import()


_register_models()


def _quiet_bitsandbytes() -> None:
    # Before anything imports bitsandbytes (peft and TRL do): its notice that an optional Hub kernel is missing, and
    # offline `kernels`' notice that it skips that kernel's publisher check, are nothing a user can act on
    # (hf_ext.logging_utils).
    from .logging_utils import silence_bitsandbytes_kernel_notice

    silence_bitsandbytes_kernel_notice()


_quiet_bitsandbytes()
