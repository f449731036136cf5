"""Kubernetes quantities: exact values, and garbage that must neither pass nor crash."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from mlgate.engine.quantities import InvalidQuantity, parse_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, Fraction(2)),
        (0, Fraction(0)),
        ("2", Fraction(2)),
        ("0", Fraction(0)),
        ("+2", Fraction(2)),
        ("-1", Fraction(-1)),
        (" 4 ", Fraction(4)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        (0.5, Fraction(1, 2)),
        (1.1, Fraction(11, 10)),  # exact decimal, not the binary float
        ("500m", Fraction(1, 2)),
        ("1500m", Fraction(3, 2)),
        ("1n", Fraction(1, 10**9)),
        ("1u", Fraction(1, 10**6)),
        ("1k", Fraction(1000)),
        ("2M", Fraction(2 * 10**6)),
        ("1G", Fraction(10**9)),
        ("1T", Fraction(10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),  # exa, not an exponent
        ("1Ki", Fraction(1024)),
        ("1Mi", Fraction(2**20)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1Ei", Fraction(2**60)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1e+3", Fraction(1000)),
        ("1e-3", Fraction(1, 1000)),
        ("1e64", Fraction(10**64)),
    ],
)
def test_parse_quantity(value: object, expected: Fraction) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "two",
        "1.2.3",
        ".",
        "1x",
        "1K",  # Kubernetes' kilo is lower-case k
        "1KI",
        "1e",
        "1e1.5",
        "0x10",
        "1 Gi",
        "\u0662",  # Arabic-Indic digit two: Decimal would accept it, Kubernetes does not
        "NaN",
        "Infinity",
        "inf",
        "1_000",
        True,
        False,
        None,
        [1],
        {"value": 1},
        float("inf"),
        float("-inf"),
        float("nan"),
    ],
)
def test_garbage_is_an_invalid_quantity(value: object) -> None:
    with pytest.raises(InvalidQuantity, match="quantity"):
        parse_quantity(value)


@pytest.mark.parametrize(
    "value", ["1e999999999", "1e-999999999", "1e65", "9" * 65, "1e" + "9" * 5000]
)
def test_huge_quantities_are_refused_not_computed(value: str) -> None:
    # Evaluating 10**999999999 would hang the webhook: these must be refused up front.
    with pytest.raises(InvalidQuantity, match=r"out of range|too long"):
        parse_quantity(value)


def test_rounding_up_is_left_to_callers() -> None:
    assert math.ceil(parse_quantity("0.5")) == 1
    assert math.ceil(parse_quantity("1001m")) == 2
    assert math.ceil(parse_quantity("1000m")) == 1
