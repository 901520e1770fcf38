"""SASA — self-disciplined autoregressive sampling (Ko et al., "Large Language Models can be Strong Self-Detoxifiers",
ICLR 2025) as a `transformers` `LogitsProcessor`.

- [`SASAProbe`] (`probe.py`): the linear subspace of a model's own hidden states that separates desired from
  undesired text (LDA with shrinkage; the math in `lda.py`), saved as safetensors + JSON.
- [`SASALogitsProcessor`] (`processor.py`): tilts each decoding step towards the desired side, from exact
  candidate hidden states computed on `generate`'s own KV cache (`forward.py`; the per-step math in `sampling.py`).
- [`SASAProbe.fit_from_judge`]: the probe from unlabelled text (a corpus, or the model's own continuations of
  prompts) labelled by any judge, with word-prefix augmentation; `layer="auto"` picks the layer on held-out texts.
- [`sample_continuations`] (`continuations.py`): what the functions below sample with (SASA through the processor's
  `sampling_kwargs`, so that `generate` cuts nothing again).
- [`evaluate_detox`] (`evaluation.py`): continuations with and without SASA, judged by a pluggable toxicity judge.
- [`choose_beta`] (`strength.py`): the strength for a target toxicity reduction or a perplexity budget.
- [`check_steering`] (`steering.py`): before shipping a probe, SASA at the chosen strength against the same sampling
  at `beta=0` on held-out prompts; a probe that raises the judge's toxicity is refused.

Names are imported lazily, so `import hf_ext.sasa` stays cheap.
"""

from __future__ import annotations

from hf_ext._imports import lazy_package


_import_structure = {
    "probe": ["SASAProbe", "last_token_hidden_states", "prefix_hidden_states", "word_prefixes"],
    "processor": ["SASALogitsProcessor"],
    "strength": ["BetaChoice", "choose_beta"],
    "evaluation": ["DetoxEvaluation", "ProfanityCheckJudge", "evaluate_detox"],
    "continuations": ["Continuations", "sample_continuations"],
    "steering": ["HarmfulSteeringError", "SteeringCheck", "check_steering"],
    "bootstrap": ["paired_change"],
    "trace": ["SASAStep", "SASATrace"],
    "lda": ["fit_lda"],
}
"""Submodule -> the public names it defines: the one list of this package's API."""

__all__, __getattr__, __dir__ = lazy_package(__name__, _import_structure, globals())
