"""Safety features, exact to the wei: open-interest and position caps (MarginEngine), a liquidation
penalty that ramps after `flag_liquidatable`, bad-debt socialization over positive cash
(CollateralVault) and oracle circuit breakers (OracleRouter, MockAggregator.getRoundData).

Every expected value is a hand calculation in Python ints that mirrors the contracts' rounding:
margin charges and penalties round up, PnL rounds down, a withdrawal's withheld share rounds up.
The default listing (config/local.yaml): ETH IM 10% / MM 5%, penalty 2% ramping to 2.5% over
3600 s, liquidator share 50%, target health 1.25; the deployment starts with an empty insurance
fund and no bad debt.
"""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, deploy_unique, deployer, events, now, replace_feeds

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
ETH, BTC = 0, 1  # price ids and underlyings
MM = 5 * 10**16
PENALTY, MAX_PENALTY, RAMP = 2 * 10**16, 25 * 10**15, 3600
SHARE, TARGET = 5 * 10**17, 125 * 10**16
USDC = 10**6  # one dollar in token units
SCALE = 10**12  # one USDC token unit in WAD


def ceil_div(a: int, d: int) -> int:
    return -(-a // d)


def usd8(x: int | float) -> int:
    """An 8-decimal feed answer."""
    return int(round(x * 10**8))


def size(p, user, market) -> int:
    return p.engine.positions(user.address, market).size


def long_sum(p, users, market) -> int:
    return sum(max(size(p, u, market), 0) for u in users)


def liquidate(p, liquidator, account):
    """Liquidate as `liquidator`; returns (notional, logs of the call, engine and vault)."""
    with boa.env.prank(liquidator.address):
        notional = p.engine.liquidate(account.address)
        logs = p.engine.get_logs()
    return notional, logs


def named(logs, name: str) -> list:
    return [x for x in logs if type(x).__name__ == name]


def close_step(equity, mm_total, mm_u, gross_u, size_, price, *, penalty_rate):
    """The engine's close of one underlying holding one position, by hand:
    f = ceil((ceil(t*MM) - equity) / (t*M_u - rate*G_u)) capped at 1 (1 when the denominator is not
    positive), amount = ceil(f*|size|), closed = ceil(amount*price), penalty = ceil(closed*rate)
    capped at the equity before the close."""
    denominator = mm_u * TARGET // WAD - gross_u * penalty_rate // WAD
    deficit = ceil_div(mm_total * TARGET, WAD) - equity
    fraction = WAD if denominator <= 0 else min(WAD, ceil_div(deficit * WAD, denominator))
    amount = min(ceil_div(abs(size_) * fraction, WAD), abs(size_))
    closed = ceil_div(amount * price, WAD)
    penalty = min(ceil_div(closed * penalty_rate, WAD), max(equity, 0))
    return amount, closed, penalty


def refresh_feeds(p, eth, btc=30000) -> None:
    p.set_price("ETH", eth)
    p.set_price("BTC", btc)


# ============================================================ 1. open-interest and position caps


def test_listing_caps_in_force(protocol):
    e = protocol.engine
    assert [e.max_open_interest(m) for m in range(4)] == [5_000_000 * WAD] * 2 + [200_000 * WAD] * 2
    assert [e.max_position(m) for m in range(4)] == [500_000 * WAD] * 2 + [20_000 * WAD] * 2
    assert [e.open_interest(m) for m in range(4)] == [0, 0, 0, 0]


def test_listing_caps_stop_a_dydx_sized_position(protocol):
    """The incident of test_adversarial.py::test_dydx_yfi_open_interest_is_capped under the default
    listing: a 1,000,000 ETH (2 billion USD) position between two accounts meeting IM."""
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 300_000_000)
    p.deposit_usd(b, 300_000_000)
    with boa.reverts("engine: position above cap"):
        p.trade(a, b, ETH_PERP, 10**6 * WAD, 2000 * WAD)


def test_position_cap_binds_either_side(protocol):
    p = protocol
    e = p.engine
    a, b, c = p.new_user(), p.new_user(), p.new_user()
    for u in (a, b, c):
        p.deposit_usd(u, 100_000)
    e.set_position_caps(ETH_PERP, 0, 10 * WAD)  # position cap only
    (ev,) = events(e, "PositionCapsSet")
    assert (ev.market, ev.max_open_interest, ev.max_position) == (ETH_PERP, 0, 10 * WAD)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)  # exactly at the cap, both sides
    assert (size(p, a, ETH_PERP), size(p, b, ETH_PERP)) == (10 * WAD, -10 * WAD)
    with boa.reverts("engine: position above cap"):
        p.trade(a, c, ETH_PERP, 1, 2000 * WAD)  # the long (maker) one wei above
    with boa.reverts("engine: position above cap"):
        p.trade(c, b, ETH_PERP, 1, 2000 * WAD)  # the short (taker) one wei above
    # flips: b (-10) buys from a (+10); a side ending one wei beyond the cap grows, exactly -10 does not
    with boa.reverts("engine: position above cap"):
        p.trade(b, a, ETH_PERP, 20 * WAD + 1, 2000 * WAD)
    p.trade(b, a, ETH_PERP, 20 * WAD, 2000 * WAD)
    assert (size(p, a, ETH_PERP), size(p, b, ETH_PERP)) == (-10 * WAD, 10 * WAD)
    assert e.open_interest(ETH_PERP) == 10 * WAD
    with boa.reverts("engine: position above cap"):
        p.trade(c, a, ETH_PERP, 1, 2000 * WAD)  # a's short one wei above, a now the taker


