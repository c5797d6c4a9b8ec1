# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Perpetual funding maths
@notice The cumulative funding index accrued to now, and the funding rate after a trade.
@dev Rates are fractions of the index price per 8 hours (`constants.FUNDING_PERIOD`); longs
     pay shorts when the rate is positive (dYdX / Binance premium-index convention). The
     keeper mirrors both in `keeper/risk/margin.py`.
@license MIT
"""

from . import constants
from . import types


@internal
@view
def _index_now(market: types.Market, price: uint256) -> int256:
    """
    @dev Cumulative funding (WAD USD per unit of size) including accrual since the last update:
         trunc(trunc(rate * price / 1e18) * elapsed / 8h), each step truncated towards zero.
    """
    if not market.is_perpetual or block.timestamp <= market.funding_time:
        return market.funding_index
    elapsed: int256 = convert(block.timestamp - market.funding_time, int256)
    return market.funding_index + market.funding_rate * convert(price, int256) // constants.IWAD * elapsed // convert(constants.FUNDING_PERIOD, int256)


@internal
@pure
def _rate_after_trade(rate: int256, price: uint256, index: uint256, size: uint256, open_interest: uint256, smoothing: uint256, max_rate: uint256) -> int256:
    """
    @dev The rate moves towards the trade's premium (price - index) / index by
         smoothing * size / max(size, open interest) (an EMA over trades weighted by size
         against open interest, the larger of before and after, so a dust fill at the band
         edge moves it by nothing), clamped to +-max_rate.
    """
    weight: int256 = convert(smoothing * size // max(open_interest, size), int256)
    premium: int256 = (convert(price, int256) - convert(index, int256)) * constants.IWAD // convert(index, int256)
    moved: int256 = rate + (premium - rate) * weight // constants.IWAD
    cap: int256 = convert(max_rate, int256)
    return max(-cap, min(cap, moved))


# @dev External wrapper: the rate rule for reference tests, and so the file also compiles as a
#      contract (brownie builds every file under contracts/).
@external
@pure
def rate_after_trade(rate: int256, price: uint256, index: uint256, size: uint256, open_interest: uint256, smoothing: uint256, max_rate: uint256) -> int256:
    return self._rate_after_trade(rate, price, index, size, open_interest, smoothing, max_rate)
