# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title 128-bit fields of packed storage words
@notice A signed amount (a position size) stored in the low 128 bits of a word as two's
        complement, next to an unsigned 128-bit field (a price) in the high bits: one slot where
        two would be needed. Used by the engine's and the option market's position slots.
@dev Callers check `_fits_int128` (and their unsigned field against `LOW128`) before packing,
     with their own revert reason: packing never truncates.
@license MIT
"""

LOW128: constant(uint256) = 2**128 - 1
INT128_TOP: constant(int256) = 2**127
INT128_SPAN: constant(int256) = 2**128


@internal
@pure
def _fits_int128(x: int256) -> bool:
    return x < INT128_TOP and x >= -INT128_TOP


@internal
@pure
def _low128_of(x: int256) -> uint256:
    """
    @dev `x` (within int128) as the two's-complement low 128 bits of a word.
    """
    if x < 0:
        return convert(x + INT128_SPAN, uint256)
    return convert(x, uint256)


@internal
@pure
def _int128_at(word: uint256) -> int256:
    """
    @dev The signed amount in the low 128 bits of `word` (inverse of `_low128_of`).
    """
    x: int256 = convert(word & LOW128, int256)
    if x >= INT128_TOP:
        return x - INT128_SPAN
    return x


# @dev External wrappers: the packing for reference tests, and so the file also compiles as a
#      contract (brownie builds every file under contracts/).
@external
@pure
def pack(x: int256, high: uint256) -> uint256:
    assert self._fits_int128(x) and high <= LOW128, "packing: out of range"
    return self._low128_of(x) | (high << 128)


@external
@pure
def unpack(word: uint256) -> (int256, uint256):
    return self._int128_at(word), word >> 128
