"""A synthetic fact corpus for training and measuring Larimar offline.

A fact is "<subject> <relation> <object>" (e.g. "harbour visited Lima"), its prompt "<subject> <relation>" and its
answer the object. With 180 subjects, 10 relations and 100 objects, a model that has not read the fact answers at
chance (1 %). Relations and objects are single tokens of the tiny hf-ext tokenizer, so an answer is one token.

The prompts are split once, deterministically: a fixed tenth of the (subject, relation) pairs never occurs in a
training episode, and evaluation facts use only those. A fact a test writes into memory was therefore never seen in
training, and the decoder has learned no preference among the objects of its prompt (holding out triples instead
would teach it which objects a held-out prompt never takes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


__all__ = [
    "OBJECTS",
    "RELATIONS",
    "SUBJECTS",
    "Fact",
    "evaluation_facts",
    "fact_dataset",
    "filler_sentences",
    "training_episode",
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
    from ..testing import corpus_lines

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
