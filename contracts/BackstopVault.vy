# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Backstop vault: a depositor-owned liquidator
@notice A vault in the settlement asset whose depositors earn the liquidation penalties it
        collects and carry the risk of the positions it takes over (Hyperliquid's liquidator
        vault, Drift's liquidator that inherits positions then de-risks them).
        - The vault is an account like any other: its margin is `MarginEngine.margin_summary`
          of this contract (cash, collateral at its haircut value, unrealized PnL at mark); it
          must meet initial margin after every takeover, and, stricter, its initial margin may
          use at most
          `max_margin_usage` of its equity, and its position in a market at most
          `max_exposure[market]` (0 = no cap of its own). A takeover beyond either reverts
          "backstop: full": liquidators then take positions themselves.
        - `liquidate(account)`: anyone triggers a liquidation routed to the vault. The vault
          takes the positions; the caller receives `caller_fee_share` of what the vault gained
          from the call (its penalty share and any collateral discount: the equity change plus
          any deficit of the account the waterfall took from the vault in the call, which it
          would have paid whoever liquidated), so a keeper needs no inventory and little
          capital. The caller is paid from the gain, never from depositors, and a takeover
          that would lower the vault's equity by more than that deficit reverts: a routed
          liquidation lowers the share price by no more than the deficit it covered.
        - Collateral a liquidation sells to the vault (a bankrupt account's, at the index less
          min(penalty, (1 - haircut) / 2)) counts at that sale price, not at its haircut value:
          buying it neither raises nor lowers the share price, so such a liquidation routes too.
          `buy_collateral` sells it in a Dutch auction from the index down to the sale price
          over `auction_time`, never below the price it is counted at.
        - `unwind`: anyone takes the vault's positions off at the index price less a discount
          (a Dutch auction, as Derive auctions a portfolio): it grows linearly from 0 to
          min(`auction_discount`, the engine's `max_price_deviation`) over `auction_time` from
          the position's start: a takeover that grows it moves the start towards now by the
          share of the position that is new. The discounts are paid from
          the liquidation gains the vault kept (`discount_budget`, per market, shared equally by
          the units of its position there): depositors never pay out in discounts more than the
          takeovers that built a position paid them, and a coalition that is liquidated into
          the vault and buys the position back at a discount gets back at most what its
          liquidation paid the vault, plus the share of older units' budget its units dilute
          (docs/threat-model.md, "Backstop vault").
        - Shares (ERC-20, ERC-4626 accounting): totalAssets = max(equity, 0) in token units,
          equity being the margin equity plus the collateral's markup to its sale price
          (`CollateralVault.sale_markup`),
          rounded down; convertToShares(a) = a * (supply + 10**6) / (totalAssets + 1) and
          convertToAssets(s) = s * (totalAssets + 1) / (supply + 10**6), both rounded down
          (OpenZeppelin ERC4626 virtual shares: a donation cannot inflate the share price
          enough to round a later deposit to nothing; rounding against the depositor).
        - Deposits and redemptions are requests (the ERC-7540 pattern) that complete in the
          hour after `request_delay` (`CLAIM_WINDOW`; later they can only be cancelled), each
          at the worse of its price at request and at completion (deposit: fewer shares;
          redemption: fewer assets). Nobody can join just before a known gain or leave just
          before a known loss; what a redemption forgoes stays with the remaining depositors.
          Requested deposits wait idle in this contract, outside the vault's equity; a request
          can be cancelled at any time (tokens or shares back, nothing else changes), and
          anyone can complete a ready one for its owner (a keeper can, as soon as it is ready),
          so a matured request is no option its owner is sure to hold.
@dev Token amounts (assets) are settlement-token units; equity, gains and the discount budget
     are WAD USD. Reverts with "backstop: ..." reasons stated per function, and passes on the
     engine's, the collateral vault's and the matching contract's.
@custom:security Trusts the engine, collateral vault, oracle and matching contract it is
     deployed with. Guarantees: shares are minted and burned only at the worse of two prices
     one `request_delay` apart; the caller fee is at most half of the vault's gain on the
     call; auction discounts in a market never exceed the gains kept there; collateral is
     never sold below the price it is counted at; the risk admin's
     parameters are bounded on-chain.
@license MIT
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed
import lib.roles as roles
import lib.constants as constants
import lib.types as types
import lib.wad as wad
import lib.share_token as shares

initializes: roles
initializes: shares

exports: (
    roles.admin,
    roles.pending_admin,
    roles.risk_admin,
    roles.propose_admin,
    roles.accept_admin,
    roles.set_risk_admin,
    constants.__version__,
    shares.name,
    shares.symbol,
    shares.decimals,
    shares.totalSupply,
    shares.balanceOf,
    shares.allowance,
    shares.transfer,
    shares.transferFrom,
    shares.approve,
)


interface IEngine:
    def liquidate(account: address) -> uint256: nonpayable
    def margin_summary(account: address) -> types.MarginSummary: view
    def open_markets(account: address) -> DynArray[uint256, constants.MAX_ACCOUNT_MARKETS]: view
    def positions(account: address, market_id: uint256) -> types.Position: view
    def markets(market_id: uint256) -> types.Market: view
    def underlyings(underlying: uint256) -> types.Underlying: view
    def max_price_deviation() -> uint256: view
    def matching() -> address: view
    def VAULT() -> address: view
    def ORACLE() -> address: view


interface IVault:
    def backstop_paid() -> uint256: view
    def sale_markup(account: address) -> uint256: view
    def sale_price(asset_id: uint256) -> (uint256, uint256): view
    def collateral_balances(account: address) -> DynArray[uint256, constants.MAX_ASSETS]: view
    def balances(account: address, asset_id: uint256) -> uint256: view
    def assets(asset_id: uint256) -> types.Asset: view
    def deposit(token: address, amount: uint256): nonpayable
    def withdraw_to(token: address, amount: uint256, receiver: address): nonpayable
    def SETTLEMENT_TOKEN() -> address: view
    def SETTLEMENT_SCALE() -> uint256: view


interface IOracle:
    def index_price(price_id: uint256) -> uint256: view


interface IMatching:
    def match_orders(maker: types.Order, maker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH], taker: types.Order, taker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH]): nonpayable


