# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Margin engine: markets, positions, cross-margin requirements, trading and liquidation
@notice One account margins all its positions together against its vault balances.
        - Equity = cash + haircut collateral value + unrealized PnL at mark - accrued funding.
          Mark price = index price for these linear products; a settled future is marked at its
          settlement price.
        - Requirements per underlying on the NET position: for an underlying with long size L
          and short size S across its markets (perpetual and futures), at index price P,
              IM_u = ceil(|L - S| * P * im_rate) + ceil(min(L, S) * P * spread_im_rate)
              MM_u = ceil(|L - S| * P * mm_rate) + ceil(min(L, S) * P * spread_mm_rate)
          (a long perpetual against a short future nets; what is offset pays the spread
          charge). In a future's last 7 days the part of it that nets shrinks linearly to zero
          (netted = size * time to expiry / 7 days, rounded towards zero) and the rest is
          charged alone at the outright rate, as SPAN's spot-month charge does: a basis trade's
          requirement rises gradually before expiry instead of jumping at settlement. IM and MM
          are the sums over underlyings. The rates are those in force (`rates_now`): a
          governance raise phases in over 7 days (`lib/ramp.vy`). Rounding favours the
          protocol: requirements up, equity down. Sources: CME SPAN inter-month spread charge;
          Derive (Lyra v2) standard manager per-market rates.
        - Health factor = equity / MM (WAD); liquidatable when equity < MM.
        - Funding (perpetuals): each perpetual trade of size q at price T with index I moves
          the funding rate towards its premium (T - I) / I by
          `funding_smoothing` * q / max(q, OI before, OI after) (an EMA over trades
          weighted by size against open interest, so a dust trade moves it by nothing),
          clamped to +-`max_funding_rate`; the rate is a fraction of the index price per 8 hours
          and accrues continuously into a cumulative funding index. Longs pay shorts when the
          rate is positive (dYdX / Binance premium-index convention).
        - Trades settle two EIP-712 signed orders (nonces, deadlines) matched by any sender, at
          the maker's price, within `max_price_deviation` of the index.
        - Liquidation is permissionless and partial: underlyings are closed in order of their
          maintenance margin, each by the smallest fraction that brings health to
          `liquidation_target`; the liquidator takes the positions at mark and receives
          `liquidator_share` of a penalty, the rest goes to the insurance fund. The penalty
          rate starts at `liquidation_penalty` and, once anyone has flagged the account as
          liquidatable, grows linearly to `max_liquidation_penalty` (if above the start; 0 by
          default, no growth) over `penalty_ramp_time`
          (a Dutch-auction bonus, so an unattractive liquidation still ends), never above half
          of any maintenance rate and never above the account's remaining equity.
        - Open interest (sum of long sizes) per market and each account's position per market
          are capped (0 = no cap), so no position outgrows what liquidation can absorb. An account left
          without positions and with debt has its collateral sold to the liquidator at a
          discount; an account left with nothing but debt goes to the vault's waterfall.
        - Portfolio modules (admin, `set_portfolio_modules`; zero = off): an option market's
          `margin_contribution(account, prices)` (value, IM, MM) is added to equity, IM and MM
          on every margin check; then a health attestor's `effective_margin(account, IM, MM)`
          may lower IM and MM (never below its governance floor of the standard margin). A
          trade voids the attestation before it is judged; a liquidation is decided with it and
          sized without it. Attestations bind to `position_version`: this engine's fills and
          liquidations, the vault's withdrawals and the option market's changes, counted only
          while an attestor is wired.
        - A trade leaves each position flat or at least `min_position_notional` at the index,
          so that no liquidation of dust costs more gas than it pays.