def test_open_interest_cap(protocol):
    p = protocol
    e = p.engine
    a, b, c, d, f = (p.new_user() for _ in range(5))
    for u in (a, b, c, d, f):
        p.deposit_usd(u, 100_000)
    e.set_position_caps(ETH_PERP, 25 * WAD, 0)  # open-interest cap only
    p.trade(a, b, ETH_PERP, 15 * WAD, 2000 * WAD)
    p.trade(c, d, ETH_PERP, 10 * WAD, 2000 * WAD)
    assert e.open_interest(ETH_PERP) == 25 * WAD  # exactly at the cap
    with boa.reverts("engine: open interest above cap"):
        p.trade(c, d, ETH_PERP, 1, 2000 * WAD)  # 25 WAD + 1
    with boa.reverts("engine: open interest above cap"):
        p.trade(f, d, ETH_PERP, 1, 2000 * WAD)  # a new long, either side
    # a short grows while a short shrinks: open interest unchanged, allowed at the cap
    p.trade(b, d, ETH_PERP, 5 * WAD, 2000 * WAD)
    assert (size(p, b, ETH_PERP), size(p, d, ETH_PERP)) == (-10 * WAD, -15 * WAD)
    # a long moves from a to f: unchanged, allowed
    p.trade(f, a, ETH_PERP, 5 * WAD, 2000 * WAD)
    assert e.open_interest(ETH_PERP) == 25 * WAD == long_sum(p, (a, b, c, d, f), ETH_PERP)
    # after longs close, room again
    p.trade(b, a, ETH_PERP, 10 * WAD, 2000 * WAD)  # a 10 -> 0, b -10 -> 0
    assert e.open_interest(ETH_PERP) == 15 * WAD
    p.trade(c, d, ETH_PERP, 10 * WAD, 2000 * WAD)
    assert e.open_interest(ETH_PERP) == 25 * WAD
    # the other markets are not affected by ETH-PERP's cap
    p.trade(f, d, ETH_FUT, 30 * WAD, 2000 * WAD)
    assert e.open_interest(ETH_FUT) == 30 * WAD


def test_reducing_trades_allowed_above_lowered_caps(protocol):
    p = protocol
    e = p.engine
    a, b, c, d = (p.new_user() for _ in range(4))
    for u in (a, b, c, d):
        p.deposit_usd(u, 100_000)
    p.trade(a, b, ETH_PERP, 20 * WAD, 2000 * WAD)
    e.set_position_caps(ETH_PERP, 10 * WAD, 5 * WAD)  # both caps now below what exists
    assert e.open_interest(ETH_PERP) == 20 * WAD
    p.trade(b, a, ETH_PERP, 5 * WAD, 2000 * WAD)  # both reduce
    assert (size(p, a, ETH_PERP), size(p, b, ETH_PERP), e.open_interest(ETH_PERP)) == (15 * WAD, -15 * WAD, 15 * WAD)
    with boa.reverts("engine: position above cap"):
        p.trade(a, c, ETH_PERP, 1, 2000 * WAD)  # a grows by one wei
    with boa.reverts("engine: position above cap"):
        # b, the maker (checked first), grows its short by one wei
        p.matching.match_orders(*p.order(b, ETH_PERP, -1, 2000 * WAD), *p.order(c, ETH_PERP, 1, 2000 * WAD))
    # c opens within the position cap, a reduces: open interest unchanged but above its cap
    with boa.reverts("engine: open interest above cap"):
        p.trade(c, a, ETH_PERP, WAD, 2000 * WAD)
    p.trade(b, a, ETH_PERP, 10 * WAD, 2000 * WAD)  # both reduce below the caps
    assert e.open_interest(ETH_PERP) == 5 * WAD
    with boa.reverts("engine: position above cap"):
        p.trade(c, d, ETH_PERP, 5 * WAD + 1, 2000 * WAD)
    p.trade(c, d, ETH_PERP, 5 * WAD, 2000 * WAD)  # c and d exactly at the position cap
    assert e.open_interest(ETH_PERP) == 10 * WAD  # exactly at the open-interest cap
    g, h = p.new_user(), p.new_user()
    p.deposit_usd(g, 1_000)
    p.deposit_usd(h, 1_000)
    with boa.reverts("engine: open interest above cap"):
        p.trade(g, h, ETH_PERP, 1, 2000 * WAD)  # one wei of new open interest
    p.trade(g, c, ETH_PERP, 1, 2000 * WAD)  # a long changes hands: allowed at the cap
    assert e.open_interest(ETH_PERP) == 10 * WAD == long_sum(p, (a, b, c, d, g, h), ETH_PERP)


def test_open_interest_through_opens_closes_flips(protocol):
    p = protocol
    e = p.engine
    a, b, c = (p.new_user() for _ in range(3))
    users = (a, b, c)
    for u in users:
        p.deposit_usd(u, 100_000)
    steps = [
        ((a, b, 10 * WAD), 10 * WAD),  # open: a +10, b -10
        ((c, a, 4 * WAD), 10 * WAD),  # partial close of a (6), c +4
        ((b, a, 15 * WAD), 9 * WAD),  # flips: b -10 -> +5, a 6 -> -9; longs c 4 + b 5
        ((a, c, 9 * WAD), 5 * WAD),  # a closes (-9 -> 0), c flips 4 -> -5; longs b 5
        ((c, b, 5 * WAD), 0),  # everyone flat
    ]
    for (buyer, seller, amount), expected in steps:
        p.trade(buyer, seller, ETH_PERP, amount, 2000 * WAD)
        assert e.open_interest(ETH_PERP) == expected == long_sum(p, users, ETH_PERP)
    assert [size(p, u, ETH_PERP) for u in users] == [0, 0, 0]


