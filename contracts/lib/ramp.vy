# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Phase-in of requirement raises
@notice A governance change that makes a margin requirement stricter moves linearly from the
        value in force when the change landed to the new value over `constants.REQUIREMENT_RAMP`
        (Curve's StableSwap ramps its amplification parameter the same way); a change that
        loosens applies at once. So no account healthy in the block a change lands becomes
        liquidatable there, and whatever the sequence of changes, a requirement in force rises
        by at most (new - old) x elapsed / REQUIREMENT_RAMP: every account gets time to add
        margin or reduce.
@dev Used by `engine_core` (underlying margin rates), `CollateralVault` (collateral haircuts)
     and `options_core` (option margin rates). A change made during a ramp starts a new ramp
     from the value in force at that moment. Values round towards the old value, in the
     account's favour, for the duration of the ramp only.
@custom:security Bounds the speed of a compromised risk admin: raising maintenance margin
     from 5% to 100% of notional takes the whole ramp, and a 4x account stays healthy for
     the first fifth of it (docs/trust-model.md).
@license MIT
"""

from . import constants


@internal
@view
def _raised(before: uint256, target: uint256, since: uint256) -> uint256:
    """
    @dev In force now, for a parameter where a higher value is stricter (a margin rate):
         `target` if it is not above `before` or the ramp started at `since` is over, else
         before + floor((target - before) * elapsed / REQUIREMENT_RAMP).
    """
    if target <= before or block.timestamp >= since + constants.REQUIREMENT_RAMP:
        return target
    return before + (target - before) * (block.timestamp - since) // constants.REQUIREMENT_RAMP


@internal
@view
def _lowered(before: uint256, target: uint256, since: uint256) -> uint256:
    """
    @dev In force now, for a parameter where a lower value is stricter (the fraction of a
         collateral's value counted as margin): the mirror of `_raised`,
         before - floor((before - target) * elapsed / REQUIREMENT_RAMP) while it lasts.
    """
    if target >= before or block.timestamp >= since + constants.REQUIREMENT_RAMP:
        return target
    return before - (before - target) * (block.timestamp - since) // constants.REQUIREMENT_RAMP


# @dev External wrapper: the rule for reference tests, and so the file also compiles as a
#      contract (brownie builds every file under contracts/).
@external
@view
def raised(before: uint256, target: uint256, since: uint256) -> uint256:
    return self._raised(before, target, since)
