"""The one range check of hf-ext: a configuration value, an argument, a command option.

Every check raises the same `ValueError`, naming the field, the value and what was expected, e.g.
`batch_size=0 is out of range; expected an integer >= 1.` NaN and infinities are never in range; `True` is not an
integer.
"""

from __future__ import annotations

import math
import numbers


__all__ = ["check_range", "warn_deprecated"]


def _format(number) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def _expectation(integer: bool, ge, gt, le, lt, optional: bool) -> str:
    kind = "an integer" if integer else "a number"
    low = ("[", ge) if ge is not None else ("(", gt) if gt is not None else None
    high = ("]", le) if le is not None else (")", lt) if lt is not None else None
    if low and high:
        text = f"{kind} in {low[0]}{_format(low[1])}, {_format(high[1])}{high[0]}"
    elif low:
        text = f"{kind} {'>=' if low[0] == '[' else '>'} {_format(low[1])}"
    elif high:
        text = f"{kind} {'<=' if high[0] == ']' else '<'} {_format(high[1])}"
    else:
        text = f"a finite {kind[2:] if kind.startswith('a ') else kind[3:]}"
    return text + (" or None" if optional else "")


def check_range(
    name: str,
    value,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    integer: bool = False,
    optional: bool = False,
    hint: str = "",
) -> None:
    """Raise `ValueError` unless `value` is a finite number (an integer with `integer=True`) within the bounds.

    Args:
        name (`str`): The field or argument, as the user wrote it.
        value: The value to check.
        ge, gt, le, lt (`float`, *optional*): Inclusive / exclusive lower and upper bounds.
        integer (`bool`, *optional*, defaults to `False`): Only integers (not `bool`) are in range.
        optional (`bool`, *optional*, defaults to `False`): `None` is allowed.
        hint (`str`, *optional*): Appended to the message (e.g. the method's usual value).
    """
    if value is None and optional:
        return
    kinds = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if valid:
        valid = (
            (ge is None or value >= ge)
            and (gt is None or value > gt)
            and (le is None or value <= le)
            and (lt is None or value < lt)
        )
    if not valid:
        expected = _expectation(integer, ge, gt, le, lt, optional)
        raise ValueError(f"{name}={value!r} is out of range; expected {expected}{f' {hint}' if hint else ''}.")


_LIBRARY_PREFIXES = ("hf_ext", "huggingface_hub", "transformers")


def warn_deprecated(message: str) -> None:
    """A `FutureWarning` attributed to the first caller outside hf-ext and the libraries it plugs into (the
    user's line), however deep the deprecated name is reached (dataclass wrappers, `from_pretrained`, ...)."""
    import sys
    import warnings

    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _LIBRARY_PREFIXES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FutureWarning, stacklevel=level)