def test_open_interest_through_liquidation_caps_exempt(protocol):
    """The liquidator takes the account's side: it may end above max_position and the market above
    max_open_interest; open interest moves by exactly the longs that changed hands."""
    p = protocol
    e = p.engine
    a, b, d, liq = (p.new_user() for _ in range(4))
    p.deposit_usd(a, 10_000)
    for u in (b, d, liq):
        p.deposit_usd(u, 1_000_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    p.trade(d, liq, ETH_PERP, 5 * WAD, 2000 * WAD)  # the liquidator is short 5
    p.trade(d, b, ETH_PERP, 25 * WAD, 2000 * WAD)  # d long 30
    users = (a, b, d, liq)
    assert e.open_interest(ETH_PERP) == 70 * WAD == long_sum(p, users, ETH_PERP)
    e.set_position_caps(ETH_PERP, 20 * WAD, 10 * WAD)  # far below what exists
    p.set_price("ETH", 1820)  # a: equity 10000 - 7200 = 2800 < MM 3640
    amount, closed, penalty = close_step(
        2800 * WAD, 3640 * WAD, 3640 * WAD, 72800 * WAD, 40 * WAD, 1820 * WAD, penalty_rate=PENALTY
    )
    assert 15 * WAD < amount < 40 * WAD
    notional, logs = liquidate(p, liq, a)
    assert notional == closed
    assert size(p, a, ETH_PERP) == 40 * WAD - amount
    assert size(p, liq, ETH_PERP) == amount - 5 * WAD > e.max_position(ETH_PERP)  # exempt
    # a's longs fell by `amount`, the liquidator's rose from 0 to amount - 5: net -5
    assert e.open_interest(ETH_PERP) == 65 * WAD == long_sum(p, users, ETH_PERP)
    assert e.open_interest(ETH_PERP) > e.max_open_interest(ETH_PERP)
    (ev,) = named(logs, "Liquidation")
    assert ev.penalty == penalty
    # now above its cap the liquidator may only reduce
    with boa.reverts("engine: position above cap"):
        p.trade(liq, b, ETH_PERP, 1, 1820 * WAD)
    p.trade(b, liq, ETH_PERP, WAD, 1820 * WAD)
    assert e.open_interest(ETH_PERP) == 64 * WAD == long_sum(p, users, ETH_PERP)


def test_open_interest_through_futures_settlement(protocol):
    p = protocol
    e = p.engine
    a, b, c = (p.new_user() for _ in range(3))
    users = (a, b, c)
    for u in users:
        p.deposit_usd(u, 100_000)
    p.trade(a, b, ETH_FUT, 5 * WAD, 2000 * WAD)
    p.trade(c, b, ETH_FUT, 2 * WAD, 2000 * WAD)
    assert e.open_interest(ETH_FUT) == 7 * WAD
    expiry = p.deployment.market_expiries["ETH-FUT"]
    assert expiry > now()
    boa.env.time_travel(seconds=expiry - now())
    refresh_feeds(p, 2100)
    e.settle_market(ETH_FUT)
    assert e.markets(ETH_FUT).settlement_price == 2100 * WAD
    assert e.open_interest(ETH_FUT) == 7 * WAD  # positions not realized yet
    e.settle_positions(b.address)  # the short: open interest unchanged
    assert e.open_interest(ETH_FUT) == 7 * WAD
    e.settle_positions(a.address)
    assert e.open_interest(ETH_FUT) == 2 * WAD == long_sum(p, users, ETH_FUT)
    e.settle_positions(c.address)
    assert e.open_interest(ETH_FUT) == 0 == long_sum(p, users, ETH_FUT)
    assert p.vault.cash(a.address) == 100_000 * WAD + 500 * WAD
    assert p.vault.cash(b.address) == 100_000 * WAD - 700 * WAD


def test_zero_caps_mean_no_cap(protocol):
    p = protocol
    e = p.engine
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 2_100_000_000)
    p.deposit_usd(b, 2_100_000_000)
    big = 500_000 * WAD + 1  # one wei above the listing's max_position
    with boa.reverts("engine: position above cap"):
        p.trade(a, b, ETH_PERP, big, 2000 * WAD)
    e.set_position_caps(ETH_PERP, 0, 0)
    (ev,) = events(e, "PositionCapsSet")
    assert (ev.market, ev.max_open_interest, ev.max_position) == (ETH_PERP, 0, 0)
    assert (e.max_open_interest(ETH_PERP), e.max_position(ETH_PERP)) == (0, 0)
    p.trade(a, b, ETH_PERP, big, 2000 * WAD)
    assert e.open_interest(ETH_PERP) == big


def test_set_position_caps_bounds_and_role(protocol):
    p = protocol
    e = p.engine
    user = p.new_user().address
    with boa.env.prank(user):
        with boa.reverts("roles: not risk admin"):
            e.set_position_caps(ETH_PERP, 10 * WAD, 5 * WAD)
    with boa.reverts("engine: unknown market"):
        e.set_position_caps(4, 10 * WAD, 5 * WAD)
    with boa.reverts("engine: position cap above OI cap"):
        e.set_position_caps(ETH_PERP, 10 * WAD, 10 * WAD + 1)
    e.set_position_caps(ETH_PERP, 10 * WAD, 10 * WAD)  # equal is fine
    e.set_position_caps(BTC_FUT, 0, 7 * WAD)  # no open-interest cap: any position cap
    (ev,) = events(e, "PositionCapsSet")
    assert (ev.market, ev.max_open_interest, ev.max_position) == (BTC_FUT, 0, 7 * WAD)
    e.set_position_caps(BTC_PERP, 3 * WAD, 0)
    assert [(e.max_open_interest(m), e.max_position(m)) for m in range(4)] == [
        (10 * WAD, 10 * WAD),
        (5_000_000 * WAD, 500_000 * WAD),
        (3 * WAD, 0),
        (0, 7 * WAD),
    ]
    risk = p.new_user().address
    e.set_risk_admin(risk)
    with boa.reverts("roles: not risk admin"):
        e.set_position_caps(ETH_PERP, 0, 0)  # the admin no longer holds the risk role
    with boa.env.prank(risk):
        e.set_position_caps(ETH_PERP, 0, 0)
    assert (e.max_open_interest(ETH_PERP), e.max_position(ETH_PERP)) == (0, 0)


