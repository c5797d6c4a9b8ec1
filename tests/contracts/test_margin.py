"""MarginEngine valuation: equity, IM, MM, netting, rounding, funding, health factor, batch views,
dated futures settlement, and the WAD rounding helpers. Every number is a hand calculation in
Python integers."""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, ceil_div, deploy_unique, events, now, source_deployer

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
IM, MM, SIM, SMM = 10**17, 5 * 10**16, 2 * 10**16, 10**16
HAIRCUT = 85 * 10**16
FUNDING_PERIOD = 8 * 3600
MAX_UINT = 2**256 - 1


def trunc_div(a: int, d: int) -> int:
    """Vyper's signed `//`: rounds towards zero."""
    q = abs(a) // abs(d)
    return q if (a >= 0) == (d > 0) else -q


def charge(amount: int, price: int, rate: int) -> int:
    return ceil_div(amount * price * rate, WAD * WAD)


def refresh(p, eth=2000, btc=30000):
    p.set_price("ETH", eth)
    p.set_price("BTC", btc)


def summary(p, user):
    s = p.engine.margin_summary(user.address)
    return s.equity, s.initial_margin, s.maintenance_margin, s.health_factor


@pytest.fixture
def ab(protocol):
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 1_000_000)
    return p, a, b


# ------------------------------------------------------------------ single positions and netting