# @dev A pending deposit (amount: token units, quoted: shares at the request's price) or
#      redemption (amount: shares, quoted: token units at the request's price).
struct Request:
    amount: uint256
    quoted: uint256
    ready_at: uint256


ENGINE: public(immutable(address))
COLLATERAL_VAULT: public(immutable(address))
ORACLE: public(immutable(address))
# @dev The settlement token (ERC-4626 `asset`) and 10**(18 - its decimals).
ASSET: immutable(address)
SCALE: immutable(uint256)

# @dev Virtual shares (OpenZeppelin ERC4626 `_decimalsOffset` = 6) and the virtual asset unit.
DECIMALS_OFFSET: constant(uint8) = 6
VIRTUAL_SHARES: constant(uint256) = 10**6

# @dev On-chain bounds of the risk admin's parameters.
MAX_CALLER_FEE_SHARE: constant(uint256) = 5 * 10**17
MIN_MARGIN_USAGE: constant(uint256) = 5 * 10**16
MAX_MARGIN_USAGE: constant(uint256) = 9 * 10**17
MAX_AUCTION_DISCOUNT: constant(uint256) = 10**17
MIN_AUCTION_TIME: constant(uint256) = 60
MAX_AUCTION_TIME: constant(uint256) = 7 * 86400
MIN_REQUEST_DELAY: constant(uint256) = 3600
MAX_REQUEST_DELAY: constant(uint256) = 30 * 86400
# @dev A request can be completed only in the hour after it is ready: a matured request kept
#      open would let its owner leave at a moment of their choosing, just before a known loss.
CLAIM_WINDOW: constant(uint256) = 3600

caller_fee_share: public(uint256)
max_margin_usage: public(uint256)
auction_discount: public(uint256)
auction_time: public(uint256)
request_delay: public(uint256)
max_exposure: public(HashMap[uint256, uint256])

# @dev Per market: WAD USD of liquidation gains kept that the vault's position there may still
#      pay out as auction discounts, each unit carrying an equal share.
discount_budget: public(HashMap[uint256, uint256])
# @dev Per market: when the vault's position last grew (the auction clock), and the position
#      as last recorded (WAD units, signed).
auction_start: public(HashMap[uint256, uint256])
recorded_position: public(HashMap[uint256, int256])
# @dev Per collateral asset: when the vault's balance of it last grew (the collateral auction
#      clock, moved as `auction_start` is).
collateral_start: public(HashMap[uint256, uint256])
# @dev Token units of requested deposits held idle here.
pending_deposits: public(uint256)
deposit_requests: public(HashMap[address, Request])
redeem_requests: public(HashMap[address, Request])
# @dev The vault's next order nonce at the matching contract (it sends its own orders).
_nonce: uint256


event BackstopParamsSet:
    caller_fee_share: uint256
    max_margin_usage: uint256
    auction_discount: uint256
    auction_time: uint256
    request_delay: uint256


event MaxExposureSet:
    market: indexed(uint256)
    size: uint256


event DepositRequested:
    owner: indexed(address)
    assets: uint256
    shares: uint256
    ready_at: uint256


event DepositClaimed:
    owner: indexed(address)
    assets: uint256
    shares: uint256


