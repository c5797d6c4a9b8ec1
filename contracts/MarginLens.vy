# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Margin lens: batched read-only views for keepers and front ends
@notice Reads many accounts in one call, pinned to one block by the caller: the raw margin
        inputs the keeper's risk engine values off-chain (`account_states`, `market_states`),
        and the engine's own `margin_summary` for up to 500 accounts. Also the single-account
        views the engine has no room for (`equity`, `is_liquidatable`, `meets_initial_margin`,
        `funding_index_now`, `domain_separator`, `order_digest`) and the account's
        `position_version` that health attestations bind to; and, for up to 200 accounts, the
        option positions, stored attestations and position versions from the modules the engine
        has wired (`option_states_of`, `attestations_of`, `position_versions_of`). Holds no
        state and changes none; it exists so that the engine stays under the 24 KiB code size
        limit.
"""

interface IVault:
    def cash(account: address) -> int256: view
    def collateral_balances(account: address) -> DynArray[uint256, MAX_ASSETS]: view
    def withdrawal_count(account: address) -> uint256: view


interface IEngine:
    def margin_summary(account: address) -> MarginSummary: view
    def open_markets(account: address) -> DynArray[uint256, MAX_ACCOUNT_MARKETS]: view
    def positions(account: address, market_id: uint256) -> Position: view
    def market_count() -> uint256: view
    def markets(market_id: uint256) -> Market: view
    def underlyings(underlying: uint256) -> Underlying: view
    def ORACLE() -> address: view
    def position_version(account: address) -> uint256: view
    def option_market() -> address: view
    def health_attestor() -> address: view


interface IOptionMarket:
    def has_positions(account: address) -> bool: view
    def option_states(account: address) -> DynArray[OptionState, MAX_ACCOUNT_SERIES]: view


interface IAttestor:
    def attestation(account: address) -> StoredAttestation: view


interface IOracle:
    def index_prices() -> DynArray[uint256, MAX_PRICE_IDS]: view


interface IVersioned:
    def position_version(account: address) -> uint256: view


MAX_ASSETS: constant(uint256) = 8
MAX_ACCOUNT_MARKETS: constant(uint256) = 8
MAX_MARKETS: constant(uint256) = 16
MAX_BATCH: constant(uint256) = 500
MAX_PRICE_IDS: constant(uint256) = 8
# @dev Batches of the option/attestation views: the return buffer of 200 accounts x 32
#      positions costs about 4M gas of memory whatever the batch holds (7M for 200 holders of
#      one series), well inside an eth_call's gas cap.
MAX_MODULE_BATCH: constant(uint256) = 200
MAX_ACCOUNT_SERIES: constant(uint256) = 32  # OptionMarket.MAX_ACCOUNT_SERIES
IWAD: constant(int256) = 10**18
FUNDING_PERIOD: constant(uint256) = 8 * 3600
ORDER_TYPEHASH: constant(bytes32) = keccak256(
    "Order(address account,uint256 market,int256 size,uint256 limit_price,uint256 nonce,uint256 deadline)"
)
DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
DOMAIN_NAME_HASH: constant(bytes32) = keccak256("CrossMargin")
DOMAIN_VERSION_HASH: constant(bytes32) = keccak256("1")


struct MarginSummary:
    equity: int256
    initial_margin: uint256
    maintenance_margin: uint256
    health_factor: uint256


struct Position:
    size: int256
    entry_price: uint256
    funding_index: int256


struct Underlying:
    price_id: uint256
    im_rate: uint256
    mm_rate: uint256
    spread_im_rate: uint256
    spread_mm_rate: uint256


struct Order:
    account: address
    market: uint256
    size: int256
    limit_price: uint256
    nonce: uint256
    deadline: uint256


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


struct OptionState:
    series: uint256
    size: int256
    entry_price: uint256
    mark: uint256
    value: int256
    initial_margin: uint256
    maintenance_margin: uint256


struct StoredAttestation:
    position_version: uint256
    prices: DynArray[uint256, MAX_PRICE_IDS]
    initial_margin: uint256
    maintenance_margin: uint256
    issued_at: uint256
    valid_until: uint256
    signer_set_version: uint256


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
def equity(account: address) -> int256:
    """
    @notice Equity of an account (`MarginEngine.margin_summary`), WAD USD, rounded down.
    """
    return (staticcall IEngine(ENGINE).margin_summary(account)).equity


@external
@view
def is_liquidatable(account: address) -> bool:
    """
    @notice Whether equity < maintenance margin at current prices (what `liquidate` checks).
    """
    summary: MarginSummary = staticcall IEngine(ENGINE).margin_summary(account)
    return summary.equity < convert(summary.maintenance_margin, int256)


@external
@view
def meets_initial_margin(account: address) -> bool:
    """
    @notice Whether equity >= initial margin at current prices (the vault's withdrawal check).
    """
    summary: MarginSummary = staticcall IEngine(ENGINE).margin_summary(account)
    return summary.equity >= convert(summary.initial_margin, int256)


@external
@view
def position_version(account: address) -> uint256:
    """
    @notice The version of an account's portfolio that health attestations bind to: the sum of
            the engine's fill counter, the vault's withdrawal counter and the option market's
            change counter (if one is wired). Each counter only grows and at least one grows on
            every trade, liquidation, settlement and withdrawal, so the sum changes on each.
    @dev Deploy the HealthAttestor with this lens as its `engine_` (the contract answering
         `position_version`). Replacing the engine's option market changes the sum; attested
         versions then lapse or, at worst, reapply until they expire (max validity 1 day).
    """
    return self._position_version(account, staticcall IEngine(ENGINE).option_market())


@internal
@view
def _position_version(account: address, market: address) -> uint256:
    version: uint256 = staticcall IEngine(ENGINE).position_version(account) + staticcall IVault(VAULT).withdrawal_count(account)
    if market != empty(address):
        version += staticcall IVersioned(market).position_version(account)
    return version


@internal
@view
def _prices() -> DynArray[uint256, MAX_PRICE_IDS]:
    return staticcall IOracle(staticcall IEngine(ENGINE).ORACLE()).index_prices()


@internal
@view
def _funding_index_now(market: Market, prices: DynArray[uint256, MAX_PRICE_IDS]) -> int256:
    """
    @dev `MarginEngine._funding_index_now` at the current index price: the stored index plus
         trunc(trunc(rate * price / 1e18) * elapsed / 8h) for a perpetual (0 accrual while the
         price is unavailable).
    """
    if not market.is_perpetual or block.timestamp <= market.funding_time:
        return market.funding_index
    price_id: uint256 = (staticcall IEngine(ENGINE).underlyings(market.underlying)).price_id
    elapsed: int256 = convert(block.timestamp - market.funding_time, int256)
    return market.funding_index + market.funding_rate * convert(prices[price_id], int256) // IWAD * elapsed // convert(FUNDING_PERIOD, int256)


@external
@view
def funding_index_now(market_id: uint256) -> int256:
    """
    @notice A market's cumulative funding index accrued to now at the current index price
            (WAD USD per unit of size); 0 accrual while its price is unavailable.
    """
    return self._funding_index_now(staticcall IEngine(ENGINE).markets(market_id), self._prices())


@internal
@view
def _domain_separator() -> bytes32:
    return keccak256(abi_encode(DOMAIN_TYPEHASH, DOMAIN_NAME_HASH, DOMAIN_VERSION_HASH, chain.id, ENGINE))


@external
@view
def domain_separator() -> bytes32:
    """
    @notice The engine's EIP-712 domain separator (name "CrossMargin", version "1", this chain,
            the engine's address).
    """
    return self._domain_separator()


@external
@view
def order_digest(order: Order) -> bytes32:
    """
    @notice The EIP-712 digest an order's account signs for `MarginEngine.match_orders`.
    """
    struct_hash: bytes32 = keccak256(
        abi_encode(ORDER_TYPEHASH, order.account, order.market, order.size, order.limit_price, order.nonce, order.deadline)
    )
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


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
    prices: DynArray[uint256, MAX_PRICE_IDS] = self._prices()
    for market_id: uint256 in range(staticcall IEngine(ENGINE).market_count(), bound=MAX_MARKETS):
        market: Market = staticcall IEngine(ENGINE).markets(market_id)
        out.append(
            MarketState(
                underlying=market.underlying,
                is_perpetual=market.is_perpetual,
                expiry=market.expiry,
                settlement_price=market.settlement_price,
                funding_rate=market.funding_rate,
                funding_index=self._funding_index_now(market, prices),
            )
        )
    return out


@external
@view
def option_states_of(accounts: DynArray[address, MAX_MODULE_BATCH]) -> DynArray[DynArray[OptionState, MAX_ACCOUNT_SERIES], MAX_MODULE_BATCH]:
    """
    @notice `OptionMarket.option_states` of up to 200 accounts, in order: (series, size WAD,
            entry premium WAD, mark WAD, value WAD, IM WAD, MM WAD) per position held. An
            account holding no option gets [] (without asking the market for prices); every
            account gets [] while the engine has no option market wired.
    @dev Reverts "options: no valid price" like `option_states` when a holder's series has no
         valid index price.
    """
    out: DynArray[DynArray[OptionState, MAX_ACCOUNT_SERIES], MAX_MODULE_BATCH] = []
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
    market: address = staticcall IEngine(ENGINE).option_market()
    for account: address in accounts:
        out.append(self._position_version(account, market))
    return out


@external
@view
def attestations_of(accounts: DynArray[address, MAX_MODULE_BATCH]) -> DynArray[StoredAttestation, MAX_MODULE_BATCH]:
    """
    @notice `HealthAttestor.attestation` of up to 200 accounts, in order: (position_version,
            prices WAD, IM WAD USD, MM WAD USD, issued_at, valid_until, signer_set_version),
            valid or not; all zero for an account with none, and for every account while the
            engine has no health attestor wired.
    """
    out: DynArray[StoredAttestation, MAX_MODULE_BATCH] = []
    attestor: address = staticcall IEngine(ENGINE).health_attestor()
    for account: address in accounts:
        if attestor != empty(address):
            out.append(staticcall IAttestor(attestor).attestation(account))
        else:
            out.append(empty(StoredAttestation))
    return out
