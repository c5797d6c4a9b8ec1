"""MarginEngine liquidation: eligibility, partial close to the target health, ordering by margin,
exact penalty split, the penalty capped at the account's equity, expired-but-unsettled futures left
for settlement, collateral sale, insurance waterfall and bad debt, and value conservation."""

from __future__ import annotations

from fractions import Fraction

import boa
import pytest

from tests.boa_protocol import WAD, ceil_div, liquidate
from tests.boa_protocol import last_liquidation_logs as logged

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
MM = 5 * 10**16
PENALTY = 2 * 10**16
SHARE = 5 * 10**17
TARGET = 125 * 10**16
MAX_UINT = 2**256 - 1


def charge(amount: int, price: int, rate: int) -> int:
    return ceil_div(amount * price * rate, WAD * WAD)


def close_step(equity, mm_total, mm_u, gross_u, size, price, *, target=TARGET, penalty_rate=PENALTY, share=SHARE):
    """The engine's partial close of one underlying holding a single position, by hand. The
    penalty is ceil(closed * rate) capped at the equity before the close (0 if it is negative)."""
    denominator = mm_u * target // WAD - gross_u * penalty_rate // WAD
    deficit = ceil_div(mm_total * target, WAD) - equity
    fraction = WAD if denominator <= 0 else min(WAD, ceil_div(deficit * WAD, denominator))
    amount = min(ceil_div(abs(size) * fraction, WAD), abs(size))
    closed = ceil_div(amount * price, WAD)
    penalty = min(ceil_div(closed * penalty_rate, WAD), max(equity, 0))
    return amount, closed, penalty, penalty * share // WAD


def cash_settled() -> list:
    """(account, delta) of every CashSettled of the last `liquidate`, in order."""
    return [(x.account, x.delta) for x in logged("CashSettled")]


