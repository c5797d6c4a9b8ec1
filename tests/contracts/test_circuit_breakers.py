"""Oracle circuit breakers (OracleRouter, MockAggregator.getRoundData): price bounds and the
largest jump between rounds, with one feed and with three.

Every expected value is a hand calculation in Python ints that mirrors the contracts' rounding
(tests/contracts/default_listing.py states the listing and the reference liquidation step).
"""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, deploy_unique, deployer, events, now, replace_feeds, usd8
from tests.contracts.default_listing import BTC, ETH, ETH_PERP


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
