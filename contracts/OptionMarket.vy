# pragma version 0.4.3
# pragma evm-version cancun
# pragma optimize codesize
# pragma nonreentrancy off
"""
@title Option market: European option series margined in the engine's cross-margin account
@notice Lists series, holds option positions, values them (Black-76 with the VolFeed's smile,
        conservative marks without a fresh vol), adds their value and requirements to the
        engine's margin summary (`margin_contribution`), settles expired series, takes matched
        trades from the engine's matching contract, and liquidates. The rules are in
        `lib/options_core.vy`, whose notice states every formula.
@dev `liquidate_options` runs the code of the `OptionLiquidation` deployable in this contract's
     storage (delegatecall); both lay out their storage through the one module
     `lib/options_core.vy` (a test compares them).
@custom:security Trusts the engine (its vault, oracle and matching contract, read at
     deployment), the vol feed and the liquidation code (immutable). Guarantees: a trade
     reaches positions only through the engine's matching contract and leaves both accounts
     meeting initial margin (or only reducing risk); an account is liquidated only when the
     engine finds it below maintenance margin; risk parameters are bounded on-chain.
@license MIT
"""

import lib.options_core as core
import lib.constants as constants

initializes: core

exports: (
    core.roles.admin,
    core.roles.pending_admin,
    core.roles.risk_admin,
    core.roles.propose_admin,
    core.roles.accept_admin,
    core.roles.set_risk_admin,
    constants.__version__,
    core.ENGINE,
    core.MATCHING,
    core.VAULT,
    core.ORACLE,
    core.VOL_FEED,
    core.series_count,
    core.series,
    core.positions,
    core.open_interest,
    core.max_open_interest,
    core.max_position,
    core.position_version,
    core.risk_params,
    core.risk_params_now,
    core.risk_params_changed_at,
    core.list_option,
    core.set_series_caps,
    core.set_risk_params,
    core.margin_contribution,
    core.settle_series,
    core.settle_account,
    core.trade,
    core.has_positions,
    core.option_states,
    core.series_states,
)


interface ILiquidation:
    def ENGINE() -> address: view
    def VOL_FEED() -> address: view


# @dev The OptionLiquidation deployable whose code `liquidate_options` runs.
LIQUIDATION: public(immutable(address))


@deploy
def __init__(admin_: address, engine: address, vol_feed: address, liquidation: address):
    """
    @param admin_ Admin and initial risk admin (see lib/roles.vy).
    @param engine The MarginEngine (its vault, oracle and matching contract are read from it).
    @param vol_feed The VolFeed giving (atm vol, skew) per (price id, expiry).
    @param liquidation The OptionLiquidation deployed with the same engine and vol feed.
    """
    core.__init__(admin_, engine, vol_feed)
    assert staticcall ILiquidation(liquidation).ENGINE() == engine and staticcall ILiquidation(liquidation).VOL_FEED() == vol_feed, "options: liquidation mismatch"
    LIQUIDATION = liquidation


@external
@nonreentrant
def liquidate_options(account: address) -> uint256:
    """
    @notice Take over option positions of an account the engine finds liquidatable, at most
            `MAX_LIQUIDATION_SERIES` (8) series per call, chosen by the protocol: shorts
            first, then by maintenance margin, largest first, then by series id
            (`lib/options_core.vy` `liquidate_options` states the rule).
    @dev Reverts as `options_core.liquidate_options`: "options: self liquidation", "options:
         position opened this block", "options: account not liquidatable", "options: nothing
         to liquidate", "options: liquidator below IM", or an oracle error.
    @param account The account to liquidate.
    @return The value moved, WAD USD.
    """
    response: Bytes[32] = raw_call(LIQUIDATION, msg.data, max_outsize=32, is_delegate_call=True)
    return convert(response, uint256)
