"""The liquidation penalty that grows after `flag_liquidatable` (MarginEngine), exact to the wei:
the ramp from 2% to 2.5% over its ramp time, its reset, and a flag that does not outlive a
recovery.

Every expected value is a hand calculation in Python ints that mirrors the contracts' rounding
(tests/contracts/default_listing.py states the listing and the reference liquidation step).
"""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, ceil_div, events, liquidate, named, now
from tests.contracts.default_listing import (
    BTC,
    ETH,
    ETH_PERP,
    MAX_PENALTY,
    MM,
    PENALTY,
    RAMP,
    SHARE,
    close_step,
    refresh_feeds,
    size,
)


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
