"""Units: the WAD fixed-point scale, uint256 bounds, and rounding that mirrors `contracts/lib/wad.vy`
and Vyper's integer semantics.

The ground floor of the keeper package: it imports nothing from `keeper`, and every module that
needs WAD or a rounding helper imports it from here (one definition).

Python's ``//`` floors (rounds towards -infinity) while Vyper's ``//`` on signed integers
truncates towards zero; every helper here names its rounding so the keeper's numbers equal the
contracts' to the wei. The helpers accept Python ints or numpy object arrays of Python ints.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TypeVar

import numpy as np

WAD = 10**18
# wei per gwei: gas prices.
GWEI = 10**9
# Vyper's max_value(uint256): what the engine's health factor returns with nothing to maintain.
MAX_UINT256 = 2**256 - 1

T = TypeVar("T", int, np.ndarray)


def floor_div(a: T, d: int) -> T:
    """floor(a / d) for d > 0 (`wad._floor_div`); Python's ``//`` already floors."""
    return a // d


def ceil_div(a: T, d: int) -> T:
    """ceil(a / d) for d > 0 (`wad._ceil_div`, `wad._mul_div_up`)."""
    return -((-a) // d)


def mul_div_up(a: T, b: T | int, d: int) -> T:
    """ceil(a * b / d) for a, b >= 0 and d > 0 (`wad._mul_div_up`), exact for any size."""
    return -((a * -b) // d)


def trunc_div(a: T, d: int) -> T:
    """a / d rounded towards zero, as Vyper's ``//`` on int256 (d > 0)."""
    if isinstance(a, np.ndarray):
        return np.where(a >= 0, a // d, -((-a) // d))
    return a // d if a >= 0 else -((-a) // d)


def to_wad(value: str | float | int | Decimal) -> int:
    """A decimal number as an exact WAD integer ("0.85" -> 850000000000000000).

    Accepts an int, a float, a Decimal or a string holding a decimal number.
    Raises TypeError for anything else (bool, None, a list, ...) and ValueError if the value is not
    a number, is not finite, has more than 18 decimals, or is above 10**60 (no uint256 holds its WAD).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise TypeError(f"not a number: {value!r} ({type(value).__name__})")
    try:
        d = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    # exact integer arithmetic on the digits: Decimal multiplication would round to 28 digits
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)  # a finite Decimal's exponent ('n', 'N', 'F' mark NaN and infinity)
    exponent = exp
    text = "".join(map(str, digits)).rstrip("0")
    if not text:
        return 0
    exponent += len(digits) - len(text)  # the trailing zeros removed
    if exponent < -18:
        raise ValueError(f"more than 18 decimals: {value!r}")
    if len(text) + exponent > 60:  # above 10**78 WAD: more than any uint256
        raise ValueError(f"too large: {value!r}")
    wad: int = int(text) * 10 ** (exponent + 18)  # exponent + 18 >= 0: an int
    return -wad if sign else wad
