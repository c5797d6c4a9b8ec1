# pragma version 0.4.3
# pragma evm-version cancun
# pragma optimize codesize
# pragma nonreentrancy off
"""
@title Margin engine: markets, positions, cross-margin requirements, trading and liquidation
@notice The account's home: perpetual and future positions, funding, settlement, the margin
        summary every other contract asks for, and the entry points for trades (from the
        matching contract) and liquidation. The rules are in `lib/engine_core.vy`, whose notice
        states every formula.
@dev `liquidate`, `flag_liquidatable`, the liquidation and trade parameter setters run the code
     of the `EngineLiquidation` deployable, `nominate` and `deleverage` that of the
     `EngineDeleveraging` deployable, in this contract's storage (delegatecall). The three
     deployables lay out their storage through the one module `lib/engine_core.vy`, so the
     layouts cannot diverge (a test compares them); liquidation keeps the engine's address, so
     the vault's and option market's checks of `msg.sender == engine` apply unchanged.
@custom:security Trusts the vault, the oracle and the liquidation code fixed at deployment
     (immutable), the matching contract set once by the admin, and the option market and
     health attestor the admin wires. Guarantees: a trade reaches positions only through the
     matching contract and leaves both accounts meeting initial margin (or only reducing
     risk); an account is liquidated only below maintenance margin; every risk parameter is
     bounded on-chain.
@license MIT
"""

import lib.engine_core as core
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
    core.VAULT,
    core.ORACLE,
    core.underlying_count,
    core.underlyings,
    core.rates_changed_at,
    core.market_count,
    core.markets,
    core.positions,
    core.liquidation_penalty,
    core.max_liquidation_penalty,
    core.penalty_ramp_time,
    core.liquidatable_since,
    core.open_interest,
    core.max_open_interest,
    core.max_position,
    core.liquidator_share,
    core.liquidation_target,
    core.max_price_deviation,
    core.max_funding_rate,
    core.funding_smoothing,
    core.min_position_notional,
    core.option_market,
    core.health_attestor,
    core.matching,
    core.opened_block,
    core.add_underlying,
    core.set_underlying_params,
    core.list_market,
    core.set_position_caps,
    core.set_portfolio_modules,
    core.set_matching,
    core.settle_market,
    core.settle_positions,
    core.trade,
    core.margin_summary,
    core.open_markets,
    core.is_liquidatable,
    core.meets_initial_margin,
    core.rates_now,
    core.funding_index_now,
    core.position_version,
)


interface ILiquidation:
    def VAULT() -> address: view
    def ORACLE() -> address: view


# @dev The EngineLiquidation deployable whose code `liquidate`, `flag_liquidatable` and the
#      liquidation and trade parameter setters run.
LIQUIDATION: public(immutable(address))
# @dev The EngineDeleveraging deployable whose code `nominate` and `deleverage` run.
DELEVERAGING: public(immutable(address))


@deploy
def __init__(admin_: address, vault: address, oracle: address, liquidation: address, deleveraging: address):
    """
    @param admin_ Admin and initial risk admin (see lib/roles.vy).
    @param vault The CollateralVault.
    @param oracle The OracleRouter.
    @param liquidation The EngineLiquidation deployed with the same vault and oracle.
    @param deleveraging The EngineDeleveraging deployed with the same vault and oracle.
    """
    core.__init__(admin_, vault, oracle)
    for code: address in [liquidation, deleveraging]:
        assert staticcall ILiquidation(code).VAULT() == vault and staticcall ILiquidation(code).ORACLE() == oracle, "engine: liquidation mismatch"
    LIQUIDATION = liquidation
    DELEVERAGING = deleveraging


@external
@nonreentrant
def liquidate(account: address) -> uint256:
    """
    @notice Liquidate an account whose equity is below its maintenance margin
            (`lib/engine_core.vy` `liquidate` states the rule). Permissionless; the caller takes
            over the closed positions at mark and must meet its own initial margin afterwards.
    @dev Reverts as `engine_core.liquidate`: "engine: account not liquidatable", "engine:
         nothing to liquidate", "engine: self liquidation", "engine: position opened this
         block", "engine: deleverage first", "engine: liquidator below IM", or an oracle
         error.
    @param account The account to liquidate.
    @return The notional closed, WAD USD.
    """
    response: Bytes[32] = raw_call(LIQUIDATION, msg.data, max_outsize=32, is_delegate_call=True)
    return convert(response, uint256)


@external
@nonreentrant
def nominate(account: address, market_id: uint256, counterparties: DynArray[address, constants.MAX_ADL_COUNTERPARTIES]):
    """
    @notice Nominate counterparties for the auto-deleveraging of a bankrupt account
            (`engine_core.nominate` states the round and its reverts).
    """
    raw_call(DELEVERAGING, msg.data, is_delegate_call=True)


@external
@nonreentrant
def deleverage(account: address, market_id: uint256) -> uint256:
    """
    @notice Auto-deleveraging of a bankrupt account the insurance fund and the backstop vault
            cannot cover, against its round's nominees (`engine_core.deleverage` states the
            rule and its reverts).
    @return The size closed, WAD units of the underlying.
    """
    response: Bytes[32] = raw_call(DELEVERAGING, msg.data, max_outsize=32, is_delegate_call=True)
    return convert(response, uint256)


@external
@view
def adl_round(account: address, market_id: uint256) -> (uint256, DynArray[address, constants.MAX_ADL_COUNTERPARTIES]):
    """
    @notice The auto-deleveraging round of `account` in `market_id` (`engine_core.nominate`):
            when it opened (unix s; 0 when none was opened since the last `deleverage`) and
            its nominees in nomination order. A round past opened_at + ADL_NOTICE +
            ADL_ROUND_TIME has lapsed.
    """
    adl_round: core.AdlRound = core._adl_rounds[account][market_id]
    return adl_round.opened_at, adl_round.nominees


@external
@view
def deleveraged_at(account: address) -> uint256:
    """
    @notice When `account` was last auto-deleveraged (unix s, 0 never): `liquidate` refuses it
            ("engine: deleverage first") until ADL_NOTICE seconds later while only ADL can pay
            its deficit and it holds a position, so that a next round can open.
    """
    return core._deleveraged_at[account]


@external
def flag_liquidatable(account: address):
    """
    @notice Start the penalty ramp of a liquidatable account (`engine_core.flag_liquidatable`).
    @dev Reverts "engine: account not liquidatable".
    """
    raw_call(LIQUIDATION, msg.data, is_delegate_call=True)


@external
def set_liquidation_params(penalty: uint256, liquidator_share: uint256, target: uint256):
    """
    @notice Change liquidation parameters (risk admin; `engine_core.set_liquidation_params`
            states the bounds).
    """
    raw_call(LIQUIDATION, msg.data, is_delegate_call=True)


@external
def set_penalty_ramp(max_penalty: uint256, ramp_time: uint256):
    """
    @notice How far the liquidation penalty grows while a flagged account is not liquidated
            (risk admin; `engine_core.set_penalty_ramp` states the bounds).
    """
    raw_call(LIQUIDATION, msg.data, is_delegate_call=True)


@external
def set_trade_params(max_price_deviation: uint256, max_funding_rate: uint256, funding_smoothing: uint256, min_position_notional: uint256):
    """
    @notice Change trading parameters (risk admin; `engine_core.set_trade_params` states the
            bounds).
    """
    raw_call(LIQUIDATION, msg.data, is_delegate_call=True)