# ============================================================ 2. growing liquidation penalty


def test_default_penalty_ramp(protocol):
    e = protocol.engine
    assert e.liquidation_penalty() == PENALTY
    assert e.max_liquidation_penalty() == MAX_PENALTY
    assert e.penalty_ramp_time() == RAMP
    assert e.liquidatable_since(protocol.new_user().address) == 0


@pytest.fixture
def underwater(protocol):
    """a: 10,000 USD, long 40 ETH at 2000 against b; the liquidator and b are rich."""
    p = protocol
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(liq, 1_000_000)
    p.trade(a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    return p, a, b, liq


def test_flag_liquidatable(underwater):
    p, a, b, liq = underwater
    e = p.engine
    anyone = p.new_user().address
    with boa.env.prank(anyone):
        with boa.reverts("engine: account not liquidatable"):
            e.flag_liquidatable(a.address)  # healthy
        with boa.reverts("engine: account not liquidatable"):
            e.flag_liquidatable(p.new_user().address)  # nothing at all
    p.set_price("ETH", 1880)  # equity 5200 >= MM 3760: still healthy
    with boa.reverts("engine: account not liquidatable"):
        e.flag_liquidatable(a.address)
    p.set_price("ETH", 1820)  # equity 2800 < MM 3640
    t0 = now()
    with boa.env.prank(anyone):
        e.flag_liquidatable(a.address)
    (ev,) = events(e, "LiquidatableFlagged")
    assert (ev.account, ev.since) == (a.address, t0)
    assert e.liquidatable_since(a.address) == t0
    boa.env.time_travel(seconds=100)
    p.set_price("ETH", 1820)
    e.flag_liquidatable(a.address)  # idempotent: keeps the first time, no event
    assert events(e, "LiquidatableFlagged") == []
    assert e.liquidatable_since(a.address) == t0
    assert e.liquidatable_since(b.address) == 0


def ramp_rate(elapsed):
    if elapsed is None:
        return PENALTY
    return PENALTY + (MAX_PENALTY - PENALTY) * min(elapsed, RAMP) // RAMP


@pytest.mark.parametrize(
    "price, elapsed",
    [
        (1820, None),  # never flagged: base rate 2%
        (1820, 0),  # flagged in the same block: still 2%
        (1820, 1000),  # 2% + 0.5% * 1000/3600, rounded down
        (1820, 1800),  # exactly 2.25%
        (1820, 3600),  # 2.5%
        (1820, 7199),  # no more than 2.5% (a flag two ramps old is stale: see below)
        (1790, None),  # partial close at 2%
        (1790, 1800),  # at 2.25% the fraction reaches 1: full close, penalty capped at equity
        (1790, 3600),
    ],
)
def test_penalty_ramp_exact(underwater, price, elapsed):
    p, a, b, liq = underwater
    e, v = p.engine, p.vault
    assert v.insurance_fund() == 0 and v.bad_debt() == 0
    p.set_price("ETH", price)
    if elapsed is not None:
        t0 = now()
        e.flag_liquidatable(a.address)
        assert e.liquidatable_since(a.address) == t0
        if elapsed:
            boa.env.time_travel(seconds=elapsed)
            refresh_feeds(p, price)  # heartbeat 3600
    rate = ramp_rate(elapsed)
    # 5e15 * 1000 // 3600 = 1388888888888888 (rounded down); 1800 s: exactly 2.25%
    assert (
        rate
        == {
            None: PENALTY,
            0: PENALTY,
            1000: PENALTY + 1388888888888888,
            1800: 225 * 10**14,
            3600: MAX_PENALTY,
            7199: MAX_PENALTY,
        }[elapsed]
    )
    equity = 10_000 * WAD + 40 * (price - 2000) * WAD
    mm = 40 * price * MM  # = 2 * price WAD
    gross = 40 * price * WAD
    amount, closed, penalty = close_step(equity, mm, mm, gross, 40 * WAD, price * WAD, penalty_rate=rate)
    if (price, elapsed) == (1820, 1800):
        # f = ceil(1750 / (4550 - 72800 * 2.25%)) = ceil(1750 / 2912) = 0.600961538461538462
        assert amount == 24_038461538461538480  # ceil(40 * f)
        assert closed == 43750_000000000000033600  # ceil(amount * 1820)
        assert penalty == 984_375000000000000756  # ceil(closed * 2.25%)
    if price == 1820:
        assert penalty == ceil_div(closed * rate, WAD) < equity  # not capped
        assert amount < 40 * WAD
    elif elapsed is None:
        assert amount < 40 * WAD and penalty < equity == 1600 * WAD
    else:
        assert amount == 40 * WAD and penalty == equity == 1600 * WAD  # capped at the equity
    share = penalty * SHARE // WAD
    liq_cash = v.cash(liq.address)
    notional, logs = liquidate(p, liq, a)
    assert notional == closed
    (ev,) = named(logs, "Liquidation")
    assert (ev.notional, ev.penalty) == (closed, penalty)
    assert size(p, a, ETH_PERP) == 40 * WAD - amount
    assert size(p, liq, ETH_PERP) == amount
    # a realized its whole PnL at the mark (entry reset) and paid the penalty
    assert v.cash(a.address) == equity - penalty
    assert v.cash(liq.address) == liq_cash + share
    assert v.insurance_fund() == penalty - share
    # healthy afterwards: the flag is cleared
    summary = e.margin_summary(a.address)
    assert summary.equity >= summary.maintenance_margin
    assert e.liquidatable_since(a.address) == 0


def test_penalty_ramp_reset_then_restart(underwater):
    """After a liquidation that restores health, a new flag starts a new ramp from its own time."""
    p, a, b, liq = underwater
    e = p.engine
    p.set_price("ETH", 1820)
    e.flag_liquidatable(a.address)
    boa.env.time_travel(seconds=3600)
    refresh_feeds(p, 1820)
    liquidate(p, liq, a)
    assert e.liquidatable_since(a.address) == 0
    with boa.reverts("engine: account not liquidatable"):
        e.flag_liquidatable(a.address)
    p.set_price("ETH", 1700)
    assert p.engine.is_liquidatable(a.address)
    t1 = now()
    e.flag_liquidatable(a.address)
    assert e.liquidatable_since(a.address) == t1


def test_flag_does_not_outlive_recovery(underwater):
    """a is flagged at 1820, then deposits 20,000 USD and is healthy again without any
    liquidation. Two hours (two ramp times) later ETH falls to 1300 and a is liquidatable again
    (equity 30000 - 28000 = 2000 < MM 2600) and is liquidated in that block: the old flag has
    expired, so the penalty is the base 2% (588.24 USD), not the full 2.5% (833.33 USD). Within
    two ramp times an old flag still counts: the bonus is bounded by max_liquidation_penalty."""
    p, a, b, liq = underwater
    e = p.engine
    p.set_price("ETH", 1820)
    e.flag_liquidatable(a.address)
    p.deposit_usd(a, 20_000)
    assert not p.engine.is_liquidatable(a.address)
    boa.env.time_travel(seconds=7200)
    refresh_feeds(p, 1300)
    assert p.engine.is_liquidatable(a.address)
    amount, closed, penalty = close_step(
        2000 * WAD, 2600 * WAD, 2600 * WAD, 52000 * WAD, 40 * WAD, 1300 * WAD, penalty_rate=PENALTY
    )
    _, logs = liquidate(p, liq, a)
    (ev,) = named(logs, "Liquidation")
    assert (ev.notional, ev.penalty) == (closed, penalty)


def test_set_penalty_ramp_bounds_role_event(protocol):
    p = protocol
    e = p.engine
    user = p.new_user().address
    with boa.env.prank(user):
        with boa.reverts("roles: not risk admin"):
            e.set_penalty_ramp(MAX_PENALTY, RAMP)
    with boa.reverts("engine: max penalty out of bounds"):
        e.set_penalty_ramp(PENALTY - 1, RAMP)  # below the base penalty
    with boa.reverts("engine: max penalty out of bounds"):
        e.set_penalty_ramp(10**17 + 1, RAMP)  # above 10%
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_penalty_ramp(MAX_PENALTY + 1, RAMP)  # MM 5% < 2 x 2.5%+
    with boa.reverts("engine: ramp time out of bounds"):
        e.set_penalty_ramp(MAX_PENALTY, 59)
    with boa.reverts("engine: ramp time out of bounds"):
        e.set_penalty_ramp(MAX_PENALTY, 86401)
    e.set_penalty_ramp(PENALTY, 60)  # equal to the base: no growth
    (ev,) = events(e, "PenaltyRampSet")
    assert (ev.max_liquidation_penalty, ev.penalty_ramp_time) == (PENALTY, 60)
    assert (e.max_liquidation_penalty(), e.penalty_ramp_time()) == (PENALTY, 60)
    e.set_penalty_ramp(MAX_PENALTY, 86400)
    # 10% needs every underlying's MM >= 20%: ETH alone is not enough
    e.set_underlying_params(ETH, 2 * 10**17, 2 * 10**17, 2 * 10**16, 10**16)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_penalty_ramp(10**17, RAMP)
    e.set_underlying_params(BTC, 2 * 10**17, 2 * 10**17, 2 * 10**16, 10**16)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_penalty_ramp(10**17, RAMP)  # the raises still phase in
    protocol.phase_in()
    e.set_penalty_ramp(10**17, RAMP)
    (ev,) = events(e, "PenaltyRampSet")
    assert (ev.max_liquidation_penalty, ev.penalty_ramp_time) == (10**17, RAMP)
    # and the ramp's top now bounds the margin rates and the base penalty's checks
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_underlying_params(ETH, 2 * 10**17, 2 * 10**17 - 1, 2 * 10**16, 10**16)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_underlying_params(ETH, 10**17, 5 * 10**16, 2 * 10**16, 10**16)
    risk = p.new_user().address
    e.set_risk_admin(risk)
    with boa.reverts("roles: not risk admin"):
        e.set_penalty_ramp(MAX_PENALTY, RAMP)
    with boa.env.prank(risk):
        e.set_penalty_ramp(MAX_PENALTY, 120)
    assert (e.max_liquidation_penalty(), e.penalty_ramp_time()) == (MAX_PENALTY, 120)


def test_ramp_follows_ramp_time(underwater):
    """With a 120 s ramp, 30 s after the flag the rate is 2% + 0.5% / 4 = 2.125%."""
    p, a, b, liq = underwater
    e = p.engine
    e.set_penalty_ramp(MAX_PENALTY, 120)
    p.set_price("ETH", 1820)
    e.flag_liquidatable(a.address)
    boa.env.time_travel(seconds=30)
    rate = 2125 * 10**13
    amount, closed, penalty = close_step(
        2800 * WAD, 3640 * WAD, 3640 * WAD, 72800 * WAD, 40 * WAD, 1820 * WAD, penalty_rate=rate
    )
    _, logs = liquidate(p, liq, a)
    (ev,) = named(logs, "Liquidation")
    assert (ev.notional, ev.penalty) == (closed, penalty)
    assert size(p, a, ETH_PERP) == 40 * WAD - amount


# ============================================================ 3. bad-debt socialization


def accounting(p, users) -> int:
    """Checks total_positive_cash and returns the vault's rounding dust:
    balance * 1e12 - (sum(cash) + fund + unrealized PnL - bad_debt), which must be >= 0."""
    v = p.vault
    cash = [v.cash(u.address) for u in users]
    assert v.total_positive_cash() == sum(max(c, 0) for c in cash)
    unrealized = sum(p.equity(u.address) - c for u, c in zip(users, cash))  # no collateral here
    held = p.usdc.balanceOf(v.address) * SCALE
    dust = held - (sum(cash) + v.insurance_fund() + unrealized - v.bad_debt())
    assert 0 <= dust < 100
    return dust


def withdraw(p, user, units):
    before = p.usdc.balanceOf(user.address)
    with boa.env.prank(user.address):
        p.vault.withdraw(p.usdc.address, units)
        logs = p.vault.get_logs()
    return p.usdc.balanceOf(user.address) - before, logs


@pytest.fixture
def bad_debt(protocol):
    """a (2,000 USD) buys 10 ETH at 2000 from b; ETH falls to 1700: a's equity is -1,000 USD and,
    with an empty insurance fund, its liquidation leaves exactly 1,000 USD of bad debt."""
    p = protocol
    v = p.vault
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    users = [a, b, liq]
    assert (v.insurance_fund(), v.bad_debt(), v.total_positive_cash()) == (0, 0, 0)
    p.deposit_usd(a, 2_000)
    p.deposit_usd(b, 100_000)
    p.deposit_usd(liq, 100_000)
    assert v.total_positive_cash() == 202_000 * WAD
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    accounting(p, users)
    p.set_price("ETH", 1700)
    assert p.equity(a.address) == -1_000 * WAD
    accounting(p, users)
    notional, logs = liquidate(p, liq, a)
    assert notional == 17_000 * WAD
    (cover,) = named(logs, "DeficitCovered")
    assert (cover.account, cover.from_insurance, cover.bad_debt) == (a.address, 0, 1_000 * WAD)
    (ev,) = named(logs, "Liquidation")
    assert ev.penalty == 0  # negative equity: nothing to charge
    assert v.cash(a.address) == 0 and v.bad_debt() == 1_000 * WAD and v.insurance_fund() == 0
    assert v.total_positive_cash() == 200_000 * WAD
    assert accounting(p, users) == 0
    return p, users


def test_withdrawal_haircut_exact(bad_debt):
    p, users = bad_debt
    a, b, liq = users
    v = p.vault
    x = 333_333_333  # 333.333333 USDC
    # withheld = ceil(x * 1000e18 / 200000e18) = ceil(1666666.665) = 1666667 units
    withheld = ceil_div(x * 1_000 * WAD, 200_000 * WAD)
    assert withheld == 1_666_667
    received, logs = withdraw(p, b, x)
    assert received == x - withheld == 331_666_666
    assert v.cash(b.address) == 100_000 * WAD - x * SCALE  # debited in full
    assert v.bad_debt() == 1_000 * WAD - withheld * SCALE == 998_333_333 * 10**12
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (withheld * SCALE, True)
    (w,) = named(logs, "Withdraw")
    assert w.amount == received
    assert v.total_positive_cash() == 200_000 * WAD - x * SCALE
    accounting(p, users)
    # the second withdrawer pays the same rate on the new base
    y = 1_000 * USDC
    bd, tpc = v.bad_debt(), v.total_positive_cash()
    withheld2 = ceil_div(y * bd, tpc)
    assert withheld2 == 5_000_000  # ceil(1e9 * 998333333 / 199666666667) = ceil(4999999.9983)
    received2, logs = withdraw(p, liq, y)
    assert received2 == y - withheld2
    assert v.bad_debt() == bd - withheld2 * SCALE
    assert v.cash(liq.address) == 100_000 * WAD - y * SCALE
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (withheld2 * SCALE, True)
    accounting(p, users)


def test_funding_insurance_retires_bad_debt_first(bad_debt):
    p, users = bad_debt
    v = p.vault
    balance = p.usdc.balanceOf(v.address)
    logs = p.fund_insurance(100)  # less than the bad debt: all of it retires bad debt
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (100 * WAD, False)
    (fund,) = named(logs, "InsuranceFunded")
    assert fund.amount == 100 * WAD
    assert (v.bad_debt(), v.insurance_fund()) == (900 * WAD, 0)
    accounting(p, users)
    logs = p.fund_insurance(5_000)  # the rest goes to the fund
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (900 * WAD, False)
    assert (v.bad_debt(), v.insurance_fund()) == (0, 4_100 * WAD)
    assert p.usdc.balanceOf(v.address) == balance + 5_100 * USDC
    accounting(p, users)
    logs = p.fund_insurance(1)  # no bad debt: no retirement
    assert named(logs, "BadDebtRetired") == []
    assert v.insurance_fund() == 4_101 * WAD
    # and without bad debt a withdrawal pays in full
    b = users[1]
    received, logs = withdraw(p, b, 1_000 * USDC)
    assert received == 1_000 * USDC and named(logs, "BadDebtRetired") == []
    accounting(p, users)


def test_liquidation_penalty_retires_bad_debt_first(bad_debt):
    p, users = bad_debt
    a, b, liq = users
    v = p.vault
    c = p.new_user()
    users.append(c)
    p.deposit_usd(c, 10_000)
    p.trade(c, b, BTC_PERP, 3 * WAD, 30_000 * WAD)
    p.set_price("BTC", 27_300)  # c: equity 10000 - 8100 = 1900 < MM 4095
    accounting(p, users)
    amount, closed, penalty = close_step(
        1_900 * WAD, 4_095 * WAD, 4_095 * WAD, 81_900 * WAD, 3 * WAD, 27_300 * WAD, penalty_rate=PENALTY
    )
    share = penalty * SHARE // WAD
    to_fund = penalty - share
    assert 0 < to_fund < 1_000 * WAD  # smaller than the bad debt: all of it retires bad debt
    liq_cash = v.cash(liq.address)
    _, logs = liquidate(p, liq, c)
    (ev,) = named(logs, "Liquidation")
    assert (ev.notional, ev.penalty) == (closed, penalty)
    (ret,) = named(logs, "BadDebtRetired")
    assert (ret.amount, ret.by_withdrawal) == (to_fund, False)
    assert v.bad_debt() == 1_000 * WAD - to_fund
    assert v.insurance_fund() == 0
    assert v.cash(liq.address) == liq_cash + share
    assert v.cash(c.address) == 1_900 * WAD - penalty
    accounting(p, users)
    # a later withdrawal is haircut on what is left
    bd, tpc = v.bad_debt(), v.total_positive_cash()
    received, _ = withdraw(p, b, 100 * USDC)
    assert received == 100 * USDC - ceil_div(100 * USDC * bd, tpc)
    accounting(p, users)


def test_penalty_larger_than_bad_debt_splits(bad_debt):
    """A penalty's fund share above the outstanding bad debt: the rest reaches the fund."""
    p, users = bad_debt
    a, b, liq = users
    v = p.vault
    p.fund_insurance(990)  # bad debt 1000 -> 10
    assert (v.bad_debt(), v.insurance_fund()) == (10 * WAD, 0)
    c = p.new_user()
    users.append(c)
    p.deposit_usd(c, 10_000)
    p.trade(c, b, BTC_PERP, 3 * WAD, 30_000 * WAD)
    p.set_price("BTC", 27_300)
    _, _, penalty = close_step(
        1_900 * WAD, 4_095 * WAD, 4_095 * WAD, 81_900 * WAD, 3 * WAD, 27_300 * WAD, penalty_rate=PENALTY
    )
    to_fund = penalty - penalty * SHARE // WAD
    _, logs = liquidate(p, liq, c)
    (ret,) = named(logs, "BadDebtRetired")
    assert (ret.amount, ret.by_withdrawal) == (10 * WAD, False)
    assert (v.bad_debt(), v.insurance_fund()) == (0, to_fund - 10 * WAD)
    accounting(p, users)


def test_withdrawal_all_withheld_when_bad_debt_exceeds_positive_cash(protocol):
    """Bad debt larger than all positive cash: a withdrawal pays nothing and retires amount * 1e12."""
    p = protocol
    v = p.vault
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    users = [a, b, liq]
    p.deposit_usd(a, 2_000)
    p.deposit_usd(b, 2_100)
    p.deposit_usd(liq, 2_000)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1000)  # a: equity 2000 - 10000 = -8000
    liquidate(p, liq, a)
    assert v.bad_debt() == 8_000 * WAD
    assert v.total_positive_cash() == 4_100 * WAD  # b 2100 + liq 2000 (unrealized not counted)
    accounting(p, users)
    before = p.usdc.balanceOf(b.address)
    received, logs = withdraw(p, b, 100 * USDC)  # b: equity 12100 >= IM 1000
    assert received == 0 and p.usdc.balanceOf(b.address) == before
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (100 * WAD, True)
    assert v.bad_debt() == 7_900 * WAD and v.cash(b.address) == 2_000 * WAD
    accounting(p, users)