event DepositCancelled:
    owner: indexed(address)
    assets: uint256


event RedeemCancelled:
    owner: indexed(address)
    shares: uint256


event RedeemRequested:
    owner: indexed(address)
    shares: uint256
    assets: uint256
    ready_at: uint256


event RedeemClaimed:
    owner: indexed(address)
    shares: uint256
    assets: uint256


event BackstopLiquidation:
    account: indexed(address)
    caller: indexed(address)
    notional: uint256
    gain: int256
    fee: uint256


event CollateralSold:
    asset_id: indexed(uint256)
    buyer: indexed(address)
    amount: uint256
    price: uint256
    payment: uint256


event Unwound:
    market: indexed(uint256)
    taker: indexed(address)
    size: int256
    price: uint256
    index_price: uint256
    discount: uint256


@deploy
def __init__(admin_: address, engine: address, caller_fee_share_: uint256, max_margin_usage_: uint256, auction_discount_: uint256, auction_time_: uint256, request_delay_: uint256):
    """
    @param admin_ Admin and initial risk admin (lib/roles.vy).
    @param engine The MarginEngine; the collateral vault and oracle are the engine's.
    @param caller_fee_share_ ... request_delay_ As `set_params`.
    """
    roles.__init__(admin_)
    ENGINE = engine
    COLLATERAL_VAULT = staticcall IEngine(engine).VAULT()
    ORACLE = staticcall IEngine(engine).ORACLE()
    ASSET = staticcall IVault(COLLATERAL_VAULT).SETTLEMENT_TOKEN()
    SCALE = staticcall IVault(COLLATERAL_VAULT).SETTLEMENT_SCALE()
    shares.__init__("Backstop vault share", "bvUSD", staticcall IERC20Detailed(ASSET).decimals() + DECIMALS_OFFSET)
    self._set_params(caller_fee_share_, max_margin_usage_, auction_discount_, auction_time_, request_delay_)


# ---------------------------------------------------------------- parameters


@internal
def _set_params(caller_fee_share_: uint256, max_margin_usage_: uint256, auction_discount_: uint256, auction_time_: uint256, request_delay_: uint256):
    assert caller_fee_share_ <= MAX_CALLER_FEE_SHARE, "backstop: caller fee share out of range"
    assert max_margin_usage_ >= MIN_MARGIN_USAGE and max_margin_usage_ <= MAX_MARGIN_USAGE, "backstop: margin usage out of range"
    assert auction_discount_ <= MAX_AUCTION_DISCOUNT, "backstop: auction discount out of range"
    assert auction_time_ >= MIN_AUCTION_TIME and auction_time_ <= MAX_AUCTION_TIME, "backstop: auction time out of range"
    assert request_delay_ >= MIN_REQUEST_DELAY and request_delay_ <= MAX_REQUEST_DELAY, "backstop: request delay out of range"
    self.caller_fee_share = caller_fee_share_
    self.max_margin_usage = max_margin_usage_
    self.auction_discount = auction_discount_
    self.auction_time = auction_time_
    self.request_delay = request_delay_
    log BackstopParamsSet(caller_fee_share=caller_fee_share_, max_margin_usage=max_margin_usage_, auction_discount=auction_discount_, auction_time=auction_time_, request_delay=request_delay_)


@external
def set_params(caller_fee_share_: uint256, max_margin_usage_: uint256, auction_discount_: uint256, auction_time_: uint256, request_delay_: uint256):
    """
    @notice Change the vault's risk parameters (risk admin). A new `request_delay` applies to
            requests made after it.
    @param caller_fee_share_ Share of the vault's gain paid to a liquidation's caller, WAD, <= 0.5.
    @param max_margin_usage_ Largest initial margin / equity after a takeover, WAD, in [0.05, 0.9].
    @param auction_discount_ Largest unwind discount off the index, WAD, <= 0.1 (and never
           above the engine's `max_price_deviation`).
    @param auction_time_ Seconds for the discount to grow to its largest, in [60, 7 days].
    @param request_delay_ Seconds from a deposit or redemption request to its completion, in
           [1 hour, 30 days].
    @dev Reverts "roles: not risk admin", "backstop: ... out of range".
    """
    roles._check_risk_admin()
    self._set_params(caller_fee_share_, max_margin_usage_, auction_discount_, auction_time_, request_delay_)


@external
def set_max_exposure(market_id: uint256, size: uint256):
    """
    @notice Cap the vault's position in a market (risk admin; WAD units of the underlying,
            0 = no cap of the vault's own).
    """
    roles._check_risk_admin()
    self.max_exposure[market_id] = size
    log MaxExposureSet(market=market_id, size=size)


# ---------------------------------------------------------------- share accounting


