# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Margin lens: batched read-only views for keepers and front ends
@notice Reads many accounts in one call, pinned to one block by the caller: the raw margin
        inputs the keeper's risk engine values off-chain (`account_states`, `market_states`),
        the engine's `margin_summary` for up to 500 accounts, and, for up to 200 accounts, the
        option positions, stored attestations and position versions from the modules the engine
        has wired (`option_states_of`, `attestations_of`, `position_versions_of`).
@dev Every value comes from a view of the contract that owns it; the lens computes nothing of
     its own.
@custom:security No state, no role: nothing trusts its answers on-chain.
@license MIT
"""

import lib.constants as constants
import lib.types as types


interface IVault:
    def cash(account: address) -> int256: view
    def collateral_balances(account: address) -> DynArray[uint256, constants.MAX_ASSETS]: view


interface IEngine:
    def margin_summary(account: address) -> types.MarginSummary: view
    def open_markets(account: address) -> DynArray[uint256, constants.MAX_ACCOUNT_MARKETS]: view
    def positions(account: address, market_id: uint256) -> types.Position: view
    def market_count() -> uint256: view
    def markets(market_id: uint256) -> types.Market: view
    def funding_index_now(market_id: uint256) -> int256: view
    def position_version(account: address) -> uint256: view
    def option_market() -> address: view
    def health_attestor() -> address: view


interface IOptionMarket:
    def has_positions(account: address) -> bool: view
    def option_states(account: address) -> DynArray[types.OptionState, constants.MAX_ACCOUNT_SERIES]: view


interface IAttestor:
    def attestation(account: address) -> types.StoredAttestation: view


MAX_BATCH: constant(uint256) = 500
# @dev Batches of the option/attestation views: the return buffer of 200 accounts x 32
#      positions costs about 4M gas of memory whatever the batch holds (7M for 200 holders of
#      one series), well inside an eth_call's gas cap.
MAX_MODULE_BATCH: constant(uint256) = 200


struct PositionState:
    market: uint256
    size: int256
    entry_price: uint256
    funding_index: int256


struct AccountState:
    cash: int256
    collateral: DynArray[uint256, constants.MAX_ASSETS]
    positions: DynArray[PositionState, constants.MAX_ACCOUNT_MARKETS]


struct MarketState:
    underlying: uint256
    is_perpetual: bool
    expiry: uint256
    settlement_price: uint256
    funding_rate: int256
    funding_index: int256


ENGINE: public(immutable(address))
VAULT: public(immutable(address))


@deploy
def __init__(engine: address, vault: address):
    ENGINE = engine
    VAULT = vault


@external
@view
def margin_summaries(accounts: DynArray[address, MAX_BATCH]) -> DynArray[types.MarginSummary, MAX_BATCH]:
    """
    @notice `MarginEngine.margin_summary` (equity, IM, MM, health; WAD) for up to 500 accounts.
    """
    out: DynArray[types.MarginSummary, MAX_BATCH] = []
    for account: address in accounts:
        out.append(staticcall IEngine(ENGINE).margin_summary(account))
    return out


@external
@view
def account_states(accounts: DynArray[address, MAX_BATCH]) -> DynArray[AccountState, MAX_BATCH]:
    """
    @notice Raw margin inputs of up to 500 accounts: cash (WAD), collateral balances in token
            units by asset id, and positions (market id, size WAD, entry price WAD, funding
            index at entry).
    """
    out: DynArray[AccountState, MAX_BATCH] = []
    for account: address in accounts:
        state: AccountState = empty(AccountState)
        state.cash = staticcall IVault(VAULT).cash(account)
        state.collateral = staticcall IVault(VAULT).collateral_balances(account)
        for market_id: uint256 in staticcall IEngine(ENGINE).open_markets(account):
            position: types.Position = staticcall IEngine(ENGINE).positions(account, market_id)
            state.positions.append(
                PositionState(market=market_id, size=position.size, entry_price=position.entry_price, funding_index=position.funding_index)
            )
        out.append(state)
    return out


@external
@view
def market_states() -> DynArray[MarketState, constants.MAX_MARKETS]:
    """
    @notice Every market with its funding index accrued to now (at the current index price).
    """
    out: DynArray[MarketState, constants.MAX_MARKETS] = []
    for market_id: uint256 in range(staticcall IEngine(ENGINE).market_count(), bound=constants.MAX_MARKETS):
        market: types.Market = staticcall IEngine(ENGINE).markets(market_id)
        out.append(
            MarketState(
                underlying=market.underlying,
                is_perpetual=market.is_perpetual,
                expiry=market.expiry,
                settlement_price=market.settlement_price,
                funding_rate=market.funding_rate,
                funding_index=staticcall IEngine(ENGINE).funding_index_now(market_id),
            )
        )
    return out


@external
@view
def option_states_of(accounts: DynArray[address, MAX_MODULE_BATCH]) -> DynArray[DynArray[types.OptionState, constants.MAX_ACCOUNT_SERIES], MAX_MODULE_BATCH]:
    """
    @notice `OptionMarket.option_states` of up to 200 accounts, in order: (series, size WAD,
            entry premium WAD, mark WAD, value WAD, IM WAD, MM WAD) per position held. An
            account holding no option gets [] (without asking the market for prices); every
            account gets [] while the engine has no option market wired.
    @dev Reverts "options: no valid price" like `option_states` when a holder's series has no
         valid index price.
    """
    out: DynArray[DynArray[types.OptionState, constants.MAX_ACCOUNT_SERIES], MAX_MODULE_BATCH] = []
    market: address = staticcall IEngine(ENGINE).option_market()
    for account: address in accounts:
        if market != empty(address) and staticcall IOptionMarket(market).has_positions(account):
            out.append(staticcall IOptionMarket(market).option_states(account))
        else:
            out.append([])
    return out


@external
@view
def position_versions_of(accounts: DynArray[address, MAX_MODULE_BATCH]) -> DynArray[uint256, MAX_MODULE_BATCH]:
    """
    @notice `position_version` of up to 200 accounts, in order (what attestations bind to).
    """
    out: DynArray[uint256, MAX_MODULE_BATCH] = []
    for account: address in accounts:
        out.append(staticcall IEngine(ENGINE).position_version(account))
    return out


@external
@view
def attestations_of(accounts: DynArray[address, MAX_MODULE_BATCH]) -> DynArray[types.StoredAttestation, MAX_MODULE_BATCH]:
    """
    @notice `HealthAttestor.attestation` of up to 200 accounts, in order: (position_version,
            prices WAD, IM WAD USD, MM WAD USD, issued_at, valid_until, signer_set_version),
            valid or not; all zero for an account with none, and for every account while the
            engine has no health attestor wired.
    """
    out: DynArray[types.StoredAttestation, MAX_MODULE_BATCH] = []
    attestor: address = staticcall IEngine(ENGINE).health_attestor()
    for account: address in accounts:
        if attestor != empty(address):
            out.append(staticcall IAttestor(attestor).attestation(account))
        else:
            out.append(empty(types.StoredAttestation))
    return out