# ============================================================ 4. oracle circuit breakers


def feed(answer8: int):
    return deploy_unique(deployer("MockAggregator"), 8, "ETH / USD", answer8)


def three_feeds(p, a1=2000, a2=2010, a3=1996):
    fs = [feed(usd8(x)) for x in (a1, a2, a3)]
    replace_feeds(p.oracle, ETH, [f.address for f in fs], [3600] * 3)
    return fs


def test_mock_get_round_data(protocol):
    f = feed(usd8(2000))
    t1 = now()
    boa.env.time_travel(seconds=5)
    f.set_answer(usd8(2100))
    t2 = now()
    assert tuple(f.getRoundData(1)) == (1, usd8(2000), t1, t1, 1)
    assert tuple(f.getRoundData(2)) == (2, usd8(2100), t2, t2, 2)
    assert tuple(f.latestRoundData()) == (2, usd8(2100), t2, t2, 2)
    with boa.reverts("No data present"):
        f.getRoundData(3)
    with boa.reverts("No data present"):
        f.getRoundData(0)
    f.set_round(7, usd8(1900), t2)
    assert tuple(f.getRoundData(7)) == (7, usd8(1900), t2, t2, 7)
    with boa.reverts("No data present"):
        f.getRoundData(6)


def test_circuit_breaker_set_bounds_role_event(protocol):
    p = protocol
    o = p.oracle
    assert tuple(o.circuit_breakers(ETH)) == (0, 0, 0)
    o.set_circuit_breaker(ETH, 400 * WAD, 10_000 * WAD, 25 * 10**16)
    (ev,) = events(o, "CircuitBreakerSet")
    assert (ev.price_id, ev.min_price, ev.max_price, ev.max_jump) == (ETH, 400 * WAD, 10_000 * WAD, 25 * 10**16)
    assert tuple(o.circuit_breakers(ETH)) == (400 * WAD, 10_000 * WAD, 25 * 10**16)
    assert tuple(o.circuit_breakers(BTC)) == (0, 0, 0)
    with boa.reverts("oracle: unknown price id"):
        o.set_circuit_breaker(3, 0, 0, 0)  # ETH, BTC, USDC exist
    with boa.reverts("oracle: empty price band"):
        o.set_circuit_breaker(ETH, 400 * WAD, 400 * WAD, 0)
    with boa.reverts("oracle: empty price band"):
        o.set_circuit_breaker(ETH, 400 * WAD, 399 * WAD, 0)
    with boa.reverts("oracle: max_jump out of bounds"):
        o.set_circuit_breaker(ETH, 0, 0, 10**18 + 1)
    o.set_circuit_breaker(ETH, 400 * WAD, 0, 10**18)  # no ceiling, jump up to 100%
    assert tuple(o.circuit_breakers(ETH)) == (400 * WAD, 0, 10**18)
    user = p.new_user().address
    with boa.env.prank(user):
        with boa.reverts("roles: not risk admin"):
            o.set_circuit_breaker(ETH, 0, 0, 0)
    risk = p.new_user().address
    o.set_risk_admin(risk)
    with boa.reverts("roles: not risk admin"):
        o.set_circuit_breaker(ETH, 0, 0, 0)
    with boa.env.prank(risk):
        o.set_circuit_breaker(ETH, 0, 0, 0)
    assert tuple(o.circuit_breakers(ETH)) == (0, 0, 0)


