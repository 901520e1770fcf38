"""Larimar's synthetic task: a fact corpus, and a tiny Larimar trained on it (built offline, cached).

**The fact corpus.** A synthetic fact corpus for training and measuring Larimar offline.

A fact is "<subject> <relation> <object>" (e.g. "harbour visited Lima"), its prompt "<subject> <relation>" and its
answer the object. With 180 subjects, 10 relations and 100 objects, a model that has not read the fact answers at
chance (1 %). Relations and objects are single tokens of the tiny hf-ext tokenizer, so an answer is one token.

The prompts are split once, deterministically: a fixed tenth of the (subject, relation) pairs never occurs in a
training episode, and evaluation facts use only those. A fact a test writes into memory was therefore never seen in
training, and the decoder has learned no preference among the objects of its prompt (holding out triples instead
would teach it which objects a held-out prompt never takes).

**The tiny Larimar.** A tiny Larimar trained on the synthetic fact corpus, built offline and cached.

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

from hf_ext.caching import hash_recipe


__all__ = [
    "OBJECTS",
    "RELATIONS",
    "SUBJECTS",
    "Fact",
    "evaluation_facts",
    "fact_dataset",
    "filler_sentences",
    "training_episode",
    "TinyLarimarRecipe",
    "build_tiny_larimar",
    "tiny_larimar_dir",
    "train_tiny_larimar",
]

SUBJECTS = (  # noqa: SIM905 (a word list is easier to read and edit as one string)
    "Bras Cai Can Canad Egy Ital Jap Ken Mad Nairob New Ott Our Santia Sunday The Thur Thursday Toky Tues Tuesday "
    "abou about after again agreed and answer any appl are argu argued artic asked back bak before behind being "
    "better blue boil bri bright bro broken but can cap checked cit cle come comm cou could course daw deg des "
    "directions doc dur during else empt empty envelo every expl explained for fore found friendly fro from fron "
    "good green guess har hard into lan last lea libr long loo look lower mat meas meet met mild mor most mount "
    "mus near neigh new nort not note num old one other pass plus proble qui quiet rea red reme repai rob saf sai "
    "say sch sent sentences shar shared she short small some spoke stu stuck studi studied sugge sum tell temp "
    "than that the them then thi this three tomor tra twice und under visit wal walked was way what when while "
    "will win wit with woo wooden would wri written wro wrong wrote yesterday you young your"
).split()
RELATIONS = (  # noqa: SIM905 (a word list is easier to read and edit as one string)
    "admired carried cleaned counted described measured painted remembered repaired visited"
).split()
OBJECTS = (  # noqa: SIM905 (a word list is easier to read and edit as one string)
    "Brasilia Brazil Cairo Canada Chile Delhi Egypt France India Italy Japan Kenya Lima Madrid Nairobi Norway "
    "Oslo Ottawa Paris Peru Rome Santiago Spain Tokyo apples article baker boat box bridge capital car cat city "
    "clock clouds committee dawn doctor dog engine engineer envelope evening farmer forest friend garden harbour "
    "hill hills hour island kite lake lantern letter library list lunch map market match morning mountain museum "
    "musician neighbour noon numbers password patience problem rain request river robot sailor school screen sea "
    "song station stone storm student summary summer tea teacher team tower traveller valley village wall weather "
    "week wind winter"
).split()


@dataclass(frozen=True)
class Fact:
    """One synthetic fact."""

    subject: str
    relation: str
    object: str

    @property
    def text(self) -> str:
        return f"{self.subject} {self.relation} {self.object}"

    @property
    def prompt(self) -> str:
        return f"{self.subject} {self.relation}"

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "prompt": self.prompt, "answer": self.object}


def _held_out(subject: int, relation: int) -> bool:
    # A fixed 10 % of the (subject, relation) prompts is reserved for evaluation.
    return (subject * 7 + relation * 3) % 10 == 0


def _draw(rng: random.Random, count: int, held_out: bool) -> list[Fact]:
    """`count` facts with distinct (subject, relation) prompts, from one side of the split."""
    prompts = [(s, r) for s in range(len(SUBJECTS)) for r in range(len(RELATIONS)) if _held_out(s, r) == held_out]
    if count > len(prompts):
        raise ValueError(f"count={count} exceeds the {len(prompts)} distinct prompts of this split.")
    return [
        Fact(SUBJECTS[s], RELATIONS[r], OBJECTS[rng.randrange(len(OBJECTS))]) for s, r in rng.sample(prompts, count)
    ]


def training_episode(rng: random.Random, size: int) -> list[Fact]:
    """One training episode: `size` facts from the training split, no two with the same prompt."""
    return _draw(rng, size, held_out=False)


def evaluation_facts(count: int = 64, seed: int = 1234) -> list[Fact]:
    """`count` facts from the held-out split (never in a training episode), no two with the same prompt."""
    return _draw(random.Random(seed), count, held_out=True)


def filler_sentences(count: int, seed: int = 0) -> list[str]:
    """Unrelated English sentences (from the text hf-ext ships) to build haystacks and out-of-scope prompts."""
    from hf_ext.testing import corpus_lines

    lines = corpus_lines()
    rng = random.Random(seed)
    return [lines[rng.randrange(len(lines))] for _ in range(count)]


def fact_dataset(num_episodes: int, episode_size: int = 64, seed: int = 0):
    """A `datasets.Dataset` of training facts (`text`, `prompt`, `answer`), `episode_size` rows per episode, in
    episode order (train with `train_sampling_strategy="sequential"` to keep episodes whole)."""
    from datasets import Dataset

    if num_episodes < 1 or episode_size < 1:
        raise ValueError(f"num_episodes={num_episodes} and episode_size={episode_size} must both be >= 1.")
    rng = random.Random(seed)
    rows = [fact.as_dict() for _ in range(num_episodes) for fact in training_episode(rng, episode_size)]
    return Dataset.from_list(rows)


_RECIPE_VERSION = 3  # bump when the recipe, the fact corpus or the model code changes what is trained


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
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.testing import build_tiny_causal_lm, build_tiny_encoder, build_tokenizer

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

    from hf_ext.larimar.training import warmup_linear_decay

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
    from hf_ext.caching import build_once, cache_root

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