def snapshot(p, *users):
    v = p.vault
    return (
        v.insurance_fund(),
        v.bad_debt(),
        [v.cash(u.address) for u in users],
        [list(v.collateral_balances(u.address)) for u in users],
        [[tuple(x) for x in p.lens.account_states([u.address])[0].positions] for u in users],
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
    with boa.reverts("engine: liquidator below IM"):
        liquidate(p, poor, a)
    with boa.reverts("engine: liquidator below IM"):
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

    notional = liquidate(p, liq, a)[0]

    assert notional == closed
    (ev,) = logged("Liquidation")
    mm_after = charge(40 * WAD - amount, price, MM)
    health_after = (equity - penalty) * WAD // mm_after
    assert (ev.account, ev.liquidator, ev.notional, ev.penalty, ev.health_before, ev.health_after) == (
        a.address,
        liq.address,
        closed,
        penalty,
        health_before,
        health_after,
    )
    (moved,) = logged("PositionLiquidated")
    assert (moved.account, moved.liquidator, moved.market, moved.size, moved.price) == (
        a.address,
        liq.address,
        ETH_PERP,
        amount,
        price,
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
    assert liquidate(p, liq, a)[0] == closed
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
    assert liquidate(p, liq, a)[0] == closed
    assert [x.market for x in logged("PositionLiquidated")] == [ETH_PERP]
    assert e.positions(a.address, ETH_PERP).size == 40 * WAD - amount
    assert e.positions(a.address, BTC_PERP).size == WAD // 10  # untouched
    assert p.health_factor(a.address) >= TARGET


def test_big_btc_closed_before_small_eth(setup):
    p, a, b, liq = setup
    e = p.engine
    p.deposit_usd(a, 7_000)
    p.trade(a, b, BTC_PERP, 2 * WAD, 30000 * WAD)
    p.trade(a, b, ETH_PERP, WAD, 2000 * WAD)
    p.set_price("BTC", 27300)
    assert p.engine.is_liquidatable(a.address)
    liquidate(p, liq, a)
    assert [x.market for x in logged("PositionLiquidated")] == [BTC_PERP]
    assert e.positions(a.address, ETH_PERP).size == WAD
    assert 0 < e.positions(a.address, BTC_PERP).size < 2 * WAD
    assert p.health_factor(a.address) >= TARGET


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
    assert liquidate(p, liq, a)[0] == closed1 + closed2
    moved = logged("PositionLiquidated")
    assert [(x.market, x.size) for x in moved] == [(ETH_PERP, 40 * WAD), (BTC_PERP, amount2)]
    assert e.open_markets(a.address) == [BTC_PERP]
    assert v.insurance_fund() - fund == pen1 - share1 + pen2 - share2
    # the event's penalty is the sum of the penalties actually charged, one per underlying
    ev = logged("Liquidation")[0]
    assert ev.penalty == pen1 + pen2
    assert p.health_factor(a.address) >= TARGET


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
    assert liquidate(p, liq, a)[0] == closed
    assert e.positions(a.address, ETH_PERP).size == -(40 * WAD - amount)
    assert e.positions(liq.address, ETH_PERP).size == -amount
    assert logged("PositionLiquidated")[0].size == -amount
    assert p.health_factor(a.address) >= TARGET


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
    assert p.equity(a.address) == -555 * WAD
    liq_cash = v.cash(liq.address)
    assert v.insurance_fund() == 0
    assert liquidate(p, liq, a)[0] == 17_000 * WAD
    # negative equity: no penalty at all (2% of 17000 would have been 340)
    # WETH sold at 1700 * (1 - min(2%, 15%/2)) = 1666
    (sale,) = logged("CollateralLiquidated")
    assert (sale.account, sale.liquidator, sale.asset_id, sale.amount, sale.payment) == (
        a.address,
        liq.address,
        0,
        WAD,
        1666 * WAD,
    )
    # cash after close and sale: 1000 - 3000 + 1666 = -334; the fund is empty
    (cover,) = logged("DeficitCovered")
    assert (cover.account, cover.from_insurance, cover.bad_debt) == (a.address, 0, 334 * WAD)
    assert cash_settled() == [
        (a.address, -3000 * WAD),  # the loss realized at the close
        (liq.address, -1666 * WAD),
        (a.address, 1666 * WAD),  # the sale
        (a.address, 334 * WAD),  # written off
    ]
    assert v.insurance_fund() == 0  # never negative
    assert v.bad_debt() == 334 * WAD
    assert v.cash(a.address) == 0
    assert not v.has_collateral(a.address)
    assert e.open_markets(a.address) == []
    assert e.margin_summary(a.address) == (0, 0, 0, MAX_UINT)
    ev = logged("Liquidation")[0]
    assert (ev.notional, ev.penalty, ev.health_before, ev.health_after) == (17_000 * WAD, 0, 0, MAX_UINT)
    # the liquidator holds the position at mark, the WETH, and paid 1666 with no penalty share
    assert e.positions(liq.address, ETH_PERP)[:2] == (10 * WAD, 1700 * WAD)
    assert v.balances(liq.address, 0) == WAD
    assert v.cash(liq.address) - liq_cash == -1666 * WAD


def test_deep_underwater_covered_by_insurance(setup):
    p, a, b, liq = setup
    v = p.vault
    p.fund_insurance(10_000)
    _underwater(p, a, b, 1000, WAD)
    liq_cash = v.cash(liq.address)
    liquidate(p, liq, a)
    assert logged("Liquidation")[0].penalty == 0  # equity -555: nothing to take
    # 1000 - 3000 + 1666 = -334, all of it from the fund
    (cover,) = logged("DeficitCovered")
    assert (cover.from_insurance, cover.bad_debt) == (334 * WAD, 0)
    assert v.insurance_fund() == 10_000 * WAD - 334 * WAD
    assert v.bad_debt() == 0
    assert v.cash(a.address) == 0
    assert v.cash(liq.address) - liq_cash == -1666 * WAD


def test_partial_collateral_sale_clears_debt(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    _underwater(p, a, b, 1500, WAD)
    # 1500 + 1445 - 3000 = -55: closed fully, no penalty on negative equity, cash -1500 after the
    # close; selling at 1666 (above the 1445 haircut value) clears the debt with part of the WETH
    assert e.margin_summary(a.address)[::2] == (-55 * WAD, 850 * WAD)
    fund, liq_cash = v.insurance_fund(), v.cash(liq.address)
    liquidate(p, liq, a)
    assert logged("Liquidation")[0].penalty == 0
    amount = ceil_div(1500 * WAD * WAD, 1666 * WAD)
    payment = amount * 1666 * WAD // WAD
    assert 0 < amount < WAD
    (sale,) = logged("CollateralLiquidated")
    assert (sale.amount, sale.payment) == (amount, payment)
    assert logged("DeficitCovered") == []
    assert v.cash(a.address) == payment - 1500 * WAD >= 0
    assert v.balances(a.address, 0) == WAD - amount
    assert v.cash(liq.address) - liq_cash == -payment
    assert v.insurance_fund() == fund
    assert v.bad_debt() == 0
    assert p.equity(a.address) == payment - 1500 * WAD + (WAD - amount) * 1700 * WAD * 85 * 10**16 // (WAD * WAD) > 0
    assert p.health_factor(a.address) == MAX_UINT


def test_capped_penalty_leaves_collateral_backed_cash(setup):
    """Positive equity smaller than the full penalty: the penalty takes the equity exactly, which
    leaves equity 0, so nothing is sold: the negative cash stays backed by the WETH."""
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    _underwater(p, a, b, 1840, WAD)
    # 1840 + 1445 - 3000 = 285 < MM 850; 2% of 17000 = 340 > 285
    assert e.margin_summary(a.address)[::2] == (285 * WAD, 850 * WAD)
    fund, liq_cash = v.insurance_fund(), v.cash(liq.address)
    assert liquidate(p, liq, a)[0] == 17_000 * WAD
    ev = logged("Liquidation")[0]
    assert (ev.penalty, ev.health_after) == (285 * WAD, MAX_UINT)
    assert v.insurance_fund() - fund == 285 * WAD - 285 * WAD // 2
    assert v.cash(liq.address) - liq_cash == 285 * WAD // 2
    assert logged("CollateralLiquidated") == [] and logged("DeficitCovered") == []
    assert v.cash(a.address) == 1840 * WAD - 3000 * WAD - 285 * WAD
    assert v.balances(a.address, 0) == WAD
    assert e.margin_summary(a.address) == (0, 0, 0, MAX_UINT)
    assert v.bad_debt() == 0
    assert not p.engine.is_liquidatable(a.address)


def test_account_without_positions_and_negative_equity(setup):
    """Debt larger than the haircut value of its collateral, no positions: straight to the sale."""
    p, a, _, liq = setup
    v, e = p.vault, p.engine
    p.deposit(a, "WETH", WAD)
    with boa.env.prank(e.address):
        v.settle_cash(a.address, -1500 * WAD)  # equity = -1500 + 1700 = 200... at 2000
    p.set_price("ETH", 1700)  # -1500 + 1445 = -55
    assert p.engine.is_liquidatable(a.address)
    assert liquidate(p, liq, a)[0] == 0
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
        a.address,
        ETH_FUT,
        0,
        -2000 * WAD,
    )
    # the settled future is realized, not handed to the liquidator
    assert [x.market for x in logged("PositionLiquidated")] == [ETH_PERP]
    assert e.positions(liq.address, ETH_FUT).size == 0
    assert e.open_markets(a.address) == []
    # 4000 - 2000 - 2000 = 0 equity: the perp closes without penalty (2% of 18000 = 360 capped at
    # 0), so no charge, no deficit, nothing for the fund or the liquidator
    ev = logged("Liquidation")[0]
    assert (ev.notional, ev.penalty, ev.health_before, ev.health_after) == (18_000 * WAD, 0, 0, MAX_UINT)
    assert cash_settled() == [(a.address, -2000 * WAD), (a.address, -2000 * WAD)]
    assert logged("DeficitCovered") == []
    assert v.cash(a.address) == 0 and v.insurance_fund() == 0 and v.bad_debt() == 0


def test_liquidation_leaves_expired_unsettled_future_for_settlement(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.deposit_usd(a, 4_000)
    p.trade(a, b, ETH_FUT, 10 * WAD, 2000 * WAD)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    expiry = p.deployment.market_expiries["ETH-FUT"]
    # the last price is published just before expiry: fresh, but it cannot settle the future
    boa.env.time_travel(seconds=expiry - boa.env.evm.patch.timestamp - 10)
    p.set_price("ETH", 1820)
    boa.env.time_travel(seconds=11)
    # expired but not settleable yet: still valued (and margined) at the index
    assert e.markets(ETH_FUT).settlement_price == 0
    price = 1820 * WAD
    equity = 4000 * WAD - 20 * 180 * WAD
    mm = charge(20 * WAD, price, MM)
    assert e.margin_summary(a.address)[::2] == (equity, mm)
    # the underlying's margin and gross count the future; the fraction reaches 1: the whole perp
    amount, closed, penalty, share = close_step(equity, mm, mm, 20 * 1820 * WAD, 10 * WAD, price)
    assert (amount, closed, penalty) == (10 * WAD, 18_200 * WAD, 364 * WAD)
    liq_cash, fund = v.cash(liq.address), v.insurance_fund()

    assert liquidate(p, liq, a)[0] == closed

    (moved,) = logged("PositionLiquidated")
    assert (moved.market, moved.size, moved.price) == (ETH_PERP, 10 * WAD, price)
    assert logged("Liquidation")[0].penalty == penalty
    assert e.positions(liq.address, ETH_PERP)[:2] == (10 * WAD, price)
    assert e.positions(liq.address, ETH_FUT).size == 0
    assert e.positions(a.address, ETH_FUT)[:2] == (10 * WAD, 2000 * WAD)
    assert e.open_markets(a.address) == [ETH_FUT]
    assert v.cash(a.address) == 4000 * WAD - 1800 * WAD - penalty
    assert v.cash(liq.address) - liq_cash == share
    assert v.insurance_fund() - fund == penalty - share
    # still below maintenance (36 vs 910), but nothing is left that can be taken over: a further
    # liquidation would move nothing, so it reverts rather than burn the keeper's gas
    assert e.margin_summary(a.address)[::2] == (36 * WAD, charge(10 * WAD, price, MM))
    with boa.env.prank(liq.address), boa.reverts("engine: nothing to liquidate"):
        e.liquidate(a.address)
    # a price published after expiry settles the market; settle_positions realizes the future
    p.set_price("ETH", 1830)
    e.settle_market(ETH_FUT)
    assert e.markets(ETH_FUT).settlement_price == 1830 * WAD
    e.settle_positions(a.address)
    (change,) = [x for x in e.get_logs() if type(x).__name__ == "PositionChanged"]
    assert (change.account, change.market, change.size, change.realized_pnl) == (a.address, ETH_FUT, 0, -1700 * WAD)
    assert e.open_markets(a.address) == []
    assert v.cash(a.address) == 4000 * WAD - 1800 * WAD - penalty - 1700 * WAD
    assert e.margin_summary(a.address) == (136 * WAD, 0, 0, MAX_UINT)
    assert e.positions(liq.address, ETH_FUT).size == 0


# ------------------------------------------------------------------ penalty capped at equity


def test_penalty_capped_at_small_positive_equity(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.deposit_usd(a, 2_200)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1800)
    # equity 200 < MM 900; a full close would cost 2% of 18000 = 360 > 200
    assert e.margin_summary(a.address)[::2] == (200 * WAD, 900 * WAD)
    amount, closed, penalty, share = close_step(200 * WAD, 900 * WAD, 900 * WAD, 18_000 * WAD, 10 * WAD, 1800 * WAD)
    assert (amount, closed) == (10 * WAD, 18_000 * WAD)
    assert ceil_div(closed * PENALTY, WAD) == 360 * WAD > penalty == 200 * WAD
    liq_cash, fund = v.cash(liq.address), v.insurance_fund()

    assert liquidate(p, liq, a)[0] == closed

    ev = logged("Liquidation")[0]
    assert (ev.notional, ev.penalty, ev.health_before, ev.health_after) == (
        closed,
        200 * WAD,
        200 * WAD * WAD // (900 * WAD),
        MAX_UINT,
    )
    # the penalty is exactly the equity: cash ends at exactly 0, nothing to cover
    assert cash_settled() == [(a.address, -2000 * WAD), (a.address, -200 * WAD), (liq.address, 100 * WAD)]
    assert v.cash(a.address) == 0
    assert e.margin_summary(a.address) == (0, 0, 0, MAX_UINT)
    assert logged("DeficitCovered") == [] and logged("CollateralLiquidated") == []
    assert v.bad_debt() == 0
    assert v.cash(liq.address) - liq_cash == share == 100 * WAD
    assert v.insurance_fund() - fund == penalty - share == 100 * WAD


def test_penalty_cap_spans_underlyings(setup):
    """The first underlying's penalty takes all the equity; the next is closed without one."""
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.deposit_usd(a, 11_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.trade(a, b, BTC_PERP, WAD, 30000 * WAD)
    p.set_price("ETH", 1780)
    p.set_price("BTC", 29000)
    equity = 11_000 * WAD - 40 * 220 * WAD - 1000 * WAD
    mm_eth, mm_btc = charge(40 * WAD, 1780 * WAD, MM), charge(WAD, 29000 * WAD, MM)
    assert e.margin_summary(a.address)[::2] == (equity, mm_eth + mm_btc) == (1200 * WAD, 5010 * WAD)
    amount1, closed1, pen1, share1 = close_step(equity, mm_eth + mm_btc, mm_eth, 71_200 * WAD, 40 * WAD, 1780 * WAD)
    assert (amount1, pen1) == (40 * WAD, equity)  # 1424 capped at 1200
    amount2, closed2, pen2, _ = close_step(equity - pen1, mm_btc, mm_btc, 29_000 * WAD, WAD, 29000 * WAD)
    assert (amount2, pen2) == (WAD, 0)
    liq_cash, fund = v.cash(liq.address), v.insurance_fund()

    assert liquidate(p, liq, a)[0] == closed1 + closed2

    assert [(x.market, x.size) for x in logged("PositionLiquidated")] == [(ETH_PERP, 40 * WAD), (BTC_PERP, WAD)]
    assert logged("Liquidation")[0].penalty == pen1 == 1200 * WAD
    # one penalty charge only: the BTC close finds equity 0 and charges nothing
    assert cash_settled() == [
        (a.address, -8800 * WAD),
        (a.address, -1200 * WAD),
        (liq.address, 600 * WAD),
        (a.address, -1000 * WAD),
    ]
    assert v.cash(a.address) == 0
    assert e.margin_summary(a.address) == (0, 0, 0, MAX_UINT)
    assert logged("DeficitCovered") == [] and v.bad_debt() == 0
    assert v.cash(liq.address) - liq_cash == share1 == 600 * WAD
    assert v.insurance_fund() - fund == pen1 - share1


def test_negative_equity_pays_no_penalty(setup):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    p.fund_insurance(1_000)
    p.deposit_usd(a, 2_000)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1780)
    assert e.margin_summary(a.address)[::2] == (-200 * WAD, 890 * WAD)
    # a full close: 2% of 17800 = 356 would be due on a solvent account
    assert close_step(-200 * WAD, 890 * WAD, 890 * WAD, 17_800 * WAD, 10 * WAD, 1780 * WAD) == (
        10 * WAD,
        17_800 * WAD,
        0,
        0,
    )
    liq_cash = v.cash(liq.address)

    assert liquidate(p, liq, a)[0] == 17_800 * WAD

    ev = logged("Liquidation")[0]
    assert (ev.notional, ev.penalty, ev.health_before, ev.health_after) == (17_800 * WAD, 0, 0, MAX_UINT)
    # no charge_penalty: the only cash moves are the realized loss and the write-off
    assert cash_settled() == [(a.address, -2200 * WAD), (a.address, 200 * WAD)]
    assert v.cash(liq.address) == liq_cash  # the liquidator gets nothing from it
    assert e.positions(liq.address, ETH_PERP)[:2] == (10 * WAD, 1780 * WAD)
    (cover,) = logged("DeficitCovered")
    assert (cover.account, cover.from_insurance, cover.bad_debt) == (a.address, 200 * WAD, 0)
    assert v.insurance_fund() == 800 * WAD
    assert v.bad_debt() == 0
    assert v.cash(a.address) == 0
    assert e.margin_summary(a.address) == (0, 0, 0, MAX_UINT)


ODD_SHARE = 333_333_333_333_333_333  # floors every split


@pytest.mark.parametrize("capped", [False, True], ids=["partial", "capped"])
def test_event_penalty_is_liquidator_share_plus_fund_increase(setup, capped):
    p, a, b, liq = setup
    e, v = p.engine, p.vault
    e.set_liquidation_params(PENALTY, ODD_SHARE, TARGET)
    size = 40 * WAD + 3  # the closed ETH notional is not a multiple of 50 wei: its penalty rounds up
    p.deposit(a, "USDC", 11_000_000_007)  # 11000.000007
    p.trade(a, b, ETH_PERP, size, 2000 * WAD)
    p.trade(a, b, BTC_PERP, WAD, 30000 * WAD)
    eth, btc = (178000000003, 2900000000007) if capped else (182012345679, 2900087654321)
    p.feeds["ETH"].set_answer(eth)
    p.feeds["BTC"].set_answer(btc)
    eth, btc = eth * 10**10, btc * 10**10
    equity = 11_000_000_007 * 10**12 + size * (eth - 2000 * WAD) // WAD + (btc - 30000 * WAD)
    mm_eth, mm_btc = charge(size, eth, MM), charge(WAD, btc, MM)
    assert e.margin_summary(a.address)[::2] == (equity, mm_eth + mm_btc)
    assert mm_eth > mm_btc
    amount1, closed1, pen1, share1 = close_step(
        equity,
        mm_eth + mm_btc,
        mm_eth,
        size * eth // WAD,
        size,
        eth,
        share=ODD_SHARE,
    )
    assert amount1 == size
    amount2, closed2, pen2, share2 = close_step(
        equity - pen1,
        mm_btc,
        mm_btc,
        btc,
        WAD,
        btc,
        share=ODD_SHARE,
    )
    if capped:
        assert pen1 == equity < ceil_div(closed1 * PENALTY, WAD) and (amount2, pen2) == (WAD, 0)
    else:
        assert 0 < amount2 < WAD and pen1 == ceil_div(closed1 * PENALTY, WAD) and pen2 > 0
        # both charges round up: a penalty recomputed on the total notional would be a wei less
        assert ceil_div((closed1 + closed2) * PENALTY, WAD) == pen1 + pen2 - 1
    assert (pen1 * ODD_SHARE) % WAD != 0  # the split really floors
    liq_cash, fund = v.cash(liq.address), v.insurance_fund()

    assert liquidate(p, liq, a)[0] == closed1 + closed2

    ev = logged("Liquidation")[0]
    assert ev.penalty == pen1 + pen2
    assert v.cash(liq.address) - liq_cash == share1 + share2
    assert v.insurance_fund() - fund == pen1 - share1 + pen2 - share2
    assert ev.penalty == (v.cash(liq.address) - liq_cash) + (v.insurance_fund() - fund)
    # and it is what the account paid, penalty charge by penalty charge
    charged = [-d for acct, d in cash_settled() if acct == a.address and d < 0][1::2]
    assert charged == [x for x in (pen1, pen2) if x]


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
            notionals.append(liquidate(p, liq, a)[0])
            penalties.append(logged("Liquidation")[0].penalty)
    # every penalty is ceil(2% of notional) and the fund got exactly its half of each
    assert penalties == [ceil_div(n * PENALTY, WAD) for n in notionals]
    assert p.vault.insurance_fund() - fund0 == sum(x - x * SHARE // WAD for x in penalties)
    return penalties, notionals, p.engine.margin_summary(a.address)


@pytest.mark.parametrize("target", [105 * 10**16, TARGET], ids=["1.05 target", "1.25 target"])
def test_many_small_liquidations_do_not_pay_more(protocol, target):
    p = protocol
    with boa.env.anchor():
        big, big_notional, big_end = _ladder(p, [1820], target)
    with boa.env.anchor():
        small, small_notional, small_end = _ladder(p, list(range(1900, 1819, -5)), target)
    assert len(big) == 1
    # a 5% buffer above MM is used up by the next $5 drop or so: liquidated again and again;
    # restoring 125% survives the whole ladder after the first liquidation
    assert len(small) == {105 * 10**16: 5, TARGET: 1}[target]
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
    assert p.engine.is_liquidatable(a.address)
    liquidate(p, liq, a)
    boa.env.time_travel(seconds=999)
    p.set_price("ETH", 1799.99)
    p.set_price("BTC", 29999.99)
    if p.engine.is_liquidatable(a.address):
        liquidate(p, liq, a)
    p.trade(b, liq, ETH_PERP, WAD, 1800 * WAD)

    # the token side: the vault holds exactly what the ledger says
    total_in = sum(deposits) * 10**6 + 777 * 10**6
    assert usdc.balanceOf(v.address) == v.settlement_total() == total_in - withdrawn

    # the ledger side: cash + fund + unrealized PnL and funding, exactly, vs what came in
    states = p.lens.market_states()
    prices = p.oracle.index_prices()
    ledger = Fraction(v.insurance_fund())
    for u in users + [sponsor]:
        (st,) = p.lens.account_states([u.address])
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
