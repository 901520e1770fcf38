"""Files of the MergeAlign tests: a tiny base and two fine-tunes of it saved as checkpoints, and a mergekit YAML over
them. A module of its own name (not `conftest`), so that test modules import it whatever else pytest collects."""

import copy
from pathlib import Path

import torch
import yaml


def _perturbed(model, seed: int, scale: float = 0.02):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model


def save_triple(root: Path, *, num_layers: int = 3, dtype=torch.float32, derived: bool = False) -> dict[str, Path]:
    """base, domain and aligned models (tiny Llamas) under `root`: the fine-tunes are random perturbations of the
    base; with `derived`, the domain model is the aligned model plus a perturbation (as if fine-tuned from it)."""
    from hf_ext.testing import build_tiny_causal_lm, build_tokenizer

    tokenizer = build_tokenizer()
    base = build_tiny_causal_lm("llama", tokenizer=tokenizer, num_layers=num_layers)
    aligned = _perturbed(copy.deepcopy(base), seed=2)
    domain = _perturbed(copy.deepcopy(aligned if derived else base), seed=1)
    paths = {}
    for name, model in (("base", base), ("domain", domain), ("aligned", aligned)):
        folder = root / name
        model.to(dtype).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        paths[name] = folder
    return paths


def write_config(path: Path, triple: dict, *, alpha=0.5, scale=1.0, dtype=None, **extra) -> Path:
    config = {
        "merge_method": "mergealign",
        "base_model": str(triple["base"]),
        "models": [
            {"model": str(triple["domain"]), "parameters": {"role": "domain"}},
            {"model": str(triple["aligned"]), "parameters": {"role": "alignment"}},
        ],
        "parameters": {"alpha": alpha, "scale": scale},
    }
    if dtype:
        config["dtype"] = dtype
    config.update(extra)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
