"""Registering Larimar with the transformers Auto classes, at no import cost.

`import hf_ext` calls [`register_on_import`]: nothing is imported then. As soon as transformers' Auto machinery is
imported (by `from transformers import AutoConfig`, `AutoModelForCausalLM`, a pipeline, ...), `AutoConfig` gets the
real [`LarimarConfig`], and `AutoModel` / `AutoModelForCausalLM` get stand-ins that import `modeling_larimar` (torch
modules, the generation stack) only when a Larimar model is built or loaded; importing `modeling_larimar`
registers the real classes. When the Auto machinery is already imported, registration happens at once.
"""

from __future__ import annotations

import importlib
import sys

from .._imports import when_imported


__all__ = ["register", "register_on_import"]

_CONFIG_MODULE = "transformers.models.auto.configuration_auto"
_MODEL_MODULE = "transformers.models.auto.modeling_auto"
_MODELING = "hf_ext.larimar.modeling_larimar"
_CONFIGURATION = "hf_ext.larimar.configuration_larimar"


class _LazyModelClass(type):
    """Metaclass of the stand-ins: any attribute they lack (`from_pretrained`, `_from_config`, ...) is looked up
    on the real class, which is imported on first use."""

    def _real(cls):
        return getattr(importlib.import_module(_MODELING), cls.__name__)

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(cls._real(), name)

    def __call__(cls, *args, **kwargs):
        return cls._real()(*args, **kwargs)

    def __instancecheck__(cls, instance):
        return isinstance(instance, cls._real())

    def __subclasscheck__(cls, subclass):
        return issubclass(subclass, cls._real())


def _being_imported(module_name: str) -> bool:
    # `configuration_larimar` imports `AutoConfig` (so `configuration_auto`, whose import hook is
    # `_register_config`) before it defines `LarimarConfig`; it registers itself once defined.
    module = sys.modules.get(module_name)
    return module is not None and not hasattr(module, "LarimarConfig")


def _register_config() -> None:
    if _being_imported(_CONFIGURATION):
        return
    from .configuration_larimar import LarimarConfig

    sys.modules[_CONFIG_MODULE].AutoConfig.register("larimar", LarimarConfig, exist_ok=True)


def _register_models() -> None:
    if _MODELING in sys.modules:  # already imported: it registered the real classes
        return
    from .configuration_larimar import LarimarConfig

    auto = sys.modules[_MODEL_MODULE]
    for auto_class, name in ((auto.AutoModel, "LarimarModel"), (auto.AutoModelForCausalLM, "LarimarForCausalLM")):
        stand_in = _LazyModelClass(name, (), {"__module__": _MODELING, "config_class": LarimarConfig})
        auto_class.register(LarimarConfig, stand_in, exist_ok=True)


def register() -> None:
    """Register `model_type="larimar"` with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM` now."""
    importlib.import_module(_CONFIG_MODULE)
    _register_config()
    importlib.import_module(_MODEL_MODULE)
    _register_models()


def register_on_import() -> None:
    """Register Larimar when transformers' Auto classes are imported (now, if they already are)."""
    when_imported(_CONFIG_MODULE, _register_config)
    when_imported(_MODEL_MODULE, _register_models)
