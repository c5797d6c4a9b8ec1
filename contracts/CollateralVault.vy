# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Collateral vault: custody, cash ledger and insurance fund
@notice Holds every token of the protocol. Each account has
        - `cash`: a signed WAD USD balance in the settlement asset (USDC). Deposits and
          withdrawals of the settlement token move it; realized PnL, funding and liquidation
          penalties move it between accounts. Negative cash is a debt backed by the account's
          other collateral.
        - collateral balances of listed assets (WETH, WBTC, ...), in each token's own decimals,
          valued at the index price times a haircut.
        Optionally (`set_settlement_price_id`), the settlement asset has its own USD price and
        cash is valued by the depeg rule of `_cash_value` (docs/threat-model.md, "Settlement-asset
        depeg"): positive cash at min(p, 1) less depeg_factor x (depeg_threshold - p) below the
        threshold, debt at max(p, 1); unset, cash counts 1:1 as USD.
        The insurance fund is WAD USD of settlement cash; it covers accounts left with negative
        cash and nothing else. What it cannot cover is taken from the backstop vault's cash
        (`set_backstop`, `contracts/BackstopVault.vy`), up to its equity above its initial
        margin: its depositors carry the loss. What neither covers is recorded as bad debt. Bad debt is
        then socialized pro rata over positive cash: while any is outstanding (the fund is
        empty by then), a withdrawal of cash pays out only the share
        1 - bad_debt / total positive cash of the amount debited, and the part withheld retires
        bad debt; money reaching the fund (deposits, penalties) retires bad debt first.
@dev Token amounts are converted to WAD exactly once, here. Credit equals what actually
     arrived (balance difference), so fee-on-transfer tokens are credited correctly; transfers
     accept tokens that return no data. A withdrawal asks the margin engine to confirm initial
     margin after the debit and before the transfer (checks, effects, interaction).
@custom:security Holds every token. Trusts the engine (set once) and the option market the admin
     names to move cash only as their rules allow, and the oracle for prices. Guarantees: a
     withdrawal leaves the account meeting initial margin (checked by the engine after the
     debit, before the transfer); credit is what arrived; cash never leaves an account below
     zero; losses beyond the insurance fund are recorded as bad debt, never hidden.
@license MIT
"""

from ethereum.ercs import IERC20
import lib.roles as roles
import lib.constants as constants
import lib.types as types
import lib.ramp as ramp
import lib.packing as packing

initializes: roles

exports: (
    roles.admin,
    roles.pending_admin,
    roles.risk_admin,
    roles.propose_admin,
    roles.accept_admin,
    roles.set_risk_admin,
    constants.__version__,
)


interface IOracle:
    def index_price(price_id: uint256) -> uint256: view
    def index_prices() -> DynArray[uint256, constants.MAX_PRICE_IDS]: view
    def index_prices_of(mask: uint256) -> DynArray[uint256, constants.MAX_PRICE_IDS]: view


interface IERC20Decimals:
    def decimals() -> uint8: view


interface IMarginEngine:
    def margin_summary(account: address) -> types.MarginSummary: view
    def health_attestor() -> address: view
    def liquidation_penalty() -> uint256: view


interface IOptionMarket:
    def has_positions(account: address) -> bool: view


# @dev Haircut bounds: a listed asset counts for at most 100% and at least 0% of its value.
MAX_HAIRCUT: constant(uint256) = 10**18
# @dev Depeg rule bounds (WAD). Derive v2 StandardManager.setDepegParameters allows a threshold
#      <= 1 and a factor <= 3 (mainnet config: threshold 0.99, factor 2); here the threshold
#      also has a floor so that governance can weaken the rule at most to (0.9, 0), where cash
#      still counts at min(p, 1).
MIN_DEPEG_THRESHOLD: constant(uint256) = 9 * 10**17
MAX_DEPEG_THRESHOLD: constant(uint256) = 10**18
MAX_DEPEG_FACTOR: constant(uint256) = 3 * 10**18
# @dev The settlement price must be within [0.5, 2] USD when its id is set: a USD stablecoin,
#      not e.g. the ETH price id (debt counts at max(p, 1)).
MIN_SETTLEMENT_PRICE: constant(uint256) = 5 * 10**17
MAX_SETTLEMENT_PRICE: constant(uint256) = 2 * 10**18


# The settings stored in `_settings`.
struct Settings:
    asset_count: uint256
    settlement_priced: bool
    settlement_price_id: uint256
    depeg_threshold: uint256
    depeg_factor: uint256


SETTLEMENT_TOKEN: public(immutable(address))
# @dev 10**(18 - settlement decimals): one token unit in WAD.
SETTLEMENT_SCALE: public(immutable(uint256))
ORACLE: public(immutable(address))

engine: public(address)
# @dev The settings every margin check reads, one word (`_settings_now`): the asset count in
#      bits 0-7, whether the settlement asset is priced in bit 8, its price id in bits 16-23,
#      the depeg threshold in bits 64-127 and factor in bits 128-191 (each far inside its
#      field by its setter's bounds: < MAX_ASSETS, < MAX_PRICE_IDS, <= 1e18, <= 3e18).
_settings: uint256
assets: public(HashMap[uint256, types.Asset])
# @dev token -> asset id + 1 (0 = not listed).
_asset_slot: HashMap[address, uint256]
# @dev Each account's cash and which assets it holds, one word (`cash`, `_held_assets`): cash
#      (WAD USD, negative = debt) as int128 in the low 128 bits (`lib/packing.vy`), and bit
#      128 + i set while its balance of asset i is not zero (`_set_balance`), so that a margin
#      check reads the balances it values and no other.
_accounts: HashMap[address, uint256]
balances: public(HashMap[address, HashMap[uint256, uint256]])
# @dev Settlement token units held for cash (accounts' deposits less withdrawals + fund).
settlement_total: public(uint256)
insurance_fund: public(uint256)
bad_debt: public(uint256)
# @dev Sum over accounts of max(cash, 0): the base over which bad debt is socialized.
total_positive_cash: public(uint256)
# @dev Second contract allowed to move cash (`settle_cash`, `charge_penalty`): the option market.
option_market: public(address)
# @dev The BackstopVault whose cash covers deficits after the insurance fund (zero = none), and
#      what it has paid so (WAD USD, only grows): it tells a takeover's gain from a deficit the
#      vault would have paid whoever liquidated.
backstop: public(address)
backstop_paid: public(uint256)
# @dev Withdrawals per account while a health attestor is wired; part of the position version
#      health attestations bind to.
withdrawal_count: public(HashMap[address, uint256])
# @dev The haircut in force when each asset's haircut last changed, and when: a cut phases in
#      from it (`lib/ramp.vy`); `assets` holds the target, `haircut_now` the one in force.
haircut_before: public(HashMap[uint256, uint256])
haircut_changed_at: public(HashMap[uint256, uint256])


event Deposit:
    account: indexed(address)
    sender: indexed(address)
    token: indexed(address)
    amount: uint256
    credited_wad: uint256


event Withdraw:
    account: indexed(address)
    receiver: indexed(address)
    token: indexed(address)
    amount: uint256


event AssetListed:
    asset_id: indexed(uint256)
    token: indexed(address)
    price_id: uint256
    haircut: uint256
    deposit_cap: uint256


event AssetParamsSet:
    asset_id: indexed(uint256)
    haircut: uint256
    deposit_cap: uint256


event EngineSet:
    engine: indexed(address)


event OptionMarketSet:
    previous: indexed(address)
    option_market: indexed(address)


event CashSettled:
    account: indexed(address)
    delta: int256


event CollateralTransferred:
    asset_id: indexed(uint256)
    sender: indexed(address)
    receiver: indexed(address)
    amount: uint256


event CollateralLiquidated:
    account: indexed(address)
    liquidator: indexed(address)
    asset_id: indexed(uint256)
    amount: uint256
    payment: uint256


event InsuranceFunded:
    sender: indexed(address)
    amount: uint256


event DeficitCovered:
    account: indexed(address)
    from_insurance: uint256
    from_backstop: uint256
    bad_debt: uint256


event BackstopSet:
    previous: indexed(address)
    backstop: indexed(address)


event BadDebtRetired:
    amount: uint256
    by_withdrawal: bool


event SettlementPriceIdSet:
    price_id: indexed(uint256)
    price: uint256


event DepegParamsSet:
    threshold: uint256
    factor: uint256


@deploy
def __init__(admin_: address, settlement_token: address, oracle: address):
    roles.__init__(admin_)
    decimals: uint256 = convert(staticcall IERC20Decimals(settlement_token).decimals(), uint256)
    assert decimals <= 18, "vault: decimals above 18"
    SETTLEMENT_TOKEN = settlement_token
    SETTLEMENT_SCALE = 10 ** (18 - decimals)
    ORACLE = oracle


# ---------------------------------------------------------------- governance


@external
def set_engine(engine_: address):
    """
    @notice Wire the margin engine, once (admin).
    @param engine_ The MarginEngine; the only caller allowed to move cash and collateral.
    """
    roles._check_admin()
    assert self.engine == empty(address), "vault: engine already set"
    assert engine_ != empty(address), "vault: zero engine"
    self.engine = engine_
    log EngineSet(engine=engine_)


@external
def set_backstop(backstop_: address):
    """
    @notice Name the backstop vault whose cash covers deficits after the insurance fund
            (admin); zero removes it.
    @dev Reverts "vault: not a backstop of this vault" unless `backstop_` answers
         `COLLATERAL_VAULT()` with this vault: an account that never agreed to it (an
         ordinary user's) cannot be named to pay others' deficits.
    @param backstop_ The BackstopVault, or zero.
    """
    roles._check_admin()
    if backstop_ != empty(address):
        # a contract without the getter (or an account without code) answers nothing
        ok: bool = False
        answer: Bytes[32] = b""
        ok, answer = raw_call(backstop_, method_id("COLLATERAL_VAULT()"), max_outsize=32, is_static_call=True, revert_on_failure=False)
        assert ok and len(answer) == 32 and convert(answer, uint256) == convert(self, uint256), "vault: not a backstop of this vault"
    log BackstopSet(previous=self.backstop, backstop=backstop_)
    self.backstop = backstop_


@external
def set_option_market(option_market_: address):
    """
    @notice Allow an option market to move cash (realized option PnL and liquidation penalties)
            like the engine (admin); zero revokes it.
    @param option_market_ The OptionMarket, or zero.
    """
    roles._check_admin()
    previous: address = self.option_market
    self.option_market = option_market_
    log OptionMarketSet(previous=previous, option_market=option_market_)


@external
def list_asset(token: address, price_id: uint256, haircut: uint256, deposit_cap: uint256) -> uint256:
    """
    @notice List a collateral asset (admin).
    @param token ERC20 with 0 to 18 decimals; not the settlement token; not already listed.
    @param price_id Oracle price id of the token (must price now).
    @param haircut WAD fraction of value counted as margin, <= 1e18.
    @param deposit_cap Maximum total deposits, in token units.
    @return The asset id.
    """
    roles._check_admin()
    assert token != SETTLEMENT_TOKEN, "vault: settlement token is cash"
    assert self._asset_slot[token] == 0, "vault: asset already listed"
    settings: Settings = self._settings_now()
    asset_id: uint256 = settings.asset_count
    assert asset_id < constants.MAX_ASSETS, "vault: too many assets"
    assert haircut <= MAX_HAIRCUT, "vault: haircut out of bounds"
    decimals: uint256 = convert(staticcall IERC20Decimals(token).decimals(), uint256)
    assert decimals <= 18, "vault: decimals above 18"
    assert staticcall IOracle(ORACLE).index_price(price_id) > 0, "vault: no price"
    self.assets[asset_id] = types.Asset(
        token=token, decimals=decimals, price_id=price_id, haircut=haircut, deposit_cap=deposit_cap, total=0
    )
    self._asset_slot[token] = asset_id + 1
    settings.asset_count = asset_id + 1
    self._store_settings(settings)
    log AssetListed(asset_id=asset_id, token=token, price_id=price_id, haircut=haircut, deposit_cap=deposit_cap)
    return asset_id


@external
def set_asset_params(asset_id: uint256, haircut: uint256, deposit_cap: uint256):
    """
    @notice Change an asset's haircut and deposit cap (risk admin), within bounds. A higher
            haircut applies at once; a lower one phases in linearly from the haircut in force
            over `constants.REQUIREMENT_RAMP` (7 days; `haircut_now`), so no account healthy when
            the change lands becomes liquidatable in that block.
    @param asset_id A listed asset.
    @param haircut WAD, <= 1e18.
    @param deposit_cap Token units; lowering it below current deposits only stops new ones.
    """
    roles._check_risk_admin()
    assert asset_id < self._settings_now().asset_count, "vault: unknown asset"
    assert haircut <= MAX_HAIRCUT, "vault: haircut out of bounds"
    self.haircut_before[asset_id] = self._haircut_now(asset_id, self.assets[asset_id].haircut)
    self.haircut_changed_at[asset_id] = block.timestamp
    self.assets[asset_id].haircut = haircut
    self.assets[asset_id].deposit_cap = deposit_cap
    log AssetParamsSet(asset_id=asset_id, haircut=haircut, deposit_cap=deposit_cap)


@external
def set_settlement_price_id(price_id: uint256):
    """
    @notice Give the settlement asset its own USD price (admin): from then on cash is valued by
            the depeg rule (see `margin_inputs`). It cannot be unset (that would count a
            depegged asset at par again); point the price id at other feeds instead.
    @param price_id Oracle price id of the settlement token, WAD USD per token; it must price
           now, within [0.5, 2] (a USD stablecoin).
    """
    roles._check_admin()
    price: uint256 = staticcall IOracle(ORACLE).index_price(price_id)
    assert price >= MIN_SETTLEMENT_PRICE and price <= MAX_SETTLEMENT_PRICE, "vault: settlement price out of bounds"
    assert price_id < constants.MAX_PRICE_IDS, "vault: price id out of bounds"
    settings: Settings = self._settings_now()
    settings.settlement_price_id = price_id
    settings.settlement_priced = True
    self._store_settings(settings)
    log SettlementPriceIdSet(price_id=price_id, price=price)


@external
def set_depeg_params(threshold: uint256, factor: uint256):
    """
    @notice Set the depeg rule (risk admin), within bounds. Source: Derive v2 StandardManager
            depeg parameters (`setDepegParameters`: threshold <= 1, factor <= 3; mainnet 0.99 / 2),
            applied here to the value of cash rather than to an IM add-on.
    @param threshold WAD USD, in [0.9, 1]: below it positive cash loses factor x shortfall more.
    @param factor WAD, <= 3.
    """
    roles._check_risk_admin()
    assert threshold >= MIN_DEPEG_THRESHOLD and threshold <= MAX_DEPEG_THRESHOLD, "vault: depeg threshold out of bounds"
    assert factor <= MAX_DEPEG_FACTOR, "vault: depeg factor out of bounds"
    settings: Settings = self._settings_now()
    settings.depeg_threshold = threshold
    settings.depeg_factor = factor
    self._store_settings(settings)
    log DepegParamsSet(threshold=threshold, factor=factor)


# ---------------------------------------------------------------- users


@internal
def _pull(token: address, amount: uint256) -> uint256:
    """
    @dev Transfer in and return what actually arrived (fee-on-transfer safe).
    """
    before: uint256 = staticcall IERC20(token).balanceOf(self)
    assert extcall IERC20(token).transferFrom(msg.sender, self, amount, default_return_value=True), "vault: transferFrom failed"
    return staticcall IERC20(token).balanceOf(self) - before


@internal
def _add_cash(account: address, delta: int256):
    """
    @dev Every change of an account's cash goes through here, keeping total_positive_cash.
    @custom:security Reverts "vault: cash out of range" beyond int128 (1.7e20 USD), far beyond
         any balance: the packing never truncates.
    """
    word: uint256 = self._accounts[account]
    before: int256 = packing._int128_at(word)
    after: int256 = before + delta
    assert packing._fits_int128(after), "vault: cash out of range"
    self._accounts[account] = (word & ~packing.LOW128) | packing._low128_of(after)
    self.total_positive_cash = self.total_positive_cash + convert(max(after, 0), uint256) - convert(max(before, 0), uint256)


@internal
def _set_balance(account: address, asset_id: uint256, amount: uint256):
    """
    @dev Every change of a collateral balance goes through here, keeping the account's bit of
         held assets (see `_accounts`).
    """
    self.balances[account][asset_id] = amount
    word: uint256 = self._accounts[account]
    held: uint256 = word & ~(1 << (128 + asset_id))
    if amount != 0:
        held |= 1 << (128 + asset_id)
    if held != word:
        self._accounts[account] = held


@internal
@view
def _held_assets(account: address) -> uint256:
    """
    @dev Bit i set while the account's balance of asset i is not zero.
    """
    return self._accounts[account] >> 128


@internal
def _credit_insurance(amount: uint256):
    """
    @dev Money for the insurance fund retires outstanding bad debt first.
    """
    retired: uint256 = min(amount, self.bad_debt)
    if retired != 0:
        self.bad_debt -= retired
        log BadDebtRetired(amount=retired, by_withdrawal=False)
    self.insurance_fund += amount - retired


@external
@nonreentrant
def deposit(token: address, amount: uint256):
    """
    @notice Deposit `amount` of `token` from the caller into the caller's account.
    @dev The settlement token credits cash (WAD); a listed asset credits its balance. The credit
         is what arrived. Reverts "vault: unknown asset", "vault: zero amount",
         "vault: deposit cap exceeded".
    @param token The settlement token or a listed asset.
    @param amount Token units to pull from the caller (needs allowance).
    """
    self._deposit(token, amount, msg.sender)


@external
@nonreentrant
def deposit_for(token: address, amount: uint256, account: address):
    """
    @notice Deposit `amount` of `token` from the caller into `account`.
    @dev As `deposit`; also reverts "vault: zero account".
    @param token The settlement token or a listed asset.
    @param amount Token units to pull from the caller (needs allowance).
    @param account The account credited.
    """
    self._deposit(token, amount, account)


@internal
def _deposit(token: address, amount: uint256, account: address):
    assert amount > 0, "vault: zero amount"
    assert account != empty(address), "vault: zero account"
    if token == SETTLEMENT_TOKEN:
        received: uint256 = self._pull(token, amount)
        credit: uint256 = received * SETTLEMENT_SCALE
        self.settlement_total += received
        self._add_cash(account, convert(credit, int256))
        log Deposit(account=account, sender=msg.sender, token=token, amount=received, credited_wad=credit)
        return
    slot: uint256 = self._asset_slot[token]
    assert slot != 0, "vault: unknown asset"
    asset_id: uint256 = slot - 1
    received: uint256 = self._pull(token, amount)
    total: uint256 = self.assets[asset_id].total + received
    assert total <= self.assets[asset_id].deposit_cap, "vault: deposit cap exceeded"
    self.assets[asset_id].total = total
    self._set_balance(account, asset_id, self.balances[account][asset_id] + received)
    log Deposit(account=account, sender=msg.sender, token=token, amount=received, credited_wad=0)


@external
@nonreentrant
def withdraw(token: address, amount: uint256):
    """
    @notice Withdraw `amount` of `token` from the caller's account to the caller (as
            `withdraw_to`).
    """
    self._withdraw(token, amount, msg.sender)


@external
@nonreentrant
def withdraw_to(token: address, amount: uint256, receiver: address):
    """
    @notice Withdraw `amount` of `token` from the caller's account to `receiver`.
    @dev The settlement token debits cash and may not make it negative (unrealized profit and
         collateral are not withdrawable as cash). The account must meet initial margin after the
         debit, or the call reverts "vault: below initial margin". While bad debt is outstanding
         the tokens paid are `amount` less its pro-rata share (socialization, see the notice).
         Reverts "vault: settlement liquidity short" when the vault holds fewer settlement
         tokens than it would pay: positive cash can be owed by accounts whose debt is backed by
         WETH/WBTC, and is paid as they repay or are liquidated (a liquidity limit, not a loss).
         Reverts "vault: no settlement price" for a collateral withdrawal from an account with
         positive cash and a non-zero IM while the settlement asset's price is set but
         unavailable (its cash then counts at par and might be depegged).
    @param token The settlement token or a listed asset.
    @param amount Token units.
    @param receiver Where the tokens go.
    """
    self._withdraw(token, amount, receiver)


@internal
def _withdraw(token: address, amount: uint256, receiver: address):
    assert amount > 0, "vault: zero amount"
    paid: uint256 = amount
    if token == SETTLEMENT_TOKEN:
        debit: int256 = convert(amount * SETTLEMENT_SCALE, int256)
        assert packing._int128_at(self._accounts[msg.sender]) >= debit, "vault: insufficient cash"
        if self.bad_debt != 0:
            # the withdrawer's share of the loss, rounded up: amount * bad_debt / positive cash
            withheld: uint256 = min(amount, (amount * self.bad_debt + self.total_positive_cash - 1) // self.total_positive_cash)
            retired: uint256 = min(withheld * SETTLEMENT_SCALE, self.bad_debt)
            self.bad_debt -= retired
            paid = amount - withheld
            log BadDebtRetired(amount=retired, by_withdrawal=True)
        self._add_cash(msg.sender, -debit)
        # cash owed by accounts margined with other collateral is not yet in USDC: it arrives
        # when they repay (deposit) or their collateral is liquidated
        assert paid <= self.settlement_total, "vault: settlement liquidity short"
        self.settlement_total -= paid
    else:
        slot: uint256 = self._asset_slot[token]
        assert slot != 0, "vault: unknown asset"
        asset_id: uint256 = slot - 1
        balance: uint256 = self.balances[msg.sender][asset_id]
        assert balance >= amount, "vault: insufficient collateral"
        self._set_balance(msg.sender, asset_id, balance - amount)
        self.assets[asset_id].total -= amount
    summary: types.MarginSummary = staticcall IMarginEngine(self.engine).margin_summary(msg.sender)
    assert summary.equity >= convert(summary.initial_margin, int256), "vault: below initial margin"
    # without a settlement price positive cash counts at par (see `_cash_value`): collateral
    # may not leave an account with risk that leans on it (risk-free accounts withdraw freely)
    settings: Settings = self._settings_now()
    if settings.settlement_priced and token != SETTLEMENT_TOKEN and summary.initial_margin != 0 and packing._int128_at(self._accounts[msg.sender]) > 0:
        # one price id, not every index: a failed read is no price
        ok: bool = False
        answer: Bytes[32] = b""
        ok, answer = raw_call(ORACLE, abi_encode(settings.settlement_price_id, method_id=method_id("index_price(uint256)")), max_outsize=32, is_static_call=True, revert_on_failure=False)
        assert ok and len(answer) == 32 and convert(answer, uint256) != 0, "vault: no settlement price"
    # a withdrawal changes the portfolio: health attestations signed before it lapse (with no
    # attestor wired there is nothing to void, and the write is saved)
    if staticcall IMarginEngine(self.engine).health_attestor() != empty(address):
        self.withdrawal_count[msg.sender] += 1
    if paid != 0:
        assert extcall IERC20(token).transfer(receiver, paid, default_return_value=True), "vault: transfer failed"
    log Withdraw(account=msg.sender, receiver=receiver, token=token, amount=paid)


@external
@nonreentrant
def fund_insurance(amount: uint256):
    """
    @notice Add settlement tokens to the insurance fund.
    @param amount Token units pulled from the caller.
    """
    assert amount > 0, "vault: zero amount"
    received: uint256 = self._pull(SETTLEMENT_TOKEN, amount)
    self.settlement_total += received
    self._credit_insurance(received * SETTLEMENT_SCALE)
    log InsuranceFunded(sender=msg.sender, amount=received * SETTLEMENT_SCALE)


# ---------------------------------------------------------------- engine only


@internal
@view
def _check_engine():
    assert msg.sender == self.engine, "vault: not engine"


@internal
@view
def _check_cash_mover():
    # the option market realizes option PnL and charges option liquidation penalties
    assert msg.sender == self.engine or (msg.sender == self.option_market and msg.sender != empty(address)), "vault: not engine"


@external
@nonreentrant
def settle_cash(account: address, delta: int256):
    """
    @notice Move realized PnL or funding into an account's cash (engine or option market).
    @param delta WAD USD, signed.
    """
    self._check_cash_mover()
    self._add_cash(account, delta)
    log CashSettled(account=account, delta=delta)


@external
@nonreentrant
def charge_penalty(account: address, liquidator: address, penalty: uint256, liquidator_share: uint256):
    """
    @notice Take a liquidation penalty from `account`'s cash: `liquidator_share` to the
            liquidator, the rest to the insurance fund (engine or option market).
    @param penalty WAD USD.
    @param liquidator_share WAD USD, <= penalty.
    """
    self._check_cash_mover()
    assert liquidator_share <= penalty, "vault: share above penalty"
    self._add_cash(account, -convert(penalty, int256))
    self._add_cash(liquidator, convert(liquidator_share, int256))
    self._credit_insurance(penalty - liquidator_share)
    log CashSettled(account=account, delta=-convert(penalty, int256))
    log CashSettled(account=liquidator, delta=convert(liquidator_share, int256))


@external
@nonreentrant
def liquidate_collateral(account: address, liquidator: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS], penalty: uint256) -> bool:
    """
    @notice Liquidation sale of collateral (engine only): asset by asset, sell `account`'s
            collateral to `liquidator` at the index price less a discount until the account's
            cash is no longer negative or its collateral is gone. The liquidator pays in cash.
    @dev Discount = min(penalty, (1 - haircut) / 2), so each sale raises the account's equity
         (the haircut kept more than the discount). With a settlement price p below 1 the
         payment is in settlement units, index x (1 - discount) / p per token, so a liquidator
         paying in depegged cash gets the discount and not the depeg too (p >= 1 or no valid
         p: 1:1). Payment rounds down per sale; the amount sold rounds up to cover the debt.
    @param prices WAD index prices by price id.
    @param penalty The engine's liquidation penalty rate, WAD.
    @return Whether any collateral was sold.
    """
    self._check_engine()
    sold: bool = False
    settlement: uint256 = self._settlement_price(prices)
    for asset_id: uint256 in range(self._settings_now().asset_count, bound=constants.MAX_ASSETS):
        cash: int256 = packing._int128_at(self._accounts[account])
        balance: uint256 = self.balances[account][asset_id]
        if cash >= 0:
            break
        if balance == 0:
            continue
        asset: types.Asset = self.assets[asset_id]
        unit: uint256 = 10 ** asset.decimals
        price: uint256 = self._sale_price(asset_id, asset, prices, penalty)
        if settlement != 0 and settlement < constants.WAD:
            price = price * constants.WAD // settlement
        if price == 0:
            continue
        debt: uint256 = convert(-cash, uint256)
        amount: uint256 = min(balance, (debt * unit + price - 1) // price)
        payment: uint256 = amount * price // unit
        self._set_balance(account, asset_id, balance - amount)
        self._set_balance(liquidator, asset_id, self.balances[liquidator][asset_id] + amount)
        self._add_cash(liquidator, -convert(payment, int256))
        self._add_cash(account, convert(payment, int256))
        sold = True
        log CollateralTransferred(asset_id=asset_id, sender=account, receiver=liquidator, amount=amount)
        log CashSettled(account=liquidator, delta=-convert(payment, int256))
        log CashSettled(account=account, delta=convert(payment, int256))
        log CollateralLiquidated(account=account, liquidator=liquidator, asset_id=asset_id, amount=amount, payment=payment)
    return sold


@internal
@view
def _sale_price(asset_id: uint256, asset: types.Asset, prices: DynArray[uint256, constants.MAX_PRICE_IDS], penalty: uint256) -> uint256:
    """
    @dev What a liquidation sale pays per whole token, WAD USD: the index price less
         min(penalty, (1 - haircut) / 2), rounded down.
    """
    haircut: uint256 = self._haircut_now(asset_id, asset.haircut)
    return prices[asset.price_id] * (constants.WAD - min(penalty, (constants.WAD - haircut) // 2)) // constants.WAD


@external
@view
def deficit_cover(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS], penalty: uint256) -> (uint256, uint256):
    """
    @notice What stands between an account's negative equity and bad debt, before
            auto-deleveraging (`MarginEngine.deleverage`) may touch anyone's position.
    @param prices WAD index prices by price id (every price the account's collateral needs).
    @param penalty The engine's liquidation penalty rate, WAD.
    @return (what the insurance fund and the backstop vault could pay towards the account's
            deficit now, WAD; how much more than its haircut value a liquidation sale of all the
            account's collateral would raise, WAD USD, rounded down).
    """
    capacity: uint256 = self.insurance_fund
    backstop: address = self.backstop
    if backstop != empty(address) and backstop != account:
        capacity += self._backstop_capacity(backstop)
    return capacity, self._sale_markup(account, prices, penalty)


@internal
@view
def _sale_markup(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS], penalty: uint256) -> uint256:
    """
    @dev How much more than its haircut value a liquidation sale of all `account`'s collateral
         would raise, WAD USD: sum over assets of floor(balance * sale price / 10**decimals),
         less the haircut value, 0 when below it.
    """
    sale: uint256 = 0
    held: uint256 = self._held_assets(account)
    for asset_id: uint256 in range(self._settings_now().asset_count, bound=constants.MAX_ASSETS):
        if held & (1 << asset_id) != 0:
            asset: types.Asset = self.assets[asset_id]
            sale += self.balances[account][asset_id] * self._sale_price(asset_id, asset, prices, penalty) // 10**asset.decimals
    return sale - min(sale, self._collateral_value(account, prices))


@external
@view
def sale_markup(account: address) -> uint256:
    """
    @notice How much more than its haircut value `account`'s collateral is worth at the
            liquidation sale price (`sale_price`), WAD USD, rounded down, at current index
            prices and the engine's liquidation penalty. The backstop vault counts the
            collateral it bought in liquidations at that price (`BackstopVault.totalAssets`).
    @dev Reverts "vault: no valid price" when a held asset has no price.
    """
    held: uint256 = self._held_assets(account)
    if held == 0:
        return 0
    # only the prices of what it holds (`OracleRouter.index_prices_of`)
    mask: uint256 = 0
    for asset_id: uint256 in range(self._settings_now().asset_count, bound=constants.MAX_ASSETS):
        if held & (1 << asset_id) != 0:
            mask |= 1 << self.assets[asset_id].price_id
    return self._sale_markup(account, staticcall IOracle(ORACLE).index_prices_of(mask), staticcall IMarginEngine(self.engine).liquidation_penalty())


@external
@view
def sale_price(asset_id: uint256) -> (uint256, uint256):
    """
    @notice (index price, liquidation sale price) of one whole token of `asset_id`, WAD, in
            settlement-token units as `liquidate_collateral` pays: the sale price is the index
            less min(liquidation penalty, (1 - haircut) / 2), rounded down, and both are
            divided by the settlement price when it is below 1 (rounded down).
    @dev Reverts "vault: unknown asset", "vault: no valid price".
    """
    assert asset_id < self._settings_now().asset_count, "vault: unknown asset"
    asset: types.Asset = self.assets[asset_id]
    prices: DynArray[uint256, constants.MAX_PRICE_IDS] = staticcall IOracle(ORACLE).index_prices()
    index: uint256 = prices[asset.price_id]
    assert index != 0, "vault: no valid price"
    sale: uint256 = self._sale_price(asset_id, asset, prices, staticcall IMarginEngine(self.engine).liquidation_penalty())
    settlement: uint256 = self._settlement_price(prices)
    if settlement != 0 and settlement < constants.WAD:
        return index * constants.WAD // settlement, sale * constants.WAD // settlement
    return index, sale


@external
@nonreentrant
def cover_deficit(account: address) -> (uint256, uint256):
    """
    @notice Waterfall for an account left with negative cash and nothing else (engine only):
            the insurance fund pays first, then the backstop vault (from its cash, at most its
            equity above its initial margin, so it is never left liquidatable by it); what
            neither can pay is recorded as bad debt. The account's cash becomes zero. Neither
            the fund nor the backstop's cash goes negative. An account that still holds options
            is not written off (returns (0, 0)): their value is part of its equity, so they are
            liquidated first (`OptionMarket.liquidate_options`).
    @return (WAD paid by the insurance fund and the backstop vault, WAD recorded as bad debt).
    """
    self._check_engine()
    balance: int256 = packing._int128_at(self._accounts[account])
    if balance >= 0:
        return 0, 0
    market: address = self.option_market
    if market != empty(address) and staticcall IOptionMarket(market).has_positions(account):
        return 0, 0
    deficit: uint256 = convert(-balance, uint256)
    from_insurance: uint256 = min(deficit, self.insurance_fund)
    self.insurance_fund -= from_insurance
    from_backstop: uint256 = 0
    backstop: address = self.backstop
    if from_insurance < deficit and backstop != empty(address) and backstop != account:
        from_backstop = min(deficit - from_insurance, self._backstop_capacity(backstop))
        if from_backstop != 0:
            self.backstop_paid += from_backstop
            self._add_cash(backstop, -convert(from_backstop, int256))
            log CashSettled(account=backstop, delta=-convert(from_backstop, int256))
    uncovered: uint256 = deficit - from_insurance - from_backstop
    self.bad_debt += uncovered
    self._add_cash(account, -balance)
    log CashSettled(account=account, delta=-balance)
    log DeficitCovered(account=account, from_insurance=from_insurance, from_backstop=from_backstop, bad_debt=uncovered)
    return from_insurance + from_backstop, uncovered


@internal
@view
def _backstop_capacity(backstop: address) -> uint256:
    """
    @dev What the backstop vault can pay towards a deficit, WAD USD: min(its positive cash,
         its equity - initial margin), 0 when negative.
    """
    cash: int256 = packing._int128_at(self._accounts[backstop])
    if cash <= 0:
        return 0
    summary: types.MarginSummary = staticcall IMarginEngine(self.engine).margin_summary(backstop)
    free: int256 = summary.equity - convert(summary.initial_margin, int256)
    if free <= 0:
        return 0
    return min(convert(cash, uint256), convert(free, uint256))


# ---------------------------------------------------------------- views


@internal
@view
def _haircut_now(asset_id: uint256, target: uint256) -> uint256:
    """
    @dev The haircut of `asset_id` in force now, given its target (`assets(asset_id).haircut`).
    """
    since: uint256 = self.haircut_changed_at[asset_id]
    if block.timestamp >= since + constants.REQUIREMENT_RAMP:
        return target
    return ramp._lowered(self.haircut_before[asset_id], target, since)


@internal
@view
def _collateral_value(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> uint256:
    """
    @dev sum over assets of floor(balance * price * haircut / (10**decimals * 1e18)), WAD USD.
    """
    value: uint256 = 0
    held: uint256 = self._held_assets(account)
    for asset_id: uint256 in range(self._settings_now().asset_count, bound=constants.MAX_ASSETS):
        if held & (1 << asset_id) == 0:
            continue
        amount: uint256 = self.balances[account][asset_id]
        asset: types.Asset = self.assets[asset_id]
        price: uint256 = prices[asset.price_id]
        assert price != 0, "vault: no valid price"
        value += amount * price * self._haircut_now(asset_id, asset.haircut) // (10 ** asset.decimals * constants.WAD)
    return value


@internal
@view
def _settlement_price(prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> uint256:
    """
    @dev The settlement asset's WAD USD price in `prices`, 0 when unset, unavailable or absent.
    """
    settings: Settings = self._settings_now()
    if not settings.settlement_priced or settings.settlement_price_id >= len(prices):
        return 0
    return prices[settings.settlement_price_id]


@internal
@view
def _cash_value(cash: int256, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> int256:
    """
    @dev The depeg rule, WAD USD. With p the settlement price (WAD USD per token):
         cash >= 0: floor(cash * max(0, min(p, 1e18) * 1e18 - factor * max(threshold - p, 0)) / 1e36)
         cash < 0:  -ceil(-cash * max(p, 1e18) / 1e18)  (debt never below par)
         No settlement price id, or p == 0 (no valid feed): cash at par, so an oracle outage
         neither freezes nor liquidates anyone; `withdraw` then keeps collateral in accounts
         with risk. Continuous in p: the haircut starts at 0 at the threshold.
    """
    p: uint256 = self._settlement_price(prices)
    if p == 0 or cash == 0:
        return cash
    if cash < 0:
        return -convert((convert(-cash, uint256) * max(p, constants.WAD) + constants.WAD - 1) // constants.WAD, int256)
    unit: uint256 = min(p, constants.WAD) * constants.WAD
    settings: Settings = self._settings_now()
    if p < settings.depeg_threshold:
        unit -= min(unit, settings.depeg_factor * (settings.depeg_threshold - p))
    return convert(convert(cash, uint256) * unit // (constants.WAD * constants.WAD), int256)


@internal
@view
def _settings_now() -> Settings:
    word: uint256 = self._settings
    return Settings(
        asset_count=word & 255,
        settlement_priced=(word >> 8) & 1 == 1,
        settlement_price_id=(word >> 16) & 255,
        depeg_threshold=(word >> 64) & (2**64 - 1),
        depeg_factor=(word >> 128) & (2**64 - 1),
    )


@internal
def _store_settings(settings: Settings):
    self._settings = settings.asset_count | (convert(settings.settlement_priced, uint256) << 8) | (settings.settlement_price_id << 16) | (settings.depeg_threshold << 64) | (settings.depeg_factor << 128)


@external
@view
def asset_count() -> uint256:
    """
    @notice The number of listed collateral assets (ids 0 .. count - 1).
    """
    return self._settings_now().asset_count


@external
@view
def settlement_priced() -> bool:
    """
    @notice Whether the settlement asset has a USD price id (False: cash counts 1:1 as USD).
    """
    return self._settings_now().settlement_priced


@external
@view
def settlement_price_id() -> uint256:
    """
    @notice Oracle price id of the settlement asset (WAD USD per token); meaningful when priced.
    """
    return self._settings_now().settlement_price_id


@external
@view
def depeg_threshold() -> uint256:
    """
    @notice WAD USD price below which positive cash takes the extra depeg haircut, in
            [MIN_DEPEG_THRESHOLD, MAX_DEPEG_THRESHOLD] once set (0 until then: cash at min(p, 1)).
    """
    return self._settings_now().depeg_threshold


@external
@view
def depeg_factor() -> uint256:
    """
    @notice WAD multiplier of the shortfall (threshold - p) taken off each unit of positive
            cash, <= MAX_DEPEG_FACTOR.
    """
    return self._settings_now().depeg_factor


@external
@view
def haircut_now(asset_id: uint256) -> uint256:
    """
    @notice The haircut of `asset_id` in force now (WAD fraction of value counted as margin):
            `assets` holds the target, towards which a cut phases in over 7 days (`lib/ramp.vy`).
    """
    return self._haircut_now(asset_id, self.assets[asset_id].haircut)


@external
@view
def price_mask(account: address) -> uint256:
    """
    @notice The price ids `margin_inputs` and `liquidate_collateral` read for `account`, as a
            bit mask (bit i = price id i): the settlement asset's when it is priced (the depeg
            rule, whatever the balance) and each collateral asset's the account holds.
    """
    settings: Settings = self._settings_now()
    mask: uint256 = 0
    if settings.settlement_priced:
        mask = 1 << settings.settlement_price_id
    held: uint256 = self._held_assets(account)
    for asset_id: uint256 in range(settings.asset_count, bound=constants.MAX_ASSETS):
        if held & (1 << asset_id) != 0:
            mask |= 1 << self.assets[asset_id].price_id
    return mask


@external
@view
def margin_inputs(account: address, prices: DynArray[uint256, constants.MAX_PRICE_IDS]) -> (int256, uint256):
    """
    @notice Cash value and haircut collateral value of an account at the given index prices.
    @dev Cash is valued by the depeg rule (`_cash_value`) when a settlement price id is set,
         else 1:1; the ledger balance is `cash(account)`.
    @param prices WAD index prices indexed by price id (as `OracleRouter.index_prices`).
    @return (cash value WAD, rounded towards the protocol; haircut collateral value WAD rounded down).
    """
    return self._cash_value(packing._int128_at(self._accounts[account]), prices), self._collateral_value(account, prices)


@external
@view
def cash(account: address) -> int256:
    """
    @notice An account's cash ledger balance, WAD USD (negative = debt); `cash_value` values it
            by the depeg rule.
    """
    return packing._int128_at(self._accounts[account])


@external
@view
def cash_value(account: address) -> int256:
    """
    @notice An account's cash valued by the depeg rule at current index prices (WAD USD).
    """
    return self._cash_value(packing._int128_at(self._accounts[account]), staticcall IOracle(ORACLE).index_prices())


@external
@view
def collateral_value(account: address) -> uint256:
    """
    @notice Haircut value of an account's collateral at current index prices (WAD, rounded down).
    """
    return self._collateral_value(account, staticcall IOracle(ORACLE).index_prices())


@external
@view
def collateral_balances(account: address) -> DynArray[uint256, constants.MAX_ASSETS]:
    """
    @notice An account's balance of every listed asset, in asset id order, token units.
    """
    out: DynArray[uint256, constants.MAX_ASSETS] = []
    for asset_id: uint256 in range(self._settings_now().asset_count, bound=constants.MAX_ASSETS):
        out.append(self.balances[account][asset_id])
    return out


@external
@view
def has_collateral(account: address) -> bool:
    """
    @notice Whether an account holds any listed asset.
    """
    return self._held_assets(account) != 0


@external
@view
def asset_id_of(token: address) -> uint256:
    """
    @notice The asset id of a listed token; reverts "vault: unknown asset" otherwise.
    """
    slot: uint256 = self._asset_slot[token]
    assert slot != 0, "vault: unknown asset"
    return slot - 1
