# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Margin lens: batched read-only views for keepers and front ends
@notice Reads many accounts in one call, pinned to one block by the caller: the raw margin
        inputs the keeper's risk engine values off-chain (`account_states`, `market_states`),
        and the engine's own `margin_summary` for up to 500 accounts. Holds no state and
        changes none; it exists so that the engine stays under the 24 KiB code size limit.
"""

interface IVault:
    def cash(account: address) -> int256: view
    def collateral_balances(account: address) -> DynArray[uint256, MAX_ASSETS]: view


interface IEngine:
    def margin_summary(account: address) -> MarginSummary: view
    def open_markets(account: address) -> DynArray[uint256, MAX_ACCOUNT_MARKETS]: view
    def positions(account: address, market_id: uint256) -> Position: view
    def market_count() -> uint256: view
    def markets(market_id: uint256) -> Market: view
    def funding_index_now(market_id: uint256) -> int256: view


MAX_ASSETS: constant(uint256) = 8
MAX_ACCOUNT_MARKETS: constant(uint256) = 8
MAX_MARKETS: constant(uint256) = 16
MAX_BATCH: constant(uint256) = 500


struct MarginSummary:
    equity: int256
    initial_margin: uint256
    maintenance_margin: uint256
    health_factor: uint256


struct Position:
    size: int256
    entry_price: uint256
    funding_index: int256


struct Market:
    underlying: uint256
    is_perpetual: bool
    expiry: uint256
    settlement_price: uint256
    funding_rate: int256
    funding_index: int256
    funding_time: uint256


struct PositionState:
    market: uint256
    size: int256
    entry_price: uint256
    funding_index: int256


struct AccountState:
    cash: int256
    collateral: DynArray[uint256, MAX_ASSETS]
    positions: DynArray[PositionState, MAX_ACCOUNT_MARKETS]


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
def margin_summaries(accounts: DynArray[address, MAX_BATCH]) -> DynArray[MarginSummary, MAX_BATCH]:
    """
    @notice `MarginEngine.margin_summary` (equity, IM, MM, health; WAD) for up to 500 accounts.
    """
    out: DynArray[MarginSummary, MAX_BATCH] = []
    for account: address in accounts:
        out.append(staticcall IEngine(ENGINE).margin_summary(account))
    return out


@external
@view
def initial_margin(account: address) -> uint256:
    """
    @notice Initial margin requirement of an account, WAD USD, rounded up.
    """
    return (staticcall IEngine(ENGINE).margin_summary(account)).initial_margin


@external
@view
def maintenance_margin(account: address) -> uint256:
    """
    @notice Maintenance margin requirement of an account, WAD USD, rounded up.
    """
    return (staticcall IEngine(ENGINE).margin_summary(account)).maintenance_margin


@external
@view
def health_factor(account: address) -> uint256:
    """
    @notice Equity / maintenance margin, WAD (max uint256 with nothing to maintain).
    """
    return (staticcall IEngine(ENGINE).margin_summary(account)).health_factor


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
            position: Position = staticcall IEngine(ENGINE).positions(account, market_id)
            state.positions.append(
                PositionState(market=market_id, size=position.size, entry_price=position.entry_price, funding_index=position.funding_index)
            )
        out.append(state)
    return out


@external
@view
def market_states() -> DynArray[MarketState, MAX_MARKETS]:
    """
    @notice Every market with its funding index accrued to now (at the current index price).
    """
    out: DynArray[MarketState, MAX_MARKETS] = []
    for market_id: uint256 in range(staticcall IEngine(ENGINE).market_count(), bound=MAX_MARKETS):
        market: Market = staticcall IEngine(ENGINE).markets(market_id)
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