def test_min_price_single_feed(protocol):
    p = protocol
    o = p.oracle
    o.set_circuit_breaker(ETH, 400 * WAD, 0, 0)
    assert o.index_price(ETH) == 2000 * WAD
    p.set_price("ETH", 400)  # at the floor: ignored
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)
    assert o.index_prices() == [0, 30000 * WAD, WAD]
    p.set_price("ETH", 300)  # below: ignored
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)
    p.set_price("ETH", 400.00000001)
    assert o.index_price(ETH) == 40000000001 * 10**10


def test_max_price_single_feed(protocol):
    p = protocol
    o = p.oracle
    o.set_circuit_breaker(ETH, 0, 10_000 * WAD, 0)
    p.set_price("ETH", 10_000)
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)
    p.set_price("ETH", 10**6)
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)
    p.set_price("ETH", 9999.99999999)
    assert o.index_price(ETH) == 999999999999 * 10**10
    # the engine sees no price for ETH while the feed is outside the band
    p.set_price("ETH", 10_000)
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 10_000)
    with boa.reverts("engine: no valid price"):
        p.trade(a, b, ETH_PERP, WAD, 10_000 * WAD)


def test_band_with_three_feeds_uses_the_other_two(protocol):
    p = protocol
    o = p.oracle
    f1, f2, f3 = three_feeds(p)
    assert o.index_price(ETH) == 2000 * WAD  # median of 1996, 2000, 2010
    o.set_circuit_breaker(ETH, 400 * WAD, 10_000 * WAD, 0)
    f1.set_answer(usd8(400))  # pinned at the floor
    assert o.index_price(ETH) == (2010 * WAD + 1996 * WAD) // 2 == 2003 * WAD
    f1.set_answer(usd8(10_000))  # at the ceiling
    assert o.index_price(ETH) == 2003 * WAD
    f1.set_answer(usd8(2001))
    assert o.index_price(ETH) == 2001 * WAD
    f2.set_answer(usd8(399))
    f3.set_answer(usd8(10_001))
    assert o.index_price(ETH) == 2001 * WAD  # one valid feed left
    f1.set_answer(usd8(400))
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)


