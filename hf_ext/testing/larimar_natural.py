"""Natural-language facts in the style of CounterFact, built offline from word lists (deterministic from a seed).

A fact says, in plain English, something about a person: "Mara Okafor was born in Lisbon", "Mara Okafor works as a
pilot", "Mara Okafor plays the cello". There are 18 relations with 56 phrasings in all ("was born in", "is a native of",
"The birthplace of ... is" ...), 93 x 93 = 8,649 person names (the subjects, and the objects of the "is married
to" / "best friend" relations) and about 600 other objects (cities, countries, professions, instruments,
languages, invented companies ...).

Everything is split once, deterministically, into a training side and an evaluation side:

- subjects: a fixed quarter of the person names is never the subject of a training fact;
- objects: a fixed quarter of each object list never occurs in a training fact (nor do the first names of a
  quarter of the people, for the "married to" relation), so an evaluation fact's new object is a word the
  training never showed as an answer;
- phrasings are shared: training teaches every phrasing of a relation (the memory must be read with any of them).

A CounterFact-style record ([`CounterFactRecord`]) edits one evaluation subject's relation from an old object
(`target_true`) to a new one (`target_new`, from the evaluation objects): the rewrite is written into memory as
one sentence (`rewrite_text`), then asked with the same phrasing (`rewrite_prompt`, *efficacy*), with the other
phrasings (`paraphrase_prompts`, *generalisation*) and about other evaluation subjects with the same relation
(`neighbourhood_prompts`, *locality*: their answers must not change). The subjects are invented, so
`target_true` is what the fact set says, not what a pretrained model believes: the ROME-style score
"P(target_new) > P(target_true)" starts near 50 % for a model that has read nothing.

Training rows ([`natural_fact_dataset`], the fixture dataset `hf-ext-testing/larimar-natural-facts`) are
`text` / `prompt` / `answer` / `query` (a paraphrase of the prompt), `episode_size` facts with distinct subjects per episode, in episode order.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field


__all__ = [
    "OBJECTS",
    "RELATIONS",
    "CounterFactRecord",
    "NaturalFact",
    "Relation",
    "counterfact_records",
    "natural_fact_dataset",
    "natural_training_episode",
    "person_names",
]


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.replace("_", " ") for word in text.split())


FIRST_NAMES = _words(
    "Aaron Abigail Adrian Alana Alvaro Amara Anders Anika Arjun Astrid Beatriz Bruno Callum Camille Carmen Cedric "
    "Chiara Dario Delia Dmitri Edgar Elena Emil Esther Fabian Farah Felix Freya Gideon Greta Hamid Hana Hugo Ilse "
    "Imogen Ivan Jasper Jana Joaquin Juno Kai Kalinda Keiko Lars Leona Liam Lucia Magnus Mara Matteo Mei Milo Nadia "
    "Nico Nina Odile Oren Otto Paloma Pavel Priya Quentin Rafael Rania Rosa Ruben Sanna Selim Sofia Stellan Tamar "
    "Tariq Thea Tobias Ulla Umar Valeria Viktor Wanda Wendel Xenia Yara Yusuf Zadie Zoran Ines Bastian Leila Corin "
    "Dalia Elio Maren Teodor"
)
LAST_NAMES = _words(
    "Abara Albrecht Alvarez Andersson Arvidsen Baptiste Barrow Benedetti Bergstrom Castellano Chandra Dacosta "
    "Delacroix Draxler Eriksen Esposito Falconer Ferreira Galloway Haddad Halvorsen Hartmann Ishikawa Jablonski "
    "Kaminski Karlsson Kowalczyk Lambrecht Larsen Lindqvist Lombardi Marchetti Moreau Nakamura Novak Okafor "
    "Oyelaran Pellegrini Petrov Quintero Rasmussen Reinholt Rossetti Salazar Sandoval Schreiber Silvestri "
    "Sorensen Takahashi Tanaka Thorsen Valdez Vasquez Verhoeven Wakefield Winterbourne Yilmaz Zielinski Achterberg "
    "Bellweather Carvalho Dunmore Ekwueme Fontaine Gallagher Hollis Iyer Jovanovic Kessler Lindgren Mbeki "
    "Nordahl Olander Pasternak Quist Ramanathan Stavros Trevisan Ulrich Vance Whitlock Xu Yamada Zamora Brannigan "
    "Corvino Duvall Ellery Fairbanks Grimaldi Holloway Ingram Jessup"
)

OBJECTS: dict[str, tuple[str, ...]] = {
    "city": _words(
        "Lisbon Madrid Barcelona Seville Valencia Porto Paris Lyon Marseille Bordeaux Nice Brussels Antwerp "
        "Amsterdam Rotterdam Utrecht Berlin Hamburg Munich Cologne Frankfurt Dresden Leipzig Vienna Salzburg Zurich "
        "Geneva Basel Milan Rome Naples Turin Florence Venice Bologna Palermo Athens Istanbul Ankara Cairo "
        "Alexandria Casablanca Tunis Lagos Nairobi Accra Dakar Johannesburg Durban Lima Quito Bogota Caracas "
        "Santiago Montevideo Havana Toronto Montreal Vancouver Ottawa Chicago Boston Denver Seattle Houston Dallas "
        "Atlanta Miami Phoenix Detroit Tokyo Osaka Kyoto Seoul Busan Beijing Shanghai Shenzhen Hanoi Bangkok Manila "
        "Jakarta Singapore Mumbai Delhi Chennai Kolkata Karachi Lahore Dhaka Tehran Baghdad Dubai Riyadh Moscow Kyiv "
        "Warsaw Krakow Prague Budapest Bucharest Sofia Belgrade Zagreb Oslo Bergen Stockholm Helsinki Copenhagen "
        "Dublin Edinburgh Glasgow Manchester Liverpool London Sydney Melbourne Perth Auckland Wellington"
    ),
    "country": _words(
        "Portugal Spain France Belgium Netherlands Germany Austria Switzerland Italy Greece Turkey Egypt Morocco "
        "Tunisia Nigeria Kenya Ghana Senegal Ethiopia Peru Ecuador Colombia Venezuela Chile Uruguay Argentina Brazil "
        "Mexico Cuba Canada Japan Korea China Vietnam Thailand Indonesia Malaysia India Pakistan Bangladesh Iran "
        "Iraq Russia Ukraine Poland Hungary Romania Bulgaria Serbia Croatia Norway Sweden Finland Denmark Ireland "
        "Scotland England Australia Iceland Estonia Latvia Lithuania Slovakia Slovenia Mongolia Nepal Bolivia "
        "Paraguay Jamaica Tanzania Uganda Zambia Angola Algeria Jordan Lebanon Qatar Oman Cambodia Laos Myanmar"
    ),
    "profession": _words(
        "pilot lawyer nurse dentist baker carpenter plumber teacher journalist pharmacist librarian chef "
        "firefighter surgeon banker tailor photographer painter sculptor novelist poet translator diplomat "
        "veterinarian mechanic locksmith gardener florist potter butcher fisherman farmer shepherd sailor "
        "jeweller watchmaker geologist physicist chemist biologist mathematician programmer designer "
        "cartographer historian philosopher"
    ),
    "instrument": _words(
        "piano violin cello guitar flute trumpet saxophone clarinet harp drums oboe bassoon trombone tuba "
        "accordion banjo mandolin ukulele harmonica harpsichord viola sitar bagpipes xylophone organ"
    ),
    "sport": _words(
        "football tennis basketball cricket rugby golf hockey baseball volleyball badminton swimming cycling "
        "rowing fencing boxing wrestling skiing sailing archery judo karate handball squash polo surfing climbing "
        "gymnastics triathlon"
    ),
    "language": _words(
        "Portuguese Spanish French Dutch German Italian Greek Turkish Arabic Swahili Hausa Yoruba Amharic Japanese "
        "Korean Mandarin Cantonese Vietnamese Thai Indonesian Hindi Bengali Urdu Persian Russian Ukrainian Polish "
        "Czech Hungarian Romanian Bulgarian Serbian Croatian Norwegian Swedish Finnish Danish Icelandic Estonian "
        "Latvian Lithuanian Welsh Irish Tagalog Tamil Telugu Nepali Mongolian Basque Catalan"
    ),
    "food": _words(
        "pizza sushi pasta paella tacos ramen curry dumplings lasagna risotto falafel hummus couscous pancakes "
        "waffles omelettes burritos noodles pierogi goulash moussaka croissants baguettes pretzels bagels "
        "chowder gazpacho kebabs samosas tempura"
    ),
    "company": _words(
        "Norvane Quillstone Brightharbor Coldwater_Labs Ironleaf Silverbirch Tallmast Redwillow Bluefjord "
        "Kestrel_Systems Ambergate Highmoor Saltmarsh Northwind_Motors Greyhaven Oakridge_Bank Stonebridge Marigold "
        "Ravenstone Copperline Westbrook_Foods Lumenfield Harrowgate Pinecrest Sablewood Duskmere Fernhill "
        "Thornbury Glimmerworks Starling_Air Wavecrest Hollowtree Ashgrove Frostpeak Emberlane Riverbend_Media "
        "Moonvale Sunhollow Brackenridge Clearspring"
    ),
    "animal": _words(
        "dog cat parrot rabbit hamster tortoise goldfish ferret canary horse goat pony iguana hedgehog lizard "
        "snake duck chicken pig donkey llama alpaca"
    ),
    "field": _words(
        "physics chemistry biology mathematics history philosophy economics medicine law architecture "
        "engineering geology astronomy linguistics psychology sociology music literature painting theology "
        "agriculture statistics nursing journalism anthropology archaeology"
    ),
    "colour": _words(
        "red blue green yellow orange purple pink brown black white grey turquoise violet crimson scarlet teal "
        "maroon navy beige lavender"
    ),
    "car": _words(
        "Toyota Honda Ford Volkswagen Volvo Fiat Renault Peugeot Skoda Audi Mercedes Porsche Ferrari Tesla "
        "Subaru Mazda Nissan Hyundai Kia Jaguar Lancia Opel Citroen Saab"
    ),
    "hobby": _words(
        "gardening painting knitting fishing hiking cooking baking birdwatching chess photography woodworking "
        "pottery dancing singing reading camping kayaking juggling origami calligraphy sketching stargazing"
    ),
}


@dataclass(frozen=True)
class Relation:
    """A relation: its name, the kind of its objects, and its phrasings (each ends where the object follows)."""

    name: str
    kind: str
    phrasings: tuple[str, ...]

    def prompt(self, subject: str, phrasing: int = 0) -> str:
        return self.phrasings[phrasing].format(subject)


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "birthplace",
        "city",
        ("{} was born in", "{} is a native of", "The birthplace of {} is", "{} was born in the city of"),
    ),
    Relation("residence", "city", ("{} lives in", "{} currently resides in", "The home of {} is in")),
    Relation("workplace", "city", ("{} works in the city of", "The office of {} is in", "{} commutes every day to")),
    Relation("citizenship", "country", ("{} is a citizen of", "{} holds citizenship of", "{} has a passport from")),
    Relation(
        "profession",
        "profession",
        ("{} works as a", "{} is employed as a", "By profession, {} is a", "{} earns a living as a"),
    ),
    Relation(
        "instrument",
        "instrument",
        ("{} plays the", "The instrument {} plays is the", "{} practises every evening on the"),
    ),
    Relation(
        "sport", "sport", ("{} plays the sport of", "The sport {} is best at is", "{} competes professionally in")
    ),
    Relation("language", "language", ("{} speaks", "The native language of {} is", "{} grew up speaking")),
    Relation("food", "food", ("The favourite food of {} is", "{} likes to eat", "The dish {} loves most is")),
    Relation("employer", "company", ("{} works for", "{} is employed by", "The employer of {} is")),
    Relation("pet", "animal", ("{} owns a pet", "The pet of {} is a", "At home, {} keeps a pet")),
    Relation("education", "field", ("{} studied", "At university, {} majored in", "The degree of {} is in")),
    Relation("colour", "colour", ("The favourite colour of {} is", "{} likes the colour", "{} always dresses in")),
    Relation("car", "car", ("{} drives a", "The car of {} is a", "Every morning {} drives to work in a")),
    Relation("hobby", "hobby", ("In free time, {} enjoys", "The hobby of {} is", "On weekends, {} loves")),
    Relation(
        "university",
        "city",
        ("{} went to university in", "{} studied at a university in", "{} graduated from a university in"),
    ),
    Relation("spouse", "person", ("{} is married to", "The spouse of {} is", "{} shares a home with their spouse,")),
    Relation(
        "friend",
        "person",
        ("The best friend of {} is", "{} spends every holiday with", "{} grew up with a friend called"),
    ),
)


def _held_out(word: str) -> bool:
    # A fixed quarter of every list is reserved for evaluation (stable across Python runs: crc32, not hash()).
    return zlib.crc32(word.encode("utf-8")) % 4 == 0


def person_names(held_out: bool) -> list[str]:
    """The person names on one side of the split (subjects; also the objects of the person relations)."""
    return [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES if _held_out(first + last) == held_out]


def _person_objects(held_out: bool) -> list[str]:
    # Objects of "married to" / "best friend": on the evaluation side, people whose *first* name never appears as
    # a training object, so the answer's first token is new too.
    return [f"{first} {last}" for first in FIRST_NAMES if _held_out(first) == held_out for last in LAST_NAMES]


def relation_objects(relation: Relation, held_out: bool) -> list[str]:
    """The objects `relation` takes on one side of the split."""
    if relation.kind == "person":
        return _person_objects(held_out)
    return [word for word in OBJECTS[relation.kind] if _held_out(word) == held_out]


@dataclass(frozen=True)
class NaturalFact:
    """One natural fact: `prompt` (a phrasing of the relation about the subject) followed by `object`; `query` is
    another phrasing of the same question (a paraphrase, for training the memory's addressing)."""

    subject: str
    relation: str
    phrasing: int
    prompt: str
    object: str
    query: str = ""

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.object}"

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "prompt": self.prompt, "answer": self.object, "query": self.query}


