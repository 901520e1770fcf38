"""hf-ext's one range check: the bounds hold exactly, NaN / inf / bool / None are handled, and the message names the
field, the value and what was expected."""

import math

import pytest

from hf_ext._validation import check_range


@pytest.mark.parametrize(
    ("bounds", "inside", "outside", "expected"),
    [
        ({"ge": 1, "integer": True}, [1, 2, 10**9], [0, -1, 1.5, True], "an integer >= 1"),
        ({"gt": 0, "le": 1}, [1e-12, 0.5, 1, 1.0], [0, 0.0, 1.0000001, -1], "a number in (0, 1]"),
        ({"ge": 0, "lt": 1}, [0, 0.999], [1, -1e-9], "a number in [0, 1)"),
        ({"le": 0.5}, [-3, 0.5], [0.51], "a number <= 0.5"),
        ({}, [-1e300, 0, 1e300], [math.nan, math.inf, -math.inf, "1", None], "a finite number"),
    ],
)
def test_bounds_are_exact_and_the_message_says_what_was_expected(bounds, inside, outside, expected):
    for value in inside:
        check_range("field", value, **bounds)
    for value in outside:
        with pytest.raises(ValueError) as error:
            check_range("field", value, **bounds)
        assert str(error.value) == f"field={value!r} is out of range; expected {expected}."


def test_nan_is_never_in_range_whatever_the_bounds():
    for bounds in ({"ge": 0}, {"le": 0}, {"gt": -math.inf}, {}):
        with pytest.raises(ValueError, match="field=nan is out of range"):
            check_range("field", math.nan, **bounds)


def test_optional_allows_none_and_says_so():
    check_range("max_samples", None, ge=1, integer=True, optional=True)
    with pytest.raises(ValueError, match=r"max_samples=0 is out of range; expected an integer >= 1 or None\.$"):
        check_range("max_samples", 0, ge=1, integer=True, optional=True)


def test_hint_is_appended():
    with pytest.raises(
        ValueError, match=r"^beta=-1 is out of range; expected a number > 0 \(AOT's default: 0\.01\)\.$"
    ):
        check_range("beta", -1, gt=0, hint="(AOT's default: 0.01)")
