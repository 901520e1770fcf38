"""hf-ext: IBM Research methods as native Hugging Face components.

The public API is imported lazily: `import hf_ext` is cheap, and `hf_ext.X` imports only the module that
defines `X`. The names, by module:

- `hf_ext.testing`: `tiny_model_dir`, `build_tokenizer`, `build_tiny_causal_lm`, `build_tiny_encoder`,
  `resolve_model_name_or_path` (offline tiny models);
- `hf_ext.quantization`: `load_quantized`, `bnb_config`, `prepare_for_kbit_training` (4-/8-bit on CPU and CUDA);
- `hf_ext.hub`: `make_card`, `save_card`, `push_folder`, `HubMixin` (cards and the Hub);
- `hf_ext.serialization`: `save_tensors`, `load_tensors`, `save_json`, `load_json` (safe, atomic files).

Each method adds its own names (`AOTTrainer`, `LarimarForCausalLM`, `SASALogitsProcessor`, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._imports import lazy_attributes


__version__ = "0.1.0"

# name -> submodule that defines it
_LAZY_ATTRIBUTES: dict[str, str] = {
    "tiny_model_dir": "testing",
    "build_tokenizer": "testing",
    "build_tiny_causal_lm": "testing",
    "build_tiny_encoder": "testing",
    "resolve_model_name_or_path": "testing",
    "keep_4bit_trainable": "quantization",
    "load_quantized": "quantization",
    "bnb_config": "quantization",
    "prepare_for_kbit_training": "quantization",
    "make_card": "hub",
    "save_card": "hub",
    "push_folder": "hub",
    "HubMixin": "hub",
    "save_tensors": "serialization",
    "load_tensors": "serialization",
    "save_json": "serialization",
    "load_json": "serialization",
    # Larimar (hf_ext.larimar): an episodic-memory LM registered with the transformers Auto classes
    "LarimarConfig": "larimar",
    "LarimarModel": "larimar",
    "LarimarForCausalLM": "larimar",
    "LarimarProcessor": "larimar",
    # risk: risk-aware evaluation with stochastic dominance
    "violation_ratio": "risk",
    "absolute_dominance": "risk",
    "relative_dominance": "risk",
    "AbsoluteDominanceResult": "risk",
    "RelativeDominanceResult": "risk",
    "portfolio": "risk",
    "aggregate_rankings": "risk",
    "mean_risk": "risk",
    # SEAL: bilevel data ranker and the datasets filter
    "SEALConfig": "seal.config",
    "SEALTrainer": "seal.trainer",
    "SEALScores": "seal.selection",
    "add_seal_scores": "seal.selection",
    "seal_filter": "seal.selection",
    # SASA (self-disciplined autoregressive sampling)
    "SASAProbe": "sasa.probe",
    "SASALogitsProcessor": "sasa.processor",
    "evaluate_detox": "sasa.evaluation",
    # MergeAlign (hf_ext.mergealign; `import hf_ext.mergealign` registers `merge_method: mergealign` with mergekit)
    "SimilarityReport": "mergealign.report",
    "similarity_report": "mergealign.report",
    "AlphaSweepConfig": "mergealign.sweep",
    "AlphaSweepResult": "mergealign.sweep",
    "sweep_alpha": "mergealign.sweep",
    "lora_task_vector": "mergealign.lora",
    # AOT: alignment via optimal transport
    "AOTConfig": "aot.config",
    "AOTTrainer": "aot.trainer",
    "aot_paired_loss": "aot.losses",
    "aot_unpaired_loss": "aot.losses",
    "dominance_diagnostics": "aot.losses",
    "quantile_ot_loss": "aot.losses",
}

__all__ = sorted(_LAZY_ATTRIBUTES)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES, globals())


if TYPE_CHECKING:
    from .aot.config import AOTConfig
    from .aot.losses import aot_paired_loss, aot_unpaired_loss, dominance_diagnostics, quantile_ot_loss
    from .aot.trainer import AOTTrainer
    from .hub import HubMixin, make_card, push_folder, save_card
    from .larimar import LarimarConfig, LarimarForCausalLM, LarimarModel, LarimarProcessor
    from .mergealign.lora import lora_task_vector
    from .mergealign.report import SimilarityReport, similarity_report
    from .mergealign.sweep import AlphaSweepConfig, AlphaSweepResult, sweep_alpha
    from .quantization import bnb_config, keep_4bit_trainable, load_quantized, prepare_for_kbit_training
    from .risk import (
        AbsoluteDominanceResult,
        RelativeDominanceResult,
        absolute_dominance,
        aggregate_rankings,
        mean_risk,
        portfolio,
        relative_dominance,
        violation_ratio,
    )
    from .sasa.evaluation import evaluate_detox
    from .sasa.probe import SASAProbe
    from .sasa.processor import SASALogitsProcessor
    from .seal.config import SEALConfig
    from .seal.selection import SEALScores, add_seal_scores, seal_filter
    from .seal.trainer import SEALTrainer
    from .serialization import load_json, load_tensors, save_json, save_tensors
    from .testing import (
        build_tiny_causal_lm,
        build_tiny_encoder,
        build_tokenizer,
        resolve_model_name_or_path,
        tiny_model_dir,
    )


def _register_models() -> None:
    # Larimar: `model_type="larimar"` loads with AutoConfig / AutoModel / AutoModelForCausalLM once hf_ext is
    # imported. Nothing is imported here: the registration runs when transformers' Auto classes are imported.
    from .larimar.auto import register_on_import

    register_on_import()


_register_models()
