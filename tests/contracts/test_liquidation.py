"""MarginEngine liquidation: eligibility, partial close to the target health, ordering by margin,
exact penalty split, collateral sale, insurance waterfall and bad debt, and value conservation."""

from __future__ import annotations

from fractions import Fraction

import boa
import pytest

from tests.boa_protocol import WAD

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
MM = 5 * 10**16
PENALTY = 2 * 10**16
SHARE = 5 * 10**17
TARGET = 125 * 10**16
MAX_UINT = 2**256 - 1


def ceil_div(a: int, d: int) -> int:
    return -(-a // d)


def charge(amount: int, price: int, rate: int) -> int:
    return ceil_div(amount * price * rate, WAD * WAD)


def close_step(equity, mm_total, mm_u, gross_u, size, price, *, target=TARGET, penalty_rate=PENALTY, share=SHARE):
    """The engine's partial close of one underlying holding a single position, by hand."""
    denominator = mm_u * target // WAD - gross_u * penalty_rate // WAD
    deficit = ceil_div(mm_total * target, WAD) - equity
    fraction = WAD if denominator <= 0 else min(WAD, ceil_div(deficit * WAD, denominator))
    amount = min(ceil_div(abs(size) * fraction, WAD), abs(size))
    closed = ceil_div(amount * price, WAD)
    penalty = ceil_div(closed * penalty_rate, WAD)
    return amount, closed, penalty, penalty * share // WAD


_LOGS: list = []


def liquidate(p, liquidator, account):
    """Liquidate as `liquidator`; returns the closed notional and keeps the call's logs for `logged`."""
    with boa.env.prank(liquidator.address):
        notional = p.engine.liquidate(account.address)
        _LOGS[:] = p.engine.get_logs()
    return notional


def logged(name: str) -> list:
    """Events named `name` of the last successful `liquidate` (engine and vault)."""
    return [x for x in _LOGS if type(x).__name__ == name]


def snapshot(p, *users):
    v, e = p.vault, p.engine
    return (
        v.insurance_fund(),
        v.bad_debt(),
        [v.cash(u.address) for u in users],
        [list(v.collateral_balances(u.address)) for u in users],
        [[tuple(x) for x in e.account_states([u.address])[0].positions] for u in users],
    )


@pytest.fixture
def setup(protocol):
    p = protocol
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(liq, 1_000_000)
    return p, a, b, liq


# ------------------------------------------------------------------ eligibility


def test_healthy_account_cannot_be_liquidated(setup):
    p, a, b, liq = setup
    p.deposit_usd(a, 10_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.set_price("ETH", 1900)  # equity 6000 >= MM 3800
    assert not p.engine.is_liquidatable(a.address)
    before = snapshot(p, a, b, liq)
    with boa.reverts("engine: account not liquidatable"):
        liquidate(p, liq, a)
    with boa.reverts("engine: account not liquidatable"):
        liquidate(p, liq, b)
    with boa.reverts("engine: account not liquidatable"):
        liquidate(p, liq, p.new_user())  # nothing at all
    assert snapshot(p, a, b, liq) == before


def test_exactly_at_maintenance_is_not_liquidatable(setup):
    p, a, b, liq = setup
    p.deposit_usd(a, 2140)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1880)  # equity 940 == MM 940
    with boa.reverts("engine: account not liquidatable"):
        liquidate(p, liq, a)


def test_self_liquidation_reverts(setup):
    p, a, b, _ = setup
    p.deposit_usd(a, 10_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.set_price("ETH", 1820)
    assert p.engine.is_liquidatable(a.address)
    with boa.reverts("engine: self liquidation"):
        liquidate(p, a, a)


def test_liquidator_below_initial_margin_reverts(setup):
    p, a, b, _ = setup
    p.deposit_usd(a, 10_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.set_price("ETH", 1820)
    poor = p.new_user()
    p.deposit_usd(poor, 100)
    with boa.reverts("engine: liquidator below initial margin"):
        liquidate(p, poor, a)
    with boa.reverts("engine: liquidator below initial margin"):
        liquidate(p, p.new_user(), a)


# ------------------------------------------------------------------ partial liquidation


def test_partial_liquidation_exact(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.deposit_usd(a, 10_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.set_price("ETH", 1820)
    price = 1820 * WAD
    equity = 2800 * WAD
    mm = charge(40 * WAD, price, MM)
    assert e.margin_summary(a.address)[:3] == (equity, charge(40 * WAD, price, 10**17), mm)
    health_before = equity * WAD // mm
    amount, closed, penalty, share = close_step(equity, mm, mm, 40 * 1820 * WAD, 40 * WAD, price)
    assert 0 < amount < 40 * WAD
    liq_cash, fund = v.cash(liq.address), v.insurance_fund()

    notional = liquidate(p, liq, a)

    assert notional == closed
    (ev,) = logged("Liquidation")
    mm_after = charge(40 * WAD - amount, price, MM)
    health_after = (equity - penalty) * WAD // mm_after
    assert (ev.account, ev.liquidator, ev.notional, ev.penalty, ev.health_before, ev.health_after) == (
        a.address, liq.address, closed, penalty, health_before, health_after,
    )
    (moved,) = logged("PositionLiquidated")
    assert (moved.account, moved.liquidator, moved.market, moved.size, moved.price) == (
        a.address, liq.address, ETH_PERP, amount, price,
    )
    # positions moved at mark; the account's loss is realized at the fill
    assert e.positions(a.address, ETH_PERP)[:2] == (40 * WAD - amount, price)
    assert e.positions(liq.address, ETH_PERP)[:2] == (amount, price)
    assert v.cash(a.address) == 10_000 * WAD - 7200 * WAD - penalty
    # penalty split: floor(50%) to the liquidator, the rest to the fund
    assert v.cash(liq.address) - liq_cash == share == penalty // 2
    assert v.insurance_fund() - fund == penalty - share
    # health restored to the target within rounding, never lowered
    s = e.margin_summary(a.address)
    assert s.health_factor == health_after
    assert TARGET <= s.health_factor <= TARGET + 10**9
    assert s.health_factor > health_before
    # a second attempt at the same price finds a healthy account
    with boa.reverts("engine: account not liquidatable"):
        liquidate(p, liq, a)


def test_penalty_split_follows_liquidator_share(setup):
    p, a, b, liq = setup
    v = p.vault
    p.engine.set_liquidation_params(PENALTY, 3 * 10**17, TARGET)
    p.deposit_usd(a, 10_000)
    p.trade(a, b, ETH_PERP, 40 * WAD + 3, 2000 * WAD)
    p.feeds["ETH"].set_answer(181234567891)  # 1812.34567891
    price = 181234567891 * 10**10
    equity = 10_000 * WAD + (40 * WAD + 3) * (price - 2000 * WAD) // WAD
    mm = charge(40 * WAD + 3, price, MM)
    gross = (40 * WAD + 3) * price // WAD
    amount, closed, penalty, share = close_step(equity, mm, mm, gross, 40 * WAD + 3, price, share=3 * 10**17)
    assert (closed * PENALTY) % WAD != 0  # the penalty really rounds up
    liq_cash, fund = v.cash(liq.address), v.insurance_fund()
    assert liquidate(p, liq, a) == closed
    assert v.cash(liq.address) - liq_cash == penalty * 3 // 10 == share
    assert v.insurance_fund() - fund == penalty - share
    assert logged("Liquidation")[0].penalty == penalty


def test_most_margin_intensive_underlying_first(setup):
    p, a, b, liq = setup
    e = p.engine
    p.deposit_usd(a, 10_300)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)  # MM 3640 at 1820
    p.trade(a, b, BTC_PERP, WAD // 10, 30000 * WAD)  # MM 150
    p.set_price("ETH", 1820)
    equity = 10_300 * WAD - 7200 * WAD
    mm_eth = charge(40 * WAD, 1820 * WAD, MM)
    mm_btc = charge(WAD // 10, 30000 * WAD, MM)
    assert e.margin_summary(a.address)[:3:2] == (equity, mm_eth + mm_btc)
    amount, closed, _, _ = close_step(equity, mm_eth + mm_btc, mm_eth, 40 * 1820 * WAD, 40 * WAD, 1820 * WAD)
    assert liquidate(p, liq, a) == closed
    assert [x.market for x in logged("PositionLiquidated")] == [ETH_PERP]
    assert e.positions(a.address, ETH_PERP).size == 40 * WAD - amount
    assert e.positions(a.address, BTC_PERP).size == WAD // 10  # untouched
    assert e.health_factor(a.address) >= TARGET


def test_big_btc_closed_before_small_eth(setup):
    p, a, b, liq = setup
    e = p.engine
    p.deposit_usd(a, 7_000)
    p.trade(a, b, BTC_PERP, 2 * WAD, 30000 * WAD)
    p.trade(a, b, ETH_PERP, WAD, 2000 * WAD)
    p.set_price("BTC", 27300)
    assert e.is_liquidatable(a.address)
    liquidate(p, liq, a)
    assert [x.market for x in logged("PositionLiquidated")] == [BTC_PERP]
    assert e.positions(a.address, ETH_PERP).size == WAD
    assert 0 < e.positions(a.address, BTC_PERP).size < 2 * WAD
    assert e.health_factor(a.address) >= TARGET


def test_first_underlying_closed_fully_then_next_partially(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.deposit_usd(a, 11_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.trade(a, b, BTC_PERP, WAD, 30000 * WAD)
    p.set_price("ETH", 1820)
    p.set_price("BTC", 29000)
    equity = 11_000 * WAD - 7200 * WAD - 1000 * WAD
    mm_eth = charge(40 * WAD, 1820 * WAD, MM)
    mm_btc = charge(WAD, 29000 * WAD, MM)
    # ETH alone cannot restore health: closed completely
    amount1, closed1, pen1, share1 = close_step(equity, mm_eth + mm_btc, mm_eth, 72800 * WAD, 40 * WAD, 1820 * WAD)
    assert amount1 == 40 * WAD
    equity -= pen1
    amount2, closed2, pen2, share2 = close_step(equity, mm_btc, mm_btc, 29000 * WAD, WAD, 29000 * WAD)
    assert 0 < amount2 < WAD
    fund = v.insurance_fund()
    assert liquidate(p, liq, a) == closed1 + closed2
    moved = logged("PositionLiquidated")
    assert [(x.market, x.size) for x in moved] == [(ETH_PERP, 40 * WAD), (BTC_PERP, amount2)]
    assert e.open_markets(a.address) == [BTC_PERP]
    assert v.insurance_fund() - fund == pen1 - share1 + pen2 - share2
    # the event's penalty is computed on the total notional: equal here up to a wei of rounding
    ev = logged("Liquidation")[0]
    assert ev.penalty == ceil_div((closed1 + closed2) * PENALTY, WAD)
    assert pen1 + pen2 - 1 <= ev.penalty <= pen1 + pen2
    assert e.health_factor(a.address) >= TARGET


def test_short_position_partial_liquidation(setup):
    p, a, b, liq = setup
    e = p.engine
    p.deposit_usd(a, 10_000)
    p.trade(b, a, ETH_PERP, 40 * WAD, 2000 * WAD)  # a short 40
    p.set_price("ETH", 2170)
    equity = 10_000 * WAD - 40 * 170 * WAD
    mm = charge(40 * WAD, 2170 * WAD, MM)
    assert equity < mm
    amount, closed, _, _ = close_step(equity, mm, mm, 40 * 2170 * WAD, -40 * WAD, 2170 * WAD)
    assert liquidate(p, liq, a) == closed
    assert e.positions(a.address, ETH_PERP).size == -(40 * WAD - amount)
    assert e.positions(liq.address, ETH_PERP).size == -amount
    assert logged("PositionLiquidated")[0].size == -amount
    assert e.health_factor(a.address) >= TARGET


# ------------------------------------------------------------------ underwater accounts


def _underwater(p, a, b, usd, weth):
    p.deposit_usd(a, usd)
    if weth:
        p.deposit(a, "WETH", weth)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1700)


def test_deep_underwater_with_bad_debt(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    _underwater(p, a, b, 1000, WAD)
    # 1000 + 1 WETH * 1700 * 0.85 - 10 * 300
    assert e.equity(a.address) == -555 * WAD
    liq_cash = v.cash(liq.address)
    assert liquidate(p, liq, a) == 17_000 * WAD
    penalty, share = 340 * WAD, 170 * WAD
    # WETH sold at 1700 * (1 - min(2%, 15%/2)) = 1666
    (sale,) = logged("CollateralLiquidated")
    assert (sale.account, sale.liquidator, sale.asset_id, sale.amount, sale.payment) == (
        a.address, liq.address, 0, WAD, 1666 * WAD,
    )
    # cash after close, penalty and sale: 1000 - 3000 - 340 + 1666 = -674; the fund holds 170
    (cover,) = logged("DeficitCovered")
    assert (cover.account, cover.from_insurance, cover.bad_debt) == (a.address, 170 * WAD, 504 * WAD)
    assert v.insurance_fund() == 0  # never negative
    assert v.bad_debt() == 504 * WAD
    assert v.cash(a.address) == 0
    assert not v.has_collateral(a.address)
    assert e.open_markets(a.address) == []
    assert e.margin_summary(a.address) == (0, 0, 0, MAX_UINT)
    ev = logged("Liquidation")[0]
    assert (ev.notional, ev.penalty, ev.health_before, ev.health_after) == (17_000 * WAD, penalty, 0, MAX_UINT)
    # the liquidator holds the position at mark, the WETH, and paid 1666 minus its 170 share
    assert e.positions(liq.address, ETH_PERP)[:2] == (10 * WAD, 1700 * WAD)
    assert v.balances(liq.address, 0) == WAD
    assert v.cash(liq.address) - liq_cash == share - 1666 * WAD


def test_deep_underwater_covered_by_insurance(setup):
    p, a, b, liq = setup
    v = p.vault
    p.usdc.mint(p.admin, 10_000 * 10**6)
    p.usdc.approve(v.address, 10_000 * 10**6)
    v.fund_insurance(10_000 * 10**6)
    _underwater(p, a, b, 1000, WAD)
    liquidate(p, liq, a)
    (cover,) = logged("DeficitCovered")
    assert (cover.from_insurance, cover.bad_debt) == (674 * WAD, 0)
    assert v.insurance_fund() == 10_000 * WAD + 170 * WAD - 674 * WAD
    assert v.bad_debt() == 0
    assert v.cash(a.address) == 0


def test_partial_collateral_sale_clears_debt(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    _underwater(p, a, b, 1840, WAD)
    # positive equity (285) but far below MM (850): closed fully, cash -1500 after the penalty
    assert e.margin_summary(a.address)[::2] == (285 * WAD, 850 * WAD)
    liquidate(p, liq, a)
    amount = ceil_div(1500 * WAD * WAD, 1666 * WAD)
    payment = amount * 1666 * WAD // WAD
    (sale,) = logged("CollateralLiquidated")
    assert (sale.amount, sale.payment) == (amount, payment)
    assert logged("DeficitCovered") == []
    assert v.cash(a.address) == payment - 1500 * WAD >= 0
    assert v.balances(a.address, 0) == WAD - amount
    assert v.bad_debt() == 0
    assert e.equity(a.address) > 0
    assert e.health_factor(a.address) == MAX_UINT


def test_account_without_positions_and_negative_equity(setup):
    """Debt larger than the haircut value of its collateral, no positions: straight to the sale."""
    p, a, _, liq = setup
    v, e = p.vault, p.engine
    p.deposit(a, "WETH", WAD)
    with boa.env.prank(e.address):
        v.settle_cash(a.address, -1500 * WAD)  # equity = -1500 + 1700 = 200... at 2000
    p.set_price("ETH", 1700)  # -1500 + 1445 = -55
    assert e.is_liquidatable(a.address)
    assert liquidate(p, liq, a) == 0
    (sale,) = logged("CollateralLiquidated")
    assert sale.payment >= 1500 * WAD
    assert v.cash(a.address) >= 0


def test_liquidation_settles_expired_futures_first(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.deposit_usd(a, 4_000)
    p.trade(a, b, ETH_FUT, 10 * WAD, 2000 * WAD)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)  # IM 2000 + 2000: exactly met
    expiry = p.deployment.market_expiries["ETH-FUT"]
    boa.env.time_travel(seconds=expiry - boa.env.evm.patch.timestamp + 1)
    p.set_price("ETH", 1800)
    p.set_price("BTC", 30000)
    e.settle_market(ETH_FUT)
    # the settled future counts at 1800 but needs no margin; the perp needs 900
    assert e.margin_summary(a.address)[:3] == (0, 1800 * WAD, 900 * WAD)
    liquidate(p, liq, a)
    changes = logged("PositionChanged")
    assert (changes[0].account, changes[0].market, changes[0].size, changes[0].realized_pnl) == (
        a.address, ETH_FUT, 0, -2000 * WAD,
    )
    # the settled future is realized, not handed to the liquidator
    assert [x.market for x in logged("PositionLiquidated")] == [ETH_PERP]
    assert e.positions(liq.address, ETH_FUT).size == 0
    assert e.open_markets(a.address) == []
    # 4000 - 2000 - 2000 - 360 penalty: the fund (its 180 half) covers what it can
    (cover,) = logged("DeficitCovered")
    assert (cover.from_insurance, cover.bad_debt) == (180 * WAD, 180 * WAD)
    assert v.cash(a.address) == 0 and v.insurance_fund() == 0


# ------------------------------------------------------------------ many small vs one large


def _ladder(p, prices, target):
    p.engine.set_liquidation_params(PENALTY, SHARE, target)
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(liq, 1_000_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    fund0 = p.vault.insurance_fund()
    penalties, notionals = [], []
    for px in prices:
        p.set_price("ETH", px)
        if p.engine.is_liquidatable(a.address):
            notionals.append(liquidate(p, liq, a))
            penalties.append(logged("Liquidation")[0].penalty)
    # every penalty is ceil(2% of notional) and the fund got exactly its half of each
    assert penalties == [ceil_div(n * PENALTY, WAD) for n in notionals]
    assert p.vault.insurance_fund() - fund0 == sum(x - x * SHARE // WAD for x in penalties)
    return penalties, notionals, p.engine.margin_summary(a.address)


@pytest.mark.parametrize("target", [WAD, TARGET])
def test_many_small_liquidations_do_not_pay_more(protocol, target):
    p = protocol
    with boa.env.anchor():
        big, big_notional, big_end = _ladder(p, [1820], target)
    with boa.env.anchor():
        small, small_notional, small_end = _ladder(p, list(range(1900, 1819, -5)), target)
    assert len(big) == 1
    if target == WAD:
        assert len(small) > 3  # restoring only to MM: every further drop liquidates again
    assert sum(small) <= sum(big)
    assert sum(small_notional) <= sum(big_notional)
    # and the account keeps at least as much equity
    assert small_end.equity >= big_end.equity


# ------------------------------------------------------------------ conservation


def test_value_is_conserved_through_a_sequence(protocol):
    p = protocol
    e, v, usdc = p.engine, p.vault, p.usdc
    users = [p.new_user() for _ in range(5)]
    a, b, c, d, liq = users
    deposits = [10_000, 500_000, 50_000, 80_000, 1_000_000]
    for u, usd in zip(users, deposits):
        p.deposit_usd(u, usd)
    p.deposit(c, "WETH", 3 * WAD)
    sponsor = p.new_user()
    usdc.mint(sponsor.address, 777 * 10**6)
    with boa.env.prank(sponsor.address):
        usdc.approve(v.address, 777 * 10**6)
        v.fund_insurance(777 * 10**6)
    withdrawn = 0

    p.trade(a, b, ETH_PERP, 40 * WAD + 11, 2010 * WAD)  # at a premium: funding starts
    p.trade(c, b, ETH_FUT, 7 * WAD + 5, 1995 * WAD)
    p.trade(d, c, BTC_PERP, WAD // 3, 30090 * WAD)
    p.trade(b, c, ETH_PERP, 3 * WAD, 2003 * WAD)
    boa.env.time_travel(seconds=7321)
    p.set_price("ETH", 1951.23)
    p.set_price("BTC", 30555.55)
    p.trade(c, d, BTC_PERP, WAD // 7, 30600 * WAD)
    p.trade(c, a, ETH_PERP, WAD + 1, 1955 * WAD)  # a reduces
    with boa.env.prank(d.address):
        v.withdraw(usdc.address, 1_234_567_891)
    withdrawn += 1_234_567_891
    boa.env.time_travel(seconds=1800)
    p.set_price("ETH", 1830.5)
    p.set_price("BTC", 30100)
    assert e.is_liquidatable(a.address)
    liquidate(p, liq, a)
    boa.env.time_travel(seconds=999)
    p.set_price("ETH", 1799.99)
    p.set_price("BTC", 29999.99)
    if e.is_liquidatable(a.address):
        liquidate(p, liq, a)
    p.trade(b, liq, ETH_PERP, WAD, 1800 * WAD)

    # the token side: the vault holds exactly what the ledger says
    total_in = sum(deposits) * 10**6 + 777 * 10**6
    assert usdc.balanceOf(v.address) == v.settlement_total() == total_in - withdrawn

    # the ledger side: cash + fund + unrealized PnL and funding, exactly, vs what came in
    states = e.market_states()
    prices = p.oracle.index_prices()
    ledger = Fraction(v.insurance_fund())
    for u in users + [sponsor]:
        (st,) = e.account_states([u.address])
        ledger += st.cash
        for x in st.positions:
            m = states[x.market]
            mark = m.settlement_price or prices[e.underlyings(m.underlying).price_id]
            ledger += Fraction(x.size * (mark - x.entry_price), WAD)
            ledger -= Fraction(x.size * (m.funding_index - x.funding_index), WAD)
    ledger -= v.bad_debt()
    slack = (total_in - withdrawn) * 10**12 - ledger
    # rounding favours the protocol, by at most a few wei per fill
    assert 0 <= slack < 100
