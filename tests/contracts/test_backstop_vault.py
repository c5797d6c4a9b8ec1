"""BackstopVault: share accounting by hand (virtual shares, rounding against the depositor),
delayed requests at the worse of two prices, vault-routed liquidation (positions to the vault,
the caller paid a share of the gain), capacity ("backstop: full"), the Dutch-auction unwind and
its budget, parameter bounds, and the attacks a coalition would try: deposit before a known
gain, redeem before a known loss, inflate the share price by donation, and buy back its own
liquidated position at a discount."""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, funded, liquidate, republish

ETH_PERP, BTC_PERP = 0, 2
WETH = 0  # the collateral vault's asset id of WETH (config/local.yaml lists it first)
SCALE = 10**12  # USDC units -> WAD
VIRTUAL = 10**6
DAY = 86400


def wait(p, seconds: int) -> None:
    """Let `seconds` pass and re-post every feed so that prices stay fresh."""
    boa.env.time_travel(seconds=seconds)
    for feed in p.feeds.values():
        republish(feed.address)


def request_deposit(p, user, dollars: int) -> int:
    units = dollars * 10**6
    p.usdc.mint(user.address, units)
    with boa.env.prank(user.address):
        p.usdc.approve(p.backstop.address, units)
        return p.backstop.request_deposit(units)


def claim_deposit(p, user) -> int:
    with boa.env.prank(user.address):
        return p.backstop.claim_deposit(user.address)


def seed(p, dollars: int = 1_000_000):
    """A depositor whose deposit has completed: the vault's first `dollars` of equity."""
    lp = p.new_user()
    request_deposit(p, lp, dollars)
    wait(p, DAY)
    claim_deposit(p, lp)
    return lp


def share_price(p) -> tuple[int, int]:
    """(totalAssets + 1, totalSupply + virtual shares): the price as an exact fraction."""
    return p.backstop.totalAssets() + 1, p.backstop.totalSupply() + VIRTUAL


def underwater(p, size_eth: int = 40, deposit: int = 10_000, price_after: int = 1820):
    """An account long `size_eth` ETH-PERP at $2,000 with `deposit` of cash, below maintenance
    margin once ETH is at `price_after`; returns (account, its counterparty)."""
    a, b = p.new_user(), funded(p, 1_000_000)
    p.deposit_usd(a, deposit)
    p.trade(a, b, ETH_PERP, size_eth * WAD, 2000 * WAD)
    p.set_price("ETH", price_after)
    assert p.engine.is_liquidatable(a.address)
    return a, b


def via_backstop(p, caller, account) -> int:
    with boa.env.prank(caller.address if hasattr(caller, "address") else caller):
        return p.backstop.liquidate(account.address)


@pytest.fixture
def p(protocol):
    assert protocol.backstop is not None, "config/local.yaml deploys a backstop vault"
    return protocol


# ---------------------------------------------------------------- shares by hand


def test_first_deposit_by_hand(p):
    lp = p.new_user()
    quoted = request_deposit(p, lp, 1000)
    # empty vault: shares = assets * (0 + 1e6) / (0 + 1)
    assert quoted == 1000 * 10**6 * VIRTUAL
    assert p.backstop.totalAssets() == 0 and p.backstop.pending_deposits() == 1000 * 10**6
    with boa.reverts("backstop: request not ready"):
        claim_deposit(p, lp)
    with boa.reverts("backstop: request pending"):
        request_deposit(p, lp, 1)
    wait(p, DAY)
    assert claim_deposit(p, lp) == quoted
    assert p.backstop.balanceOf(lp.address) == quoted
    assert p.backstop.totalAssets() == 1000 * 10**6
    assert p.vault.cash(p.backstop.address) == 1000 * 10**6 * SCALE
    assert p.backstop.pending_deposits() == 0
    # second depositor at the same price, rounded down
    quoted2 = request_deposit(p, p.new_user(), 333)
    assert quoted2 == 333 * 10**6 * (quoted + VIRTUAL) // (1000 * 10**6 + 1)


