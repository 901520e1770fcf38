"""A tiny Larimar trained on the synthetic fact corpus, built offline and cached.

The tests, the demo stage and the benchmark share one artefact: [`tiny_larimar_dir`] trains it on first use (a few
minutes on one CPU core; deterministic for a given machine) and keeps it under `$HF_EXT_CACHE/larimar/` in a folder
named after a fingerprint of the recipe, so later calls (and other processes) load it instead.

The recipe (`TinyLarimarRecipe`) trains on episodes of 64 facts; the model's `episode_size` (items per memory in a
long-context read) is 16. It trades the paper's objective for speed, and says so: the encoder is a small random BERT kept frozen
(its centred, projected output is the latent), reads are deterministic (no sampled read weights, no KL term), and
the loss is CE(x | read(e(x))) + CE(x | read(e(prompt))) on episodes of 64 facts. With an exact read,
read(e(x)) = e(x), so the autoencoder term would only repeat the first one.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..caching import hash_recipe


__all__ = ["TinyLarimarRecipe", "build_tiny_larimar", "tiny_larimar_dir", "train_tiny_larimar"]

_RECIPE_VERSION = 2  # bump when the recipe, the fact corpus or the model code changes what is trained


@dataclass(frozen=True)
class TinyLarimarRecipe:
    """Sizes and training schedule of the tiny Larimar (see the module docstring)."""

    encoder_hidden_size: int = 256
    decoder_family: str = "gpt2"
    decoder_hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    latent_size: int = 256
    memory_size: int = 256
    episode_size: int = 64
    context_episode_size: int = 16
    steps: int = 1000
    learning_rate: float = 5e-3
    warmup_steps: int = 50
    train_encoder: bool = False
    seed: int = 0

    def fingerprint(self) -> str:
        return hash_recipe({"version": _RECIPE_VERSION, **asdict(self)})


def build_tiny_larimar(recipe: TinyLarimarRecipe | None = None, tokenizer=None):
    """An untrained tiny Larimar and its processor (random BERT-style encoder, GPT-2 or Llama decoder)."""
    from ..testing import build_tiny_causal_lm, build_tiny_encoder, build_tokenizer
    from .modeling_larimar import LarimarForCausalLM
    from .processing_larimar import LarimarProcessor

    recipe = recipe or TinyLarimarRecipe()
    tokenizer = tokenizer or build_tokenizer()
    encoder = build_tiny_encoder(
        tokenizer,
        seed=recipe.seed,
        hidden_size=recipe.encoder_hidden_size,
        num_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        intermediate_size=2 * recipe.encoder_hidden_size,
        extra={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    )
    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0} if recipe.decoder_family == "gpt2" else {}
    decoder = build_tiny_causal_lm(
        recipe.decoder_family,
        tokenizer,
        seed=recipe.seed + 1,
        hidden_size=recipe.decoder_hidden_size,
        num_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        intermediate_size=2 * recipe.decoder_hidden_size,
        extra=no_dropout,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed + 2)
        model = LarimarForCausalLM.from_encoder_decoder_pretrained(
            encoder_model=encoder,
            decoder_model=decoder,
            latent_size=recipe.latent_size,
            memory_size=recipe.memory_size,
            pooling="mean",
            center_latents=True,
            w_logvar_mode="slot",
            deterministic_read=True,
            kl_beta=0.0,
            autoencoder_weight=0.0,
            no_memory_weight=0.0,
            episode_size=recipe.context_episode_size,  # items per memory in `read_long_context`
            scope_threshold=0.5,
        )
    return model, LarimarProcessor(tokenizer, tokenizer)


def train_tiny_larimar(model, processor, recipe: TinyLarimarRecipe | None = None, progress: bool = True) -> dict:
    """Train `model` in place on synthetic fact episodes; returns a log (losses, seconds)."""
    from tqdm.auto import tqdm

    from .facts import training_episode
    from .training import warmup_linear_decay

    recipe = recipe or TinyLarimarRecipe()
    model.model.encoder.requires_grad_(recipe.train_encoder)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.learning_rate, weight_decay=0.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear_decay(step, recipe.warmup_steps, recipe.steps)
    )
    rng = random.Random(recipe.seed)
    losses = []
    start = time.perf_counter()
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        for _ in tqdm(range(recipe.steps), desc="training the tiny Larimar", disable=not progress):
            episode = training_episode(rng, recipe.episode_size)
            batch = processor.episode([f.text for f in episode], [f.prompt for f in episode])
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(round(loss.item(), 5))
    model.eval()
    return {"losses": losses, "seconds": round(time.perf_counter() - start, 1), "recipe": asdict(recipe)}


def tiny_larimar_dir(
    recipe: TinyLarimarRecipe | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """The folder of the trained tiny Larimar (model, processor, `training_log.json`), trained once and cached.

    Concurrent callers (e.g. pytest-xdist workers) wait on a file lock while the first one trains.
    """
    from ..caching import build_once, cache_root

    recipe = recipe or TinyLarimarRecipe()

    def build(staging: Path) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic whatever the machine's core count
        try:
            model, processor = build_tiny_larimar(recipe)
            log = train_tiny_larimar(model, processor, recipe, progress=progress)
        finally:
            torch.set_num_threads(threads)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")

    target = cache_root(cache_dir) / "larimar" / f"tiny-larimar-{recipe.fingerprint()}"
    return build_once(target, build, marker="training_log.json")