@internal
@view
def _total_assets() -> uint256:
    equity: int256 = self._equity(staticcall IEngine(ENGINE).margin_summary(self))
    if equity <= 0:
        return 0
    return convert(equity, uint256) // SCALE


@internal
@view
def _equity(summary: types.MarginSummary) -> int256:
    """
    @dev The depositors' equity, WAD USD: the engine's (collateral at its haircut value) plus
         the collateral's markup to the liquidation sale price (`CollateralVault.sale_markup`),
         the price the vault paid for it and never sells it below (`buy_collateral`).
    """
    return summary.equity + convert(staticcall IVault(COLLATERAL_VAULT).sale_markup(self), int256)


@internal
@pure
def _to_shares(assets: uint256, total: uint256, supply: uint256) -> uint256:
    return assets * (supply + VIRTUAL_SHARES) // (total + 1)


@internal
@pure
def _to_assets(amount: uint256, total: uint256, supply: uint256) -> uint256:
    return amount * (total + 1) // (supply + VIRTUAL_SHARES)


@external
@view
def asset() -> address:
    """
    @notice The settlement token (ERC-4626).
    """
    return ASSET


@external
@view
def totalAssets() -> uint256:
    """
    @notice The vault's equity in settlement-token units, rounded down, 0 when not positive
            (ERC-4626). Requested deposits are not part of it.
    """
    return self._total_assets()


@external
@view
def convertToShares(assets: uint256) -> uint256:
    """
    @notice Shares `assets` token units buy at the current price, rounded down (ERC-4626).
    """
    return self._to_shares(assets, self._total_assets(), shares.totalSupply)


@external
@view
def convertToAssets(amount: uint256) -> uint256:
    """
    @notice Token units `amount` shares are worth at the current price, rounded down (ERC-4626).
    """
    return self._to_assets(amount, self._total_assets(), shares.totalSupply)


@internal
@view
def _solvent_totals() -> (uint256, uint256):
    """
    @dev (totalAssets, totalSupply); reverts "backstop: no equity" when shares exist and the
         vault's equity is not positive (a deposit would only fill the hole).
    """
    total: uint256 = self._total_assets()
    supply: uint256 = shares.totalSupply
    assert total != 0 or supply == 0, "backstop: no equity"
    return total, supply


# ---------------------------------------------------------------- deposits and redemptions


@internal
@view
def _check_claimable(request: Request):
    assert request.amount != 0, "backstop: no request"
    assert block.timestamp >= request.ready_at, "backstop: request not ready"
    assert block.timestamp <= request.ready_at + CLAIM_WINDOW, "backstop: request expired"


@external
@nonreentrant
def cancel_deposit() -> uint256:
    """
    @notice Withdraw the caller's deposit request: its tokens go back to the caller.
    @dev Reverts "backstop: no request".
    @return Token units returned.
    """
    amount: uint256 = self.deposit_requests[msg.sender].amount
    assert amount != 0, "backstop: no request"
    self.deposit_requests[msg.sender] = empty(Request)
    self.pending_deposits -= amount
    assert extcall IERC20(ASSET).transfer(msg.sender, amount, default_return_value=True), "backstop: transfer failed"
    log DepositCancelled(owner=msg.sender, assets=amount)
    return amount


@external
@nonreentrant
def cancel_redeem() -> uint256:
    """
    @notice Withdraw the caller's redemption request: its locked shares go back to the caller.
    @dev Reverts "backstop: no request".
    @return Shares returned.
    """
    amount: uint256 = self.redeem_requests[msg.sender].amount
    assert amount != 0, "backstop: no request"
    self.redeem_requests[msg.sender] = empty(Request)
    shares._transfer(self, msg.sender, amount)
    log RedeemCancelled(owner=msg.sender, shares=amount)
    return amount


@external
@nonreentrant
def request_deposit(assets: uint256) -> uint256:
    """
    @notice Pay `assets` token units in now; they become shares after `request_delay`
            (`claim_deposit`) at the worse of the price now and then.
    @dev Reverts "backstop: zero amount", "backstop: request pending" (one at a time),
         "backstop: no equity", "backstop: zero shares", or the token's transfer error.
    @return Shares the deposit would buy at today's price (an upper bound of what it gets).
    """
    assert assets > 0, "backstop: zero amount"
    assert self.deposit_requests[msg.sender].amount == 0, "backstop: request pending"
    total: uint256 = 0
    supply: uint256 = 0
    total, supply = self._solvent_totals()
    before: uint256 = staticcall IERC20(ASSET).balanceOf(self)
    assert extcall IERC20(ASSET).transferFrom(msg.sender, self, assets, default_return_value=True), "backstop: transfer failed"
    received: uint256 = staticcall IERC20(ASSET).balanceOf(self) - before
    quoted: uint256 = self._to_shares(received, total, supply)
    assert quoted != 0, "backstop: zero shares"
    ready_at: uint256 = block.timestamp + self.request_delay
    self.deposit_requests[msg.sender] = Request(amount=received, quoted=quoted, ready_at=ready_at)
    self.pending_deposits += received
    log DepositRequested(owner=msg.sender, assets=received, shares=quoted, ready_at=ready_at)
    return quoted