def test_single_long_perp(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, 3 * WAD, 2000 * WAD)
    assert summary(p, a) == (10_000 * WAD, 600 * WAD, 300 * WAD, 10_000 * WAD * WAD // (300 * WAD))
    p.set_price("ETH", 2100.5)
    price = 21005 * WAD // 10
    equity = 10_000 * WAD + 3 * (price - 2000 * WAD)
    im = charge(3 * WAD, price, IM)
    mm = charge(3 * WAD, price, MM)
    assert (equity, im, mm) == (103015 * WAD // 10, 63015 * WAD // 100, 315075 * WAD // 1000)
    health = equity * WAD // mm
    assert summary(p, a) == (equity, im, mm, health)
    assert p.equity(a.address) == equity
    assert p.initial_margin(a.address) == im
    assert p.maintenance_margin(a.address) == mm
    assert p.health_factor(a.address) == health
    assert p.engine.meets_initial_margin(a.address) and not p.engine.is_liquidatable(a.address)
    # the short side mirrors it
    assert summary(p, b)[:3] == (1_000_000 * WAD - 3 * (price - 2000 * WAD), im, mm)


def test_basis_trade_pays_only_spread_charge(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    long_only = summary(p, a)
    assert long_only[1:3] == (2000 * WAD, 1000 * WAD)
    p.trade(b, a, ETH_FUT, 10 * WAD, 2000 * WAD)  # a sells the future
    # net 0, offset 10: IM = 10 * 2000 * 2% = 400, MM = 200
    assert summary(p, a)[:3] == (10_000 * WAD, 400 * WAD, 200 * WAD)
    p.set_price("ETH", 2100)
    # hedged: equity unchanged, charge on the new price
    assert summary(p, a)[:3] == (10_000 * WAD, 420 * WAD, 210 * WAD)
    # buy back 4 futures: net long 4, offset 6
    p.trade(a, b, ETH_FUT, 4 * WAD, 2100 * WAD)
    expected_im = charge(4 * WAD, 2100 * WAD, IM) + charge(6 * WAD, 2100 * WAD, SIM)
    expected_mm = charge(4 * WAD, 2100 * WAD, MM) + charge(6 * WAD, 2100 * WAD, SMM)
    assert (expected_im, expected_mm) == (1092 * WAD, 546 * WAD)
    assert summary(p, a)[:3] == (10_000 * WAD, expected_im, expected_mm)


def test_same_direction_positions_add_up(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.trade(a, b, ETH_FUT, 5 * WAD, 2000 * WAD)
    assert summary(p, a)[1:3] == (3000 * WAD, 1500 * WAD)


def test_cross_asset_does_not_net(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)  # long 20k of ETH
    p.trade(b, a, BTC_PERP, WAD, 30000 * WAD)  # short 30k of BTC
    # no netting across underlyings: 2000 + 3000, 1000 + 1500
    assert summary(p, a)[:3] == (10_000 * WAD, 5000 * WAD, 2500 * WAD)
    p.set_price("ETH", 1900)
    p.set_price("BTC", 28500)
    # both legs move 5%: -1000 on ETH, +1500 on BTC
    assert summary(p, a)[:3] == (10_500 * WAD, 1900 * WAD + 2850 * WAD, 950 * WAD + 1425 * WAD)


def test_collateral_counts_in_equity_with_positions(protocol):
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit(a, "WETH", 2 * WAD)
    p.deposit_usd(b, 1_000_000)
    assert p.equity(a.address) == 3400 * WAD
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1900)
    # collateral and position both fall with ETH: 2 * 1900 * 0.85 - 10 * 100
    assert summary(p, a)[:3] == (2230 * WAD, 1900 * WAD, 950 * WAD)


def test_requirements_follow_governance(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.engine.set_underlying_params(0, 2 * IM, 2 * MM, 2 * SIM, 2 * SMM)
    assert summary(p, a)[1:3] == (2000 * WAD, 1000 * WAD)  # a raise phases in (lib/ramp.vy)
    p.phase_in()
    assert summary(p, a)[1:3] == (4000 * WAD, 2000 * WAD)


# ------------------------------------------------------------------ rounding


def test_requirements_round_up(ab):
    p, a, b = ab
    p.feeds["ETH"].set_answer(200000000001)  # 2000.00000001
    price = 200000000001 * 10**10
    size = 3 * WAD + 7
    p.trade(a, b, ETH_PERP, size, price)
    assert (size * price * IM) % (WAD * WAD) != 0
    assert (size * price * MM) % (WAD * WAD) != 0
    im = size * price * IM // (WAD * WAD) + 1
    mm = size * price * MM // (WAD * WAD) + 1
    assert summary(p, a)[1:3] == (im, mm)
    # a basis offset rounds its spread charge up too
    p.trade(b, a, ETH_FUT, size, price)
    assert (size * price * SIM) % (WAD * WAD) != 0
    assert summary(p, a)[1:3] == (
        size * price * SIM // (WAD * WAD) + 1,
        size * price * SMM // (WAD * WAD) + 1,
    )


def test_equity_rounds_down_for_both_sides(ab):
    p, a, b = ab
    p0 = 200000000001 * 10**10
    p.feeds["ETH"].set_answer(200000000001)
    size = 3 * WAD + 7
    p.trade(b, a, ETH_PERP, size, p0)  # a short, b long
    p.feeds["ETH"].set_answer(200000000003)
    p1 = 200000000003 * 10**10
    exact_a = -size * (p1 - p0)  # scaled by 1e18
    assert exact_a % WAD != 0
    # floor: one wei below truncation for the loser
    assert p.equity(a.address) == 10_000 * WAD + exact_a // WAD == 10_000 * WAD + trunc_div(exact_a, WAD) - 1
    assert p.equity(b.address) == 1_000_000 * WAD + (-exact_a) // WAD
    # the two sides' PnL sums to -1 wei: rounding favours the protocol
    assert exact_a // WAD + (-exact_a) // WAD == -1


# ------------------------------------------------------------------ funding


def test_funding_rate_from_premium_and_accrual(ab):
    p, a, b = ab
    e, v = p.engine, p.vault
    size = 10 * WAD + 3
    t0 = now()
    p.trade(a, b, ETH_PERP, size, 2010 * WAD)  # 0.5% over the 2000 index
    premium = (2010 * WAD - 2000 * WAD) * WAD // (2000 * WAD)
    rate = premium * 10**17 // WAD
    assert (premium, rate) == (5 * 10**15, 5 * 10**14)
    m = e.markets(ETH_PERP)
    assert (m.funding_rate, m.funding_index, m.funding_time) == (rate, 0, t0)
    boa.env.time_travel(seconds=1001)
    refresh(p)
    index = rate * 2000 * WAD // WAD * 1001 // FUNDING_PERIOD
    assert index == 34756944444444444  # 1 USD per ETH per 8h, for 1001 s
    assert p.lens.market_states()[ETH_PERP].funding_index == index
    # longs pay: owed rounded up for the payer, down for the receiver
    pnl_a = size * (2000 * WAD - 2010 * WAD) // WAD
    owed_a = ceil_div(size * index, WAD)
    owed_b = ceil_div(-size * index, WAD)
    assert owed_a == size * index // WAD + 1 and owed_b == -(size * index // WAD)
    assert p.equity(a.address) == 10_000 * WAD + pnl_a - owed_a
    assert p.equity(b.address) == 1_000_000 * WAD - pnl_a - owed_b
    # closing at the index realizes exactly that
    p.trade(b, a, ETH_PERP, size, 2000 * WAD)
    funding = events(e, "FundingUpdated")
    assert (funding[0].funding_index, funding[0].funding_rate) == (index, rate)  # accrual to now
    new_rate = rate + (0 - rate) * 10**17 // WAD
    assert (funding[-1].funding_index, funding[-1].funding_rate) == (index, new_rate)
    assert e.markets(ETH_PERP).funding_rate == 45 * 10**13
    assert v.cash(a.address) == 10_000 * WAD + pnl_a - owed_a
    assert v.cash(b.address) == 1_000_000 * WAD - pnl_a - owed_b
    assert e.positions(a.address, ETH_PERP).size == 0


def test_negative_premium_truncates_towards_zero_and_longs_receive(ab):
    p, a, b = ab
    e = p.engine
    p.feeds["ETH"].set_answer(200300000000)  # index 2003
    index_px = 2003 * WAD
    trade_px = 19903 * WAD // 10  # 1990.3
    p.trade(a, b, ETH_PERP, 4 * WAD, trade_px)
    premium = trunc_div((trade_px - index_px) * WAD, index_px)
    assert (trade_px - index_px) * WAD % index_px != 0  # truncation matters
    rate = trunc_div(premium * 10**17, WAD)
    assert rate < 0 and rate == -(abs(premium) // 10)
    assert e.markets(ETH_PERP).funding_rate == rate
    boa.env.time_travel(seconds=777)
    p.feeds["ETH"].set_answer(200300000000)
    p.set_price("BTC", 30000)
    index = trunc_div(trunc_div(rate * index_px, WAD) * 777, FUNDING_PERIOD)
    assert index < 0
    assert p.lens.market_states()[ETH_PERP].funding_index == index
    pnl_a = 4 * WAD * (index_px - trade_px) // WAD
    # the long (a) is owed funding: owed is negative
    assert p.equity(a.address) == 10_000 * WAD + pnl_a - ceil_div(4 * WAD * index, WAD)
    assert p.equity(b.address) == 1_000_000 * WAD - pnl_a - ceil_div(-4 * WAD * index, WAD)
    assert p.equity(a.address) > 10_000 * WAD + pnl_a


def next_rate(
    rate: int, price: int, index: int, size: int, oi_before: int, oi_after: int, smoothing: int, cap: int
) -> int:
    """The funding update by hand: the premium (T - I) / I moves the rate by smoothing times the
    trade's share of open interest, each step truncated towards zero, then the clamp."""
    premium = trunc_div((price - index) * WAD, index)
    weight = smoothing * size // max(oi_before, oi_after, size)
    return max(-cap, min(cap, rate + trunc_div((premium - rate) * weight, WAD)))


def test_funding_rate_is_clamped(ab):
    p, a, b = ab
    e = p.engine
    e.set_trade_params(5 * 10**16, 5 * 10**15, WAD, 0)  # smoothing 1: rate = premium, then clamp
    p.trade(a, b, ETH_PERP, WAD, 2100 * WAD)  # +5% premium, the only open interest: weight 1
    assert e.markets(ETH_PERP).funding_rate == 5 * 10**15
    p.trade(b, a, ETH_PERP, WAD, 1900 * WAD)  # -5%, closes it all: weight 1
    assert e.markets(ETH_PERP).funding_rate == -5 * 10**15
    p.trade(a, b, ETH_PERP, WAD, 2001 * WAD)  # +0.05%: inside the cap
    assert e.markets(ETH_PERP).funding_rate == 5 * 10**14
    # a full period at the cap moves the index by 0.5% of the price
    p.trade(b, a, ETH_PERP, WAD, 2100 * WAD)
    assert e.markets(ETH_PERP).funding_rate == 5 * 10**15
    boa.env.time_travel(seconds=FUNDING_PERIOD)
    refresh(p)
    assert p.lens.market_states()[ETH_PERP].funding_index == 10 * WAD


def test_funding_ema_over_trades(ab):
    """Each trade of 1 ETH adds to open interest, so its weight falls: 1, 1/2, 1/3, 1/4 of the
    10% smoothing. By hand: 0.05%, then 0.05% + (2% - 0.05%) / 20 = 0.1475%, then
    0.1475% + (-0.5% - 0.1475%) / 30 = 0.12591...%, then that times 0.975."""
    p, a, b = ab
    e = p.engine
    rate = 0
    for px in (2010, 2040, 1990, 2000):
        oi = e.open_interest(ETH_PERP)
        p.trade(a, b, ETH_PERP, WAD, px * WAD)
        rate = next_rate(rate, px * WAD, 2000 * WAD, WAD, oi, e.open_interest(ETH_PERP), 10**17, 5 * 10**15)
        assert e.markets(ETH_PERP).funding_rate == rate
    r3 = 1475 * 10**12 - 6475 * 10**12 * (10**17 // 3) // WAD  # weights truncate: 1e17 // 3
    assert rate == r3 - r3 * (10**17 // 4) // WAD == 1227687500000001


def test_dust_trade_does_not_move_funding(ab):
    """Finding 2 of the coalition review: a 1-wei fill at the band edge took the rate to its cap.
    Its weight is 1 wei against the open interest: the rate does not move."""
    p, a, b = ab
    e = p.engine
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    c, d = p.new_user(), p.new_user()
    p.deposit_usd(c, 1_000)
    p.deposit_usd(d, 1_000)
    for _ in range(5):
        p.trade(c, d, ETH_PERP, 1, 2100 * WAD)  # +5%, the band edge
        assert e.markets(ETH_PERP).funding_rate == 0


def test_funding_accrues_at_the_current_price(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, WAD, 2010 * WAD)
    boa.env.time_travel(seconds=3000)
    refresh(p, eth=2500)
    assert p.lens.market_states()[ETH_PERP].funding_index == 5 * 10**14 * 2500 * WAD // WAD * 3000 // FUNDING_PERIOD


def test_futures_have_no_funding(ab):
    p, a, b = ab
    e = p.engine
    p.trade(a, b, ETH_FUT, WAD, 2090 * WAD)
    assert e.markets(ETH_FUT).funding_rate == 0
    assert events(e, "FundingUpdated") == []
    boa.env.time_travel(seconds=3000)
    refresh(p)
    assert p.lens.market_states()[ETH_FUT].funding_index == 0
    assert p.equity(a.address) == 10_000 * WAD - 90 * WAD


# ------------------------------------------------------------------ health factor


def test_health_factor_edges(protocol):
    p = protocol
    empty = p.new_user()
    assert summary(p, empty) == (0, 0, 0, MAX_UINT)
    rich = p.new_user()
    p.deposit_usd(rich, 5)
    assert p.health_factor(rich.address) == MAX_UINT
    assert not p.engine.is_liquidatable(empty.address) and p.engine.meets_initial_margin(empty.address)
    # negative equity with nothing to maintain: 0 (and liquidatable)
    with boa.env.prank(p.engine.address):
        p.vault.settle_cash(empty.address, -1)
    assert summary(p, empty) == (-1, 0, 0, 0)
    assert p.engine.is_liquidatable(empty.address)


def test_health_factor_at_and_below_maintenance(protocol):
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 2140)
    p.deposit_usd(b, 1_000_000)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1880)
    # equity 2140 - 1200 = 940 = MM (10 * 1880 * 5%)
    assert summary(p, a) == (940 * WAD, 1880 * WAD, 940 * WAD, WAD)
    assert not p.engine.is_liquidatable(a.address)
    p.set_price("ETH", 1879.99)
    px = 187999 * WAD // 100
    eq = 2140 * WAD + 10 * (px - 2000 * WAD)
    mm = charge(10 * WAD, px, MM)
    assert summary(p, a) == (eq, charge(10 * WAD, px, IM), mm, eq * WAD // mm)
    assert p.health_factor(a.address) < WAD and p.engine.is_liquidatable(a.address)
    p.set_price("ETH", 1780)
    assert summary(p, a) == (-60 * WAD, 1780 * WAD, 890 * WAD, 0)


# ------------------------------------------------------------------ batch views


def test_margin_summaries_equal_single_calls(ab):
    p, a, b = ab
    c = p.new_user()
    p.deposit(c, "WBTC", 10**8)
    p.trade(a, b, ETH_PERP, 2 * WAD, 2000 * WAD)
    p.trade(c, a, BTC_FUT, WAD // 10, 30000 * WAD)
    p.set_price("ETH", 1987.65)
    p.set_price("BTC", 30123.45)
    accounts = [a, b, c, p.new_user(), a]
    batch = p.lens.margin_summaries([u.address for u in accounts])
    assert [tuple(s) for s in batch] == [tuple(p.engine.margin_summary(u.address)) for u in accounts]
    assert batch[3] == (0, 0, 0, MAX_UINT)
    assert p.lens.margin_summaries([]) == []


def test_account_states_and_market_states(ab):
    p, a, b = ab
    e = p.engine
    p.deposit(a, "WETH", 3 * WAD + 1)
    p.deposit(a, "WBTC", 12345)
    p.trade(a, b, ETH_PERP, 2 * WAD, 2010 * WAD)
    p.trade(b, a, BTC_FUT, WAD // 4, 30000 * WAD)
    (sa, sb, sx) = p.lens.account_states([a.address, b.address, p.new_user().address])
    assert sa.cash == 10_000 * WAD
    assert list(sa.collateral) == [3 * WAD + 1, 12345]
    assert [(x.market, x.size, x.entry_price, x.funding_index) for x in sa.positions] == [
        (ETH_PERP, 2 * WAD, 2010 * WAD, 0),
        (BTC_FUT, -WAD // 4, 30000 * WAD, 0),
    ]
    assert [(x.market, x.size) for x in sb.positions] == [(ETH_PERP, -2 * WAD), (BTC_FUT, WAD // 4)]
    assert (sx.cash, list(sx.collateral), list(sx.positions)) == (0, [0, 0], [])
    assert e.open_markets(a.address) == [ETH_PERP, BTC_FUT]
    boa.env.time_travel(seconds=600)
    refresh(p)
    states = p.lens.market_states()
    expiries = p.deployment.market_expiries
    assert [(s.underlying, s.is_perpetual, s.expiry, s.settlement_price) for s in states] == [
        (0, True, 0, 0),
        (0, False, expiries["ETH-FUT"], 0),
        (1, True, 0, 0),
        (1, False, expiries["BTC-FUT"], 0),
    ]
    rate = 5 * 10**14
    assert [(s.funding_rate, s.funding_index) for s in states] == [
        (rate, rate * 2000 * 600 // FUNDING_PERIOD),
        (0, 0),
        (0, 0),
        (0, 0),
    ]
    # market_states accrues in the view only; storage is untouched until the next trade
    assert e.markets(ETH_PERP).funding_index == 0


def test_engine_wiring(protocol):
    p = protocol
    e = p.engine
    assert e.VAULT() == p.vault.address and e.ORACLE() == p.oracle.address
    assert e.underlying_count() == 2 and e.market_count() == 4
    u = e.underlyings(0)
    assert (u.price_id, u.im_rate, u.mm_rate, u.spread_im_rate, u.spread_mm_rate) == (0, IM, MM, SIM, SMM)
    assert e.underlyings(1).price_id == 1
    assert (e.liquidation_penalty(), e.liquidator_share(), e.liquidation_target()) == (
        2 * 10**16,
        5 * 10**17,
        125 * 10**16,
    )
    assert (e.max_price_deviation(), e.max_funding_rate(), e.funding_smoothing()) == (
        5 * 10**16,
        5 * 10**15,
        10**17,
    )


# ------------------------------------------------------------------ dated futures


def test_settle_market_guards(ab):
    p, _, _ = ab
    e = p.engine
    with boa.reverts("engine: not expired"):
        e.settle_market(ETH_FUT)
    with boa.reverts("engine: perpetual never settles"):
        e.settle_market(ETH_PERP)
    with boa.reverts("engine: unknown market"):
        e.settle_market(4)


def test_settle_market_needs_a_price_after_expiry(ab):
    p, a, b = ab
    e = p.engine
    expiry = p.deployment.market_expiries["ETH-FUT"]
    boa.env.time_travel(seconds=expiry - 100 - now())
    refresh(p, eth=2100)
    boa.env.time_travel(seconds=200)
    # fresh (200 s old) but published before expiry
    assert p.oracle.index_price(0) == 2100 * WAD
    with boa.reverts("engine: price before expiry"):
        e.settle_market(ETH_FUT)
    p.set_price("ETH", 2222.22)
    e.settle_market(ETH_FUT)
    (ev,) = events(e, "MarketSettled")
    assert (ev.market, ev.settlement_price) == (ETH_FUT, 222222 * WAD // 100)
    assert e.markets(ETH_FUT).settlement_price == 222222 * WAD // 100
    # second call: no-op, even at another price
    refresh(p, eth=2500)
    e.settle_market(ETH_FUT)
    assert events(e, "MarketSettled") == []
    assert e.markets(ETH_FUT).settlement_price == 222222 * WAD // 100
    # the BTC future expired at the same time and settles on its own price
    e.settle_market(BTC_FUT)
    assert e.markets(BTC_FUT).settlement_price == 30000 * WAD


def test_settle_market_with_price_stamped_exactly_at_expiry(ab):
    p, _, _ = ab
    e = p.engine
    expiry = p.deployment.market_expiries["ETH-FUT"]
    boa.env.time_travel(seconds=expiry - now())
    assert now() == expiry
    p.set_price("ETH", 2050)  # updatedAt == expiry
    assert p.oracle.index_price_with_time(0) == (2050 * WAD, expiry)
    e.settle_market(ETH_FUT)
    assert e.markets(ETH_FUT).settlement_price == 2050 * WAD


def test_settle_market_takes_the_first_round_at_expiry_whenever_called(ab):
    """A future settles at the first round published at or after expiry, even when that round is
    stale by the time someone settles, and later rounds change nothing."""
    p, _, _ = ab
    e = p.engine
    expiry = p.deployment.market_expiries["ETH-FUT"]
    boa.env.time_travel(seconds=expiry - now())
    p.set_price("ETH", 2050)  # stamped at expiry
    boa.env.time_travel(seconds=3601)
    p.set_price("ETH", 2400)
    e.settle_market(ETH_FUT)
    assert e.markets(ETH_FUT).settlement_price == 2050 * WAD


def test_settle_positions_realizes_exact_pnl(ab):
    p, a, b = ab
    e, v = p.engine, p.vault
    c = p.new_user()
    p.deposit_usd(c, 10_000)
    p.trade(a, b, ETH_FUT, 2 * WAD, 2000 * WAD)
    p.trade(a, c, ETH_PERP, WAD, 2000 * WAD)
    expiry = p.deployment.market_expiries["ETH-FUT"]
    boa.env.time_travel(seconds=expiry - now() + 10)
    refresh(p, eth=2222.22)
    settle = 222222 * WAD // 100
    e.settle_market(ETH_FUT)
    # before settle_positions: the future is valued at the settlement price and needs no margin
    p.set_price("ETH", 2300)
    perp_pnl = 300 * WAD
    assert summary(p, a)[:3] == (
        10_000 * WAD + 2 * (settle - 2000 * WAD) + perp_pnl,
        charge(WAD, 2300 * WAD, IM),
        charge(WAD, 2300 * WAD, MM),
    )
    assert summary(p, b)[1:3] == (0, 0)
    e.settle_positions(a.address)
    (change,) = events(e, "PositionChanged")
    assert (change.account, change.market, change.size, change.realized_pnl) == (
        a.address,
        ETH_FUT,
        0,
        2 * (settle - 2000 * WAD),
    )
    assert v.cash(a.address) == 10_000 * WAD + 44444 * WAD // 100
    assert e.open_markets(a.address) == [ETH_PERP]
    assert e.positions(a.address, ETH_FUT).size == 0
    e.settle_positions(a.address)  # nothing left to settle
    assert events(e, "PositionChanged") == []
    assert v.cash(a.address) == 10_000 * WAD + 44444 * WAD // 100
    e.settle_positions(b.address)
    assert v.cash(b.address) == 1_000_000 * WAD - 44444 * WAD // 100
    assert e.open_markets(b.address) == []
    # the perpetual is untouched by settlement
    e.settle_positions(c.address)
    assert e.positions(c.address, ETH_PERP).size == -WAD


def test_perpetual_cannot_settle_even_later(ab):
    p, a, b = ab
    p.trade(a, b, ETH_PERP, WAD, 2000 * WAD)
    boa.env.time_travel(seconds=200 * 86400)
    refresh(p)
    with boa.reverts("engine: perpetual never settles"):
        p.engine.settle_market(ETH_PERP)
    p.engine.settle_positions(a.address)
    assert p.engine.positions(a.address, ETH_PERP).size == WAD


# ------------------------------------------------------------------ WAD rounding helpers


@pytest.fixture(scope="module")
def wad_lib():
    return deploy_unique(source_deployer("lib/wad.vy"))


@pytest.mark.parametrize("a", [7, -7, 6, -6, 0, 1, -1, 10**30 + 1, -(10**30) - 1])
@pytest.mark.parametrize("d", [1, 2, 3, WAD])
def test_wad_floor_and_ceil_div(wad_lib, a, d):
    assert wad_lib.floor_div(a, d) == a // d
    assert wad_lib.ceil_div(a, d) == -((-a) // d)


def test_wad_divisor_must_be_positive(wad_lib):
    with boa.reverts("wad: divisor not positive"):
        wad_lib.floor_div(1, 0)
    with boa.reverts("wad: divisor not positive"):
        wad_lib.ceil_div(1, -1)