def test_set_feeds_checks_the_breaker(protocol):
    p = protocol
    o = p.oracle
    o.set_circuit_breaker(ETH, 400 * WAD, 0, 0)
    with boa.reverts("oracle: feed answer invalid"):
        o.set_feeds(ETH, [feed(usd8(400)).address], [3600])
    replace_feeds(o, ETH, [feed(usd8(2050)).address], [3600])
    assert o.index_price(ETH) == 2050 * WAD


@pytest.mark.parametrize(
    "answer, valid",
    [
        (2499, True),
        (2500, True),  # exactly 25%
        (2500.00000001, False),
        (2501, False),
        (1500, True),  # exactly -25%
        (1499.99999999, False),
        (1000, False),
    ],
)
def test_max_jump_single_feed(protocol, answer, valid):
    p = protocol
    o = p.oracle
    o.set_circuit_breaker(ETH, 0, 0, 25 * 10**16)
    assert o.index_price(ETH) == 2000 * WAD  # round 1: no previous round to compare with
    p.set_price("ETH", answer)  # round 2, previous answer 2000
    if valid:
        assert o.index_price(ETH) == usd8(answer) * 10**10
    else:
        with boa.reverts("oracle: no valid price"):
            o.index_price(ETH)
        p.set_price("ETH", answer)  # the same answer again: a move of 0 from round 2
        assert o.index_price(ETH) == usd8(answer) * 10**10