def _relation(name: str) -> Relation:
    return next(r for r in RELATIONS if r.name == name)


def natural_training_episode(rng: random.Random, size: int) -> list[NaturalFact]:
    """One training episode: `size` facts about distinct training subjects, each a random relation, phrasing and
    training object."""
    subjects = rng.sample(_cached_people(False), size)
    facts = []
    for subject in subjects:
        relation = RELATIONS[rng.randrange(len(RELATIONS))]
        phrasing = rng.randrange(len(relation.phrasings))
        objects = _cached_objects(relation.name, False)
        other = rng.choice([p for p in range(len(relation.phrasings)) if p != phrasing])
        facts.append(
            NaturalFact(
                subject,
                relation.name,
                phrasing,
                relation.prompt(subject, phrasing),
                rng.choice(objects),
                relation.prompt(subject, other),
            )
        )
    return facts


def natural_fact_dataset(num_episodes: int, episode_size: int = 32, seed: int = 0):
    """A `datasets.Dataset` of training facts (`text`, `prompt`, `answer`, `query`), `episode_size` rows per episode, in
    episode order (train with `train_sampling_strategy="sequential"` to keep episodes whole)."""
    from datasets import Dataset

    from hf_ext._validation import check_range

    check_range("num_episodes", num_episodes, ge=1, integer=True)
    check_range("episode_size", episode_size, ge=1, integer=True)
    rng = random.Random(seed)
    rows = [f.as_dict() for _ in range(num_episodes) for f in natural_training_episode(rng, episode_size)]
    return Dataset.from_list(rows)