@external
@nonreentrant
def claim_deposit(owner: address) -> uint256:
    """
    @notice Complete `owner`'s deposit request (anyone may, once it is ready: a matured
            request is no option its owner can hold for a moment of its choosing): its tokens
            join the vault's margin account and `owner` receives min(shares quoted at the
            request, shares at today's price).
    @dev Reverts "backstop: no request", "backstop: request not ready", "backstop: request
         expired" (more than `CLAIM_WINDOW` after it was ready: cancel it), "backstop: no
         equity", "backstop: zero shares".
    @return Shares minted.
    """
    request: Request = self.deposit_requests[owner]
    self._check_claimable(request)
    total: uint256 = 0
    supply: uint256 = 0
    total, supply = self._solvent_totals()
    minted: uint256 = min(request.quoted, self._to_shares(request.amount, total, supply))
    assert minted != 0, "backstop: zero shares"
    self.deposit_requests[owner] = empty(Request)
    self.pending_deposits -= request.amount
    shares._mint(owner, minted)
    assert extcall IERC20(ASSET).approve(COLLATERAL_VAULT, request.amount, default_return_value=True), "backstop: approve failed"
    extcall IVault(COLLATERAL_VAULT).deposit(ASSET, request.amount)
    log DepositClaimed(owner=owner, assets=request.amount, shares=minted)
    return minted


@external
@nonreentrant
def request_redeem(amount: uint256) -> uint256:
    """
    @notice Lock `amount` of the caller's shares now; after `request_delay` (`claim_redeem`)
            they are burned for the worse of their value now and then.
    @dev Reverts "backstop: zero amount", "backstop: request pending", "shares: insufficient
         balance".
    @return Token units the shares are worth at today's price (an upper bound of the payout).
    """
    assert amount > 0, "backstop: zero amount"
    assert self.redeem_requests[msg.sender].amount == 0, "backstop: request pending"
    quoted: uint256 = self._to_assets(amount, self._total_assets(), shares.totalSupply)
    shares._transfer(msg.sender, self, amount)
    ready_at: uint256 = block.timestamp + self.request_delay
    self.redeem_requests[msg.sender] = Request(amount=amount, quoted=quoted, ready_at=ready_at)
    log RedeemRequested(owner=msg.sender, shares=amount, assets=quoted, ready_at=ready_at)
    return quoted


@external
@nonreentrant
def claim_redeem(owner: address) -> uint256:
    """
    @notice Complete `owner`'s redemption (anyone may, once it is ready): burn its locked
            shares and pay `owner` min(value quoted at the request, value at today's price)
            from the vault's margin
            account (a withdrawal: it must leave the vault meeting initial margin, and while
            the protocol has bad debt the collateral vault withholds its pro-rata share).
    @dev Reverts "backstop: no request", "backstop: request not ready", "backstop: request
         expired" (cancel it and request again), and the collateral
         vault's "vault: insufficient cash" (the vault's equity is in positions: retry after
         an unwind) or "vault: below initial margin"; the request then stays as it was.
    @return Token units debited from the vault's account.
    """
    request: Request = self.redeem_requests[owner]
    self._check_claimable(request)
    paid: uint256 = min(request.quoted, self._to_assets(request.amount, self._total_assets(), shares.totalSupply))
    self.redeem_requests[owner] = empty(Request)
    shares._burn(self, request.amount)
    if paid != 0:
        extcall IVault(COLLATERAL_VAULT).withdraw_to(ASSET, paid, owner)
    log RedeemClaimed(owner=owner, shares=request.amount, assets=paid)
    return paid


# ---------------------------------------------------------------- liquidation and unwinding