@dev Sizes are WAD units of the underlying; prices and USD amounts are WAD.
@license MIT
"""

from . import roles
from . import wad
from . import constants
from . import types
from . import funding
from . import trade_rules
from . import ramp
from . import packing

initializes: roles



interface IOracle:
    def index_prices_of(mask: uint256) -> DynArray[uint256, constants.MAX_PRICE_IDS]: view
    def expiry_price(price_id: uint256, expiry: uint256) -> uint256: view
    def price_id_count() -> uint256: view


interface IVault:
    def margin_inputs(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (int256, uint256): view
    def price_mask(account: address) -> uint256: view
    def has_collateral(account: address) -> bool: view
    def withdrawal_count(account: address) -> uint256: view
    def settle_cash(account: address, delta: int256): nonpayable
    def charge_penalty(account: address, liquidator: address, penalty: uint256, liquidator_share: uint256): nonpayable
    def cover_deficit(account: address) -> (uint256, uint256): nonpayable
    def deficit_cover(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS], penalty: uint256) -> (uint256, uint256): view
    def liquidate_collateral(account: address, liquidator: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS], penalty: uint256) -> bool: nonpayable


interface IOptions:
    def margin_contribution(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (int256, uint256, uint256): view
    def position_version(account: address) -> uint256: view
    def has_positions(account: address) -> bool: view


# @dev HealthAttestor.effective_margin returns (im, mm, attested: bool); only the first two words
#      are read (same selector, the trailing flag is not needed here).
interface IAttestor:
    def effective_margin(account: address, standard_im: uint256, standard_mm: uint256) -> (uint256, uint256): view


# @dev A future's netting credit fades linearly over its last week (CME SPAN spot-month charge),
#      so that expiry settlement never raises an account's requirement.
EXPIRY_RAMP: constant(uint256) = 7 * 86400

# @dev In an underlying's rates word: the last change raised a rate (see `_underlyings`).
RAISE_BIT: constant(uint256) = 1 << 255
# @dev Switches in `_config`.
OPTIONS_BIT: constant(uint256) = 1 << 16
ATTESTOR_BIT: constant(uint256) = 1 << 17
# @dev Fields of an account's word (see `_accounts`).
OPENED_SHIFT: constant(uint256) = 128
FLAGGED_SHIFT: constant(uint256) = 192
FIELD64: constant(uint256) = 2**64 - 1

# @dev On-chain bounds of every risk parameter (WAD fractions).
MIN_IM_RATE: constant(uint256) = 10**16
MAX_IM_RATE: constant(uint256) = 10**18
MIN_MM_RATE: constant(uint256) = 5 * 10**15
MIN_PENALTY: constant(uint256) = 10**15
MAX_PENALTY: constant(uint256) = 10**17
# @dev A target above 1 leaves a buffer, so one liquidation is not followed by another at
#      the next tick.
MIN_TARGET: constant(uint256) = 105 * 10**16
MAX_TARGET: constant(uint256) = 2 * 10**18
MIN_PRICE_DEVIATION: constant(uint256) = 10**15
MAX_PRICE_DEVIATION: constant(uint256) = 2 * 10**17
MAX_FUNDING_RATE_BOUND: constant(uint256) = 10**16
MIN_PENALTY_RAMP: constant(uint256) = 60
MAX_PENALTY_RAMP: constant(uint256) = 86400
# @dev The largest minimum position notional (WAD USD): a position can always be closed, and
#      one this size is what an order-book venue's minimum lot would be.
MAX_MIN_POSITION_NOTIONAL: constant(uint256) = 1000 * 10**18


struct StoredMarket:
    header: uint256
    settlement_price: uint256
    funding_index: int256


struct StoredPosition:
    word: uint256
    funding_index: int256


# The liquidation parameters, stored in one word (`_liquidation`).
struct LiquidationParams:
    penalty: uint256
    max_penalty: uint256
    liquidator_share: uint256
    target: uint256


# An auto-deleveraging round (`nominate`): when it opened (unix s) and its nominees, in
# nomination order.
struct AdlRound:
    opened_at: uint256
    nominees: DynArray[address, constants.MAX_ADL_COUNTERPARTIES]


# An account's open market, the market and the account's position in it: what valuing the
# account reads from storage (`_holdings`), read once per margin check.
struct Holding:
    market_id: uint256
    market: types.Market
    position: types.Position


VAULT: public(immutable(address))
ORACLE: public(immutable(address))

# @dev What every margin check reads first, one word: the underlying count in bits 0-7, the
#      market count in bits 8-15 (< MAX_UNDERLYINGS, MAX_MARKETS), and whether an option market
#      (OPTIONS_BIT) and a health attestor (ATTESTOR_BIT) are wired, so that a deployment
#      without them reads neither address.
_config: uint256
# @dev Target rates, as governance last set them, one slot per underlying (`_pack_rates`:
#      price id in bits 0-7, then im, mm, spread im, spread mm rates, 60 bits each, all at most
#      10**18; bit 255 (RAISE_BIT) while the last change raised a rate, so that a margin check
#      reads when it changed only then); `underlyings` unpacks them, `rates_now` gives those
#      in force.
_underlyings: HashMap[uint256, uint256]
# @dev The rates in force when each underlying's rates last changed (packed alike), and when:
#      raises phase in from them (`lib/ramp.vy`).
_rates_before: HashMap[uint256, uint256]
rates_changed_at: public(HashMap[uint256, uint256])
# @dev Each market in three slots (`_market` unpacks it as `types.Market`): a header word
#      (`_market_header`: underlying bits 0-7, is_perpetual bit 8, expiry 16-79, funding time
#      80-143, funding rate 144-207 as int64: |rate| <= MAX_FUNDING_RATE_BOUND), the settlement
#      price (a dated future's; a perpetual never settles) and the funding index (a
#      perpetual's; a future has none). A margin check reads two slots per market, not seven.
_markets: HashMap[uint256, StoredMarket]
# @dev Each position in two slots (`_position` unpacks it, `_store_position` packs it): size as
#      int128 in the low 128 bits (`lib/packing.vy`) and entry price as uint128 above it, then
#      the funding index at entry. The requirements read the first slot alone.
_positions: HashMap[address, HashMap[uint256, StoredPosition]]
# @dev Each account in one word, which a liquidation reads once: the markets it holds a
#      position in (the count in bits 0-7, then each market id < MAX_MARKETS = 16 in one byte,
#      in list order: `_open_markets`), the block of its last trade that grew a position in
#      bits 128-191 (`opened_block`) and when it was flagged liquidatable in bits 192-255
#      (`liquidatable_since`; block numbers and times < 2**64).
_accounts: HashMap[address, uint256]

# @dev The liquidation parameters, one word that a liquidation reads once
#      (`_liquidation_params`): penalty, max penalty, liquidator share and target, 64 bits
#      each in that order (WAD; the setters' bounds keep each <= 2 * 10**18 < 2**64).
_liquidation: uint256
penalty_ramp_time: public(uint256)
open_interest: public(HashMap[uint256, uint256])
max_open_interest: public(HashMap[uint256, uint256])
max_position: public(HashMap[uint256, uint256])
max_price_deviation: public(uint256)
max_funding_rate: public(uint256)
funding_smoothing: public(uint256)
# @dev A position left by a trade is flat or at least this notional at the index (WAD USD).
min_position_notional: public(uint256)
# @dev Portfolio modules (zero = off): an option market whose positions add to equity and
#      requirements, and a health attestor that may lower the requirements.
option_market: public(address)
health_attestor: public(address)
# @dev The matching contract, the only caller of `trade` (set once).
matching: public(address)
# @dev Counts this engine's fills and liquidations of an account while a health attestor is
#      wired (nothing to void without one); `position_version` adds the vault's and the option
#      market's counters.
_fill_count: HashMap[address, uint256]
# @dev The auto-deleveraging round of each bankrupt account and market (`nominate`,
#      `deleverage`): when it opened and the counterparties nominated in it.
_adl_rounds: HashMap[address, HashMap[uint256, AdlRound]]
# @dev When each account was last deleveraged (unix s): `liquidate` waits `ADL_NOTICE` after it
#      for a next round (`_adl_pending`).
_deleveraged_at: HashMap[address, uint256]


event UnderlyingAdded:
    underlying: indexed(uint256)
    price_id: uint256


event UnderlyingParamsSet:
    underlying: indexed(uint256)
    im_rate: uint256
    mm_rate: uint256
    spread_im_rate: uint256
    spread_mm_rate: uint256


event MarketListed:
    market: indexed(uint256)
    underlying: indexed(uint256)
    is_perpetual: bool
    expiry: uint256


event LiquidationParamsSet:
    liquidation_penalty: uint256
    liquidator_share: uint256
    liquidation_target: uint256


event PenaltyRampSet:
    max_liquidation_penalty: uint256
    penalty_ramp_time: uint256


event PositionCapsSet:
    market: indexed(uint256)
    max_open_interest: uint256
    max_position: uint256


event LiquidatableFlagged:
    account: indexed(address)
    since: uint256


event TradeParamsSet:
    max_price_deviation: uint256
    max_funding_rate: uint256
    funding_smoothing: uint256
    min_position_notional: uint256


event PositionChanged:
    account: indexed(address)
    market: indexed(uint256)
    size: int256
    entry_price: uint256
    realized_pnl: int256


event FundingUpdated:
    market: indexed(uint256)
    funding_index: int256
    funding_rate: int256


event MarketSettled:
    market: indexed(uint256)
    settlement_price: uint256


event PositionLiquidated:
    account: indexed(address)
    liquidator: indexed(address)
    market: indexed(uint256)
    size: int256
    price: uint256


event Deleveraged:
    account: indexed(address)
    counterparty: indexed(address)
    market: indexed(uint256)
    size: int256
    price: uint256
    score: uint256


event Nominated:
    account: indexed(address)
    counterparty: indexed(address)
    market: indexed(uint256)
    score: uint256
    opened_at: uint256


event PortfolioModulesSet:
    option_market: indexed(address)
    health_attestor: indexed(address)


event MatchingSet:
    matching: indexed(address)


event Liquidation:
    account: indexed(address)
    liquidator: indexed(address)
    notional: uint256
    penalty: uint256
    health_before: uint256
    health_after: uint256


@deploy
def __init__(admin_: address, vault: address, oracle: address):
    roles.__init__(admin_)
    VAULT = vault
    ORACLE = oracle
    self._store_liquidation_params(LiquidationParams(penalty=2 * 10**16, max_penalty=0, liquidator_share=5 * 10**17, target=125 * 10**16))
    self.penalty_ramp_time = 3600
    self.max_price_deviation = 5 * 10**16
    self.max_funding_rate = 5 * 10**15
    self.funding_smoothing = 10**17
    log LiquidationParamsSet(liquidation_penalty=2 * 10**16, liquidator_share=5 * 10**17, liquidation_target=125 * 10**16)
    log TradeParamsSet(max_price_deviation=5 * 10**16, max_funding_rate=5 * 10**15, funding_smoothing=10**17, min_position_notional=0)


# ---------------------------------------------------------------- governance


@internal
def _set_underlying(u: uint256, price_id: uint256, im_rate: uint256, mm_rate: uint256, spread_im_rate: uint256, spread_mm_rate: uint256):
    """
    @dev Check an underlying's rates against the bounds (see `add_underlying`), store them, log.
    """
    assert im_rate >= MIN_IM_RATE and im_rate <= MAX_IM_RATE, "engine: im_rate out of bounds"
    assert mm_rate >= MIN_MM_RATE and mm_rate <= im_rate, "engine: mm_rate out of bounds"
    # a partial liquidation must be able to restore health: penalty <= mm_rate / 2
    params: LiquidationParams = self._liquidation_params()
    assert mm_rate >= 2 * max(params.penalty, params.max_penalty), "engine: mm_rate below 2x penalty"
    assert spread_im_rate <= im_rate, "engine: spread_im_rate out of bounds"
    assert spread_mm_rate <= spread_im_rate and spread_mm_rate <= mm_rate, "engine: spread_mm_rate out of bounds"
    rates: types.Underlying = types.Underlying(
        price_id=price_id, im_rate=im_rate, mm_rate=mm_rate, spread_im_rate=spread_im_rate, spread_mm_rate=spread_mm_rate
    )
    self._underlyings[u] = self._pack_rates(rates)
    log UnderlyingParamsSet(underlying=u, im_rate=im_rate, mm_rate=mm_rate, spread_im_rate=spread_im_rate, spread_mm_rate=spread_mm_rate)


@internal
@pure
def _market_header(market: types.Market) -> uint256:
    """
    @dev The header word of a market (see `_markets`): underlying < MAX_UNDERLYINGS, expiry and
         funding time < 2**64 (`list_market`, block time), |funding rate| <= 10**16 < 2**63.
    """
    rate: int256 = market.funding_rate
    if rate < 0:
        rate += 2**64
    return market.underlying | (convert(market.is_perpetual, uint256) << 8) | (market.expiry << 16) | (market.funding_time << 80) | (convert(rate, uint256) << 144)


@internal
@view
def _market(market_id: uint256) -> types.Market:
    """
    @dev A market unpacked from its slots (see `_markets`): the header and, for a perpetual,
         the funding index or, for a future, the settlement price (the other is always 0).
    """
    header: uint256 = self._markets[market_id].header
    rate: int256 = convert((header >> 144) & (2**64 - 1), int256)
    if rate >= 2**63:
        rate -= 2**64
    is_perpetual: bool = (header >> 8) & 1 == 1
    settlement_price: uint256 = 0
    funding_index: int256 = 0
    if is_perpetual:
        funding_index = self._markets[market_id].funding_index
    else:
        settlement_price = self._markets[market_id].settlement_price
    return types.Market(
        underlying=header & 255,
        is_perpetual=is_perpetual,
        expiry=(header >> 16) & (2**64 - 1),
        settlement_price=settlement_price,
        funding_rate=rate,
        funding_index=funding_index,
        funding_time=(header >> 80) & (2**64 - 1),
    )


@external
@view
def markets(market_id: uint256) -> types.Market:
    """
    @notice A market: (underlying, is_perpetual, expiry unix s or 0, settlement price WAD or 0,
            funding rate WAD per 8 h, funding index WAD USD per unit at the last update,
            funding time unix s). All zero for an unknown id.
    """
    return self._market(market_id)


@internal
@pure
def _pack_rates(rates: types.Underlying) -> uint256:
    # price id < MAX_PRICE_IDS = 8 and every rate <= MAX_IM_RATE = 10**18 < 2**60 (the bounds
    # `_set_underlying` checks), so nothing is truncated
    return rates.price_id | (rates.im_rate << 8) | (rates.mm_rate << 68) | (rates.spread_im_rate << 128) | (rates.spread_mm_rate << 188)


@internal
@pure
def _unpack_rates(word: uint256) -> types.Underlying:
    return types.Underlying(
        price_id=word & 255,
        im_rate=(word >> 8) & (2**60 - 1),
        mm_rate=(word >> 68) & (2**60 - 1),
        spread_im_rate=(word >> 128) & (2**60 - 1),
        spread_mm_rate=(word >> 188) & (2**60 - 1),
    )


@internal
@view
def _price_id(u: uint256) -> uint256:
    return self._underlyings[u] & 255


@external
@view
def underlyings(underlying: uint256) -> types.Underlying:
    """
    @notice An underlying's oracle price id and target margin rates (WAD fractions), as
            governance last set them; `rates_now` gives the rates in force.
    """
    return self._unpack_rates(self._underlyings[underlying])


@internal
@view
def _rates_now(u: uint256) -> types.Underlying:
    """
    @dev The margin rates of underlying `u` in force now: the targets once a raise has phased in.
    """
    word: uint256 = self._underlyings[u]
    target: types.Underlying = self._unpack_rates(word)
    # no rate raised by the last change: the targets are in force (`ramp._raised`)
    if word & RAISE_BIT == 0:
        return target
    since: uint256 = self.rates_changed_at[u]
    if block.timestamp >= since + constants.REQUIREMENT_RAMP:
        return target
    before: types.Underlying = self._unpack_rates(self._rates_before[u])
    return types.Underlying(
        price_id=target.price_id,
        im_rate=ramp._raised(before.im_rate, target.im_rate, since),
        mm_rate=ramp._raised(before.mm_rate, target.mm_rate, since),
        spread_im_rate=ramp._raised(before.spread_im_rate, target.spread_im_rate, since),
        spread_mm_rate=ramp._raised(before.spread_mm_rate, target.spread_mm_rate, since),
    )


@internal
@view
def _check_penalty_fits(penalty: uint256):
    """
    @dev Every underlying's mm_rate must be at least twice the largest penalty rate.
    """
    for u: uint256 in range(self._config & 255, bound=constants.MAX_UNDERLYINGS):
        # the rate in force: during a raise it is below the target, and only rises
        assert self._rates_now(u).mm_rate >= 2 * penalty, "engine: mm_rate below 2x penalty"


@external
def add_underlying(price_id: uint256, im_rate: uint256, mm_rate: uint256, spread_im_rate: uint256, spread_mm_rate: uint256) -> uint256:
    """
    @notice Add an underlying with its margin rates (admin).
    @param price_id Its oracle price id.
    @param im_rate Initial margin rate on the net notional, WAD, in [1%, 100%].
    @param mm_rate Maintenance margin rate, WAD, in [0.5%, im_rate] and >= 2 x penalty.
    @param spread_im_rate IM charge on offset notional (spreads), WAD, <= im_rate.
    @param spread_mm_rate MM charge on offset notional, WAD, <= spread_im_rate and mm_rate.
    @return The underlying id.
    """
    roles._check_admin()
    u: uint256 = self._config & 255
    assert u < constants.MAX_UNDERLYINGS, "engine: too many underlyings"
    assert price_id < staticcall IOracle(ORACLE).price_id_count(), "engine: unknown price id"
    log UnderlyingAdded(underlying=u, price_id=price_id)
    self._set_underlying(u, price_id, im_rate, mm_rate, spread_im_rate, spread_mm_rate)
    self._config += 1
    return u


@external
def set_underlying_params(underlying: uint256, im_rate: uint256, mm_rate: uint256, spread_im_rate: uint256, spread_mm_rate: uint256):
    """
    @notice Change an underlying's margin rates (risk admin), within the bounds of `add_underlying`.
            A lower rate applies at once; a higher one phases in linearly from the rate in force
            over `constants.REQUIREMENT_RAMP` (7 days; `rates_now`), so no account healthy when
            the change lands becomes liquidatable in that block.
    """
    roles._check_risk_admin()
    assert underlying < self._config & 255, "engine: unknown underlying"
    # a raise phases in from the rates in force now (`lib/ramp.vy`)
    before: types.Underlying = self._rates_now(underlying)
    self._rates_before[underlying] = self._pack_rates(before)
    self.rates_changed_at[underlying] = block.timestamp
    self._set_underlying(underlying, before.price_id, im_rate, mm_rate, spread_im_rate, spread_mm_rate)
    if im_rate > before.im_rate or mm_rate > before.mm_rate or spread_im_rate > before.spread_im_rate or spread_mm_rate > before.spread_mm_rate:
        self._underlyings[underlying] |= RAISE_BIT


@external
def list_market(underlying: uint256, expiry: uint256) -> uint256:
    """
    @notice List a market (admin): a perpetual when `expiry` is 0, else a dated future that
            settles against the index at `expiry`.
    @param underlying An existing underlying.
    @param expiry 0, or a unix time in the future.
    @return The market id.
    """
    roles._check_admin()
    assert underlying < self._config & 255, "engine: unknown underlying"
    assert expiry == 0 or expiry > block.timestamp, "engine: expiry in the past"
    assert expiry < 2**64, "engine: expiry too far"
    market_id: uint256 = (self._config >> 8) & 255
    assert market_id < constants.MAX_MARKETS, "engine: too many markets"
    market: types.Market = types.Market(
        underlying=underlying,
        is_perpetual=expiry == 0,
        expiry=expiry,
        settlement_price=0,
        funding_rate=0,
        funding_index=0,
        funding_time=block.timestamp,
    )
    self._markets[market_id] = StoredMarket(header=self._market_header(market), settlement_price=0, funding_index=0)
    self._config += 256
    log MarketListed(market=market_id, underlying=underlying, is_perpetual=expiry == 0, expiry=expiry)
    return market_id


@internal
@view
def _liquidation_params() -> LiquidationParams:
    word: uint256 = self._liquidation
    return LiquidationParams(penalty=word & (2**64 - 1), max_penalty=(word >> 64) & (2**64 - 1), liquidator_share=(word >> 128) & (2**64 - 1), target=word >> 192)


@internal
def _store_liquidation_params(params: LiquidationParams):
    self._liquidation = params.penalty | (params.max_penalty << 64) | (params.liquidator_share << 128) | (params.target << 192)


@external
@view
def liquidation_penalty() -> uint256:
    """
    @notice The liquidation penalty before any ramp: WAD fraction of closed notional.
    """
    return self._liquidation_params().penalty


@external
@view
def max_liquidation_penalty() -> uint256:
    """
    @notice The penalty the ramp reaches (WAD fraction; not above `liquidation_penalty`: no ramp).
    """
    return self._liquidation_params().max_penalty


@external
@view
def liquidator_share() -> uint256:
    """
    @notice The liquidator's share of a penalty (WAD fraction); the insurance fund takes the rest.
    """
    return self._liquidation_params().liquidator_share


@external
@view
def liquidation_target() -> uint256:
    """
    @notice The health factor a partial liquidation restores (WAD).
    """
    return self._liquidation_params().target


@external
def set_liquidation_params(penalty: uint256, liquidator_share: uint256, target: uint256):
    """
    @notice Change liquidation parameters (risk admin).
    @param penalty WAD fraction of closed notional, in [0.1%, 10%] and <= half of every mm_rate.
    @param liquidator_share WAD fraction of the penalty paid to the liquidator, <= 100%.
    @param target Health factor a partial liquidation restores, WAD, in [1.05, 2.0].
    """
    roles._check_risk_admin()
    assert penalty >= MIN_PENALTY and penalty <= MAX_PENALTY, "engine: penalty out of bounds"
    assert liquidator_share <= constants.WAD, "engine: liquidator_share out of bounds"
    assert target >= MIN_TARGET and target <= MAX_TARGET, "engine: target out of bounds"
    params: LiquidationParams = self._liquidation_params()
    self._check_penalty_fits(max(penalty, params.max_penalty))
    params.penalty = penalty
    params.liquidator_share = liquidator_share
    params.target = target
    self._store_liquidation_params(params)
    log LiquidationParamsSet(liquidation_penalty=penalty, liquidator_share=liquidator_share, liquidation_target=target)


@external
def set_penalty_ramp(max_penalty: uint256, ramp_time: uint256):
    """
    @notice How far the liquidation penalty grows while a flagged account is not liquidated
            (risk admin).
    @param max_penalty WAD fraction of closed notional, in [liquidation_penalty, 10%] and <= half
           of every mm_rate.
    @param ramp_time Seconds from the flag to the full penalty, in [60, 86400].
    """
    roles._check_risk_admin()
    params: LiquidationParams = self._liquidation_params()
    assert max_penalty >= params.penalty and max_penalty <= MAX_PENALTY, "engine: max penalty out of bounds"
    assert ramp_time >= MIN_PENALTY_RAMP and ramp_time <= MAX_PENALTY_RAMP, "engine: ramp time out of bounds"
    self._check_penalty_fits(max_penalty)
    params.max_penalty = max_penalty
    self._store_liquidation_params(params)
    self.penalty_ramp_time = ramp_time
    log PenaltyRampSet(max_liquidation_penalty=max_penalty, penalty_ramp_time=ramp_time)


@external
def set_position_caps(market_id: uint256, max_open_interest: uint256, max_position: uint256):
    """
    @notice Cap a market's open interest (sum of long sizes) and any account's position in it
            (risk admin); 0 = no cap. Caps bind trades that raise them, not liquidations.
    @param max_open_interest WAD units of the underlying.
    @param max_position WAD units, <= max_open_interest when both are set.
    """
    roles._check_risk_admin()
    assert market_id < (self._config >> 8) & 255, "engine: unknown market"
    assert max_open_interest == 0 or max_position <= max_open_interest, "engine: position cap above OI cap"
    self.max_open_interest[market_id] = max_open_interest
    self.max_position[market_id] = max_position
    log PositionCapsSet(market=market_id, max_open_interest=max_open_interest, max_position=max_position)


@external
def set_trade_params(max_price_deviation: uint256, max_funding_rate: uint256, funding_smoothing: uint256, min_position_notional: uint256):
    """
    @notice Change trading parameters (risk admin).
    @param max_price_deviation Largest |trade price / index - 1|, WAD, in [0.1%, 20%].
    @param max_funding_rate Cap on |funding rate| per 8 hours, WAD, <= 1%.
    @param funding_smoothing Weight of a trade's premium in the funding EMA, WAD, in (0, 1].
    @param min_position_notional Least notional (WAD USD, at the index) of a position a trade
           leaves open, <= $1,000 (0 = none): dust positions cost a liquidator more gas than
           they pay. Closing a position is always allowed.
    """
    roles._check_risk_admin()
    assert max_price_deviation >= MIN_PRICE_DEVIATION and max_price_deviation <= MAX_PRICE_DEVIATION, "engine: max_price_deviation out of bounds"
    assert max_funding_rate <= MAX_FUNDING_RATE_BOUND, "engine: max_funding_rate out of bounds"
    assert funding_smoothing > 0 and funding_smoothing <= constants.WAD, "engine: funding_smoothing out of bounds"
    assert min_position_notional <= MAX_MIN_POSITION_NOTIONAL, "engine: min_position_notional out of bounds"
    self.max_price_deviation = max_price_deviation
    self.max_funding_rate = max_funding_rate
    self.funding_smoothing = funding_smoothing
    self.min_position_notional = min_position_notional
    log TradeParamsSet(max_price_deviation=max_price_deviation, max_funding_rate=max_funding_rate, funding_smoothing=funding_smoothing, min_position_notional=min_position_notional)


@external
def set_portfolio_modules(option_market: address, health_attestor: address):
    """
    @notice Wire the option market and the health attestor (admin); zero turns one off.
    @dev Every margin check then adds the option market's `margin_contribution` (value, IM,
         MM) to equity and requirements, and passes the resulting (IM, MM) through the
         attestor's `effective_margin`, which can only lower them (to a governance floor).
    """
    roles._check_admin()
    self.option_market = option_market
    self.health_attestor = health_attestor
    wired: uint256 = 0
    if option_market != empty(address):
        wired |= OPTIONS_BIT
    if health_attestor != empty(address):
        wired |= ATTESTOR_BIT
    self._config = (self._config & ~(OPTIONS_BIT | ATTESTOR_BIT)) | wired
    log PortfolioModulesSet(option_market=option_market, health_attestor=health_attestor)


@external
def set_matching(matching: address):
    """
    @notice Name the matching contract, the only caller of `trade` (admin, once: the contract
            that can move positions is never replaced).
    @dev Reverts "engine: matching already set", "engine: zero address".
    """
    roles._check_admin()
    assert self.matching == empty(address), "engine: matching already set"
    assert matching != empty(address), "engine: zero address"
    self.matching = matching
    log MatchingSet(matching=matching)


@internal
@view
def _option_market() -> address:
    """
    @dev The wired option market, or empty; its slot is read only when one is (`_config`).
    """
    if self._config & OPTIONS_BIT == 0:
        return empty(address)
    return self.option_market


@internal
@view
def _health_attestor() -> address:
    if self._config & ATTESTOR_BIT == 0:
        return empty(address)
    return self.health_attestor


@external
@view
def underlying_count() -> uint256:
    """
    @notice The number of underlyings listed (ids 0 .. count - 1).
    """
    return self._config & 255


@external
@view
def market_count() -> uint256:
    """
    @notice The number of markets listed (ids 0 .. count - 1).
    """
    return (self._config >> 8) & 255


# ---------------------------------------------------------------- positions storage


@internal
@view
def _position(account: address, market_id: uint256) -> types.Position:
    """
    @dev A position unpacked from its two slots (see `_positions`).
    """
    stored: StoredPosition = self._positions[account][market_id]
    return types.Position(size=packing._int128_at(stored.word), entry_price=stored.word >> 128, funding_index=stored.funding_index)


@internal
@view
def _size(account: address, market_id: uint256) -> int256:
    """
    @dev A position's size, from its first slot alone.
    """
    return packing._int128_at(self._positions[account][market_id].word)


@internal
def _store_position(account: address, market_id: uint256, size: int256, entry_price: uint256, funding_index: int256):
    """
    @dev Pack and store a position (see `_positions`); a flat one clears both slots.
    @custom:security Reverts "engine: position out of range" beyond int128 size or uint128
         price, far beyond any cap or collateral: the packing never truncates.
    """
    if size == 0:
        self._positions[account][market_id] = empty(StoredPosition)
        return
    assert packing._fits_int128(size) and entry_price <= packing.LOW128, "engine: position out of range"
    self._positions[account][market_id] = StoredPosition(word=packing._low128_of(size) | (entry_price << 128), funding_index=funding_index)


@external
@view
def positions(account: address, market_id: uint256) -> types.Position:
    """
    @notice An account's position in a market: (size WAD units, > 0 long; entry price WAD USD;
            funding index at entry WAD USD per unit). All zero when flat.
    """
    return self._position(account, market_id)


@internal
@view
def _holdings(account: address) -> DynArray[Holding, constants.MAX_ACCOUNT_MARKETS]:
    """
    @dev The account's open markets (see `_accounts`) with each market and position, in
         list order: one read of the storage a margin check values, which the check and a
         liquidation step then share.
    """
    word: uint256 = self._accounts[account]
    out: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = []
    for i: uint256 in range(word & 255, bound=constants.MAX_ACCOUNT_MARKETS):
        market_id: uint256 = (word >> (8 * i + 8)) & 255
        out.append(Holding(market_id=market_id, market=self._market(market_id), position=self._position(account, market_id)))
    return out


@internal
@view
def _open_markets(account: address) -> DynArray[uint256, constants.MAX_ACCOUNT_MARKETS]:
    """
    @dev The markets the account holds a position in (see `_accounts`), in list order.
    """
    word: uint256 = self._accounts[account]
    out: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS] = []
    for i: uint256 in range(word & 255, bound=constants.MAX_ACCOUNT_MARKETS):
        out.append((word >> (8 * i + 8)) & 255)
    return out


@internal
@view
def _account_field(account: address, at: uint256) -> uint256:
    """
    @dev The 64-bit field at bit `at` of the account's word (see `_accounts`).
    """
    return (self._accounts[account] >> at) & FIELD64


@internal
def _set_account_field(account: address, at: uint256, field: uint256):
    # block numbers and times: < 2**64 (see `_accounts`)
    word: uint256 = self._accounts[account]
    self._accounts[account] = (word & ~(FIELD64 << at)) | (field << at)


@external
@view
def opened_block(account: address) -> uint256:
    """
    @notice The block of the account's last trade that grew a position (0: none); in that
            block it cannot be liquidated.
    """
    return self._account_field(account, OPENED_SHIFT)


@external
@view
def liquidatable_since(account: address) -> uint256:
    """
    @notice When the account was flagged liquidatable (unix s; 0: not flagged): the start of
            its penalty ramp (`flag_liquidatable`).
    """
    return self._account_field(account, FLAGGED_SHIFT)


@internal
def _add_market(account: address, market_id: uint256):
    """
    @dev Append `market_id` to the account's list (see `_accounts`).
    """
    word: uint256 = self._accounts[account]
    n: uint256 = word & 255
    assert n < constants.MAX_ACCOUNT_MARKETS, "engine: too many positions"
    self._accounts[account] = (word | (market_id << (8 * n + 8))) + 1


@internal
def _remove_market(account: address, market_id: uint256):
    """
    @dev Remove `market_id` from the account's list: the last entry takes its place and its
         byte is cleared, so no stale byte remains.
    """
    word: uint256 = self._accounts[account]
    n: uint256 = word & 255
    for i: uint256 in range(n, bound=constants.MAX_ACCOUNT_MARKETS):
        if (word >> (8 * i + 8)) & 255 == market_id:
            last: uint256 = (word >> (8 * n)) & 255
            word = (word & ~(255 << (8 * i + 8))) | (last << (8 * i + 8))
            self._accounts[account] = (word & ~(255 << (8 * n))) - 1
            return


# ---------------------------------------------------------------- valuation


@internal
@pure
def _position_value(position: types.Position, mark: uint256, funding_index: int256) -> int256:
    """
    @dev floor(size * (mark - entry) / 1e18) - ceil(size * (funding_index - entry index) / 1e18):
         unrealized PnL rounded down, funding owed rounded up.
    """
    pnl: int256 = wad._floor_div(position.size * (convert(mark, int256) - convert(position.entry_price, int256)), constants.IWAD)
    owed: int256 = wad._ceil_div(position.size * (funding_index - position.funding_index), constants.IWAD)
    return pnl - owed


@internal
@pure
def _charge(amount: uint256, price: uint256, rate: uint256) -> uint256:
    """
    @dev ceil(amount * price * rate / 1e36): a margin charge in WAD USD, rounded up.
    """
    # most legs of a requirement are empty (no spread, no expiring future)
    if amount == 0:
        return 0
    return wad._mul_div_up(amount * price, rate, constants.WAD * constants.WAD)


@internal
@view
def _margin(account: address, held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS], prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (int256, uint256, uint256):
    """
    @dev (equity, IM, MM) of an account holding `held` (`_holdings`) at the given index prices;
         see the contract notice.
    """
    cash: int256 = 0
    collateral: uint256 = 0
    cash, collateral = staticcall IVault(VAULT).margin_inputs(account, prices)
    equity: int256 = cash + convert(collateral, int256)
    for holding: Holding in held:
        mark: uint256 = holding.market.settlement_price
        if mark == 0:
            mark = prices[self._price_id(holding.market.underlying)]
            assert mark != 0, "engine: no valid price"
        equity += self._position_value(holding.position, mark, funding._index_now(holding.market, mark))
    ims: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    mms: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    ims, mms = self._requirements(held, prices, False)
    im: uint256 = 0
    mm: uint256 = 0
    for u: uint256 in range(constants.MAX_UNDERLYINGS):
        im += ims[u]
        mm += mms[u]
    module: address = self._option_market()
    if module != empty(address):
        value: int256 = 0
        option_im: uint256 = 0
        option_mm: uint256 = 0
        value, option_im, option_mm = staticcall IOptions(module).margin_contribution(account, prices)
        equity += value
        im += option_im
        mm += option_mm
    module = self._health_attestor()
    if module != empty(address):
        im, mm = staticcall IAttestor(module).effective_margin(account, im, mm)
    return equity, im, mm


@internal
@view
def _requirements(held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS], prices: DynArray[uint256, constants.MAX_PRICE_IDS], closable_only: bool) -> (uint256[constants.MAX_UNDERLYINGS], uint256[constants.MAX_UNDERLYINGS]):
    """
    @dev IM and MM per underlying (see the contract notice) of the live positions in `held`, or
         only of those a liquidation can close (`closable_only`: futures past expiry excluded).
    """
    longs: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    shorts: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    alone: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    for holding: Holding in held:
        market: types.Market = holding.market
        if market.settlement_price != 0:
            continue
        size: int256 = holding.position.size
        amount: uint256 = convert(abs(size), uint256)
        if not market.is_perpetual and block.timestamp + EXPIRY_RAMP > market.expiry:
            if closable_only and block.timestamp >= market.expiry:
                continue
            left: uint256 = 0
            if market.expiry > block.timestamp:
                left = market.expiry - block.timestamp
            netted: uint256 = amount * left // EXPIRY_RAMP
            alone[market.underlying] += amount - netted
            amount = netted
        if size > 0:
            longs[market.underlying] += amount
        else:
            shorts[market.underlying] += amount
    ims: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    mms: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    for u: uint256 in range(self._config & 255, bound=constants.MAX_UNDERLYINGS):
        if longs[u] == 0 and shorts[u] == 0 and alone[u] == 0:
            continue
        params: types.Underlying = self._rates_now(u)
        price: uint256 = prices[params.price_id]
        assert price != 0, "engine: no valid price"
        net: uint256 = max(longs[u], shorts[u]) - min(longs[u], shorts[u])
        offset: uint256 = min(longs[u], shorts[u])
        ims[u] = self._charge(net, price, params.im_rate) + self._charge(offset, price, params.spread_im_rate) + self._charge(alone[u], price, params.im_rate)
        mms[u] = self._charge(net, price, params.mm_rate) + self._charge(offset, price, params.spread_mm_rate) + self._charge(alone[u], price, params.mm_rate)
    return ims, mms


@internal
@pure
def _health(equity: int256, mm: uint256) -> uint256:
    """
    @dev equity / MM in WAD, rounded down; 0 when equity <= 0; max uint256 when MM is 0 and
         equity >= 0 (nothing to maintain).
    """
    if equity <= 0:
        if mm == 0 and equity == 0:
            return max_value(uint256)
        return 0
    if mm == 0:
        return max_value(uint256)
    return convert(equity, uint256) * constants.WAD // mm


@internal
@view
def _prices(mask: uint256) -> DynArray[uint256, constants.MAX_PRICE_IDS]:
    return staticcall IOracle(ORACLE).index_prices_of(mask)


@internal
@view
def _price_mask(account: address, held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS]) -> uint256:
    """
    @dev The price ids a margin summary of `account` reads (bit i = price id i): its markets'
         underlyings' and those its collateral needs (`CollateralVault.price_mask`); every one
         while it holds options (the option market keeps no index of their price ids). A price
         left out would be 0 and rejected ("no valid price"), never misused.
    """
    module: address = self._option_market()
    if module != empty(address) and staticcall IOptions(module).has_positions(account):
        return max_value(uint256)
    mask: uint256 = staticcall IVault(VAULT).price_mask(account)
    for holding: Holding in held:
        mask |= 1 << self._price_id(holding.market.underlying)
    return mask


@internal
@view
def _summary(account: address, held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS], prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> types.MarginSummary:
    equity: int256 = 0
    im: uint256 = 0
    mm: uint256 = 0
    equity, im, mm = self._margin(account, held, prices)
    return types.MarginSummary(equity=equity, initial_margin=im, maintenance_margin=mm, health_factor=self._health(equity, mm))


@internal
@view
def _summary_now(account: address) -> types.MarginSummary:
    """
    @dev The account's margin summary at current index prices (the prices it needs only).
    """
    held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = self._holdings(account)
    return self._summary(account, held, self._prices(self._price_mask(account, held)))


# ---------------------------------------------------------------- positions


@internal
def _accrue_funding(market_id: uint256, price: uint256) -> int256:
    """
    @dev Bring a perpetual's funding index up to now; returns the index.
    """
    market: types.Market = self._market(market_id)
    if not market.is_perpetual:
        return market.funding_index
    index: int256 = funding._index_now(market, price)
    if market.funding_time != block.timestamp:
        market.funding_time = block.timestamp
        # a perpetual's settlement slot is never written (nor read)
        self._markets[market_id].header = self._market_header(market)
        self._markets[market_id].funding_index = index
        log FundingUpdated(market=market_id, funding_index=index, funding_rate=market.funding_rate)
    return index


@internal
def _bump_version(account: address):
    # voids the account's attestation; without an attestor there is nothing to void
    if self._config & ATTESTOR_BIT != 0:
        self._fill_count[account] += 1


@internal
def _apply_fill(account: address, market_id: uint256, delta: int256, price: uint256, funding_index: int256) -> int256:
    """
    @dev Realize the position's PnL at `price` and its funding into cash, then set the new size
         with entry `price`. Realizing at every fill keeps PnL accounting exact and zero-sum.
         Returns the change of the market's open interest, which the caller applies with the
         other side's (`_add_open_interest`).
    """
    position: types.Position = self._position(account, market_id)
    self._bump_version(account)
    realized: int256 = 0
    if position.size != 0:
        realized = self._position_value(position, price, funding_index)
    else:
        self._add_market(account, market_id)
    new_size: int256 = position.size + delta
    self._store_position(account, market_id, new_size, price, funding_index)
    if new_size == 0:
        self._remove_market(account, market_id)
    if realized != 0:
        extcall IVault(VAULT).settle_cash(account, realized)
    log PositionChanged(account=account, market=market_id, size=new_size, entry_price=price, realized_pnl=realized)
    return max(new_size, 0) - max(position.size, 0)


@internal
def _add_open_interest(market_id: uint256, delta: int256):
    """
    @dev Apply the fills' change of a market's open interest (the sum of long sizes): a pair
         of fills that moves a long from one account to another writes nothing.
    """
    if delta != 0:
        self.open_interest[market_id] = convert(convert(self.open_interest[market_id], int256) + delta, uint256)


@internal
def _settle_expired(account: address, held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS]) -> bool:
    """
    @dev Settle the expired futures of `account` that a post-expiry price can settle, and
         realize every position of `account` (holding `held`, `_holdings`) in a settled market: a
         hedge is never unwound leg by leg after expiry. Returns whether a position changed.
    """
    changed: bool = False
    for holding: Holding in held:
        market: types.Market = holding.market
        # a perpetual never settles (and its settlement slot is never read)
        if market.is_perpetual:
            continue
        if market.settlement_price == 0 and block.timestamp >= market.expiry:
            if self._settle(holding.market_id, market):
                market.settlement_price = self._markets[holding.market_id].settlement_price
        if market.settlement_price != 0:
            oi_delta: int256 = self._apply_fill(account, holding.market_id, -holding.position.size, market.settlement_price, market.funding_index)
            self._add_open_interest(holding.market_id, oi_delta)
            changed = True
    return changed


@external
@nonreentrant
def settle_market(market_id: uint256):
    """
    @notice Fix a dated future's settlement price, once expiry has passed, at the oracle's
            expiry price (`OracleRouter.expiry_price`: the median of each feed's first round
            at or after expiry), which does not depend on when this is called.
            Permissionless; a second call is a no-op.
    @dev Reverts "engine: not expired", "engine: price before expiry" (the expiry price is
         not decided yet: a feed has not published since expiry).
    """
    assert market_id < (self._config >> 8) & 255, "engine: unknown market"
    market: types.Market = self._market(market_id)
    assert not market.is_perpetual, "engine: perpetual never settles"
    assert block.timestamp >= market.expiry, "engine: not expired"
    if market.settlement_price != 0:
        return
    assert self._settle(market_id, market), "engine: price before expiry"


@internal
def _settle(market_id: uint256, market: types.Market) -> bool:
    """
    @dev Fix an expired future's settlement price at the oracle's expiry price (the median of
         each feed's first round at or after expiry: the same whenever it is called); returns
         whether it did (False while that price is not yet decided).
    """
    price: uint256 = staticcall IOracle(ORACLE).expiry_price(self._price_id(market.underlying), market.expiry)
    if price == 0:
        return False
    self._markets[market_id].settlement_price = price
    log MarketSettled(market=market_id, settlement_price=price)
    return True


@external
@nonreentrant
def settle_positions(account: address):
    """
    @notice Realize an account's positions in settled futures into cash, settling any of its
            expired futures that a post-expiry price can settle. Permissionless.
    """
    self._settle_expired(account, self._holdings(account))


# ---------------------------------------------------------------- trading


@internal
def _check_caps(account: address, market_id: uint256, old_size: int256, new_size: int256, index: uint256):
    """
    @dev A trade leaves a position flat or at least `min_position_notional` at the index. A
         trade that grows a position must keep it, and the market's open interest, within
         caps; it also records the block, in which the account cannot be liquidated.
    """
    amount: uint256 = convert(abs(new_size), uint256)
    assert amount == 0 or amount * index // constants.WAD >= self.min_position_notional, "engine: position below minimum notional"
    if not trade_rules._grows(old_size, new_size):
        return
    self._set_account_field(account, OPENED_SHIFT, block.number)
    cap: uint256 = self.max_position[market_id]
    assert cap == 0 or amount <= cap, "engine: position above cap"
    cap = self.max_open_interest[market_id]
    assert cap == 0 or self.open_interest[market_id] <= cap, "engine: open interest above cap"


@external
@nonreentrant
def trade(maker: address, taker: address, market_id: uint256, size: int256, price: uint256):
    """
    @notice Fill a matched pair: `maker` trades `size` (WAD units, > 0 buys) of `market_id` at
            `price` (WAD USD) and `taker` the opposite. Only the matching contract, which has
            checked both orders (signatures, nonces, limits), may call it.
    @dev Reverts "engine: not matching", "engine: unknown market", "engine: market expired",
         "engine: no valid price", "engine: price too far from index", "engine: below initial
         margin" (for either side, unless its trade only reduces risk: `lib/trade_rules.vy`),
         "engine: position below minimum notional", "engine: position above cap", "engine: open
         interest above cap", "engine: too many positions".
    """
    assert msg.sender == self.matching, "engine: not matching"
    assert market_id < (self._config >> 8) & 255, "engine: unknown market"
    market: types.Market = self._market(market_id)
    assert market.settlement_price == 0 and (market.is_perpetual or block.timestamp < market.expiry), "engine: market expired"
    # both accounts' prices and the traded market's (each holds it afterwards)
    price_id: uint256 = self._price_id(market.underlying)
    maker_held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = self._holdings(maker)
    taker_held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = self._holdings(taker)
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = self._prices(self._price_mask(maker, maker_held) | self._price_mask(taker, taker_held) | (1 << price_id))
    index: uint256 = prices[price_id]
    assert index != 0, "engine: no valid price"
    gap: uint256 = max(price, index) - min(price, index)
    assert gap * constants.WAD <= index * self.max_price_deviation, "engine: price too far from index"

    # void both accounts' attestations before the trade is judged: before and after compare alike
    self._bump_version(maker)
    self._bump_version(taker)
    funding_index: int256 = self._accrue_funding(market_id, index)
    open_interest: uint256 = self.open_interest[market_id]
    maker_old: int256 = self._size(maker, market_id)
    taker_old: int256 = self._size(taker, market_id)
    # the rule reads the summary before the trade only for a trade that reduces a position
    maker_before: types.MarginSummary = empty(types.MarginSummary)
    taker_before: types.MarginSummary = empty(types.MarginSummary)
    # the views read before the accrual value the traded market alike: its index at `index`
    if trade_rules._reduces(maker_old, maker_old + size):
        maker_before = self._summary(maker, maker_held, prices)
    if trade_rules._reduces(taker_old, taker_old - size):
        taker_before = self._summary(taker, taker_held, prices)
    oi_delta: int256 = self._apply_fill(maker, market_id, size, price, funding_index)
    oi_delta += self._apply_fill(taker, market_id, -size, price, funding_index)
    self._add_open_interest(market_id, oi_delta)
    assert trade_rules._trade_allowed(maker_old, maker_old + size, maker_before, self._summary(maker, self._holdings(maker), prices)), "engine: below initial margin"
    assert trade_rules._trade_allowed(taker_old, taker_old - size, taker_before, self._summary(taker, self._holdings(taker), prices)), "engine: below initial margin"
    self._check_caps(maker, market_id, maker_old, maker_old + size, index)
    self._check_caps(taker, market_id, taker_old, taker_old - size, index)

    if market.is_perpetual:
        rate: int256 = funding._rate_after_trade(
            market.funding_rate, price, index, convert(abs(size), uint256), max(open_interest, self.open_interest[market_id]), self.funding_smoothing, self.max_funding_rate
        )
        # the header as `_accrue_funding` left it, with the new rate
        market = self._market(market_id)
        market.funding_rate = rate
        self._markets[market_id].header = self._market_header(market)
        log FundingUpdated(market=market_id, funding_index=funding_index, funding_rate=rate)


# ---------------------------------------------------------------- liquidation


@internal
def _close_underlying(account: address, liquidator: address, held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS], u: uint256, fraction: uint256, price: uint256) -> uint256:
    """
    @dev Move ceil(fraction * |size|) of every position of `account` (holding `held`) on
         underlying `u` to the liquidator at mark; returns the closed notional (WAD USD, rounded
         up). Futures past expiry are left for settlement: nobody could trade them.
    """
    notional: uint256 = 0
    for holding: Holding in held:
        market: types.Market = holding.market
        market_id: uint256 = holding.market_id
        if market.underlying != u or market.settlement_price != 0:
            continue
        if not market.is_perpetual and block.timestamp >= market.expiry:
            continue
        size: int256 = holding.position.size
        amount: uint256 = min(wad._mul_div_up(convert(abs(size), uint256), fraction, constants.WAD), convert(abs(size), uint256))
        if amount == 0:
            continue
        moved: int256 = convert(amount, int256)
        if size < 0:
            moved = -moved
        funding_index: int256 = self._accrue_funding(market_id, price)
        oi_delta: int256 = self._apply_fill(account, market_id, -moved, price, funding_index)
        oi_delta += self._apply_fill(liquidator, market_id, moved, price, funding_index)
        self._add_open_interest(market_id, oi_delta)
        notional += wad._mul_div_up(amount, price, constants.WAD)
        log PositionLiquidated(account=account, liquidator=liquidator, market=market_id, size=moved, price=price)
    return notional


@internal
@view
def _underlying_mm(held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS], prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (uint256[constants.MAX_UNDERLYINGS], uint256[constants.MAX_UNDERLYINGS]):
    """
    @dev Per underlying: maintenance margin and gross notional (WAD USD) of the positions in
         `held` a liquidation can close (not settled, not past expiry).
    """
    ims: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    mms: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    ims, mms = self._requirements(held, prices, True)
    sizes: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    for holding: Holding in held:
        market: types.Market = holding.market
        if market.settlement_price != 0 or (not market.is_perpetual and block.timestamp >= market.expiry):
            continue
        sizes[market.underlying] += convert(abs(holding.position.size), uint256)
    gross: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    for u: uint256 in range(self._config & 255, bound=constants.MAX_UNDERLYINGS):
        gross[u] = sizes[u] * prices[self._price_id(u)] // constants.WAD
    return mms, gross


@internal
@view
def _penalty_rate(account: address, params: LiquidationParams) -> uint256:
    """
    @dev liquidation_penalty, growing linearly to max_liquidation_penalty over
         penalty_ramp_time from the time the account was flagged.
    """
    base: uint256 = params.penalty
    top: uint256 = max(base, params.max_penalty)
    if top == base:
        return base
    since: uint256 = self._account_field(account, FLAGGED_SHIFT)
    if since == 0:
        return base
    ramp_time: uint256 = self.penalty_ramp_time
    # a flag older than two ramps is stale (the account may have recovered since): no bonus
    if block.timestamp - since >= 2 * ramp_time:
        return base
    elapsed: uint256 = min(block.timestamp - since, ramp_time)
    return base + (top - base) * elapsed // ramp_time


@external
def flag_liquidatable(account: address):
    """
    @notice Start the penalty ramp of a liquidatable account (anyone; idempotent while the flag
            is fresh): if nobody finds its liquidation worth the gas, the bonus grows until
            someone does. A flag expires after two ramp times, so one raised in a passing dip
            cannot pay the full bonus in a later one.
    @dev Reverts "engine: account not liquidatable".
    """
    summary: types.MarginSummary = self._summary_now(account)
    assert summary.equity < convert(summary.maintenance_margin, int256), "engine: account not liquidatable"
    since: uint256 = self._account_field(account, FLAGGED_SHIFT)
    if since == 0 or block.timestamp - since >= 2 * self.penalty_ramp_time:
        self._set_account_field(account, FLAGGED_SHIFT, block.timestamp)
        log LiquidatableFlagged(account=account, since=block.timestamp)


@internal
def _liquidate_positions(account: address, liquidator: address, params: LiquidationParams, prices: DynArray[uint256, constants.MAX_PRICE_IDS], full: bool, summary_now: types.MarginSummary, held_now: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS]) -> (uint256, uint256, types.MarginSummary, bool):
    """
    @dev Close underlyings in decreasing order of maintenance margin. For underlying u with
         maintenance margin M_u and gross notional G_u, closing a fraction f of it lowers MM by
         f*M_u and equity by penalty*f*G_u, so health reaches target t when
             f >= (t*MM - equity) / (t*M_u - penalty*G_u);
         f = 1 when the denominator is not positive or when `full`. The penalty never exceeds
         the account's remaining equity, so it cannot push a solvent account into bad debt.
         `summary_now` and `held_now` are the account's standard margin summary and holdings in
         this state (the caller has them: the first step does not read them again). Returns (closed notional, penalty
         charged, the last summary computed, whether it is still the account's summary: nothing
         was closed since, so the caller need not compute it again).
    """
    penalty_rate: uint256 = self._penalty_rate(account, params)
    target: uint256 = params.target
    mms: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    gross: uint256[constants.MAX_UNDERLYINGS] = empty(uint256[constants.MAX_UNDERLYINGS])
    held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = held_now
    mms, gross = self._underlying_mm(held, prices)
    done: bool[constants.MAX_UNDERLYINGS] = empty(bool[constants.MAX_UNDERLYINGS])
    notional: uint256 = 0
    charged: uint256 = 0
    summary: types.MarginSummary = summary_now
    current: bool = True
    for step: uint256 in range(constants.MAX_UNDERLYINGS):
        u: uint256 = constants.MAX_UNDERLYINGS
        for k: uint256 in range(self._config & 255, bound=constants.MAX_UNDERLYINGS):
            if not done[k] and gross[k] > 0 and (u == constants.MAX_UNDERLYINGS or mms[k] > mms[u]):
                u = k
        if u == constants.MAX_UNDERLYINGS:
            break
        done[u] = True
        if not current:
            held = self._holdings(account)
            summary = self._summary(account, held, prices)
            current = True
        if not full and summary.equity * constants.IWAD >= convert(summary.maintenance_margin * target, int256):
            break
        fraction: uint256 = constants.WAD
        denominator: int256 = convert(mms[u] * target // constants.WAD, int256) - convert(gross[u] * penalty_rate // constants.WAD, int256)
        if not full and denominator > 0:
            deficit: int256 = convert(wad._mul_div_up(summary.maintenance_margin, target, constants.WAD), int256) - summary.equity
            fraction = min(constants.WAD, wad._mul_div_up(convert(deficit, uint256), constants.WAD, convert(denominator, uint256)))
        closed: uint256 = self._close_underlying(account, liquidator, held, u, fraction, prices[self._price_id(u)])
        if closed == 0:
            continue
        current = False
        # closing at mark leaves equity unchanged: summary.equity is still the account's equity
        penalty: uint256 = min(wad._mul_div_up(closed, penalty_rate, constants.WAD), convert(max(summary.equity, 0), uint256))
        if penalty != 0:
            extcall IVault(VAULT).charge_penalty(account, liquidator, penalty, penalty * params.liquidator_share // constants.WAD)
        notional += closed
        charged += penalty
    return notional, charged, summary, current


@internal
@view
def _has_open_positions(account: address) -> bool:
    open_markets: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS] = self._open_markets(account)
    for market_id: uint256 in open_markets:
        if self._market(market_id).settlement_price == 0:
            return True
    return False


@external
def liquidate(account: address) -> uint256:
    """
    @notice Liquidate an account whose equity is below its maintenance margin. Permissionless;
            the caller takes over the closed positions at mark, buys any collateral sold, and
            must meet its own initial margin afterwards.
    @dev Reverts "engine: account not liquidatable", "engine: nothing to liquidate" (e.g. only a
         future past expiry awaiting settlement), "engine: self liquidation", "engine: position
         opened this block" (the account grew a position in this block: retry in the next),
         "engine: deleverage first" (`_adl_pending`), "engine: liquidator below IM", or an
         oracle error. Never lowers the account's health factor unless it closes the account's
         positions completely.
    @param account The account to liquidate.
    @return The notional closed, WAD USD.
    """
    assert account != msg.sender, "engine: self liquidation"
    # exposure opened in this block (before a price update the trader saw coming) is not
    # liquidated in it: a coalition cannot sandwich a known gap and collect the penalty
    assert self._account_field(account, OPENED_SHIFT) != block.number, "engine: position opened this block"
    # the account's prices and the liquidator's (its own margin is checked at the end)
    held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = self._holdings(account)
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = self._prices(self._price_mask(account, held) | self._price_mask(msg.sender, self._holdings(msg.sender)))
    if self._settle_expired(account, held):
        held = self._holdings(account)
    before: types.MarginSummary = self._summary(account, held, prices)
    assert before.equity < convert(before.maintenance_margin, int256), "engine: account not liquidatable"
    if before.equity < 0 and self._adl_pending(account, held, prices):
        # while its round runs, a deficit only ADL can pay is not turned into bad debt instead
        cover: uint256 = 0
        sale_gain: uint256 = 0
        cover, sale_gain = staticcall IVault(VAULT).deficit_cover(account, prices, self._liquidation_params().penalty)
        assert before.equity + convert(sale_gain, int256) + convert(cover, int256) >= 0, "engine: deleverage first"
    # an attestation decides whether to liquidate; how much is judged on the standard margin
    self._bump_version(account)

    params: LiquidationParams = self._liquidation_params()
    notional: uint256 = 0
    penalty: uint256 = 0
    # without an attestor the standard summary is `before` (the bump changes nothing)
    standard: types.MarginSummary = before
    if self._config & ATTESTOR_BIT != 0:
        standard = self._summary(account, held, prices)
    after: types.MarginSummary = empty(types.MarginSummary)
    current: bool = False
    notional, penalty, after, current = self._liquidate_positions(account, msg.sender, params, prices, False, standard, held)
    if not current:
        held = self._holdings(account)
        after = self._summary(account, held, prices)
    if self._has_open_positions(account) and after.health_factor < before.health_factor:
        # too deep for a partial close to help: close everything
        more_notional: uint256 = 0
        more_penalty: uint256 = 0
        more_notional, more_penalty, after, current = self._liquidate_positions(account, msg.sender, params, prices, True, after, held)
        notional += more_notional
        penalty += more_penalty
        if not current:
            after = self._summary(account, self._holdings(account), prices)
    acted: bool = notional != 0
    if not self._has_open_positions(account) and after.equity < 0:
        acted = extcall IVault(VAULT).liquidate_collateral(account, msg.sender, prices, params.penalty) or acted
        if not staticcall IVault(VAULT).has_collateral(account):
            covered: uint256 = 0
            uncovered: uint256 = 0
            covered, uncovered = extcall IVault(VAULT).cover_deficit(account)
            acted = acted or covered + uncovered != 0
        after = self._summary(account, self._holdings(account), prices)
    # e.g. only an expired future awaiting settlement: say so rather than burn the caller's gas
    assert acted, "engine: nothing to liquidate"

    if after.equity >= convert(after.maintenance_margin, int256) and self._account_field(account, FLAGGED_SHIFT) != 0:
        self._set_account_field(account, FLAGGED_SHIFT, 0)
    liquidator: types.MarginSummary = self._summary(msg.sender, self._holdings(msg.sender), prices)
    assert liquidator.equity >= convert(liquidator.initial_margin, int256), "engine: liquidator below IM"
    log Liquidation(
        account=account,
        liquidator=msg.sender,
        notional=notional,
        penalty=penalty,
        health_before=before.health_factor,
        health_after=after.health_factor,
    )
    return notional


# ---------------------------------------------------------------- auto-deleveraging


@internal
@view
def _adl_score(counterparty: address, market_id: uint256, size: int256, price: uint256) -> uint256:
    """
    @dev The auto-deleveraging rank of `counterparty`'s position in `market_id` against a
         bankrupt position of `size` (Hyperliquid: profit times leverage), WAD: profit fraction
         since entry times the position's leverage,
             score = floor(floor(|P - entry| * 1e18 / entry) * floor(|size| * P / 1e18) / equity)
         at index price P and the counterparty's equity; 0, not eligible, unless the position
         is on the other side, gained since its entry and the account's equity is positive (or
         when the product rounds to 0).
    """
    position: types.Position = self._position(counterparty, market_id)
    profit: uint256 = 0
    if position.size > 0 and size < 0 and price > position.entry_price:
        profit = price - position.entry_price
    elif position.size < 0 and size > 0 and price < position.entry_price:
        profit = position.entry_price - price
    if profit == 0:
        return 0
    equity: int256 = self._summary_now(counterparty).equity
    if equity <= 0:
        return 0
    notional: uint256 = convert(abs(position.size), uint256) * price // constants.WAD
    return profit * constants.WAD // position.entry_price * notional // convert(equity, uint256)


@internal
@view
def _adl_pending(account: address, held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS], prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> bool:
    """
    @dev Whether auto-deleveraging may still pay the account's deficit: it holds a position
         and either was deleveraged at most `ADL_NOTICE` seconds ago (a next round may open:
         a round of a few small, highly leveraged nominees must not open the way to
         liquidating it right behind their `deleverage`) or one of its markets has a round
         open (not deleveraged, not lapsed) with a nominee still eligible (`_adl_score` at
         index prices `prices`; a round whose nominees all left holds nothing). `liquidate`
         then refuses the account while the deficit its collateral sale would leave is more
         than the insurance fund and the backstop vault could pay (what qualifies it for
         `deleverage`), so that nobody can turn what the counterparties would pay into bad
         debt on everyone's cash by liquidating first. Each hold ends: the window after a
         deleveraging by `ADL_NOTICE`, which only a `deleverage` that closed something
         renews, a round by lapsing or by its nominees leaving.
    """
    if len(held) == 0:
        return False
    if block.timestamp <= self._deleveraged_at[account] + constants.ADL_NOTICE:
        return True
    for holding: Holding in held:
        # the nominees' length first: one slot per market when no round is open
        if len(self._adl_rounds[account][holding.market_id].nominees) == 0 or holding.market.settlement_price != 0:
            continue
        adl_round: AdlRound = self._adl_rounds[account][holding.market_id]
        if block.timestamp > adl_round.opened_at + constants.ADL_NOTICE + constants.ADL_ROUND_TIME:
            continue
        price: uint256 = prices[self._price_id(holding.market.underlying)]
        for nominee: address in adl_round.nominees:
            if self._adl_score(nominee, holding.market_id, holding.position.size, price) != 0:
                return True
    return False


@internal
@view
def _market_price(market_id: uint256) -> uint256:
    """
    @dev The index price of `market_id`'s underlying (WAD USD).
    """
    pid: uint256 = self._price_id(self._market(market_id).underlying)
    return self._prices(1 << pid)[pid]


@internal
def _reduce_keeping_entry(account: address, market_id: uint256, delta: int256, price: uint256, funding_index: int256) -> int256:
    """
    @dev Reduce a position by `delta` (the opposite sign, |delta| <= |size|) at `price`:
         realize the closed part's PnL and the whole position's funding, and keep the entry
         price of what is left, so that its profit since entry, which ranks it for the next
         auto-deleveraging and caps what it gives back, is not reset by being deleveraged.
         Returns the change of open interest (as `_apply_fill`).
    """
    position: types.Position = self._position(account, market_id)
    self._bump_version(account)
    new_size: int256 = position.size + delta
    part: types.Position = position
    part.size = -delta
    realized: int256 = self._position_value(part, price, funding_index)
    if new_size != 0:
        rest: types.Position = position
        rest.size = new_size
        # valued at its own entry: only the funding it owes
        realized += self._position_value(rest, position.entry_price, funding_index)
    self._store_position(account, market_id, new_size, position.entry_price, funding_index)
    if new_size == 0:
        self._remove_market(account, market_id)
    if realized != 0:
        extcall IVault(VAULT).settle_cash(account, realized)
    log PositionChanged(account=account, market=market_id, size=new_size, entry_price=position.entry_price, realized_pnl=realized)
    return max(new_size, 0) - max(position.size, 0)


@external
def nominate(account: address, market_id: uint256, counterparties: DynArray[address, constants.MAX_ADL_COUNTERPARTIES]):
    """
    @notice Nominate counterparties for the auto-deleveraging of a bankrupt account's position
            in `market_id`: opposite positions in profit, which `deleverage` will close against
            in the order of their `_adl_score` (profit times leverage) when it runs.
            Permissionless; the caller gains nothing.
    @dev The first nomination opens a round, which needs the account bankrupt (equity < 0);
         `deleverage` may run from `ADL_NOTICE` seconds after it opened (so that anyone can
         name an account a caller would rather leave out) until the round lapses,
         `ADL_ROUND_TIME` seconds later, or is deleveraged. A round holds at most
         `MAX_ADL_COUNTERPARTIES` nominees: when it is full, a nominee takes the place of the
         lowest-ranked one now (a nominee no longer eligible first) if it ranks above it, and is
         passed over otherwise; one already nominated is passed over. Adding a nominee never
         moves one that ranks above it, so a late nomination cannot push a higher-ranked
         account out of its turn. Reverts "engine: no position to deleverage", "engine: account
         not bankrupt" (opening a round), "engine: counterparty not in profit" (not opposite,
         no profit since entry or equity not positive), or an oracle error. Logs `Nominated`
         for each nominee added.
    @param counterparties Accounts holding the other side, in any order.
    """
    size: int256 = self._position(account, market_id).size
    assert size != 0, "engine: no position to deleverage"
    adl_round: AdlRound = self._adl_rounds[account][market_id]
    if adl_round.opened_at == 0 or block.timestamp > adl_round.opened_at + constants.ADL_NOTICE + constants.ADL_ROUND_TIME:
        assert self._summary_now(account).equity < 0, "engine: account not bankrupt"
        adl_round = AdlRound(opened_at=block.timestamp, nominees=[])
    price: uint256 = self._market_price(market_id)
    # the nominees' scores now, valued once when the round is first found full (nothing this
    # call does moves them)
    scores: DynArray[uint256, constants.MAX_ADL_COUNTERPARTIES] = []
    for counterparty: address in counterparties:
        if counterparty in adl_round.nominees:
            continue
        score: uint256 = self._adl_score(counterparty, market_id, size, price)
        assert score != 0, "engine: counterparty not in profit"
        if len(adl_round.nominees) < constants.MAX_ADL_COUNTERPARTIES:
            adl_round.nominees.append(counterparty)
        else:
            if len(scores) == 0:
                for nominee: address in adl_round.nominees:
                    scores.append(self._adl_score(nominee, market_id, size, price))
            lowest: uint256 = max_value(uint256)
            slot: uint256 = 0
            for i: uint256 in range(constants.MAX_ADL_COUNTERPARTIES):
                if scores[i] < lowest:
                    lowest = scores[i]
                    slot = i
            if score <= lowest:
                continue
            adl_round.nominees[slot] = counterparty
            scores[slot] = score
        log Nominated(account=account, counterparty=counterparty, market=market_id, score=score, opened_at=adl_round.opened_at)
    self._adl_rounds[account][market_id] = adl_round


@external
def deleverage(account: address, market_id: uint256) -> uint256:
    """
    @notice Auto-deleveraging, after the insurance fund and the backstop vault: close a
            bankrupt account's position in `market_id` against the round's nominees
            (`nominate`) that are still eligible, highest `_adl_score` (profit times leverage)
            first, the first nominated first on a tie. Permissionless; the caller gains
            nothing and chooses nobody.
    @dev The account qualifies while the deficit a sale of its collateral would leave,
         U = -(equity + sale gain), exceeds what the insurance fund and the backstop vault could
         pay (`CollateralVault.deficit_cover`), and is then recovered whole here, which leaves
         the fund and the vault for the next bankrupt account: recovering only the part beyond
         them would have each of several bankrupt accounts of one crash count on the whole fund,
         and all but the first end in bad debt. The market's
         share of it, need = ceil(U * N / G) (N its position's notional, G the account's gross
         notional, at index prices), is recovered from the counterparties in turn: each closes
         min(remaining, |its size|) at
             P +- min(ceil(need left * 1e18 / size left), its profit per unit since entry)
         (+ when the account is long), so closing every position recovers U, what one
         counterparty's profit cannot pay falls to the next, and none gives back more than its
         profit. A counterparty keeps the entry price of what it still holds
         (`_reduce_keeping_entry`). The round closes: what is left of the position needs a new
         round, which `liquidate` waits `ADL_NOTICE` for (`_adl_pending`). Reverts "engine: no deleveraging round" (none open, or lapsed), "engine:
         nominations still open" (before `ADL_NOTICE` has passed), "engine: liquidate options
         first", "engine: deficit covered", "engine: no position to deleverage", "engine: no
         counterparty" (no nominee eligible).
    @return The size closed, WAD units of the underlying.
    """
    adl_round: AdlRound = self._adl_rounds[account][market_id]
    assert adl_round.opened_at != 0 and block.timestamp <= adl_round.opened_at + constants.ADL_NOTICE + constants.ADL_ROUND_TIME, "engine: no deleveraging round"
    assert block.timestamp >= adl_round.opened_at + constants.ADL_NOTICE, "engine: nominations still open"
    self._adl_rounds[account][market_id] = empty(AdlRound)
    held: DynArray[Holding, constants.MAX_ACCOUNT_MARKETS] = self._holdings(account)
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = self._prices(self._price_mask(account, held))
    if self._settle_expired(account, held):
        held = self._holdings(account)
    module: address = self._option_market()
    assert module == empty(address) or not staticcall IOptions(module).has_positions(account), "engine: liquidate options first"
    cover: uint256 = 0
    sale_gain: uint256 = 0
    cover, sale_gain = staticcall IVault(VAULT).deficit_cover(account, prices, self._liquidation_params().penalty)
    # what the collateral sale leaves; deleveraged whole when the fund and the vault cannot pay it whole
    uncovered: int256 = -(self._summary(account, held, prices).equity + convert(sale_gain, int256))
    assert uncovered > convert(cover, int256), "engine: deficit covered"
    gross: uint256 = 0
    size: int256 = 0
    price: uint256 = 0
    for holding: Holding in held:
        market: types.Market = holding.market
        if market.settlement_price != 0 or (not market.is_perpetual and block.timestamp >= market.expiry):
            continue
        p: uint256 = prices[self._price_id(market.underlying)]
        gross += convert(abs(holding.position.size), uint256) * p // constants.WAD
        if holding.market_id == market_id:
            size = holding.position.size
            price = p
    assert size != 0, "engine: no position to deleverage"
    # this market's share of U, to recover from the counterparties below
    need: uint256 = wad._mul_div_up(convert(uncovered, uint256), convert(abs(size), uint256) * price // constants.WAD, gross)
    funding_index: int256 = self._accrue_funding(market_id, price)
    scores: DynArray[uint256, constants.MAX_ADL_COUNTERPARTIES] = []
    for counterparty: address in adl_round.nominees:
        scores.append(self._adl_score(counterparty, market_id, size, price))
    remaining: uint256 = convert(abs(size), uint256)
    for _: uint256 in range(constants.MAX_ADL_COUNTERPARTIES):
        # the highest score left, the first nominated on a tie
        score: uint256 = 0
        turn: uint256 = 0
        for i: uint256 in range(len(scores), bound=constants.MAX_ADL_COUNTERPARTIES):
            if scores[i] > score:
                score = scores[i]
                turn = i
        if score == 0 or remaining == 0:
            break
        scores[turn] = 0
        counterparty: address = adl_round.nominees[turn]
        position: types.Position = self._position(counterparty, market_id)
        amount: uint256 = min(remaining, convert(abs(position.size), uint256))
        # what is still needed, spread over what is still to close, capped at its profit per unit
        concession: uint256 = wad._mul_div_up(need, constants.WAD, remaining)
        fill: uint256 = 0
        if size > 0:
            concession = min(concession, position.entry_price - price)
            fill = price + concession
        else:
            concession = min(concession, price - position.entry_price)
            fill = price - concession
        need -= min(need, concession * amount // constants.WAD)
        moved: int256 = convert(amount, int256)
        if size < 0:
            moved = -moved
        oi_delta: int256 = self._apply_fill(account, market_id, -moved, fill, funding_index)
        oi_delta += self._reduce_keeping_entry(counterparty, market_id, moved, fill, funding_index)
        self._add_open_interest(market_id, oi_delta)
        remaining -= amount
        log Deleveraged(account=account, counterparty=counterparty, market=market_id, size=moved, price=fill, score=score)
    closed: uint256 = convert(abs(size), uint256) - remaining
    assert closed != 0, "engine: no counterparty"
    self._deleveraged_at[account] = block.timestamp
    return closed


# ---------------------------------------------------------------- views


@external
@view
def margin_summary(account: address) -> types.MarginSummary:
    """
    @notice Equity (WAD, may be negative), IM, MM (WAD) and health factor (WAD) of an account at
            current index prices.
    """
    return self._summary_now(account)


@external
@view
def open_markets(account: address) -> DynArray[uint256, constants.MAX_ACCOUNT_MARKETS]:
    """
    @notice Market ids in which the account has a position.
    """
    return self._open_markets(account)


@external
@view
def is_liquidatable(account: address) -> bool:
    """
    @notice Whether equity < maintenance margin at current index prices (what `liquidate`
            checks).
    """
    summary: types.MarginSummary = self._summary_now(account)
    return summary.equity < convert(summary.maintenance_margin, int256)


@external
@view
def meets_initial_margin(account: address) -> bool:
    """
    @notice Whether equity >= initial margin at current index prices (the vault's withdrawal
            check and the test a trade must pass).
    """
    summary: types.MarginSummary = self._summary_now(account)
    return summary.equity >= convert(summary.initial_margin, int256)


@external
@view
def rates_now(underlying: uint256) -> types.Underlying:
    """
    @notice The margin rates of `underlying` in force now (WAD fractions): `underlyings` holds
            the targets, towards which a raise phases in over 7 days (`lib/ramp.vy`).
    """
    return self._rates_now(underlying)


@external
@view
def funding_index_now(market_id: uint256) -> int256:
    """
    @notice A market's cumulative funding index accrued to now at the current index price
            (WAD USD per unit of size; `lib/funding.vy`); no accrual while the price is
            unavailable.
    """
    market: types.Market = self._market(market_id)
    price_id: uint256 = self._price_id(market.underlying)
    price: uint256 = self._prices(1 << price_id)[price_id]
    if price == 0:
        return market.funding_index
    return funding._index_now(market, price)


@external
@view
def position_version(account: address) -> uint256:
    """
    @notice The version of an account's portfolio that health attestations bind to: the sum of
            this engine's fill counter (counted while an attestor is wired), the vault's
            withdrawal counter and the option market's change counter. Each only grows and one
            grows on every trade, liquidation, settlement and withdrawal, so the sum changes on
            each.
    @dev Replacing the option market changes the sum; attested versions then lapse or, at
         worst, reapply until they expire (max validity 1 day).
    """
    version: uint256 = self._fill_count[account] + staticcall IVault(VAULT).withdrawal_count(account)
    module: address = self._option_market()
    if module != empty(address):
        version += staticcall IOptions(module).position_version(account)
    return version
