# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Option market: European calls and puts, cash-settled, cross-margined with the engine
@notice Lists European calls and puts per underlying (strike, expiry), matches EIP-712 signed
        orders, values positions on-chain and gives the margin engine their contribution to
        an account's equity, initial margin (IM) and maintenance margin (MM).
        - Positions: signed size (WAD units of the underlying; long > 0) and entry premium
          (WAD USD per unit). No premium changes hands at a trade: the position carries
          unrealized PnL = floor(size * (mark - entry) / 1e18) (futures-style; equal to paying
          the premium and holding the option at mark). Every fill realizes the position's PnL
          at the fill price into the vault's cash ledger and re-enters it at that price, as the
          engine does for futures, so realized PnL summed over all accounts is zero up to the
          floor rounding (at most 1 wei per realization, kept by the protocol).
        - Mark (Black-76 on the forward, Hull ch. "Futures options"; undiscounted, rates 0):
          forward F = index price, vol = smile(K) = max(atm_vol + skew * ln(K / F), 1%) from
          the VolFeed for (price id, expiry) (the keeper's `scenarios.smile_vol`), tau = expiry
          - now. At or after expiry the mark is the intrinsic value at the index.
          Trading needs a fresh vol (reverts "options: stale vol"). Margin never needs one, so
          a missing vol cannot block liquidations: without a fresh vol a long is marked at its
          intrinsic value (a lower bound of its Black-76 value) and a short at
          min(intrinsic + ceil(short_im_rate * S), cap), cap = S for a call, K for a put (the
          most an option can be worth): both err against the account. Liquidations then move
          positions at these marks.
        - Standard margin, per position, additive (no netting between positions; Derive/Lyra v2
          standard manager, `StandardManager.sol`, params `getSRMParams`), S the index price:
            short call: IM = |size| * max(short_im_rate * S - OTM, short_im_floor * S),
                        MM = |size| * short_mm_rate * S, OTM = max(K - S, 0)
            short put:  the same with OTM = max(S - K, 0), each per-unit charge capped at the
                        strike K (a short put cannot lose more than K per unit; simpler than
                        the SRM's min(9% spot, 9% MtM) rule)
            long:       IM = |size| * mark * (1 - long_im_haircut),
                        MM = |size| * mark * (1 - long_mm_haircut)
          (a long's value counts as margin at a haircut: with futures-style PnL this equals
          counting haircut * mark of a paid-for option). The mark-to-market part of the SRM
          formulas (MtM) is already in equity as unrealized PnL. Defaults 15% / 13% / 9%
          (SRM maxSpotReq / minSpotReq / MM) and long haircuts 0.75 (IM) / 0.8 (MM) (SRM
          base-asset ETH: marginFactor 0.8, IMScale 0.9375). Per-unit charges round up, then
          ceil(|size| * unit / 1e18); values round down.
        - Settlement: after expiry anyone calls `settle_series` once the index has a price
          published at or after expiry (the engine's futures rule); the settlement value per
          unit is exactly the intrinsic value max(S - K, 0) (call) or max(K - S, 0) (put).
          `settle_account` realizes each holder's PnL once, at that value.
        - Liquidation (`liquidate_options`): when the engine finds the account liquidatable,
          anyone may take over a fraction f of its live option positions at mark, at most
          `constants.MAX_LIQUIDATION_SERIES` series per call, chosen by the protocol (shorts
          first, then by maintenance margin, largest first, then by series id), with the
          engine's penalty rate on the value moved (sum of |moved| * mark), never above the
          account's equity, shared with the insurance fund as the engine does.
@dev Roles (lib/roles.vy): admin lists series; risk_admin sets margin, price-band and cap
     parameters within hard bounds. The engine must have this market as its `option_market`
     and the vault must allow it to move cash. EIP-712 domain: name "CrossMargin Options",
     version "1", this chain, this contract.
@license MIT
"""

from . import roles
from . import wad
from . import black76
from . import constants
from . import types
from . import trade_rules
from . import ramp
from . import packing

initializes: roles



interface IEngine:
    def margin_summary(account: address) -> types.MarginSummary: view
    def underlyings(underlying: uint256) -> types.Underlying: view
    def underlying_count() -> uint256: view
    def option_market() -> address: view
    def matching() -> address: view
    def health_attestor() -> address: view
    def liquidation_penalty() -> uint256: view
    def liquidator_share() -> uint256: view
    def liquidation_target() -> uint256: view
    def min_position_notional() -> uint256: view
    def VAULT() -> address: view
    def ORACLE() -> address: view


interface IOracle:
    def index_prices() -> DynArray[uint256, constants.MAX_PRICE_IDS]: view
    def index_price(price_id: uint256) -> uint256: view
    def expiry_price(price_id: uint256, expiry: uint256) -> uint256: view


interface IVault:
    def settle_cash(account: address, delta: int256): nonpayable
    def charge_penalty(account: address, liquidator: address, penalty: uint256, liquidator_share: uint256): nonpayable


interface IVolFeed:
    def fresh_vol(underlying: uint256, expiry: uint256) -> (bool, uint256, int256): view


# @dev Field widths of the packed series and positions (see `_series`, `_positions`).
SETTLED_BIT: constant(uint256) = 2**225
HELD_WORDS: constant(uint256) = (constants.MAX_ACCOUNT_SERIES + 32) // 32
# @dev Fields of a liquidation's ranking key (`_liquidation_subset`).
LIQ_SHORT: constant(uint256) = 2**255
LIQ_PRESENT: constant(uint256) = 2**254
LIQ_MM_MASK: constant(uint256) = 2**246 - 1

# @dev Smile floor, as keeper.risk.scenarios.MIN_VOL.
MIN_VOL: constant(uint256) = 10**16
# @dev Series expire at most `constants.MAX_EXPIRY_HORIZON` ahead (the VolFeed's horizon);
#      strikes within 10x of the index at listing keep |ln(K / F)| far inside black76's range.
MAX_STRIKE_RATIO: constant(uint256) = 10

# @dev Hard bounds of the risk parameters (WAD fractions).
MIN_SHORT_MM_RATE: constant(uint256) = 10**16
MAX_SHORT_IM_RATE: constant(uint256) = 10**18
MAX_LONG_HAIRCUT: constant(uint256) = 9 * 10**17
MIN_ABS_BAND: constant(uint256) = 10**14
MAX_ABS_BAND: constant(uint256) = 5 * 10**16
MIN_REL_BAND: constant(uint256) = 10**15
MAX_REL_BAND: constant(uint256) = 5 * 10**17
# @dev Defaults: Derive SRM (maxSpotReq 15%, minSpotReq 13%, MM 9%; ETH base collateral counted
#      at 0.8 for MM and 0.8 * 0.9375 = 0.75 for IM); price band 0.5% of the index or 10% of the mark.
DEFAULT_SHORT_IM_RATE: constant(uint256) = 15 * 10**16
DEFAULT_SHORT_IM_FLOOR: constant(uint256) = 13 * 10**16
DEFAULT_SHORT_MM_RATE: constant(uint256) = 9 * 10**16
DEFAULT_LONG_IM_HAIRCUT: constant(uint256) = 75 * 10**16
DEFAULT_LONG_MM_HAIRCUT: constant(uint256) = 8 * 10**17
DEFAULT_ABS_BAND: constant(uint256) = 5 * 10**15
DEFAULT_REL_BAND: constant(uint256) = 10**17


struct Series:
    underlying: uint256
    price_id: uint256
    strike: uint256
    expiry: uint256
    is_call: bool
    settlement_price: uint256


struct OptionPosition:
    size: int256
    entry_price: uint256


struct RiskParams:
    short_im_rate: uint256
    short_im_floor: uint256
    short_mm_rate: uint256
    long_im_haircut: uint256
    long_mm_haircut: uint256
    abs_price_band: uint256
    rel_price_band: uint256


# @dev A series' vol as the vol feed has it now (`_vol`).
struct SeriesVol:
    fresh: bool
    atm_vol: uint256
    skew: int256


struct SeriesState:
    underlying: uint256
    price_id: uint256
    strike: uint256
    expiry: uint256
    is_call: bool
    settlement_price: uint256
    open_interest: uint256
    index_price: uint256
    vol_fresh: bool
    sigma: uint256
    mark: uint256


ENGINE: public(immutable(address))
# @dev The engine's matching contract, the only caller of `trade`.
MATCHING: public(immutable(address))
VAULT: public(immutable(address))
ORACLE: public(immutable(address))
VOL_FEED: public(immutable(address))

series_count: public(uint256)
# @dev Each series in one slot (`_pack_series`): strike (bits 0-127), expiry (128-191),
#      underlying (192-207), price id (208-223), is_call (224), settled (225); its settlement
#      price apart, read only once settled. Valuing a position reads one slot, not six.
_series: HashMap[uint256, uint256]
_settlement_price: HashMap[uint256, uint256]
# @dev keccak256(underlying, strike, expiry, is_call) -> series id + 1 (0 = not listed).
_series_slot: HashMap[bytes32, uint256]
# @dev Each position in one slot (`_pack_position`): size (int128, two's complement) in the
#      low 128 bits, entry price in the high 128.
_positions: HashMap[address, HashMap[uint256, uint256]]
# @dev The series each account holds, one byte each (series ids < MAX_SERIES = 256): byte 0
#      of word 0 is the count, entry i is byte (i + 1) % 32 of word (i + 1) // 32. Up to 31
#      positions are listed in one slot (`_held_series`, `_hold`, `_release`).
_held: HashMap[address, uint256[HELD_WORDS]]
# @dev Sum of long sizes per series, and caps (0 = none), WAD units of the underlying.
open_interest: public(HashMap[uint256, uint256])
max_open_interest: public(HashMap[uint256, uint256])
max_position: public(HashMap[uint256, uint256])
# @dev Grows on every option trade, liquidation and settlement of the account (part of the
#      position version health attestations bind to; see MarginEngine.position_version).
position_version: public(HashMap[address, uint256])
# @dev Block number of each account's last trade that grew an option position.
opened_block: HashMap[address, uint256]

# @dev Standard margin rates and haircuts, and the trade price band: a premium must be within
#      max(abs_price_band * index, rel_price_band * mark) of the mark.
#      These are the targets; `risk_params_now` gives those in force.
risk_params: public(RiskParams)
# @dev The margin rates in force when they last changed, and when: raises phase in from them
#      (`lib/ramp.vy`).
risk_params_before: RiskParams
risk_params_changed_at: public(uint256)


event SeriesListed:
    series: indexed(uint256)
    underlying: indexed(uint256)
    strike: uint256
    expiry: uint256
    is_call: bool


event SeriesCapsSet:
    series: indexed(uint256)
    max_open_interest: uint256
    max_position: uint256


event RiskParamsSet:
    short_im_rate: uint256
    short_im_floor: uint256
    short_mm_rate: uint256
    long_im_haircut: uint256
    long_mm_haircut: uint256
    abs_price_band: uint256
    rel_price_band: uint256


event OptionPositionChanged:
    account: indexed(address)
    series: indexed(uint256)
    size: int256
    entry_price: uint256
    realized_pnl: int256


event SeriesSettled:
    series: indexed(uint256)
    settlement_price: uint256
    settlement_value: uint256


event OptionLiquidated:
    account: indexed(address)
    liquidator: indexed(address)
    series: indexed(uint256)
    size: int256
    price: uint256


event OptionsLiquidation:
    account: indexed(address)
    liquidator: indexed(address)
    value_moved: uint256
    penalty: uint256
    health_before: uint256
    health_after: uint256


@deploy
def __init__(admin_: address, engine: address, vol_feed: address):
    """
    @param admin_ Admin and initial risk admin (see lib/roles.vy).
    @param engine The MarginEngine (its vault and oracle are read from it).
    @param vol_feed The VolFeed giving (atm vol, skew) per (price id, expiry).
    """
    roles.__init__(admin_)
    assert engine != empty(address) and vol_feed != empty(address), "options: zero address"
    ENGINE = engine
    MATCHING = staticcall IEngine(engine).matching()
    assert MATCHING != empty(address), "options: engine has no matching"
    VAULT = staticcall IEngine(engine).VAULT()
    ORACLE = staticcall IEngine(engine).ORACLE()
    VOL_FEED = vol_feed
    self._set_risk_params(
        RiskParams(
            short_im_rate=DEFAULT_SHORT_IM_RATE,
            short_im_floor=DEFAULT_SHORT_IM_FLOOR,
            short_mm_rate=DEFAULT_SHORT_MM_RATE,
            long_im_haircut=DEFAULT_LONG_IM_HAIRCUT,
            long_mm_haircut=DEFAULT_LONG_MM_HAIRCUT,
            abs_price_band=DEFAULT_ABS_BAND,
            rel_price_band=DEFAULT_REL_BAND,
        )
    )


# ---------------------------------------------------------------- governance


@external
def list_option(underlying: uint256, strike: uint256, expiry: uint256, is_call: bool) -> uint256:
    """
    @notice List a European option series (admin).
    @dev Reverts "options: unknown underlying", "options: expiry in the past",
         "options: expiry too far" (more than two years ahead), "options: strike out of bounds"
         (not within [index / 10, index * 10]; the index must price now),
         "options: series exists", "options: too many series".
    @param underlying The engine's underlying id.
    @param strike Strike, WAD USD per unit.
    @param expiry Unix seconds, in the future.
    @param is_call True for a call, False for a put.
    @return The series id.
    """
    roles._check_admin()
    assert underlying < staticcall IEngine(ENGINE).underlying_count(), "options: unknown underlying"
    assert expiry > block.timestamp, "options: expiry in the past"
    assert expiry - block.timestamp <= constants.MAX_EXPIRY_HORIZON, "options: expiry too far"
    price_id: uint256 = (staticcall IEngine(ENGINE).underlyings(underlying)).price_id
    index: uint256 = staticcall IOracle(ORACLE).index_price(price_id)
    assert strike * MAX_STRIKE_RATIO >= index and strike <= index * MAX_STRIKE_RATIO and strike <= packing.LOW128, "options: strike out of bounds"
    key: bytes32 = keccak256(abi_encode(underlying, strike, expiry, is_call))
    assert self._series_slot[key] == 0, "options: series exists"
    series_id: uint256 = self.series_count
    assert series_id < constants.MAX_SERIES, "options: too many series"
    # underlying < MAX_UNDERLYINGS and price id < MAX_PRICE_IDS fit 16 bits; expiry 64
    self._series[series_id] = strike | (expiry << 128) | (underlying << 192) | (price_id << 208) | (convert(is_call, uint256) << 224)
    self._series_slot[key] = series_id + 1
    self.series_count = series_id + 1
    log SeriesListed(series=series_id, underlying=underlying, strike=strike, expiry=expiry, is_call=is_call)
    return series_id


@external
def set_series_caps(series_id: uint256, max_open_interest: uint256, max_position: uint256):
    """
    @notice Cap a series' open interest (sum of long sizes) and any account's position in it
            (risk admin); 0 = no cap. Caps bind trades that raise them, not liquidations.
    @dev Reverts "options: unknown series", "options: position cap above OI cap".
    @param max_open_interest WAD units of the underlying.
    @param max_position WAD units, <= max_open_interest when both are set.
    """
    roles._check_risk_admin()
    assert series_id < self.series_count, "options: unknown series"
    assert max_open_interest == 0 or max_position <= max_open_interest, "options: position cap above OI cap"
    self.max_open_interest[series_id] = max_open_interest
    self.max_position[series_id] = max_position
    log SeriesCapsSet(series=series_id, max_open_interest=max_open_interest, max_position=max_position)


@internal
@view
def _risk_params_now() -> RiskParams:
    """
    @dev The risk parameters in force now: the targets once a raise has phased in.
    """
    target: RiskParams = self.risk_params
    since: uint256 = self.risk_params_changed_at
    if block.timestamp >= since + constants.REQUIREMENT_RAMP:
        return target
    before: RiskParams = self.risk_params_before
    return RiskParams(
        short_im_rate=ramp._raised(before.short_im_rate, target.short_im_rate, since),
        short_im_floor=ramp._raised(before.short_im_floor, target.short_im_floor, since),
        short_mm_rate=ramp._raised(before.short_mm_rate, target.short_mm_rate, since),
        long_im_haircut=ramp._raised(before.long_im_haircut, target.long_im_haircut, since),
        long_mm_haircut=ramp._raised(before.long_mm_haircut, target.long_mm_haircut, since),
        abs_price_band=target.abs_price_band,
        rel_price_band=target.rel_price_band,
    )


@internal
def _set_risk_params(params: RiskParams):
    assert (
        params.short_mm_rate >= MIN_SHORT_MM_RATE
        and params.short_mm_rate <= params.short_im_floor
        and params.short_im_floor <= params.short_im_rate
        and params.short_im_rate <= MAX_SHORT_IM_RATE
        and params.long_im_haircut <= params.long_mm_haircut
        and params.long_mm_haircut <= MAX_LONG_HAIRCUT
    ), "options: margin params out of bounds"
    assert (
        params.abs_price_band >= MIN_ABS_BAND
        and params.abs_price_band <= MAX_ABS_BAND
        and params.rel_price_band >= MIN_REL_BAND
        and params.rel_price_band <= MAX_REL_BAND
    ), "options: price band out of bounds"
    self.risk_params = params
    log RiskParamsSet(
        short_im_rate=params.short_im_rate,
        short_im_floor=params.short_im_floor,
        short_mm_rate=params.short_mm_rate,
        long_im_haircut=params.long_im_haircut,
        long_mm_haircut=params.long_mm_haircut,
        abs_price_band=params.abs_price_band,
        rel_price_band=params.rel_price_band,
    )


@external
def set_risk_params(params: RiskParams):
    """
    @notice Change the standard option margin and the trade price band (risk admin); all WAD
            fractions. A lower margin rate or haircut, and any band, apply at once; a higher
            rate or haircut phases in linearly from the one in force over
            `constants.REQUIREMENT_RAMP` (7 days; `risk_params_now`), once a series is listed
            (before, there is no position and any value applies at once: deployment).
    @dev Reverts "options: margin params out of bounds" unless
         1% <= short_mm_rate <= short_im_floor <= short_im_rate <= 100% and
         long_im_haircut <= long_mm_haircut <= 90% (so IM is never below MM); "options: price
         band out of bounds" unless abs_price_band is in [0.01%, 5%] (of the index) and
         rel_price_band in [0.1%, 50%] (of the mark).
    @param params (short_im_rate: fraction of spot before the out-of-the-money credit, SRM 15%;
           short_im_floor: least IM fraction of spot, SRM 13%; short_mm_rate: MM fraction of
           spot, SRM 9%; long_im_haircut, long_mm_haircut: fraction of a long's mark counted
           for IM, MM; abs_price_band, rel_price_band: the trade price band).
    """
    roles._check_risk_admin()
    # with no series listed there is no position: nothing to phase in (deployment)
    if self.series_count != 0:
        self.risk_params_before = self._risk_params_now()
        self.risk_params_changed_at = block.timestamp
    self._set_risk_params(params)


# ---------------------------------------------------------------- storage


@internal
@view
def _series_of(series_id: uint256) -> Series:
    """
    @dev The series `series_id` unpacked from its slot (see `_series`).
    """
    packed: uint256 = self._series[series_id]
    settlement_price: uint256 = 0
    if packed & SETTLED_BIT != 0:
        settlement_price = self._settlement_price[series_id]
    return Series(
        underlying=(packed >> 192) & 65535,
        price_id=(packed >> 208) & 65535,
        strike=packed & packing.LOW128,
        expiry=(packed >> 128) & (2**64 - 1),
        is_call=(packed >> 224) & 1 == 1,
        settlement_price=settlement_price,
    )


@internal
@view
def _position(account: address, series_id: uint256) -> OptionPosition:
    """
    @dev The position of `account` in `series_id` unpacked from its slot (see `_positions`).
    """
    packed: uint256 = self._positions[account][series_id]
    return OptionPosition(size=packing._int128_at(packed), entry_price=packed >> 128)


@internal
def _store_position(account: address, series_id: uint256, size: int256, entry_price: uint256):
    """
    @dev Pack and store a position (see `_positions`).
    @custom:security Reverts "options: position out of range" beyond int128 size or uint128
         price, far beyond any cap or collateral: the packing never truncates.
    """
    assert packing._fits_int128(size) and entry_price <= packing.LOW128, "options: position out of range"
    self._positions[account][series_id] = packing._low128_of(size) | (entry_price << 128)


@internal
@view
def _held_count(account: address) -> uint256:
    return self._held[account][0] & 255


@internal
@view
def _held_series(account: address) -> DynArray[uint256, constants.MAX_ACCOUNT_SERIES]:
    """
    @dev The series the account holds a position in (see `_held`), in list order.
    """
    word: uint256 = self._held[account][0]
    out: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = []
    for i: uint256 in range(word & 255, bound=constants.MAX_ACCOUNT_SERIES):
        j: uint256 = i + 1
        if j % 32 == 0:
            word = self._held[account][j // 32]
        out.append((word >> (j % 32 * 8)) & 255)
    return out


@external
@view
def series(series_id: uint256) -> Series:
    """
    @notice A listed series: (underlying, price id, strike WAD, expiry unix s, is_call,
            settlement price WAD, 0 until settled). All zero for an unknown id.
    """
    return self._series_of(series_id)


@external
@view
def positions(account: address, series_id: uint256) -> OptionPosition:
    """
    @notice The position of `account` in `series_id`: (size WAD, > 0 long; entry premium WAD).
    """
    return self._position(account, series_id)


# ---------------------------------------------------------------- valuation


@internal
@view
def _summary(account: address) -> types.MarginSummary:
    # the engine's view includes this market's contribution (its option_market hook)
    return staticcall IEngine(ENGINE).margin_summary(account)


@internal
@view
def _index_prices() -> DynArray[uint256, constants.MAX_PRICE_IDS]:
    return staticcall IOracle(ORACLE).index_prices()


@internal
@pure
def _intrinsic(series: Series, price: uint256) -> uint256:
    """
    @dev max(S - K, 0) for a call, max(K - S, 0) for a put, WAD USD per unit.
    """
    if series.is_call:
        if price > series.strike:
            return price - series.strike
        return 0
    if series.strike > price:
        return series.strike - price
    return 0


@internal
@view
def _vol(series: Series) -> SeriesVol:
    """
    @dev The series' vol now, from the vol feed (`VolFeed.fresh_vol`).
    """
    fresh: bool = False
    atm_vol: uint256 = 0
    skew: int256 = 0
    fresh, atm_vol, skew = staticcall IVolFeed(VOL_FEED).fresh_vol(series.price_id, series.expiry)
    return SeriesVol(fresh=fresh, atm_vol=atm_vol, skew=skew)


@internal
@pure
def _smile_vol(series: Series, forward: uint256, vol: SeriesVol) -> uint256:
    """
    @dev max(atm_vol + skew * ln(K / F), MIN_VOL), WAD (keeper.risk.scenarios.smile_vol);
         the product is truncated towards zero.
    """
    log_moneyness: int256 = black76._ln_wad(series.strike * constants.WAD // forward)
    sigma: int256 = convert(vol.atm_vol, int256) + vol.skew * log_moneyness // constants.IWAD
    return max(convert(max(sigma, 0), uint256), MIN_VOL)


@internal
@view
def _model_value(series: Series, forward: uint256, sigma: uint256) -> uint256:
    """
    @dev Black-76 value per unit (undiscounted), WAD USD; intrinsic at or after expiry.
    """
    if block.timestamp >= series.expiry:
        return self._intrinsic(series, forward)
    call: uint256 = 0
    put: uint256 = 0
    call, put = black76._black76(forward, series.strike, sigma, series.expiry - block.timestamp)
    if series.is_call:
        return call
    return put


@internal
@view
def _mark(series: Series, index: uint256, is_long: bool, short_im_rate: uint256, vol: SeriesVol) -> uint256:
    """
    @dev The mark for margin (never needs a vol): at or after expiry the intrinsic value; with
         a fresh vol the Black-76 value; otherwise a long at intrinsic and a short at
         min(intrinsic + ceil(short_im_rate * S), S for a call / K for a put). `vol` is the
         series' vol now (`_vol`).
    """
    if block.timestamp >= series.expiry:
        return self._intrinsic(series, index)
    if vol.fresh:
        return self._model_value(series, index, self._smile_vol(series, index, vol))
    intrinsic: uint256 = self._intrinsic(series, index)
    if is_long:
        return intrinsic
    cap: uint256 = series.strike
    if series.is_call:
        cap = index
    return min(intrinsic + wad._mul_div_up(short_im_rate, index, constants.WAD), cap)


@internal
@pure
def _pnl(size: int256, mark: uint256, entry: uint256) -> int256:
    """
    @dev floor(size * (mark - entry) / 1e18): unrealized PnL, rounded down.
    """
    return wad._floor_div(size * (convert(mark, int256) - convert(entry, int256)), constants.IWAD)


@internal
@view
def _position_margin(series: Series, position: OptionPosition, prices: DynArray[uint256, constants.MAX_PRICE_IDS], params: RiskParams, vol: SeriesVol) -> (uint256, int256, uint256, uint256):
    """
    @dev (mark, value, IM, MM) of one position; see the contract notice. A settled position is
         worth exactly its settlement value and has nothing left at risk. `vol` is the series'
         vol now (`_vol`; unread for a settled or expired series).
    """
    if series.settlement_price != 0:
        settled: uint256 = self._intrinsic(series, series.settlement_price)
        return settled, self._pnl(position.size, settled, position.entry_price), 0, 0
    index: uint256 = prices[series.price_id]
    assert index != 0, "options: no valid price"
    amount: uint256 = convert(abs(position.size), uint256)
    mark: uint256 = self._mark(series, index, position.size > 0, params.short_im_rate, vol)
    value: int256 = self._pnl(position.size, mark, position.entry_price)
    if position.size > 0:
        im: uint256 = wad._mul_div_up(amount * mark, constants.WAD - params.long_im_haircut, constants.WAD * constants.WAD)
        mm: uint256 = wad._mul_div_up(amount * mark, constants.WAD - params.long_mm_haircut, constants.WAD * constants.WAD)
        return mark, value, im, mm
    otm: uint256 = 0
    if series.is_call and series.strike > index:
        otm = series.strike - index
    elif not series.is_call and index > series.strike:
        otm = index - series.strike
    im_unit: uint256 = wad._mul_div_up(params.short_im_rate, index, constants.WAD)
    im_unit = max(im_unit - min(im_unit, otm), wad._mul_div_up(params.short_im_floor, index, constants.WAD))
    if not series.is_call:
        im_unit = min(im_unit, series.strike)
    return mark, value, wad._mul_div_up(amount, im_unit, constants.WAD), self._short_mm(series, amount, index, params)


@internal
@pure
def _short_mm(series: Series, amount: uint256, index: uint256, params: RiskParams) -> uint256:
    """
    @dev MM of a short of `amount` units: ceil(amount * unit / 1e18), unit =
         ceil(short_mm_rate * S / 1e18), capped at the strike for a put. Needs no mark, so a
         liquidation ranks shorts by it without valuing them (`_liquidation_subset`).
    """
    mm_unit: uint256 = wad._mul_div_up(params.short_mm_rate, index, constants.WAD)
    if not series.is_call:
        mm_unit = min(mm_unit, series.strike)
    return wad._mul_div_up(amount, mm_unit, constants.WAD)


@internal
@view
def _book(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (int256, uint256, uint256):
    """
    @dev (value, IM, MM) over the account's positions: value = unrealized PnL.
    """
    value: int256 = 0
    im: uint256 = 0
    mm: uint256 = 0
    params: RiskParams = self._risk_params_now()
    held: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = self._held_series(account)
    for series_id: uint256 in held:
        series: Series = self._series_of(series_id)
        vol: SeriesVol = self._vol(series)
        position: OptionPosition = self._position(account, series_id)
        mark: uint256 = 0
        position_value: int256 = 0
        position_im: uint256 = 0
        position_mm: uint256 = 0
        mark, position_value, position_im, position_mm = self._position_margin(series, position, prices, params, vol)
        value += position_value
        im += position_im
        mm += position_mm
    return value, im, mm


@external
@view
def margin_contribution(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (int256, uint256, uint256):
    """
    @notice What an account's options add to its equity, IM and MM (the engine's hook).
    @dev Never needs a vol (see the notice); reverts "options: no valid price" when a live
         position's index price is 0, as the engine does for its own positions.
    @param account The account.
    @param prices WAD index prices by price id (`OracleRouter.index_prices`).
    @return (unrealized PnL of its options WAD USD rounded down, IM WAD rounded up,
            MM WAD rounded up).
    """
    return self._book(account, prices)


# ---------------------------------------------------------------- positions


@internal
def _release(account: address, series_id: uint256):
    """
    @dev Remove `series_id` from the account's list (the last entry takes its place) and
         rewrite the words the old list spanned, so no stale byte remains.
    """
    held: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = self._held_series(account)
    n: uint256 = len(held)
    for i: uint256 in range(n, bound=constants.MAX_ACCOUNT_SERIES):
        if held[i] == series_id:
            held[i] = held[n - 1]
            held.pop()
            break
    words: uint256[HELD_WORDS] = empty(uint256[HELD_WORDS])
    words[0] = len(held)
    for i: uint256 in range(len(held), bound=constants.MAX_ACCOUNT_SERIES):
        words[(i + 1) // 32] |= held[i] << ((i + 1) % 32 * 8)
    for w: uint256 in range(HELD_WORDS):
        if w * 32 > n:
            break
        self._held[account][w] = words[w]


@internal
def _hold(account: address, series_id: uint256):
    """
    @dev Append `series_id` to the account's list (see `_held`).
    """
    first: uint256 = self._held[account][0]
    n: uint256 = first & 255
    assert n < constants.MAX_ACCOUNT_SERIES, "options: too many positions"
    j: uint256 = n + 1
    if j < 32:
        self._held[account][0] = (first | (series_id << (j * 8))) + 1
    else:
        self._held[account][j // 32] |= series_id << (j % 32 * 8)
        self._held[account][0] = first + 1


@internal
def _apply_fill(account: address, series_id: uint256, delta: int256, price: uint256):
    """
    @dev `_fill`, with the realized PnL settled into cash at once.
    """
    realized: int256 = self._fill(account, series_id, delta, price)
    if realized != 0:
        extcall IVault(VAULT).settle_cash(account, realized)


@internal
def _fill(account: address, series_id: uint256, delta: int256, price: uint256) -> int256:
    """
    @dev Realize the position's PnL at `price`, then set the new size with entry `price` (the
         engine's rule: exact and zero-sum up to rounding). Returns the realized PnL (WAD USD),
         which the caller settles into cash: a liquidation settles each account's sum once.
    """
    position: OptionPosition = self._position(account, series_id)
    self.position_version[account] += 1
    realized: int256 = 0
    if position.size != 0:
        realized = self._pnl(position.size, price, position.entry_price)
    else:
        self._hold(account, series_id)
    new_size: int256 = position.size + delta
    self.open_interest[series_id] = self.open_interest[series_id] + convert(max(new_size, 0), uint256) - convert(max(position.size, 0), uint256)
    if new_size == 0:
        self._positions[account][series_id] = 0
        self._release(account, series_id)
    else:
        self._store_position(account, series_id, new_size, price)
    log OptionPositionChanged(account=account, series=series_id, size=new_size, entry_price=price, realized_pnl=realized)
    return realized


@internal
def _settle(series_id: uint256) -> bool:
    """
    @dev Fix an expired series' settlement price at the oracle's expiry price (median of each
         feed's first round at or after expiry, whenever it is called); returns whether the
         series is settled.
    """
    series: Series = self._series_of(series_id)
    if series.settlement_price != 0:
        return True
    if block.timestamp < series.expiry:
        return False
    price: uint256 = staticcall IOracle(ORACLE).expiry_price(series.price_id, series.expiry)
    if price == 0:
        return False
    self._settlement_price[series_id] = price
    self._series[series_id] |= SETTLED_BIT
    log SeriesSettled(series=series_id, settlement_price=price, settlement_value=self._intrinsic(series, price))
    return True


@internal
def _settle_account(account: address):
    """
    @dev Settle what can be settled among the account's expired series and realize every
         position it holds in a settled series at the settlement value.
    """
    held: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = self._held_series(account)
    for series_id: uint256 in held:
        if self._settle(series_id):
            series: Series = self._series_of(series_id)
            size: int256 = self._position(account, series_id).size
            self._apply_fill(account, series_id, -size, self._intrinsic(series, series.settlement_price))


@external
@nonreentrant
def settle_series(series_id: uint256):
    """
    @notice Fix a series' settlement price, once, after expiry, at the oracle's expiry price
            (`OracleRouter.expiry_price`), which does not depend on when this is called.
            Permissionless; a later call changes nothing.
    @dev Reverts "options: unknown series", "options: not expired", "options: price before
         expiry" (the expiry price is not decided yet).
    """
    assert series_id < self.series_count, "options: unknown series"
    assert block.timestamp >= self._series_of(series_id).expiry, "options: not expired"
    assert self._settle(series_id), "options: price before expiry"


@external
@nonreentrant
def settle_account(account: address):
    """
    @notice Realize an account's positions in settled series into cash at the settlement value
            (intrinsic value), settling any of its expired series that can be. Permissionless;
            each position is realized once (it is closed by it).
    """
    self._settle_account(account)


# ---------------------------------------------------------------- trading


@internal
def _check_caps(account: address, series_id: uint256, old_size: int256, new_size: int256, least: uint256):
    # the engine's rules: flat or at least `least` underlying units, within caps, and no
    # liquidation in the block exposure grew
    amount: uint256 = convert(abs(new_size), uint256)
    assert amount == 0 or amount >= least, "options: position below minimum notional"
    if not trade_rules._grows(old_size, new_size):
        return
    self.opened_block[account] = block.number
    cap: uint256 = self.max_position[series_id]
    assert cap == 0 or amount <= cap, "options: position above cap"
    cap = self.max_open_interest[series_id]
    assert cap == 0 or self.open_interest[series_id] <= cap, "options: open interest above cap"


@external
@nonreentrant
def trade(maker: address, taker: address, series_id: uint256, size: int256, price: uint256):
    """
    @notice Fill a matched pair of option orders: `maker` trades `size` (WAD units of the
            underlying, > 0 buys) of `series_id` at premium `price` (WAD USD per unit), `taker`
            the opposite. Only the matching contract, which has checked both orders, may call it.
    @dev Reverts "options: not matching", "options: unknown series", "options: series expired",
         "options: not wired" (the engine does not count this market), "options: no valid
         price", "options: stale vol", "options: price too far from mark", "options: below
         initial margin" (either side, unless its trade only reduces risk:
         `lib/trade_rules.vy`), "options: position below minimum notional" (the engine's
         `min_position_notional`, on the underlying's notional at the index), "options:
         position above cap", "options: open interest above cap", "options: too many positions".
    """
    assert msg.sender == MATCHING, "options: not matching"
    assert series_id < self.series_count, "options: unknown series"
    series: Series = self._series_of(series_id)
    assert series.settlement_price == 0 and block.timestamp < series.expiry, "options: series expired"
    assert staticcall IEngine(ENGINE).option_market() == self, "options: not wired"

    index: uint256 = (self._index_prices())[series.price_id]
    assert index != 0, "options: no valid price"
    vol: SeriesVol = self._vol(series)
    assert vol.fresh, "options: stale vol"
    mark: uint256 = self._model_value(series, index, self._smile_vol(series, index, vol))
    gap: uint256 = max(price, mark) - min(price, mark)
    params: RiskParams = self._risk_params_now()
    assert gap * constants.WAD <= max(params.abs_price_band * index, params.rel_price_band * mark), "options: price too far from mark"

    # void both accounts' attestations before the trade is judged: before and after compare alike
    self.position_version[maker] += 1
    self.position_version[taker] += 1
    maker_old: int256 = self._position(maker, series_id).size
    taker_old: int256 = self._position(taker, series_id).size
    # the rule reads the summary before the trade only for a trade that reduces a position
    maker_before: types.MarginSummary = empty(types.MarginSummary)
    taker_before: types.MarginSummary = empty(types.MarginSummary)
    if trade_rules._reduces(maker_old, maker_old + size):
        maker_before = self._summary(maker)
    if trade_rules._reduces(taker_old, taker_old - size):
        taker_before = self._summary(taker)
    self._apply_fill(maker, series_id, size, price)
    self._apply_fill(taker, series_id, -size, price)
    assert trade_rules._trade_allowed(maker_old, maker_old + size, maker_before, self._summary(maker)), "options: below initial margin"
    assert trade_rules._trade_allowed(taker_old, taker_old - size, taker_before, self._summary(taker)), "options: below initial margin"
    # the engine's minimum position notional, on the underlying's notional at the index
    least: uint256 = wad._mul_div_up(staticcall IEngine(ENGINE).min_position_notional(), constants.WAD, index)
    self._check_caps(maker, series_id, maker_old, maker_old + size, least)
    self._check_caps(taker, series_id, taker_old, taker_old - size, least)


# ---------------------------------------------------------------- liquidation


@internal
@view
def _liquidation_subset(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (DynArray[uint256, constants.MAX_LIQUIDATION_SERIES], DynArray[uint256, constants.MAX_LIQUIDATION_SERIES], uint256, uint256):
    """
    @dev The live series one liquidation call moves, in the order it moves them, with their
         margin marks, and the subset's MM and gross value (M_S, G_S: sums of each position's
         MM as `_position_margin` has it and of ceil(|size| * mark / 1e18)). At most
         `MAX_LIQUIDATION_SERIES` of the account's live positions (series neither settled nor
         expired), ranked by a key neither the account nor the liquidator chooses:
           1. every short before any long;
           2. then by the position's MM, largest first;
           3. then by series id, smallest first (ids are unique: the order is total).
         Neither the order of the account's list nor anything the liquidator holds moves the
         key. Shorts rank by `_short_mm` (no mark needed); longs are valued only when fewer
         shorts than the bound are live.
    """
    params: RiskParams = self._risk_params_now()
    # per live position: key = PRESENT | short << 255 | MM << 8 | (255 - id); MM < 2**196
    # (|size| < 2**127, index < 2**128, / 1e18), so the fields never overlap
    keys: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = []
    marks: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = []
    shorts: uint256 = 0
    held: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = self._held_series(account)
    for series_id: uint256 in held:
        series: Series = self._series_of(series_id)
        if series.settlement_price != 0 or block.timestamp >= series.expiry:
            continue
        size: int256 = self._position(account, series_id).size
        index: uint256 = prices[series.price_id]
        assert index != 0, "options: no valid price"
        key: uint256 = LIQ_PRESENT | (255 - series_id)
        if size < 0:
            key |= LIQ_SHORT | (self._short_mm(series, convert(-size, uint256), index, params) << 8)
            shorts += 1
        keys.append(key)
        marks.append(0)
    if shorts < constants.MAX_LIQUIDATION_SERIES:
        # some longs are moved: rank them by MM, which needs their mark (kept for the move)
        for i: uint256 in range(len(keys), bound=constants.MAX_ACCOUNT_SERIES):
            if keys[i] & LIQ_SHORT == 0:
                series_id: uint256 = 255 - (keys[i] & 255)
                series: Series = self._series_of(series_id)
                mark: uint256 = 0
                value: int256 = 0
                im: uint256 = 0
                mm: uint256 = 0
                mark, value, im, mm = self._position_margin(series, self._position(account, series_id), prices, params, self._vol(series))
                keys[i] |= mm << 8
                marks[i] = mark

    ids: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES] = []
    subset_marks: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES] = []
    subset_mm: uint256 = 0
    gross: uint256 = 0
    for n: uint256 in range(constants.MAX_LIQUIDATION_SERIES):
        best: uint256 = 0
        at: uint256 = 0
        for i: uint256 in range(len(keys), bound=constants.MAX_ACCOUNT_SERIES):
            if keys[i] > best:
                best = keys[i]
                at = i
        if best == 0:
            break
        keys[at] = 0
        series_id: uint256 = 255 - (best & 255)
        series: Series = self._series_of(series_id)
        position: OptionPosition = self._position(account, series_id)
        mark: uint256 = marks[at]
        if best & LIQ_SHORT != 0:
            value: int256 = 0
            im: uint256 = 0
            mm: uint256 = 0
            mark, value, im, mm = self._position_margin(series, position, prices, params, self._vol(series))
            subset_mm += mm
        else:
            subset_mm += (best >> 8) & LIQ_MM_MASK
        ids.append(series_id)
        subset_marks.append(mark)
        gross += wad._mul_div_up(convert(abs(position.size), uint256), mark, constants.WAD)
    return ids, subset_marks, subset_mm, gross


@internal
def _move_options(account: address, liquidator: address, fraction: uint256, ids: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES], marks: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES]) -> uint256:
    """
    @dev Move ceil(fraction * |size|) of the account's position in each series of `ids` to the
         liquidator at its margin mark (`marks`, from `_liquidation_subset` in this
         transaction: the index, vol, time and risk parameters are those of the call, and a
         position keeps its side); returns the value moved, sum of ceil(|moved| * mark / 1e18).
    """
    moved_value: uint256 = 0
    # realized PnL summed per account and settled once (`_fill`): cash moves add up exactly
    account_realized: int256 = 0
    liquidator_realized: int256 = 0
    for i: uint256 in range(len(ids), bound=constants.MAX_LIQUIDATION_SERIES):
        series_id: uint256 = ids[i]
        size: int256 = self._position(account, series_id).size
        amount: uint256 = min(wad._mul_div_up(convert(abs(size), uint256), fraction, constants.WAD), convert(abs(size), uint256))
        # a series the liquidator has no room for is left to another liquidator: an account
        # spread over every series cannot make liquidation fail for one that holds others
        if amount == 0 or (self._position(liquidator, series_id).size == 0 and self._held_count(liquidator) == constants.MAX_ACCOUNT_SERIES):
            continue
        moved: int256 = convert(amount, int256)
        if size < 0:
            moved = -moved
        mark: uint256 = marks[i]
        account_realized += self._fill(account, series_id, -moved, mark)
        liquidator_realized += self._fill(liquidator, series_id, moved, mark)
        moved_value += wad._mul_div_up(amount, mark, constants.WAD)
        log OptionLiquidated(account=account, liquidator=liquidator, series=series_id, size=moved, price=mark)
    if account_realized != 0:
        extcall IVault(VAULT).settle_cash(account, account_realized)
    if liquidator_realized != 0:
        extcall IVault(VAULT).settle_cash(liquidator, liquidator_realized)
    return moved_value


@internal
def _liquidate_round(account: address, liquidator: address, fraction: uint256, ids: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES], marks: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES], equity: int256, penalty_rate: uint256) -> (uint256, uint256):
    """
    @dev Move `fraction` of each position of the subset (`_move_options`) and charge the
         penalty on the value moved, never above the account's equity `equity` (its margin
         summary in this state: moving at mark leaves it unchanged up to rounding). Returns
         (value moved, penalty charged).
    """
    moved: uint256 = self._move_options(account, liquidator, fraction, ids, marks)
    penalty: uint256 = min(wad._mul_div_up(moved, penalty_rate, constants.WAD), convert(max(equity, 0), uint256))
    if penalty != 0:
        share: uint256 = penalty * staticcall IEngine(ENGINE).liquidator_share() // constants.WAD
        extcall IVault(VAULT).charge_penalty(account, liquidator, penalty, share)
    return moved, penalty


@external
def liquidate_options(account: address) -> uint256:
    """
    @notice Take over option positions of an account the engine finds liquidatable (equity <
            maintenance margin). One call moves at most `constants.MAX_LIQUIDATION_SERIES`
            (8) of its live series, the subset S the protocol ranks (`_liquidation_subset`):
            every short before any long, then by the position's maintenance margin (MM),
            largest first, then by series id. A fraction f of each position in S moves to the
            caller at mark: the smallest that brings health to the engine's
            `liquidation_target` t, from S's MM M_S and gross value G_S (moving f lowers MM by
            f * M_S and equity by penalty * f * G_S):
                f = ceil((ceil(t * MM) - equity) / (t * M_S - penalty * G_S)), at most 1,
            and f = 1 when the denominator is not positive. The engine's `liquidation_penalty`
            on the value moved (sum of |moved| * mark) is charged to the account, never above
            its equity, `liquidator_share` of it to the caller and the rest to the insurance
            fund. Positions in settled series are realized first. If the partial move lowered
            the account's health factor and it still holds positions, the rest of S moves too
            (f = 1 on S; series outside S stay). An account with more live series than the
            bound needs several calls; each is permissionless and judged afresh. The caller
            must meet its own initial margin afterwards. Perpetuals and futures are the
            engine's (`MarginEngine.liquidate`), which also writes off any debt once no option
            is left.
    @dev Why a bound and why this order: moving every series in one call cost 3.77M gas for a
         maximal account (32 series), above the 3M a single call may need (docs/benchmarks.md).
         Which series a bounded call moves must be neither the account's (it orders its own
         list) nor the liquidator's choice, or a coalition strips its hedges through a friendly
         liquidator and leaves naked shorts whose loss lands on the insurance fund
         (docs/threat-model.md). Shorts first, those that release the most margin first, is
         the regular-margin option liquidation of centralized venues (Binance options, as
         documented by Pi42: "all Short Options positions are liquidated next, prioritizing
         those that release the most margin"); Deribit likewise liquidates "incrementally ...
         in small steps". A long's MM here is (1 - long_mm_haircut) of its value, so ranking
         by MM alone would let a deep in-the-money long hedge outrank the shorts it hedges.
         Reverts "options: self liquidation", "options: position opened this block" (the
         account grew an option position in this block: retry in the next),
         "options: account not liquidatable",
         "options: nothing to liquidate" (no live option position but worthless longs),
         "options: liquidator below IM", or an oracle error. Series the caller has no free
         slot for are left for another liquidator (an account spread over every series cannot
         block one that holds others). Without a fresh vol the positions move at the
         conservative margin marks (long at intrinsic, short at intrinsic plus the short
         charge), which favours the caller.
    @param account The account to liquidate.
    @return The value moved, WAD USD (sum of |size| * mark).
    """
    assert account != msg.sender, "options: self liquidation"
    assert self.opened_block[account] != block.number, "options: position opened this block"
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = self._index_prices()
    self._settle_account(account)
    judged: types.MarginSummary = self._summary(account)
    assert judged.equity < convert(judged.maintenance_margin, int256), "options: account not liquidatable"
    # an attestation decides whether to liquidate; how much is judged on the standard margin
    # (without an attestor the two are the same summary: not computed twice)
    self.position_version[account] += 1
    before: types.MarginSummary = judged
    if staticcall IEngine(ENGINE).health_attestor() != empty(address):
        before = self._summary(account)

    ids: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES] = []
    marks: DynArray[uint256, constants.MAX_LIQUIDATION_SERIES] = []
    subset_mm: uint256 = 0
    gross: uint256 = 0
    ids, marks, subset_mm, gross = self._liquidation_subset(account, prices)
    # worthless longs (no value, no requirement) are not worth moving; a short always has MM,
    # and a long has MM exactly when it has value, so S is worthless only if the book is
    assert subset_mm != 0 or gross != 0, "options: nothing to liquidate"
    penalty_rate: uint256 = staticcall IEngine(ENGINE).liquidation_penalty()
    target: uint256 = staticcall IEngine(ENGINE).liquidation_target()
    fraction: uint256 = constants.WAD
    denominator: int256 = convert(subset_mm * target // constants.WAD, int256) - convert(gross * penalty_rate // constants.WAD, int256)
    if denominator > 0:
        deficit: int256 = convert(wad._mul_div_up(before.maintenance_margin, target, constants.WAD), int256) - before.equity
        if deficit > 0:
            fraction = min(constants.WAD, wad._mul_div_up(convert(deficit, uint256), constants.WAD, convert(denominator, uint256)))

    moved: uint256 = 0
    penalty: uint256 = 0
    moved, penalty = self._liquidate_round(account, msg.sender, fraction, ids, marks, before.equity, penalty_rate)
    after: types.MarginSummary = self._summary(account)
    if fraction < constants.WAD and after.health_factor < before.health_factor and self._held_count(account) != 0:
        # the "full" round: the rest of the same subset, at the same marks (with f = 1 nothing
        # of it is left: a second round would move nothing and value the book once more)
        more_moved: uint256 = 0
        more_penalty: uint256 = 0
        more_moved, more_penalty = self._liquidate_round(account, msg.sender, constants.WAD, ids, marks, after.equity, penalty_rate)
        moved += more_moved
        penalty += more_penalty
        after = self._summary(account)
    liquidator: types.MarginSummary = self._summary(msg.sender)
    assert liquidator.equity >= convert(liquidator.initial_margin, int256), "options: liquidator below IM"
    log OptionsLiquidation(
        account=account,
        liquidator=msg.sender,
        value_moved=moved,
        penalty=penalty,
        health_before=judged.health_factor,
        health_after=after.health_factor,
    )
    return moved


# ---------------------------------------------------------------- views


@external
@view
def has_positions(account: address) -> bool:
    """
    @notice Whether the account holds any option position (settled but unrealized included).
    """
    return self._held_count(account) != 0


@external
@view
def risk_params_now() -> RiskParams:
    """
    @notice The risk parameters in force now; see `set_risk_params`.
    """
    return self._risk_params_now()


@external
@view
def option_states(account: address) -> DynArray[types.OptionState, constants.MAX_ACCOUNT_SERIES]:
    """
    @notice Every option position of an account with what it adds to margin at current index
            prices: (series, size WAD, entry premium WAD, mark WAD, value = unrealized PnL WAD,
            IM WAD, MM WAD); `margin_contribution` is the sum of value, IM and MM. A settled
            series shows its settlement value as mark and no requirement. Reverts "options: no
            valid price" like `margin_contribution`.
    """
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = self._index_prices()
    params: RiskParams = self._risk_params_now()
    out: DynArray[types.OptionState, constants.MAX_ACCOUNT_SERIES] = []
    held: DynArray[uint256, constants.MAX_ACCOUNT_SERIES] = self._held_series(account)
    for series_id: uint256 in held:
        series: Series = self._series_of(series_id)
        position: OptionPosition = self._position(account, series_id)
        state: types.OptionState = types.OptionState(
            series=series_id, size=position.size, entry_price=position.entry_price, mark=0, value=0, initial_margin=0, maintenance_margin=0
        )
        state.mark, state.value, state.initial_margin, state.maintenance_margin = self._position_margin(series, position, prices, params, self._vol(series))
        out.append(state)
    return out


@external
@view
def series_states() -> DynArray[SeriesState, constants.MAX_SERIES]:
    """
    @notice Every series with its open interest, the index price, whether its vol is fresh,
            the smile vol at its strike (0 without a vol) and its mark (Black-76 with a fresh
            vol, else the intrinsic value; the settlement value once settled), all WAD.
            Never reverts for a missing price (index 0, mark 0) or vol.
    """
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = self._index_prices()
    out: DynArray[SeriesState, constants.MAX_SERIES] = []
    for series_id: uint256 in range(self.series_count, bound=constants.MAX_SERIES):
        series: Series = self._series_of(series_id)
        vol: SeriesVol = self._vol(series)
        state: SeriesState = SeriesState(
            underlying=series.underlying,
            price_id=series.price_id,
            strike=series.strike,
            expiry=series.expiry,
            is_call=series.is_call,
            settlement_price=series.settlement_price,
            open_interest=self.open_interest[series_id],
            index_price=prices[series.price_id],
            vol_fresh=vol.fresh,
            sigma=0,
            mark=0,
        )
        if series.settlement_price != 0:
            state.mark = self._intrinsic(series, series.settlement_price)
        elif state.index_price != 0:
            if state.vol_fresh:
                state.sigma = self._smile_vol(series, state.index_price, vol)
                state.mark = self._model_value(series, state.index_price, state.sigma)
            else:
                state.mark = self._intrinsic(series, state.index_price)
        out.append(state)
    return out