@external
@nonreentrant
def liquidate(account: address) -> uint256:
    """
    @notice Liquidate `account` (`MarginEngine.liquidate`) with the vault taking the positions;
            pay the caller `caller_fee_share` of the vault's gain from the call: its equity
            change plus any deficit of the account it covered in the call (the waterfall would
            have taken that from it whoever liquidated).
    @dev Reverts "backstop: full" (beyond `max_margin_usage` or a market's `max_exposure`),
         "backstop: takeover at a loss" (the call would lower the vault's equity, collateral
         at its sale price, by more than the deficit it covered: e.g. a sale paid in a
         depegged settlement token), and the engine's reverts ("engine: account not liquidatable", "engine: liquidator below
         IM", ...). The gain not paid out joins the discount budgets of the markets whose
         position grew, in proportion to the notional each grew by (`_record_inventory`).
    @param account The account to liquidate.
    @return The caller's fee, token units.
    """
    before: int256 = self._equity(staticcall IEngine(ENGINE).margin_summary(self))
    paid_before: uint256 = staticcall IVault(COLLATERAL_VAULT).backstop_paid()
    held_before: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS] = staticcall IEngine(ENGINE).open_markets(self)
    collateral_before: DynArray[uint256, constants.MAX_ASSETS] = staticcall IVault(COLLATERAL_VAULT).collateral_balances(self)
    notional: uint256 = extcall IEngine(ENGINE).liquidate(account)
    after: types.MarginSummary = staticcall IEngine(ENGINE).margin_summary(self)
    assert after.equity > 0, "backstop: full"
    assert after.initial_margin * constants.WAD <= self.max_margin_usage * convert(after.equity, uint256), "backstop: full"
    # a deficit the vault covered in this call (the waterfall) it would have paid whoever
    # liquidated: it is not the takeover's loss
    gain: int256 = self._equity(after) - before + convert(staticcall IVault(COLLATERAL_VAULT).backstop_paid() - paid_before, int256)
    # the depositors would pay for the takeover
    assert gain >= 0, "backstop: takeover at a loss"
    fee: uint256 = 0
    kept: uint256 = 0
    if gain > 0:
        fee = convert(gain, uint256) * self.caller_fee_share // constants.WAD // SCALE
        kept = convert(gain, uint256) - fee * SCALE
    self._record_inventory(held_before, kept)
    self._record_collateral(collateral_before)
    if fee != 0:
        extcall IVault(COLLATERAL_VAULT).withdraw_to(ASSET, fee, msg.sender)
    log BackstopLiquidation(account=account, caller=msg.sender, notional=notional, gain=gain, fee=fee)
    return fee


@internal
def _record_inventory(held_before: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS], kept: uint256):
    """
    @dev After a takeover: check the exposure caps and bring each market's recorded position,
         auction clock and discount budget up to date. A position that shrank keeps the budget
         share of the units left; one that closed (in this call or before it) or changed side
         keeps none and starts its clock again; one that grew moves its clock towards now
         (`_clock_after_growth`), and receives a share of `kept` (WAD USD) in proportion
         to the notional it grew by at the index. Reverts "backstop: full".
    """
    held: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS] = staticcall IEngine(ENGINE).open_markets(self)
    for market_id: uint256 in held_before:
        if market_id not in held:
            self.recorded_position[market_id] = 0
            self.discount_budget[market_id] = 0
    grown: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS] = []
    weights: DynArray[uint256, constants.MAX_ACCOUNT_MARKETS] = []
    total_weight: uint256 = 0
    for market_id: uint256 in held:
        size: int256 = (staticcall IEngine(ENGINE).positions(self, market_id)).size
        cap: uint256 = self.max_exposure[market_id]
        assert cap == 0 or convert(abs(size), uint256) <= cap, "backstop: full"
        recorded: int256 = self.recorded_position[market_id]
        if recorded != 0 and ((recorded > 0) != (size > 0) or market_id not in held_before):
            # the old units are gone (the position changed side, or it had closed before this
            # takeover other than by `unwind`: the vault was liquidated or deleveraged): none of
            # their budget stays
            self.discount_budget[market_id] = 0
            recorded = 0
        growth: uint256 = 0
        if abs(size) > abs(recorded):
            growth = convert(abs(size) - abs(recorded), uint256)
        elif abs(size) < abs(recorded):
            self.discount_budget[market_id] = self.discount_budget[market_id] * convert(abs(size), uint256) // convert(abs(recorded), uint256)
        self.recorded_position[market_id] = size
        if growth != 0:
            old: uint256 = convert(abs(recorded), uint256)
            self.auction_start[market_id] = self._clock_after_growth(self.auction_start[market_id], old, old + growth)
            weight: uint256 = growth * self._index_price(market_id) // constants.WAD
            grown.append(market_id)
            weights.append(weight)
            total_weight += weight
    if kept == 0 or total_weight == 0:
        return
    for i: uint256 in range(len(grown), bound=constants.MAX_ACCOUNT_MARKETS):
        self.discount_budget[grown[i]] += kept * weights[i] // total_weight


