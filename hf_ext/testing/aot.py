"""AOT's synthetic tasks: a small offline preference set for tiny models, and facts with known answers for real ones.

[`synthetic_preference_dataset`]: pleasant vs unpleasant words about things, paired or unpaired, train and test
splits with disjoint nouns (for tiny models, tests, the demo and the benchmark).

Facts with known answers (for real models):

Each fact is a prompt to complete ("The capital of Australia is"), its known answer ("Canberra") and a plausible
wrong answer ("Sydney": the classic confusion, a regularized verb or plural, a neighbouring country's language).
The preference set asks for the correct answer over the wrong one; the held-out facts are judged by exact match of
the model's greedy answer against the known answer, which involves neither the model's rewards nor the training
signal. Everything is generated here, deterministically; nothing is downloaded.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hf_ext._validation import check_range


__all__ = [
    "FACT_TEMPLATES",
    "Fact",
    "exact_match",
    "fact_preference_dataset",
    "facts",
    "first_clause",
    "rejected_answers",
    "split_facts",
    "synthetic_preference_dataset",
]

FACT_TEMPLATES = {
    "capital": "The capital of {} is",
    "past_tense": "The past tense of {} is",
    "plural": "The plural of {} is",
    "language": "The official language of {} is",
    "symbol": "The chemical symbol of {} is",
}
"""The prompt of each category; `{}` is the subject."""

# (subject, known answer, plausible wrong answer), one block per category.
_CAPITALS = """
France|Paris|Lyon; Germany|Berlin|Munich; Italy|Rome|Milan; Spain|Madrid|Barcelona; Japan|Tokyo|Osaka;
Canada|Ottawa|Toronto; Australia|Canberra|Sydney; Egypt|Cairo|Alexandria; Kenya|Nairobi|Mombasa; Peru|Lima|Cusco;
Norway|Oslo|Bergen; Poland|Warsaw|Krakow; Turkey|Ankara|Istanbul; Vietnam|Hanoi|Saigon; Chile|Santiago|Valparaiso;
Portugal|Lisbon|Porto; Sweden|Stockholm|Gothenburg; Nigeria|Abuja|Lagos; Pakistan|Islamabad|Karachi;
India|New Delhi|Mumbai; China|Beijing|Shanghai; Russia|Moscow|Novosibirsk; the United Kingdom|London|Manchester;
Ireland|Dublin|Cork; Greece|Athens|Thessaloniki; Austria|Vienna|Salzburg; Switzerland|Bern|Zurich;
Belgium|Brussels|Antwerp; the Netherlands|Amsterdam|Rotterdam; Denmark|Copenhagen|Aarhus; Finland|Helsinki|Tampere;
Hungary|Budapest|Debrecen; the Czech Republic|Prague|Brno; Romania|Bucharest|Cluj; Bulgaria|Sofia|Plovdiv;
Serbia|Belgrade|Novi Sad; Croatia|Zagreb|Split; Mexico|Mexico City|Guadalajara; Argentina|Buenos Aires|Cordoba;
Venezuela|Caracas|Maracaibo; Cuba|Havana|Varadero; South Korea|Seoul|Busan; Thailand|Bangkok|Phuket;
Indonesia|Jakarta|Surabaya; the Philippines|Manila|Cebu; Malaysia|Kuala Lumpur|Penang; Iran|Tehran|Isfahan;
Iraq|Baghdad|Basra; Saudi Arabia|Riyadh|Jeddah; Morocco|Rabat|Casablanca; Algeria|Algiers|Oran; Tunisia|Tunis|Sfax;
Ethiopia|Addis Ababa|Gondar; Ghana|Accra|Kumasi; New Zealand|Wellington|Auckland; Iceland|Reykjavik|Akureyri;
Nepal|Kathmandu|Pokhara; Bangladesh|Dhaka|Chittagong; Afghanistan|Kabul|Kandahar; Syria|Damascus|Aleppo;
Jordan|Amman|Aqaba; Lebanon|Beirut|Sidon; the United States|Washington|New York; Kazakhstan|Astana|Almaty;
Uzbekistan|Tashkent|Samarkand; Cambodia|Phnom Penh|Siem Reap; Ecuador|Quito|Guayaquil; Uruguay|Montevideo|Salto;
Jamaica|Kingston|Montego Bay; Estonia|Tallinn|Tartu; Lithuania|Vilnius|Kaunas; Slovakia|Bratislava|Kosice;
Slovenia|Ljubljana|Maribor; Albania|Tirana|Durres; Armenia|Yerevan|Gyumri; Azerbaijan|Baku|Ganja;
Uganda|Kampala|Entebbe; Zimbabwe|Harare|Bulawayo; Senegal|Dakar|Touba; Libya|Tripoli|Benghazi; Cyprus|Nicosia|Limassol;
Scotland|Edinburgh|Glasgow; Wales|Cardiff|Swansea; Latvia|Riga|Daugavpils; Belarus|Minsk|Gomel
"""
_PAST_TENSES = """
go|went|goed; run|ran|runned; eat|ate|eated; see|saw|seed; take|took|taked; give|gave|gived; write|wrote|writed;
speak|spoke|speaked; drive|drove|drived; swim|swam|swimmed; sing|sang|singed; drink|drank|drinked;
begin|began|beginned; fly|flew|flied; know|knew|knowed; grow|grew|growed; throw|threw|throwed; draw|drew|drawed;
break|broke|breaked; choose|chose|choosed; forget|forgot|forgetted; freeze|froze|freezed; steal|stole|stealed;
ride|rode|rided; bite|bit|bited; hide|hid|hided; buy|bought|buyed; bring|brought|bringed; think|thought|thinked;
teach|taught|teached; catch|caught|catched; fight|fought|fighted; sell|sold|selled; tell|told|telled;
feel|felt|feeled; keep|kept|keeped; sleep|slept|sleeped; leave|left|leaved; meet|met|meeted; lose|lost|losed;
send|sent|sended; build|built|builded; spend|spent|spended; stand|stood|standed; sit|sat|sitted; find|found|finded;
make|made|maked; come|came|comed; hold|held|holded; win|won|winned; feed|fed|feeded; hear|heard|heared;
say|said|sayed; get|got|getted; shoot|shot|shooted; fall|fell|falled; shake|shook|shaked; wear|wore|weared;
tear|tore|teared; swear|swore|sweared; sweep|swept|sweeped; weep|wept|weeped
"""
_PLURALS = """
mouse|mice|mouses; child|children|childs; man|men|mans; woman|women|womans; tooth|teeth|tooths; foot|feet|foots;
goose|geese|gooses; ox|oxen|oxes; leaf|leaves|leafs; knife|knives|knifes; wife|wives|wifes; wolf|wolves|wolfs;
half|halves|halfs; life|lives|lifes; loaf|loaves|loafs; shelf|shelves|shelfs; thief|thieves|thiefs;
crisis|crises|crisises; thesis|theses|thesises; phenomenon|phenomena|phenomenons; criterion|criteria|criterions;
louse|lice|louses; potato|potatoes|potatos; tomato|tomatoes|tomatos; hero|heroes|heros; echo|echoes|echos;
city|cities|citys; baby|babies|babys; lady|ladies|ladys; party|parties|partys; box|boxes|boxs; fox|foxes|foxs;
church|churches|churchs; dish|dishes|dishs; sheep|sheep|sheeps; deer|deer|deers; moose|moose|mooses;
species|species|specieses; calf|calves|calfs; story|stories|storys
"""
_LANGUAGES = """
Brazil|Portuguese|Spanish; Mexico|Spanish|Portuguese; Germany|German|Dutch; France|French|Italian;
the Netherlands|Dutch|German; Japan|Japanese|Chinese; Egypt|Arabic|Egyptian; Russia|Russian|Ukrainian;
Italy|Italian|Latin; Greece|Greek|Latin; Turkey|Turkish|Arabic; Poland|Polish|Russian; Sweden|Swedish|Norwegian;
Norway|Norwegian|Swedish; Denmark|Danish|Dutch; Finland|Finnish|Swedish; Hungary|Hungarian|Romanian;
Portugal|Portuguese|Spanish; Argentina|Spanish|Argentinian; South Korea|Korean|Japanese;
Vietnam|Vietnamese|Chinese; Thailand|Thai|Chinese; Israel|Hebrew|Arabic; Romania|Romanian|Hungarian;
Indonesia|Indonesian|Malay; Ethiopia|Amharic|Arabic; Chile|Spanish|Chilean; Peru|Spanish|Quechua;
Iran|Persian|Arabic; Austria|German|Austrian
"""
_SYMBOLS = """
gold|Au|Go; silver|Ag|Si; iron|Fe|Ir; sodium|Na|So; potassium|K|P; lead|Pb|Le; copper|Cu|Co; tin|Sn|Ti;
mercury|Hg|Me; oxygen|O|Ox; hydrogen|H|Hy; carbon|C|Ca; nitrogen|N|Ni; helium|He|H; calcium|Ca|C;
chlorine|Cl|Ch; zinc|Zn|Zi; neon|Ne|N; sulfur|S|Su; magnesium|Mg|Ma; uranium|U|Ur; tungsten|W|Tu;
platinum|Pt|Pl; aluminium|Al|Am; fluorine|F|Fl
"""
_BLOCKS = {
    "capital": _CAPITALS,
    "past_tense": _PAST_TENSES,
    "plural": _PLURALS,
    "language": _LANGUAGES,
    "symbol": _SYMBOLS,
}


@dataclass(frozen=True)
class Fact:
    """One fact: `prompt` is completed by `answer`; `wrong` is a plausible wrong answer."""

    category: str
    subject: str
    answer: str
    wrong: str

    @property
    def prompt(self) -> str:
        return FACT_TEMPLATES[self.category].format(self.subject)

    @property
    def chosen(self) -> str:
        return f" {self.answer}."

    @property
    def rejected(self) -> str:
        return f" {self.wrong}."


def _parse(category: str, block: str) -> list[Fact]:
    rows = [row.strip() for row in block.replace("\n", " ").split(";") if row.strip()]
    return [Fact(category, *(field.strip() for field in row.split("|"))) for row in rows]


def facts(categories: Sequence[str] | None = None) -> list[Fact]:
    """Every fact of the given categories (all of [`FACT_TEMPLATES`] by default), in a fixed order."""
    categories = list(FACT_TEMPLATES) if categories is None else list(categories)
    unknown = [c for c in categories if c not in FACT_TEMPLATES]
    if unknown:
        raise ValueError(f"categories={unknown!r} are unknown; expected some of {list(FACT_TEMPLATES)}.")
    return [fact for category in categories for fact in _parse(category, _BLOCKS[category])]


def split_facts(
    held_out: int, seed: int = 0, categories: Sequence[str] | None = None
) -> tuple[list[Fact], list[Fact]]:
    """`(train, held_out)`: a seeded split of [`facts`] with `held_out` facts held out, spread over the categories
    in proportion to their sizes. Train and held-out facts share no subject within a category."""
    pool = facts(categories)
    check_range("held_out", held_out, ge=1, le=len(pool) - 1, integer=True)
    rng = random.Random(seed)
    shuffled = rng.sample(pool, len(pool))
    by_category: dict[str, list[Fact]] = {}
    for fact in shuffled:
        by_category.setdefault(fact.category, []).append(fact)
    # Largest-remainder apportionment of the held-out facts to the categories.
    quotas = {c: held_out * len(fs) / len(pool) for c, fs in by_category.items()}
    counts = {c: int(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: quotas[c] - counts[c], reverse=True)[: held_out - sum(counts.values())]:
        counts[c] += 1
    test = [fact for c, fs in by_category.items() for fact in fs[: counts[c]]]
    train = [fact for c, fs in by_category.items() for fact in fs[counts[c] :]]
    return rng.sample(train, len(train)), test


def fact_preference_dataset(fact_list: Sequence[Fact], rejected: Sequence[str] | None = None):
    """A paired, standard-format preference dataset (`prompt` / `chosen` / `rejected`) of the facts: the known
    answer is chosen; the plausible wrong one is rejected, or the given `rejected` completions (one per fact, e.g.
    [`rejected_answers`] of a model's own answers)."""
    from datasets import Dataset

    if rejected is not None and len(rejected) != len(fact_list):
        raise ValueError(f"Got {len(rejected)} rejected completions for {len(fact_list)} facts; expected as many.")
    return Dataset.from_dict(
        {
            "prompt": [fact.prompt for fact in fact_list],
            "chosen": [fact.chosen for fact in fact_list],
            "rejected": [fact.rejected for fact in fact_list] if rejected is None else list(rejected),
        }
    )


def first_clause(generation: str) -> str:
    """A generated continuation cut after its first sentence end (`.`, `!`, `?` followed by a space or the end) or
    before its first line break, keeping its leading space: `" Paris.\n\nThe"` -> `" Paris."`,
    `" a verb, and it's"` -> `" a verb, and it's"`."""
    cut = re.search(r"[.!?](?=\s|$)|\n", generation)
    if cut is None:
        return generation.rstrip()
    end = cut.end() if cut.group() != "\n" else cut.start()
    return generation[:end].rstrip()


def rejected_answers(fact_list: Sequence[Fact], generations: Sequence[str]) -> list[str]:
    """Rejected completions built from a model's own answers (on-policy, as a verifier would label them): the
    answer's first clause ([`first_clause`]) where it is wrong by [`exact_match`] and not empty, else the fact's
    plausible wrong answer."""
    if len(generations) != len(fact_list):
        raise ValueError(f"Got {len(generations)} generations for {len(fact_list)} facts; expected as many.")
    rejected = []
    for fact, generation in zip(fact_list, generations):
        clause = first_clause(generation)
        wrong = clause.strip() and not exact_match(clause, fact.answer)
        rejected.append(clause if wrong else fact.rejected)
    return rejected


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def exact_match(generation: str, answer: str) -> bool:
    """Whether a generated continuation answers with exactly `answer`: after whitespace and case normalization, the
    continuation starts with the answer and the answer is not the prefix of a longer word (`" Canberra."` and
    `" Canberra, the"` match "Canberra"; `" Canberrans"` and `" Sydney"` do not)."""
    text, answer = _normalize(generation), _normalize(answer)
    return text.startswith(answer) and (len(text) == len(answer) or not text[len(answer)].isalnum())


# Positive and negative words of the same length in tokens (with the tiny offline tokenizer), so that a chosen and
# a rejected completion differ in one word and have the same number of tokens.
_WORDS_BY_LENGTH = (
    (("good", "bright", "quiet", "friendly"), ("wrong", "broken")),
    (("nice", "kind", "fine", "clean", "safe", "clear", "neat", "quick"), ("bad", "sad", "weak", "cold", "mean", "sour")),
    (("great", "warm", "calm", "fair", "gentle", "glad", "honest", "wise"), ("poor", "dark", "slow", "dull", "harsh", "lazy", "loud", "messy")),
    (("happy", "fresh", "lovely", "polite", "proud", "smart", "sweet", "tidy"), ("dirty", "cruel", "nasty", "rough", "ugly", "useless")),
)  # fmt: skip
_NOUNS = (
    "soup", "hotel", "movie", "concert", "trip", "lecture", "meeting", "service", "repair", "book", "game", "course",
    "bread", "coffee", "room", "museum", "garden", "train", "flight", "class", "show", "dinner", "party", "visit",
    "bridge", "market", "school", "station", "library", "river", "orchard", "harbour", "bakery", "recipe", "engine",
    "window", "letter", "story", "song", "road", "village", "kitchen", "office", "journey", "picture", "lesson",
)  # fmt: skip
_TEMPLATES = (
    ("How was the {noun}?", "The {noun} was {word}."),
    ("Describe the {noun} in one word.", "It was a {word} {noun}."),
    ("What did you think of the {noun}?", "I found the {noun} {word}."),
)


def synthetic_preference_dataset(
    num_examples: int = 64,
    *,
    seed: int = 0,
    split: str = "train",
    unpaired: bool = False,
    positive_fraction: float = 0.5,
    conversational: bool = False,
):
    """A small synthetic preference task, generated offline and deterministically.

    Each prompt asks about a thing ("How was the soup?"); the chosen answer calls it something pleasant, the rejected
    answer something unpleasant, with the same template and the same number of tokens. A model that learns the
    preference ranks pleasant words above unpleasant ones, also for things it never saw: the `"train"` and `"test"`
    splits use disjoint nouns.

    Args:
        num_examples (`int`, *optional*, defaults to 64): Number of pairs (paired) or rows (unpaired).
        seed (`int`, *optional*, defaults to 0): Seed of the generator.
        split (`str`, *optional*, defaults to `"train"`): `"train"` or `"test"` (held-out nouns).
        unpaired (`bool`, *optional*, defaults to `False`):
            Return `prompt` / `completion` / `label` rows instead of `prompt` / `chosen` / `rejected` pairs.
        positive_fraction (`float`, *optional*, defaults to 0.5): Fraction of desirable rows (unpaired only).
        conversational (`bool`, *optional*, defaults to `False`): Messages (`role` / `content`) instead of text.

    Returns:
        `datasets.Dataset`
    """
    from datasets import Dataset

    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not supported; expected 'train' or 'test'.")
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be >= 1.")
    check_range("positive_fraction", positive_fraction, ge=0, le=1)
    nouns = _NOUNS[: 2 * len(_NOUNS) // 3] if split == "train" else _NOUNS[2 * len(_NOUNS) // 3 :]
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for index in range(num_examples):
        noun = rng.choice(nouns)
        question, answer = rng.choice(_TEMPLATES)
        positives, negatives = rng.choice(_WORDS_BY_LENGTH)
        prompt = question.format(noun=noun)
        chosen = " " + answer.format(noun=noun, word=rng.choice(positives))
        rejected = " " + answer.format(noun=noun, word=rng.choice(negatives))
        if unpaired:
            label = index < round(positive_fraction * num_examples)
            rows.append({"prompt": prompt, "completion": chosen if label else rejected, "label": label})
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    if unpaired:
        rng.shuffle(rows)
    if conversational:
        for row in rows:
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
            for key in ("chosen", "rejected", "completion"):
                if key in row:
                    row[key] = [{"role": "assistant", "content": row[key].strip()}]
    return Dataset.from_list(rows)
