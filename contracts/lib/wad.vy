# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Fixed-point helpers (WAD, 18 decimals)
@notice Rounding-explicit multiplication and division so that every caller states which way
        it rounds: requirements round up, equity rounds down (towards -infinity), so rounding
        always favours the protocol.
@dev Vyper's `//` truncates towards zero for signed integers; `_floor_div` and `_ceil_div`
     below give true floor and ceiling. The keeper mirrors these in `keeper/risk/fixed.py`.
@license MIT
"""

from . import constants



@internal
@pure
def _mul_down(a: uint256, b: uint256) -> uint256:
    """
    @dev floor(a * b / 1e18).
    """
    return a * b // constants.WAD


@internal
@pure
def _mul_div_up(a: uint256, b: uint256, d: uint256) -> uint256:
    """
    @dev ceil(a * b / d); reverts on d == 0 (division by zero).
    """
    p: uint256 = a * b
    q: uint256 = p // d
    if p % d != 0:
        q += 1
    return q


@internal
@pure
def _floor_div(a: int256, d: int256) -> int256:
    """
    @dev floor(a / d) for d > 0, rounding towards -infinity (unlike Vyper's `//`).
    """
    q: int256 = a // d
    if a % d != 0 and a < 0:
        q -= 1
    return q


@internal
@pure
def _ceil_div(a: int256, d: int256) -> int256:
    """
    @dev ceil(a / d) for d > 0, rounding towards +infinity.
    """
    q: int256 = a // d
    if a % d != 0 and a > 0:
        q += 1
    return q


@external
@pure
def floor_div(a: int256, d: int256) -> int256:
    """
    @notice floor(a / d) for d > 0; exposed so the rounding rule can be tested directly.
    @param a Dividend.
    @param d Divisor, > 0.
    @return The quotient rounded towards -infinity.
    """
    assert d > 0, "wad: divisor not positive"
    return self._floor_div(a, d)


@external
@pure
def ceil_div(a: int256, d: int256) -> int256:
    """
    @notice ceil(a / d) for d > 0; exposed so the rounding rule can be tested directly.
    @param a Dividend.
    @param d Divisor, > 0.
    @return The quotient rounded towards +infinity.
    """
    assert d > 0, "wad: divisor not positive"
    return self._ceil_div(a, d)