@internal
def _record_collateral(before: DynArray[uint256, constants.MAX_ASSETS]):
    """
    @dev After a takeover that bought collateral: the asset's auction clock moves as a
         position's does (`_clock_after_growth`) when its balance grew.
    """
    balances: DynArray[uint256, constants.MAX_ASSETS] = staticcall IVault(COLLATERAL_VAULT).collateral_balances(self)
    for asset_id: uint256 in range(len(balances), bound=constants.MAX_ASSETS):
        old: uint256 = 0
        if asset_id < len(before):
            old = before[asset_id]
        if balances[asset_id] > old:
            self.collateral_start[asset_id] = self._clock_after_growth(self.collateral_start[asset_id], old, balances[asset_id])


@internal
@view
def _clock_after_growth(start: uint256, old: uint256, new: uint256) -> uint256:
    """
    @dev An auction clock started at `start` for `old` units, once they grew to `new` > `old`:
         now - (now - start) * old / new, rounded towards now, so that the clock moves towards
         now by the share of the inventory that is new and a dust takeover cannot hold back
         the discount on a large older inventory.
    """
    return block.timestamp - (block.timestamp - start) * old // new


@internal
@view
def _index_price(market_id: uint256) -> uint256:
    market: types.Market = staticcall IEngine(ENGINE).markets(market_id)
    price_id: uint256 = (staticcall IEngine(ENGINE).underlyings(market.underlying)).price_id
    return staticcall IOracle(ORACLE).index_price(price_id)


@internal
@view
def _discount_rate(market_id: uint256) -> uint256:
    """
    @dev min(auction_discount, max_price_deviation) * min(elapsed, auction_time) / auction_time,
         WAD, elapsed since the vault's position in the market last grew.
    """
    top: uint256 = min(self.auction_discount, staticcall IEngine(ENGINE).max_price_deviation())
    duration: uint256 = self.auction_time
    elapsed: uint256 = min(block.timestamp - self.auction_start[market_id], duration)
    return top * elapsed // duration


@internal
@view
def _budget(market_id: uint256, inventory: uint256) -> uint256:
    """
    @dev The market's discount budget for an inventory of `inventory` units (WAD, absolute):
         when the position shrank other than by `unwind` (the vault was itself liquidated, or
         a takeover closed part of it), the units gone took their share.
    """
    budget: uint256 = self.discount_budget[market_id]
    recorded: uint256 = convert(abs(self.recorded_position[market_id]), uint256)
    if inventory < recorded:
        return budget * inventory // recorded
    return budget


@internal
@view
def _unwind_terms(market_id: uint256, size: uint256, position: int256) -> (uint256, uint256, uint256, uint256):
    """
    @dev (price, discount in total rounded up, index, budget the units carry), WAD USD, for
         `size` units of the vault's `position`: the vault sells its long at index - d, or buys
         back its short at index + d, per unit, where
             d = min(floor(index * discount rate), floor(carried / size)),
             carried = floor(budget * size / |position|)
         (each unit carries an equal share of the market's budget).
    """
    inventory: uint256 = convert(abs(position), uint256)
    carried: uint256 = self._budget(market_id, inventory) * size // inventory
    index: uint256 = self._index_price(market_id)
    per_unit: uint256 = min(index * self._discount_rate(market_id) // constants.WAD, carried * constants.WAD // size)
    discount: uint256 = wad._mul_div_up(per_unit, size, constants.WAD)
    if position > 0:
        return index - per_unit, discount, index, carried
    return index + per_unit, discount, index, carried


@external
@view
def unwind_price(market_id: uint256, size: uint256) -> (uint256, uint256, uint256):
    """
    @notice What `unwind` would charge now for `size` (WAD units, > 0) of the vault's position
            in `market_id`: (price per unit, discount in total, index price), WAD USD.
    @dev Reverts "backstop: no inventory" when the vault holds no position there, "backstop:
         zero amount", "backstop: more than the inventory".
    """
    position: int256 = (staticcall IEngine(ENGINE).positions(self, market_id)).size
    assert position != 0, "backstop: no inventory"
    assert size != 0, "backstop: zero amount"
    assert size <= convert(abs(position), uint256), "backstop: more than the inventory"
    price: uint256 = 0
    discount: uint256 = 0
    index: uint256 = 0
    carried: uint256 = 0
    price, discount, index, carried = self._unwind_terms(market_id, size, position)
    return price, discount, index


@external
@nonreentrant
def unwind(taker: types.Order, taker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH]) -> uint256:
    """
    @notice Take part of the vault's position in `taker.market` off it at the auction price
            (`unwind_price`): `taker` buys what the vault is long, or sells what it is short,
            through the matching contract (the vault's order is the maker, at the auction
            price; `taker.limit_price` must accept it). Permissionless: `taker_signature` is the
            taker's EIP-712 signature of its order (ERC-1271 for a contract). The budget the
            units carried leaves with them: what the discount did not use returns to the
            depositors.
    @dev Reverts "backstop: no inventory", "backstop: wrong side" (the taker would add to the
         vault's position), "backstop: more than the inventory", and the matching contract's
         and engine's reverts (limit, margin, caps, price band).
    @return The execution price, WAD USD.
    """
    market_id: uint256 = taker.market
    position: int256 = (staticcall IEngine(ENGINE).positions(self, market_id)).size
    assert position != 0, "backstop: no inventory"
    assert taker.size != 0 and (taker.size > 0) == (position > 0), "backstop: wrong side"
    size: uint256 = convert(abs(taker.size), uint256)
    inventory: uint256 = convert(abs(position), uint256)
    assert size <= inventory, "backstop: more than the inventory"
    price: uint256 = 0
    discount: uint256 = 0
    index: uint256 = 0
    carried: uint256 = 0
    price, discount, index, carried = self._unwind_terms(market_id, size, position)
    self.discount_budget[market_id] = self._budget(market_id, inventory) - carried
    self.recorded_position[market_id] = position - taker.size
    nonce: uint256 = self._nonce
    self._nonce = nonce + 1
    maker: types.Order = types.Order(account=self, market=market_id, size=-taker.size, limit_price=price, nonce=nonce, deadline=block.timestamp)
    extcall IMatching(staticcall IEngine(ENGINE).matching()).match_orders(maker, b"", taker, taker_signature)
    log Unwound(market=market_id, taker=taker.account, size=taker.size, price=price, index_price=index, discount=discount)
    return price


