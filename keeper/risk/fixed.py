"""Fixed-point (WAD) rounding that mirrors `contracts/lib/wad.vy` and Vyper's integer semantics.

Python's ``//`` floors (rounds towards -infinity) while Vyper's ``//`` on signed integers
truncates towards zero; every helper here names its rounding so the keeper's numbers equal the
contracts' to the wei. The helpers accept Python ints or numpy object arrays of Python ints.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

import numpy as np

WAD = 10**18
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

    Raises ValueError if the value has more than 18 decimals or is not finite.
    """
    d = Decimal(str(value))
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    scaled = d * WAD
    if scaled != scaled.to_integral_value():
        raise ValueError(f"more than 18 decimals: {value!r}")
    return int(scaled)