def test_redeem_by_hand(p):
    lp = seed(p, 1000)
    shares = p.backstop.balanceOf(lp.address)
    with boa.env.prank(lp.address):
        quoted = p.backstop.request_redeem(shares // 4)
    assert quoted == (shares // 4) * (1000 * 10**6 + 1) // (shares + VIRTUAL)
    assert p.backstop.balanceOf(p.backstop.address) == shares // 4  # locked, still in supply
    with boa.env.prank(lp.address), boa.reverts("backstop: request not ready"):
        p.backstop.claim_redeem(lp.address)
    wait(p, DAY)
    before = p.usdc.balanceOf(lp.address)
    with boa.env.prank(lp.address):
        assert p.backstop.claim_redeem(lp.address) == quoted
    assert p.usdc.balanceOf(lp.address) - before == quoted
    assert p.backstop.totalSupply() == shares - shares // 4


def test_bad_input(p):
    lp = p.new_user()
    with boa.env.prank(lp.address):
        with boa.reverts("backstop: zero amount"):
            p.backstop.request_deposit(0)
        with boa.reverts("backstop: no request"):
            p.backstop.claim_deposit(lp.address)
        with boa.reverts("backstop: no request"):
            p.backstop.claim_redeem(lp.address)
        with boa.reverts("shares: insufficient balance"):
            p.backstop.request_redeem(1)


# ---------------------------------------------------------------- vault-routed liquidation


def test_liquidation_routed_to_the_vault(p):
    lp = seed(p)
    a, _ = underwater(p)
    keeper = p.new_user()
    price_before = share_price(p)
    cash_before = p.vault.cash(p.backstop.address)
    equity_before = p.equity(p.backstop.address)
    fee = via_backstop(p, keeper, a)
    # the vault holds what was closed, at mark; the keeper holds nothing and has its fee
    size = p.engine.positions(p.backstop.address, ETH_PERP).size
    assert size > 0 and p.engine.positions(keeper.address, ETH_PERP).size == 0
    assert p.engine.positions(p.backstop.address, ETH_PERP).entry_price == 1820 * WAD
    gain = p.equity(p.backstop.address) + fee * SCALE - equity_before
    # at mark the only gain is the vault's share of the penalty, paid in cash
    assert gain == p.vault.cash(p.backstop.address) + fee * SCALE - cash_before > 0
    assert fee == gain * 2 * 10**17 // WAD // SCALE
    assert p.usdc.balanceOf(keeper.address) == fee > 0
    assert p.backstop.discount_budget(ETH_PERP) == gain - fee * SCALE
    assert p.backstop.auction_start(ETH_PERP) == boa.env.evm.patch.timestamp
    # a liquidation never lowers the share price
    after = share_price(p)
    assert after[0] * price_before[1] >= price_before[0] * after[1]
    assert lp is not None


def test_full_vault_leaves_the_liquidation_to_others(p):
    seed(p, 60_000)
    a, _ = underwater(p, size_eth=400, deposit=100_000)
    with boa.env.prank(p.admin):
        p.backstop.set_max_exposure(ETH_PERP, 10 * WAD)
    with boa.reverts("backstop: full"):
        via_backstop(p, p.new_user(), a)
    with boa.env.prank(p.admin):
        p.backstop.set_max_exposure(ETH_PERP, 0)
    # the partial close moves about 226 ETH ($411,000, IM $41,100): within the engine's
    # initial margin for $60,000 of equity, beyond the vault's own 50% of it
    with boa.reverts("backstop: full"):
        via_backstop(p, p.new_user(), a)
    # an ordinary liquidator still can
    notional, _ = liquidate(p, funded(p, 1_000_000), a)
    assert notional > 0


def test_empty_vault_cannot_take_positions(p):
    a, _ = underwater(p)
    with boa.reverts():
        via_backstop(p, p.new_user(), a)


# ---------------------------------------------------------------- unwinding


def take_order(p, taker, size: int, limit: int):
    return p.order(taker, ETH_PERP, size, limit)


def test_unwind_discount_grows_and_is_budgeted(p):
    seed(p)
    a, _ = underwater(p)
    via_backstop(p, p.new_user(), a)
    inventory = p.engine.positions(p.backstop.address, ETH_PERP).size
    budget = p.backstop.discount_budget(ETH_PERP)
    index = 1820 * WAD
    # no discount at the start of the auction
    price, discount, idx = p.backstop.unwind_price(ETH_PERP, WAD)
    assert (price, discount, idx) == (index, 0, index)
    # half the auction time: half of min(1%, 5% band) off the index
    wait(p, 1800)
    per_unit = index * (10**16 * 1800 // 3600) // WAD
    price, discount, _ = p.backstop.unwind_price(ETH_PERP, WAD)
    assert price == index - per_unit and discount == per_unit
    # each unit carries an equal share of the budget: it caps the discount on a large unwind
    wait(p, 3600)
    price, discount, _ = p.backstop.unwind_price(ETH_PERP, inventory)
    per_unit = min(index * 10**16 // WAD, budget * WAD // inventory)
    assert price == index - per_unit and discount == -(-per_unit * inventory // WAD) <= budget
    taker = funded(p, 1_000_000)
    half = inventory // 2
    order, sig = take_order(p, taker, half, index)
    price_before = share_price(p)
    half_price, half_discount, _ = p.backstop.unwind_price(ETH_PERP, half)
    carried = budget * half // inventory
    assert half_price == index - min(index * 10**16 // WAD, carried * WAD // half)
    p.backstop.unwind(order, sig)
    assert p.engine.positions(taker.address, ETH_PERP).size == half
    assert p.engine.positions(p.backstop.address, ETH_PERP).size == inventory - half
    assert p.engine.positions(taker.address, ETH_PERP).entry_price == half_price
    # the units sold took their share of the budget, used or not
    assert p.backstop.discount_budget(ETH_PERP) == budget - carried
    assert half_discount <= carried
    # the share price falls by at most the discount given
    after = share_price(p)
    assert after[0] * price_before[1] <= price_before[0] * after[1]


def test_unwind_refuses_what_is_not_inventory(p):
    seed(p)
    a, _ = underwater(p)
    via_backstop(p, p.new_user(), a)
    inventory = p.engine.positions(p.backstop.address, ETH_PERP).size
    taker = funded(p, 1_000_000)
    with boa.reverts("backstop: wrong side"):
        p.backstop.unwind(*take_order(p, taker, -WAD, 1820 * WAD))
    with boa.reverts("backstop: more than the inventory"):
        p.backstop.unwind(*take_order(p, taker, inventory + 1, 1820 * WAD))
    with boa.reverts("backstop: no inventory"):
        p.backstop.unwind(*p.order(taker, BTC_PERP, WAD, 30_000 * WAD))
    with boa.reverts("matching: price worse than limit"):
        p.backstop.unwind(*take_order(p, taker, WAD, 1000 * WAD))


# ---------------------------------------------------------------- attacks


def test_deposit_before_a_known_gain_earns_nothing_of_it(p):
    lp = seed(p)
    a, _ = underwater(p)
    attacker = p.new_user()
    quoted = request_deposit(p, attacker, 1_000_000)
    via_backstop(p, p.new_user(), a)  # the gain the attacker saw coming
    wait(p, DAY)
    minted = claim_deposit(p, attacker)
    assert minted < quoted  # priced after the gain, the worse of the two prices for it
    total, supply = p.backstop.totalAssets(), p.backstop.totalSupply()
    attacker_value = minted * (total + 1) // (supply + VIRTUAL)
    assert attacker_value <= 1_000_000 * 10**6
    lp_value = p.backstop.balanceOf(lp.address) * (total + 1) // (supply + VIRTUAL)
    assert lp_value > 1_000_000 * 10**6  # the gain stayed with who was there


def test_redeem_before_a_known_loss_still_bears_it(p):
    lp = seed(p)
    a, _ = underwater(p)
    via_backstop(p, p.new_user(), a)
    shares = p.backstop.balanceOf(lp.address)
    with boa.env.prank(lp.address):
        quoted = p.backstop.request_redeem(shares // 2)
    p.set_price("ETH", 1700)  # the vault is long: the loss the redeemer saw coming
    wait(p, DAY)
    with boa.env.prank(lp.address):
        paid = p.backstop.claim_redeem(lp.address)
    assert paid < quoted


def test_donation_cannot_round_a_deposit_away(p):
    attacker = p.new_user()
    request_deposit(p, attacker, 1)  # $1: the smallest stake that owns the vault
    wait(p, DAY)
    claim_deposit(p, attacker)
    # donate $100,000 of cash straight into the vault's margin account
    donor_units = 100_000 * 10**6
    p.usdc.mint(attacker.address, donor_units)
    with boa.env.prank(attacker.address):
        p.usdc.approve(p.vault.address, donor_units)
        p.vault.deposit_for(p.usdc.address, donor_units, p.backstop.address)
    victim = p.new_user()
    request_deposit(p, victim, 50_000)
    wait(p, DAY)
    minted = claim_deposit(p, victim)
    total, supply = p.backstop.totalAssets(), p.backstop.totalSupply()
    victim_value = minted * (total + 1) // (supply + VIRTUAL)
    # the virtual shares keep the victim's loss to rounding; the attacker loses its donation
    assert victim_value >= 50_000 * 10**6 - 2
    attacker_value = p.backstop.balanceOf(attacker.address) * (total + 1) // (supply + VIRTUAL)
    assert attacker_value < 1 * 10**6 + donor_units


def test_coalition_cannot_buy_back_its_liquidation_at_a_profit(p):
    """A coalition lets its own nearly bankrupt account (the penalty is capped at its tiny
    equity) be liquidated into the vault, then buys the position back at the largest
    discount. The discount budget holds it to what the vault kept from the liquidation."""
    seed(p)
    # equity about $150 left at $1,760: the penalty (2% of ~$70,000) is capped at it
    a, b = underwater(p, size_eth=40, deposit=9750, price_after=1760)
    equity_a = p.equity(a.address)
    assert 0 < equity_a < 40 * 1760 * WAD * 2 // 100
    keeper = p.new_user()  # the coalition's own keeper
    fee = via_backstop(p, keeper, a)
    wait(p, 3 * 3600)
    inventory = p.engine.positions(p.backstop.address, ETH_PERP).size
    price_before = share_price(p)
    budget = p.backstop.discount_budget(ETH_PERP)
    index = 1760 * WAD
    taker = funded(p, 1_000_000)
    _, discount, _ = p.backstop.unwind_price(ETH_PERP, inventory)
    p.backstop.unwind(*take_order(p, taker, inventory, index))
    assert discount <= budget
    # what the coalition got back (fee + discount) is at most what its account paid the vault
    assert fee * SCALE + discount <= equity_a
    after = share_price(p)
    assert after[0] * price_before[1] <= price_before[0] * after[1]
    assert b is not None


# ---------------------------------------------------------------- parameters


def test_parameters_are_bounded_and_governed(p):
    b = p.backstop
    ok = (2 * 10**17, 5 * 10**17, 10**16, 3600, DAY)
    with boa.env.prank(p.new_user().address), boa.reverts("roles: not risk admin"):
        b.set_params(*ok)
    with boa.env.prank(p.new_user().address), boa.reverts("roles: not risk admin"):
        b.set_max_exposure(0, 1)
    bad = [
        ((5 * 10**17 + 1,) + ok[1:], "backstop: caller fee share out of range"),
        (ok[:1] + (9 * 10**17 + 1,) + ok[2:], "backstop: margin usage out of range"),
        (ok[:1] + (5 * 10**16 - 1,) + ok[2:], "backstop: margin usage out of range"),
        (ok[:2] + (10**17 + 1,) + ok[3:], "backstop: auction discount out of range"),
        (ok[:3] + (59,) + ok[4:], "backstop: auction time out of range"),
        (ok[:4] + (3599,), "backstop: request delay out of range"),
        (ok[:4] + (30 * DAY + 1,), "backstop: request delay out of range"),
    ]
    with boa.env.prank(p.admin):
        for args, reason in bad:
            with boa.reverts(reason):
                b.set_params(*args)
        b.set_params(*ok)
    assert (b.caller_fee_share(), b.max_margin_usage(), b.auction_discount(), b.auction_time(), b.request_delay()) == ok


# ---------------------------------------------------------------- requests: cancel, expiry


def test_a_matured_request_cannot_be_kept_for_later(p):
    """A redemption kept open after it matured would let its owner leave at the moment of its
    choosing (just before a known loss): it expires an hour after it is ready."""
    lp = seed(p, 1000)
    shares = p.backstop.balanceOf(lp.address)
    with boa.env.prank(lp.address):
        p.backstop.request_redeem(shares)
    wait(p, DAY + 3601)
    with boa.env.prank(lp.address):
        with boa.reverts("backstop: request expired"):
            p.backstop.claim_redeem(lp.address)
        assert p.backstop.cancel_redeem() == shares
    assert p.backstop.balanceOf(lp.address) == shares
    # a deposit likewise; cancelling gives the tokens back and changes nothing else
    late = p.new_user()
    request_deposit(p, late, 500)
    wait(p, DAY + 3601)
    with boa.reverts("backstop: request expired"):
        claim_deposit(p, late)
    total = p.backstop.totalAssets()
    with boa.env.prank(late.address):
        assert p.backstop.cancel_deposit() == 500 * 10**6
    assert p.usdc.balanceOf(late.address) == 500 * 10**6
    assert p.backstop.pending_deposits() == 0 and p.backstop.totalAssets() == total
    with boa.env.prank(late.address), boa.reverts("backstop: no request"):
        p.backstop.cancel_deposit()


# ---------------------------------------------------------------- budgets follow the units


def test_budget_of_a_position_that_changes_side_is_dropped(p):
    seed(p)
    a, _ = underwater(p)
    via_backstop(p, p.new_user(), a)
    long_inventory = p.engine.positions(p.backstop.address, ETH_PERP).size
    assert long_inventory > 0 and p.backstop.discount_budget(ETH_PERP) > 0
    # a short account that a rise makes liquidatable, larger than the vault's long
    s, b = p.new_user(), funded(p, 1_000_000)
    p.deposit_usd(s, 20_000)
    p.trade(b, s, ETH_PERP, 100 * WAD, 1820 * WAD)
    p.set_price("ETH", 1990)
    assert p.engine.is_liquidatable(s.address)
    equity_before = p.equity(p.backstop.address)
    fee = via_backstop(p, p.new_user(), s)
    short = p.engine.positions(p.backstop.address, ETH_PERP).size
    assert short < 0
    gain = p.equity(p.backstop.address) + fee * SCALE - equity_before
    # the old long's budget left with it; the new short carries this takeover's kept gain only
    assert p.backstop.discount_budget(ETH_PERP) == gain - fee * SCALE


def test_diluting_units_take_no_more_than_the_average(p):
    """The coalition's nearly bankrupt account joins units that paid nothing to a market whose
    units carry an honest takeover's budget: its units carry the average, and the discounts the
    depositors can pay on the market stay within the gains the takeovers kept."""
    seed(p)
    honest, _ = underwater(p)
    via_backstop(p, p.new_user(), honest)
    honest_budget = p.backstop.discount_budget(ETH_PERP)
    p.set_price("ETH", 2000)
    coalition, _ = underwater(p, size_eth=40, deposit=9760, price_after=1760)
    assert p.equity(coalition.address) < 40 * 1760 * WAD * 2 // 100  # the penalty is capped
    fee = via_backstop(p, p.new_user(), coalition)
    total_budget = p.backstop.discount_budget(ETH_PERP)
    inventory = p.engine.positions(p.backstop.address, ETH_PERP).size
    wait(p, 2 * 3600)
    _, discount, _ = p.backstop.unwind_price(ETH_PERP, inventory)
    assert discount <= total_budget
    assert total_budget >= honest_budget and fee >= 0


# ---------------------------------------------------------------- the deficit waterfall


def bankrupt(p):
    """An account long 40 ETH-PERP at $2,000 with $8,000 of cash (its initial margin), gapped
    to $1,750: $2,000 in debt once its positions are closed at mark."""
    a, _ = underwater(p, size_eth=40, deposit=8_000, price_after=1750)
    assert p.equity(a.address) < 0
    return a


def test_backstop_covers_a_deficit_after_the_insurance_fund(p):
    seed(p)
    assert p.vault.backstop() == p.backstop.address and p.vault.insurance_fund() == 0
    a = bankrupt(p)
    deficit = -p.equity(a.address)
    cash_before = p.vault.cash(p.backstop.address)
    price_before = share_price(p)
    _, logs = liquidate(p, funded(p, 1_000_000), a)
    (cover,) = [lg for lg in logs if type(lg).__name__ == "DeficitCovered"]
    assert (cover.from_insurance, cover.from_backstop, cover.bad_debt) == (0, deficit, 0)
    assert p.vault.cash(p.backstop.address) == cash_before - deficit
    assert p.vault.bad_debt() == 0
    # the depositors carried the loss: the share price fell
    after = share_price(p)
    assert after[0] * price_before[1] < price_before[0] * after[1]


def test_backstop_pays_only_its_equity_above_initial_margin(p):
    seed(p, 1_000)
    p.fund_insurance(500)
    a = bankrupt(p)
    deficit = -p.equity(a.address)  # $2,000
    _, logs = liquidate(p, funded(p, 1_000_000), a)
    (cover,) = [lg for lg in logs if type(lg).__name__ == "DeficitCovered"]
    # the fund's $500 first, then the vault's $1,000 (no positions: all of it is free), the rest is bad debt
    assert (cover.from_insurance, cover.from_backstop) == (500 * WAD, 1_000 * WAD)
    assert cover.bad_debt == deficit - 1_500 * WAD == p.vault.bad_debt()
    assert p.vault.cash(p.backstop.address) == 0 and p.backstop.totalAssets() == 0
    # shares exist and the vault has no equity: a deposit would only fill the hole
    with boa.reverts("backstop: no equity"):
        request_deposit(p, p.new_user(), 100)


def test_only_the_admin_names_the_backstop(p):
    with boa.env.prank(p.new_user().address), boa.reverts("roles: not admin"):
        p.vault.set_backstop(p.backstop.address)
    # an account that never agreed to pay others' deficits cannot be named
    with boa.env.prank(p.admin):
        with boa.reverts("vault: not a backstop of this vault"):
            p.vault.set_backstop(funded(p, 1_000).address)
        with boa.reverts("vault: not a backstop of this vault"):
            p.vault.set_backstop(p.engine.address)
        p.vault.set_backstop("0x0000000000000000000000000000000000000000")
    assert p.vault.backstop() == "0x0000000000000000000000000000000000000000"


def collateral_account(p, weth: int = WAD):
    """An account with $1,500 of cash and `weth` of WETH, long 10 ETH-PERP at $2,000, which a
    liquidation at $1,700 leaves with negative cash and its WETH to sell."""
    a, b = p.new_user(), funded(p, 1_000_000)
    p.deposit_usd(a, 1500)
    p.deposit(a, "WETH", weth)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1700)
    return a


def test_collateral_bought_in_a_routed_liquidation_is_valued_at_its_sale_price(p):
    """The vault buys a liquidated account's collateral at the liquidation sale price, index
    less min(penalty, (1 - haircut) / 2), and counts it at that price, not at its haircut value:
    the purchase neither raises nor lowers the share price, so such a liquidation routes (the
    keeper keeps no inventory). By hand: ETH at $1,700, penalty 2%, haircut 0.85. Collateral is
    sold only by an account the close left with negative equity, which pays no penalty: the
    vault's gain is exactly 0."""
    seed(p)
    b = p.backstop
    a = collateral_account(p)
    sale = 1700 * WAD * 98 // 100  # min(2%, 7.5%) off the index
    assert p.vault.sale_price(WETH) == (1700 * WAD, sale)
    equity_before = p.equity(b.address)
    price_before = share_price(p)
    keeper = p.new_user()
    with boa.env.prank(keeper.address):
        fee = b.liquidate(a.address)
        (event,) = [lg for lg in b.get_logs(strict=False) if type(lg).__name__ == "BackstopLiquidation"]
    held = p.vault.collateral_balances(b.address)[WETH]
    assert 0 < held <= WAD
    # a's $1,500 debt after the close, bought with WETH at the sale price, rounded up
    assert held == -(-1500 * WAD * WAD // sale)
    haircut_value = held * 1700 * WAD * 85 // 100 // WAD
    assert p.vault.sale_markup(b.address) == held * sale // WAD - haircut_value
    assert b.totalAssets() == (p.equity(b.address) + held * sale // WAD - haircut_value) // SCALE
    assert event.gain == p.equity(b.address) + p.vault.sale_markup(b.address) - equity_before == 0
    assert fee == 0
    after = share_price(p)
    assert after[0] * price_before[1] == price_before[0] * after[1]
    assert p.engine.open_markets(keeper.address) == [] and p.vault.collateral_balances(keeper.address)[WETH] == 0


def buy(p, buyer, asset_id: int, amount: int, max_price: int) -> int:
    units = 10**12
    p.usdc.mint(buyer.address, units)
    with boa.env.prank(buyer.address):
        p.usdc.approve(p.backstop.address, units)
        return p.backstop.buy_collateral(asset_id, amount, max_price)


def test_collateral_auction_by_hand(p):
    """The collateral the vault bought is sold in a Dutch auction from the index price down to
    the sale price over `auction_time`; the buyer pays ceil(amount * price / 1e18) in cash and
    receives the tokens, and the share price never falls from a sale."""
    seed(p)
    a = collateral_account(p)
    b = p.backstop
    via_backstop(p, p.new_user(), a)
    held = p.vault.collateral_balances(b.address)[WETH]
    start = b.collateral_start(WETH)
    assert start == boa.env.evm.patch.timestamp
    duration = b.auction_time()
    sale = 1700 * WAD * 98 // 100
    assert b.collateral_price(WETH) == 1700 * WAD
    wait(p, duration // 3)
    elapsed = boa.env.evm.patch.timestamp - start
    expected = 1700 * WAD - (1700 * WAD - sale) * elapsed // duration
    assert b.collateral_price(WETH) == expected
    buyer = p.new_user()
    price_before = share_price(p)
    part = held // 3 + 7
    payment = buy(p, buyer, WETH, part, expected)
    assert payment == -(-part * expected // (WAD * SCALE))
    assert p.token("WETH").balanceOf(buyer.address) == part
    after = share_price(p)
    assert after[0] * price_before[1] >= price_before[0] * after[1]
    wait(p, duration)
    assert b.collateral_price(WETH) == sale
    price_before = share_price(p)
    buy(p, buyer, WETH, held - part, sale)
    after = share_price(p)
    assert after[0] * price_before[1] >= price_before[0] * after[1]
    assert p.vault.collateral_balances(b.address)[WETH] == 0
    # bad input: a clear reason, nothing moves
    with boa.reverts("backstop: no inventory"):
        b.collateral_price(WETH)
    with boa.reverts("backstop: no inventory"):
        buy(p, buyer, WETH, 1, sale)
    with boa.reverts("backstop: zero amount"):
        buy(p, buyer, WETH, 0, sale)


def test_collateral_auction_refuses_bad_orders(p):
    seed(p)
    via_backstop(p, p.new_user(), collateral_account(p))
    held = p.vault.collateral_balances(p.backstop.address)[WETH]
    buyer = p.new_user()
    with boa.reverts("backstop: more than the inventory"):
        buy(p, buyer, WETH, held + 1, 10**30)
    with boa.reverts("backstop: price above limit"):
        buy(p, buyer, WETH, held, 1700 * WAD - 1)
    assert p.vault.collateral_balances(p.backstop.address)[WETH] == held


def value_of(p, account: str, index: int) -> int:
    """An account of `collateral_account`: cash + WETH at `index` + its long's PnL, WAD USD."""
    size = p.engine.positions(account, ETH_PERP).size
    weth = p.vault.collateral_balances(account)[WETH]
    return p.vault.cash(account) + weth * index // WAD + size * (index - 2000 * WAD) // WAD


def test_coalition_cannot_buy_back_its_collateral_at_a_profit(p):
    """A coalition lets its account with collateral be liquidated into the vault, then buys the
    collateral back, at once or at the end of the auction. Valued at the index, the coalition
    ends with at most what it had: it was paid the sale price and pays at least the sale price
    (rounded against it), and a bankrupt account pays no penalty from which a fee could come."""
    index = 1700 * WAD
    for delay in (0, 2 * 3600):
        seed(p)
        a = collateral_account(p)
        keeper, buyer = p.new_user(), p.new_user()

        before = value_of(p, a.address, index)
        fee = via_backstop(p, keeper, a)
        bought = p.vault.collateral_balances(p.backstop.address)[WETH]
        wait(p, delay)
        price = p.backstop.collateral_price(WETH)
        payment = buy(p, buyer, WETH, bought, price)
        gain = value_of(p, a.address, index) - before + fee * SCALE + bought * index // WAD - payment * SCALE
        assert gain <= 0, (delay, gain)
        p.set_price("ETH", 2000)


# ---------------------------------------------------------------- the keeper's mirror


def test_keeper_mirror_equals_the_contract(p):
    """keeper.risk.backstop against the contract to the wei: share conversions at odd prices, the
    routed liquidation's fee and kept gain, the unwind terms through the auction and after a
    partial unwind, and the deficit waterfall."""
    import numpy as np

    from keeper.risk import backstop as mirror

    rng = np.random.default_rng(7)
    b = p.backstop
    seed(p, 123_457)
    a, _ = underwater(p)
    equity_before = p.equity(b.address)
    fee = via_backstop(p, p.new_user(), a)
    gain = p.equity(b.address) + fee * SCALE - equity_before
    assert (fee, b.discount_budget(ETH_PERP)) == mirror.caller_fee(gain, b.caller_fee_share(), SCALE)
    total, supply = b.totalAssets(), b.totalSupply()
    assert total == mirror.total_assets(p.equity(b.address), p.vault.sale_markup(b.address), SCALE)
    for x in [1, 999, *(int(v) for v in rng.integers(1, 10**15, 20))]:
        assert b.convertToShares(x) == mirror.to_shares(x, total, supply)
        assert b.convertToAssets(x * 10**6) == mirror.to_assets(x * 10**6, total, supply)
    started = b.auction_start(ETH_PERP)
    position = p.engine.positions(b.address, ETH_PERP).size
    taker = funded(p, 1_000_000)
    for step in range(5):
        wait(p, int(rng.integers(60, 1500)))
        rate = mirror.discount_rate(
            b.auction_discount(),
            p.engine.max_price_deviation(),
            boa.env.evm.patch.timestamp - started,
            b.auction_time(),
        )
        for size in (1, position // 3, abs(position)):
            terms = mirror.unwind_terms(
                1820 * WAD, rate, b.discount_budget(ETH_PERP), b.recorded_position(ETH_PERP), position, size
            )
            assert b.unwind_price(ETH_PERP, size) == (terms.price, terms.discount, 1820 * WAD)
        if step == 2:  # a partial unwind, then the rest priced from what is left
            sold = position // 4
            terms = mirror.unwind_terms(
                1820 * WAD, rate, b.discount_budget(ETH_PERP), b.recorded_position(ETH_PERP), position, sold
            )
            budget = b.discount_budget(ETH_PERP)
            b.unwind(*take_order(p, taker, sold, 1820 * WAD))
            position -= sold
            assert b.discount_budget(ETH_PERP) == budget - terms.carried
    # the collateral auction: bought in a routed liquidation, sold down to the sale price
    p.set_price("ETH", 2000)
    via_backstop(p, p.new_user(), collateral_account(p))
    asset = p.vault.assets(WETH)
    sale = mirror.sale_price(1700 * WAD, asset.haircut, p.engine.liquidation_penalty())
    assert p.vault.sale_price(WETH) == (1700 * WAD, sale)
    assert b.totalAssets() == mirror.total_assets(p.equity(b.address), p.vault.sale_markup(b.address), SCALE)
    started = b.collateral_start(WETH)
    buyer = p.new_user()
    for _ in range(4):
        wait(p, int(rng.integers(60, 2000)))
        price = mirror.collateral_price(1700 * WAD, sale, boa.env.evm.patch.timestamp - started, b.auction_time())
        assert b.collateral_price(WETH) == price
        amount = int(rng.integers(1, p.vault.collateral_balances(b.address)[WETH] // 4))
        assert buy(p, buyer, WETH, amount, price) == mirror.collateral_payment(amount, price, asset.decimals, SCALE)
    # the waterfall: a bankrupt account with a little insurance fund
    p.fund_insurance(300)
    p.set_price("ETH", 2000)
    bad = bankrupt(p)
    deficit = -p.equity(bad.address)
    summary = p.engine.margin_summary(b.address)
    expected = mirror.cover_deficit(
        deficit, p.vault.insurance_fund(), p.vault.cash(b.address), summary.equity, summary.initial_margin
    )
    _, logs = liquidate(p, funded(p, 1_000_000), bad)
    (cover,) = [lg for lg in logs if type(lg).__name__ == "DeficitCovered"]
    assert (cover.from_insurance, cover.from_backstop, cover.bad_debt) == tuple(expected)


def test_a_small_takeover_barely_moves_the_auction_clock(p):
    """Growth moves the auction's start towards now by the new share of the position only: a
    coalition cannot hold back the discount on a large position by feeding it dust."""
    seed(p)
    a, _ = underwater(p)
    via_backstop(p, p.new_user(), a)
    first = p.engine.positions(p.backstop.address, ETH_PERP).size
    start = p.backstop.auction_start(ETH_PERP)
    wait(p, 3000)
    p.set_price("ETH", 2000)
    small, _ = underwater(p, size_eth=4, deposit=1_000)
    via_backstop(p, p.new_user(), small)
    now = boa.env.evm.patch.timestamp
    grown = p.engine.positions(p.backstop.address, ETH_PERP).size - first
    assert 0 < grown < first
    assert p.backstop.auction_start(ETH_PERP) == now - (now - start) * first // (first + grown)
    assert now - p.backstop.auction_start(ETH_PERP) > 2000  # most of the hour's discount stays


def test_a_bankrupt_account_can_be_routed_to_the_vault(p):
    """The deficit the waterfall takes from the vault in a routed call is not the takeover's
    loss (it would have paid it whoever liquidated): the route goes through, with no fee, and the
    keeper still holds nothing."""
    seed(p)
    a = bankrupt(p)
    deficit = -p.equity(a.address)
    paid_before = p.vault.backstop_paid()
    keeper = p.new_user()
    equity_before = p.equity(p.backstop.address)
    assert via_backstop(p, keeper, a) == 0  # no penalty from a bankrupt account: no fee
    assert p.vault.backstop_paid() - paid_before == deficit
    assert p.equity(p.backstop.address) == equity_before - deficit
    assert p.engine.positions(p.backstop.address, ETH_PERP).size == 40 * WAD
    assert p.engine.open_markets(keeper.address) == [] and p.usdc.balanceOf(keeper.address) == 0
    assert p.vault.bad_debt() == 0


def test_anyone_completes_a_ready_request_for_its_owner(p):
    """A matured request is no option its owner is sure to hold: anyone completes it, for the
    owner, once it is ready (shares and tokens go to the owner, never to the caller)."""
    lp = seed(p, 1000)
    shares = p.backstop.balanceOf(lp.address)
    other = p.new_user()
    with boa.env.prank(lp.address):
        p.backstop.request_redeem(shares)
    late = p.new_user()
    quoted = request_deposit(p, late, 500)
    with boa.env.prank(other.address), boa.reverts("backstop: request not ready"):
        p.backstop.claim_deposit(late.address)
    wait(p, DAY)
    with boa.env.prank(other.address):
        assert p.backstop.claim_deposit(late.address) == quoted
        paid = p.backstop.claim_redeem(lp.address)
    assert p.backstop.balanceOf(late.address) == quoted and p.backstop.balanceOf(other.address) == 0
    assert p.usdc.balanceOf(lp.address) == paid > 0 and p.usdc.balanceOf(other.address) == 0
