"""Registering Larimar with the transformers Auto classes, cheaply.

`import hf_ext` calls [`register`]: `AutoConfig` gets the real [`LarimarConfig`], while `AutoModel` and
`AutoModelForCausalLM` get stand-ins that import `modeling_larimar` (torch modules, the generation stack) only when
a Larimar model is actually built or loaded. Importing `modeling_larimar` then registers the real classes.
"""

from __future__ import annotations

import importlib


__all__ = ["register"]

_MODELING = "hf_ext.larimar.modeling_larimar"


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


def _stand_in(name: str, config_class) -> type:
    return _LazyModelClass(name, (), {"__module__": _MODELING, "config_class": config_class, "__doc__": None})


def register() -> None:
    """Register `model_type="larimar"` with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_larimar import LarimarConfig

    AutoConfig.register("larimar", LarimarConfig, exist_ok=True)
    import sys

    if _MODELING in sys.modules:  # already imported: it registered the real classes
        return
    AutoModel.register(LarimarConfig, _stand_in("LarimarModel", LarimarConfig), exist_ok=True)
    AutoModelForCausalLM.register(LarimarConfig, _stand_in("LarimarForCausalLM", LarimarConfig), exist_ok=True)