@internal
@view
def _collateral_price(asset_id: uint256) -> uint256:
    """
    @dev The collateral auction's price per whole token, WAD settlement-token units: from the
         index i down to the liquidation sale price s (`CollateralVault.sale_price`) over
         `auction_time` since the vault's balance last grew,
             price = i - floor((i - s) * min(elapsed, auction_time) / auction_time)
         so never below s, the price the vault values it at.
    """
    index: uint256 = 0
    sale: uint256 = 0
    index, sale = staticcall IVault(COLLATERAL_VAULT).sale_price(asset_id)
    duration: uint256 = self.auction_time
    elapsed: uint256 = min(block.timestamp - self.collateral_start[asset_id], duration)
    return index - (index - sale) * elapsed // duration


@external
@view
def collateral_price(asset_id: uint256) -> uint256:
    """
    @notice What `buy_collateral` charges now per whole token of collateral asset `asset_id`,
            WAD settlement-token units: a Dutch auction from the index price down to the
            liquidation sale price over `auction_time`.
    @dev Reverts "backstop: no inventory" when the vault holds none of it.
    """
    assert staticcall IVault(COLLATERAL_VAULT).balances(self, asset_id) != 0, "backstop: no inventory"
    return self._collateral_price(asset_id)


@external
@nonreentrant
def buy_collateral(asset_id: uint256, amount: uint256, max_price: uint256) -> uint256:
    """
    @notice Buy `amount` token units of the collateral the vault bought in liquidations, at
            the auction price (`collateral_price`), paying in the settlement token (the caller
            approves this contract). The vault's share price never falls from it: the vault
            values the collateral at the liquidation sale price, and sells at or above it.
    @dev Payment = ceil(amount * price / 10**decimals / SCALE) token units. Reverts "backstop:
         zero amount", "backstop: no inventory", "backstop: more than the inventory",
         "backstop: price above limit" (the auction price is above `max_price`), "backstop:
         transfer failed", and the collateral vault's reverts.
    @param asset_id The collateral vault's asset id.
    @param amount Token units of the asset.
    @param max_price The most the caller pays per whole token, WAD settlement-token units.
    @return The payment, settlement-token units.
    """
    assert amount != 0, "backstop: zero amount"
    held: uint256 = staticcall IVault(COLLATERAL_VAULT).balances(self, asset_id)
    assert held != 0, "backstop: no inventory"
    assert amount <= held, "backstop: more than the inventory"
    price: uint256 = self._collateral_price(asset_id)
    assert price <= max_price, "backstop: price above limit"
    asset: types.Asset = staticcall IVault(COLLATERAL_VAULT).assets(asset_id)
    payment: uint256 = wad._mul_div_up(amount, price, 10**asset.decimals * SCALE)
    assert extcall IERC20(ASSET).transferFrom(msg.sender, self, payment, default_return_value=True), "backstop: transfer failed"
    assert extcall IERC20(ASSET).approve(COLLATERAL_VAULT, payment, default_return_value=True), "backstop: approve failed"
    extcall IVault(COLLATERAL_VAULT).deposit(ASSET, payment)
    extcall IVault(COLLATERAL_VAULT).withdraw_to(asset.token, amount, msg.sender)
    log CollateralSold(asset_id=asset_id, buyer=msg.sender, amount=amount, price=price, payment=payment)
    return payment
