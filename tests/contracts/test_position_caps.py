"""Open-interest and position caps (MarginEngine), exact to the wei: caps bind trades that grow
a position, never reductions or liquidations; open interest is the sum of long sizes through
opens, closes, flips, liquidations and settlement.

Every expected value is a hand calculation in Python ints that mirrors the contracts' rounding
(tests/contracts/default_listing.py states the listing and the reference liquidation step).
"""

from __future__ import annotations

import boa

from tests.boa_protocol import WAD, events, liquidate, named, now
from tests.contracts.default_listing import (
    BTC_FUT,
    BTC_PERP,
    ETH_FUT,
    ETH_PERP,
    PENALTY,
    close_step,
    long_sum,
    refresh_feeds,
    size,
)


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
