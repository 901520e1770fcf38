"""Checks of what a user hands to SASA: lists of texts, a judge's scores, a tokenizer that fits the model.

Each raises before the expensive part (a forward, a generation) or right where the bad value first appears (a
judge's scores), with a message that names the argument and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable


__all__ = ["judge_name", "judge_scores", "text_list"]

SHOWN = 3
"""How many bad values an error message quotes."""


def text_list(name: str, texts, *, allow_empty: bool = False, allow_empty_list: bool = False) -> list[str]:
    """`texts` as a list of strings.

    Raises:
        TypeError: `texts` is one string (it would be read one character a text) or not a sequence of strings.
        ValueError: the list is empty (unless `allow_empty_list`) or holds an empty string (unless `allow_empty`).
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{name} must be a list of texts, got one string ({_preview(texts)}); it would be read one character "
            f"a text. Wrap it in a list: [{_preview(texts)}]."
        )
    if texts is None or not isinstance(texts, Iterable) or isinstance(texts, dict):
        raise TypeError(f"{name} must be a list of texts, got {type(texts).__name__}.")
    texts = list(texts)
    not_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if not_strings:
        first = not_strings[0]
        raise TypeError(
            f"{name} must be a list of strings; {len(not_strings)} item(s) are not, the first at index {first} "
            f"({type(texts[first]).__name__})."
        )
    if not texts and not allow_empty_list:
        raise ValueError(f"{name} is empty; expected a non-empty list of texts.")
    if not allow_empty:
        empty = [i for i, text in enumerate(texts) if not text]
        if empty:
            raise ValueError(
                f"{name} holds {len(empty)} empty text(s) (at index {', '.join(map(str, empty[:SHOWN]))}"
                f"{' ...' if len(empty) > SHOWN else ''}); expected non-empty strings."
            )
    return texts


def _preview(text, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


def judge_name(judge: Callable) -> str:
    """The name a report gives a judge: its qualified name, or its class's."""
    return getattr(judge, "__qualname__", None) or type(judge).__name__


def judge_scores(judge: Callable, texts: list[str], prompts: list[str]) -> list[float]:
    """`judge(texts, prompts)` as floats, checked: one score per text, each a probability in [0, 1].

    Raises:
        ValueError: naming the judge, how many scores were bad and the first few of them with their index (NaN and
            infinities are never scores; a judge returning 5.0 does not return probabilities).
    """
    name = judge_name(judge)
    raw = judge(texts, prompts)
    try:
        scores = [float(score) for score in raw]
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The judge {name} must return one number per text (a probability in [0, 1]); converting its output "
            f"failed: {error}."
        ) from None
    if len(scores) != len(texts):
        raise ValueError(f"The judge {name} returned {len(scores)} scores for {len(texts)} texts; expected one each.")
    bad = [(i, score) for i, score in enumerate(scores) if not 0.0 <= score <= 1.0]  # NaN fails both comparisons
    if bad:
        shown = ", ".join(f"{score!r} at {i}" for i, score in bad[:SHOWN])
        nan = sum(math.isnan(score) for _, score in bad)
        raise ValueError(
            f"The judge {name} returned {len(bad)} of {len(scores)} scores outside [0, 1] (e.g. {shown}"
            f"{' ...' if len(bad) > SHOWN else ''}{f'; {nan} NaN' if nan else ''}); expected probabilities in [0, 1] "
            "(1 = undesired)."
        )
    return scores