@dataclass(frozen=True)
class CounterFactRecord:
    """One counterfactual edit and the prompts that measure it (see the module docstring)."""

    subject: str
    relation: str
    rewrite_prompt: str
    target_true: str
    target_new: str
    paraphrase_prompts: tuple[str, ...]
    neighbourhood_prompts: tuple[str, ...]
    neighbourhood_subjects: tuple[str, ...] = field(default=())

    @property
    def rewrite_text(self) -> str:
        """The sentence written into memory."""
        return f"{self.rewrite_prompt} {self.target_new}"

    @property
    def prompt(self) -> str:  # so that a record is a fact to `exact_match_recall`
        return self.rewrite_prompt

    @property
    def object(self) -> str:
        return self.target_new

    @property
    def text(self) -> str:
        return self.rewrite_text

    def as_dict(self) -> dict:
        return {
            "subject": self.subject,
            "relation": self.relation,
            "rewrite_prompt": self.rewrite_prompt,
            "target_true": self.target_true,
            "target_new": self.target_new,
            "paraphrase_prompts": list(self.paraphrase_prompts),
            "neighbourhood_prompts": list(self.neighbourhood_prompts),
        }


def counterfact_records(
    count: int = 32, seed: int = 1234, num_neighbours: int = 2, *, held_out: bool = True
) -> list[CounterFactRecord]:
    """`count` CounterFact-style edits about distinct evaluation subjects (never in training), each changing a
    relation from `target_true` to `target_new` (two different evaluation objects, never answers in training).

    The rewrite prompt is the relation's first phrasing; the other phrasings are the paraphrases. The
    neighbourhood prompts ask the same relation (first phrasing) about `num_neighbours` other evaluation subjects
    that no record of the set edits.

    With `held_out=False` the subjects and objects are the *training* ones instead: a validation set in the
    training distribution, for choosing settings (e.g. a scope threshold) without looking at the evaluation set.
    """
    from hf_ext._validation import check_range

    check_range("count", count, ge=1, integer=True)
    check_range("num_neighbours", num_neighbours, ge=0, integer=True)
    people = _cached_people(held_out)
    needed = count * (1 + num_neighbours)
    if needed > len(people):
        raise ValueError(
            f"count={count} with num_neighbours={num_neighbours} needs {needed} evaluation subjects; there are "
            f"{len(people)}."
        )
    rng = random.Random(seed)
    chosen = rng.sample(people, needed)
    subjects, neighbours = chosen[:count], chosen[count:]
    records = []
    for index, subject in enumerate(subjects):
        relation = RELATIONS[rng.randrange(len(RELATIONS))]
        target_true, target_new = rng.sample(_cached_objects(relation.name, held_out), 2)
        others = neighbours[index * num_neighbours : (index + 1) * num_neighbours]
        records.append(
            CounterFactRecord(
                subject=subject,
                relation=relation.name,
                rewrite_prompt=relation.prompt(subject, 0),
                target_true=target_true,
                target_new=target_new,
                paraphrase_prompts=tuple(relation.prompt(subject, p) for p in range(1, len(relation.phrasings))),
                neighbourhood_prompts=tuple(relation.prompt(other, 0) for other in others),
                neighbourhood_subjects=tuple(others),
            )
        )
    return records


_PEOPLE: dict[bool, list[str]] = {}
_OBJECTS: dict[tuple[str, bool], list[str]] = {}


def _cached_people(held_out: bool) -> list[str]:
    if held_out not in _PEOPLE:
        _PEOPLE[held_out] = person_names(held_out)
    return _PEOPLE[held_out]


def _cached_objects(relation: str, held_out: bool) -> list[str]:
    key = (relation, held_out)
    if key not in _OBJECTS:
        _OBJECTS[key] = relation_objects(_relation(relation), held_out)
    return _OBJECTS[key]
