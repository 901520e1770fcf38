"""SASA — self-disciplined autoregressive sampling (Ko et al., "Large Language Models can be Strong Self-Detoxifiers",
ICLR 2025) as a `transformers` `LogitsProcessor`.

- [`SASAProbe`] (`probe.py`): the linear subspace of a model's own hidden states that separates desired from
  undesired text (LDA with shrinkage; the math in `lda.py`), saved as safetensors + JSON.
- [`SASALogitsProcessor`] (`processor.py`): tilts each decoding step towards the desired side, from exact
  candidate hidden states computed on `generate`'s own KV cache (`forward.py`; the per-step math in `sampling.py`).
- [`SASAProbe.fit_from_judge`]: the probe from unlabelled text (a corpus, or the model's own continuations of
  prompts) labelled by any judge, with word-prefix augmentation; `layer="auto"` picks the layer on held-out texts.
- [`evaluate_detox`] (`evaluation.py`): continuations with and without SASA, judged by a pluggable toxicity judge.
- [`choose_beta`] (`strength.py`): the strength for a target toxicity reduction or a perplexity budget.
- [`PlantedToxicityTask`] (`planted.py`): a tiny offline task with contextual toxicity and an exact judge.

Names are imported lazily, so `import hf_ext.sasa` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy_attributes


_LAZY = {
    "SASAProbe": "probe",
    "last_token_hidden_states": "probe",
    "word_prefixes": "probe",
    "prefix_hidden_states": "probe",
    "BetaChoice": "strength",
    "choose_beta": "strength",
    "sample_continuations": "evaluation",
    "SASALogitsProcessor": "processor",
    "SASAStep": "trace",
    "SASATrace": "trace",
    "fit_lda": "lda",
    "DetoxEvaluation": "evaluation",
    "evaluate_detox": "evaluation",
    "ProfanityCheckJudge": "evaluation",
    "PlantedToxicityTask": "planted",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


if TYPE_CHECKING:  # for type checkers and IDEs; the names resolve lazily above
    from .evaluation import DetoxEvaluation, ProfanityCheckJudge, evaluate_detox, sample_continuations  # noqa: F401
    from .lda import fit_lda  # noqa: F401
    from .planted import PlantedToxicityTask  # noqa: F401
    from .probe import SASAProbe, last_token_hidden_states, prefix_hidden_states, word_prefixes  # noqa: F401
    from .processor import SASALogitsProcessor  # noqa: F401
    from .strength import BetaChoice, choose_beta  # noqa: F401
    from .trace import SASAStep, SASATrace  # noqa: F401