def test_max_jump_three_feeds_and_unreadable_previous_round(protocol):
    p = protocol
    o = p.oracle
    f1, f2, f3 = three_feeds(p)
    o.set_circuit_breaker(ETH, 0, 0, 25 * 10**16)
    f1.set_answer(usd8(2600))  # +30% from 2000: ignored
    assert o.index_price(ETH) == 2003 * WAD
    f1.set_answer(usd8(2499))  # -3.9% from the previous round (2600): accepted
    assert o.index_price(ETH) == 2010 * WAD  # median of 1996, 2010, 2499
    # a round whose previous round was never published cannot be judged: not trusted
    f1.set_round(9, usd8(2000), now())
    assert o.index_price(ETH) == 2003 * WAD
    # a previous round with a non-positive answer: not trusted either
    f2.set_round(2, 0, now())
    f2.set_answer(usd8(2010))  # round 3, previous answer 0
    assert o.index_price(ETH) == 1996 * WAD
    # without max_jump both are fine again
    o.set_circuit_breaker(ETH, 0, 0, 0)
    assert o.index_price(ETH) == 2000 * WAD


def test_unreadable_previous_round_single_feed(protocol):
    p = protocol
    o = p.oracle
    f = p.feeds["ETH"]
    f.set_round(5, usd8(2000), now())
    assert o.index_price(ETH) == 2000 * WAD  # no jump check: accepted
    o.set_circuit_breaker(ETH, 0, 0, 10**18)
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)
    f.set_answer(usd8(2000))  # round 6, round 5 readable
    assert o.index_price(ETH) == 2000 * WAD
