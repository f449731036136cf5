"""Kubernetes resource quantities (`2`, `500m`, `1Ki`, `1e3`) as exact numbers."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIX = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


# Untrusted input must not make us compute 10**999999999: longer strings and larger exponents
# are far beyond any real resource amount, so they are refused rather than evaluated.
_MAX_LENGTH = 64
_MAX_EXPONENT = 64


class InvalidQuantity(ValueError):
    pass


def parse_quantity(value: object) -> Fraction:
    if isinstance(value, bool):
        raise InvalidQuantity(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQuantity(f"{value!r} is not a quantity")
        return Fraction(str(value))
    if not isinstance(value, str):
        raise InvalidQuantity(f"{value!r} is not a quantity")
    if len(value) > _MAX_LENGTH:
        raise InvalidQuantity(f"{value[:_MAX_LENGTH]!r}... is too long to be a quantity")
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise InvalidQuantity(f"{value!r} is not a quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Fraction(Decimal(number))
    except (InvalidOperation, ValueError):
        raise InvalidQuantity(f"{value!r} is not a quantity") from None
    if suffix not in _SUFFIX:  # a decimal exponent; `E` and `Ei` are exa and exbi
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise InvalidQuantity(f"{value!r} is out of range")
        return base * Fraction(10) ** exponent
    return base * _SUFFIX[suffix]
