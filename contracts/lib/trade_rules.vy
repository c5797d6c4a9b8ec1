# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Trade rules shared by every instrument (perpetuals and futures, options)
@notice Whether an account may end a trade where it ends (`_trade_allowed`), and whether a
        trade grows its exposure (`_grows`, which decides caps and the same-block rule).
@dev Used by `MarginEngine.trade` and `OptionMarket.trade` with the engine's margin summaries
     before and after the fill.
@custom:security The rule closes the Mango (2022) pattern: an account below maintenance margin
     can only de-risk at the index or better, never hand value to a colluding counterparty at
     an off-index price and leave the loss to the insurance fund.
@license MIT
"""

from . import types


@internal
@pure
def _grows(old_size: int256, new_size: int256) -> bool:
    """
    @dev Whether a position's absolute size grows (a flip to a larger size grows it).
    """
    return abs(new_size) > abs(old_size)


@internal
@pure
def _reduces(old_size: int256, new_size: int256) -> bool:
    """
    @dev Whether a trade only reduces a position: same side, smaller, no flip. Only such a
         trade is judged against the account's summary before it (`_trade_allowed`), so a
         caller computes that summary only then.
    """
    return (old_size > 0 and new_size >= 0 and new_size < old_size) or (old_size < 0 and new_size <= 0 and new_size > old_size)


@internal
@pure
def _trade_allowed(old_size: int256, new_size: int256, before: types.MarginSummary, after: types.MarginSummary) -> bool:
    """
    @dev After a trade an account must meet IM, unless the trade only reduces its position
         (`_reduces`) and raises neither its IM nor its shortfall below IM; `before` is read
         only for such a trade. An account below
         maintenance margin before the trade (equity <= 0 included) must also not lose equity
         at the index; above maintenance its health factor must not fall.
    """
    if after.equity >= convert(after.initial_margin, int256):
        return True
    if not self._reduces(old_size, new_size) or after.initial_margin > before.initial_margin:
        return False
    if before.equity < convert(before.maintenance_margin, int256):
        return after.equity >= before.equity
    if after.health_factor < before.health_factor:
        return False
    return after.equity - convert(after.initial_margin, int256) >= before.equity - convert(before.initial_margin, int256)


# @dev External wrapper: the rule for reference tests, and so the file also compiles as a
#      contract (brownie builds every file under contracts/).
@external
@pure
def trade_allowed(old_size: int256, new_size: int256, before: types.MarginSummary, after: types.MarginSummary) -> bool:
    return self._trade_allowed(old_size, new_size, before, after)
