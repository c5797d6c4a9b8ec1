"""OracleRouter: median of Chainlink-style feeds, validity rules, decimals, heartbeats, roles."""

from __future__ import annotations

import itertools

import boa
import pytest

from tests.boa_protocol import FEED_DELAY, WAD, deploy_unique, deployer, events, now, replace_feeds, republish, usd8

ETH, BTC, USDC = 0, 1, 2
MIN_HB, MAX_HB = 60, 2 * 86400


def feed(decimals: int, answer: int):
    return deploy_unique(deployer("MockAggregator"), decimals, "x", answer)


# ------------------------------------------------------------------ deployment state


def test_deployed_price_ids_and_feeds(protocol):
    p = protocol
    o = p.oracle
    assert o.price_id_count() == 3
    assert o.price_id_name(ETH) == "ETH"
    assert o.price_id_name(BTC) == "BTC"
    assert o.price_id_name(USDC) == "USDC"  # the settlement asset's own price (depeg rule)
    feeds = o.feeds(ETH)
    assert len(feeds) == 1
    assert feeds[0].aggregator == p.feeds["ETH"].address
    assert feeds[0].scale == 10**10  # 8-decimal feed
    assert feeds[0].heartbeat == 3600
    assert o.index_price(ETH) == 2000 * WAD
    assert o.index_price(BTC) == 30000 * WAD
    assert o.index_prices() == [2000 * WAD, 30000 * WAD, WAD]
    assert o.feeds(7) == []  # unconfigured id: empty list, no revert


def test_set_price_moves_index(protocol):
    p = protocol
    p.set_price("ETH", 1234.56789012)
    assert p.oracle.index_price(ETH) == 123456789012 * 10**10


# ------------------------------------------------------------------ median


def test_median_of_one_feed(protocol):
    o = protocol.oracle
    f = feed(8, usd8(2050))
    replace_feeds(o, ETH, [f.address], [3600])
    assert o.index_price(ETH) == 2050 * WAD


def test_median_of_two_feeds_is_floor_of_mean(protocol):
    o = protocol.oracle
    f1 = feed(18, 2000 * WAD + 1)
    f2 = feed(18, 2000 * WAD + 4)
    replace_feeds(o, ETH, [f1.address, f2.address], [3600, 3600])
    # (4000e18 + 5) // 2 = 2000e18 + 2 (floor)
    assert o.index_price(ETH) == 2000 * WAD + 2
    f3 = feed(8, usd8(1990))
    f4 = feed(8, usd8(2011))
    replace_feeds(o, ETH, [f4.address, f3.address], [3600, 3600])
    assert o.index_price(ETH) == (1990 * WAD + 2011 * WAD) // 2 == 2000_500000000000000000


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_median_of_three_feeds_any_order(protocol, order):
    o = protocol.oracle
    answers = [usd8(1990), usd8(2000), usd8(2100)]
    fs = [feed(8, answers[i]) for i in order]
    replace_feeds(o, ETH, [f.address for f in fs], [3600] * 3)
    assert o.index_price(ETH) == 2000 * WAD


def test_one_of_three_spiking_does_not_move_median(protocol):
    p = protocol
    o = p.oracle
    f1, f2, f3 = feed(8, usd8(2000)), feed(8, usd8(2001)), feed(8, usd8(1999))
    replace_feeds(o, ETH, [f1.address, f2.address, f3.address], [3600] * 3)
    assert o.index_price(ETH) == 2000 * WAD
    f3.set_answer(usd8(1_000_000))  # spike up
    assert o.index_price(ETH) == 2001 * WAD
    f3.set_answer(1)  # spike down to 1e-8 USD
    assert o.index_price(ETH) == 2000 * WAD
    # the vault and engine value collateral on that median too: 1 WETH * 2000 * 0.85
    a = p.new_user()
    p.deposit(a, "WETH", WAD)
    assert p.vault.collateral_value(a.address) == 1700 * WAD
    assert p.equity(a.address) == 1700 * WAD


def test_feed_decimals_6_8_18_give_same_wad_price(protocol):
    o = protocol.oracle
    expected = 2045_678901 * 10**12  # 2045.678901 USD
    for decimals, answer in ((6, 2045_678901), (8, 2045_67890100), (18, 2045_678901 * 10**12)):
        f = feed(decimals, answer)
        replace_feeds(o, ETH, [f.address], [3600])
        assert o.feeds(ETH)[0].scale == 10 ** (18 - decimals)
        assert o.index_price(ETH) == expected
    # mixed decimals in one median
    fs = [feed(6, 2045_678901), feed(8, 2045_67890100), feed(18, 2045_678901 * 10**12)]
    replace_feeds(o, ETH, [f.address for f in fs], [3600] * 3)
    assert o.index_price(ETH) == expected
    # zero decimals: scale 1e18
    f0 = feed(0, 2045)
    replace_feeds(o, ETH, [f0.address], [3600])
    assert o.index_price(ETH) == 2045 * WAD


def test_feed_decimals_above_18_rejected(protocol):
    o = protocol.oracle
    f = feed(19, 2000 * 10**19)
    with boa.reverts("oracle: feed decimals above 18"):
        o.set_feeds(ETH, [f.address], [3600])


# ------------------------------------------------------------------ staleness


def test_stale_feed_ignored_in_median(protocol):
    o = protocol.oracle
    f1 = feed(8, usd8(1000))  # fast heartbeat, goes stale first
    f2 = feed(8, usd8(2000))
    f3 = feed(8, usd8(2100))
    replace_feeds(o, ETH, [f1.address, f2.address, f3.address], [60, 3600, 3600])
    assert o.index_price(ETH) == 2000 * WAD
    boa.env.time_travel(seconds=60)
    # age == heartbeat is still valid
    assert o.index_price(ETH) == 2000 * WAD
    boa.env.time_travel(seconds=1)
    # f1 stale: median of (2000, 2100) = 2050
    assert o.index_price(ETH) == 2050 * WAD


def test_single_stale_feed_reverts(protocol):
    p = protocol
    o = p.oracle
    f = feed(8, usd8(2000))
    replace_feeds(o, ETH, [f.address], [60])
    boa.env.time_travel(seconds=61)
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)
    with boa.reverts("oracle: no valid price"):
        o.index_price_with_time(ETH)
    # the batch read does not revert: an unpriced id reads 0, and only its users are blocked
    assert o.index_prices() == [0, 30000 * WAD, WAD]
    assert p.engine.margin_summary(p.admin).equity == 0
    user = p.new_user()
    p.deposit(user, "WETH", 10**18)
    with boa.reverts("vault: no valid price"):
        p.engine.margin_summary(user.address)
    f.set_answer(usd8(2001))
    assert o.index_price(ETH) == 2001 * WAD


def test_duplicate_feed_is_refused(protocol):
    f = feed(8, usd8(2000))
    with boa.reverts("oracle: duplicate feed"):
        protocol.oracle.set_feeds(ETH, [f.address, f.address], [3600, 3600])


def test_deployed_feeds_go_stale_after_heartbeat(protocol):
    p = protocol
    boa.env.time_travel(seconds=3601)
    with boa.reverts("oracle: no valid price"):
        p.oracle.index_price(BTC)
    p.set_price("ETH", 2000)
    p.set_price("BTC", 30000)
    assert p.oracle.index_prices() == [2000 * WAD, 30000 * WAD, WAD]  # USDC: a one-day heartbeat


# ------------------------------------------------------------------ invalid answers


def _invalid_rounds():
    t = now()
    return {
        "zero answer": (5, 0, t),
        "negative answer": (5, -usd8(2000), t),
        "zero round id": (0, usd8(2000), t),
        "zero updatedAt": (5, usd8(2000), 0),
        "future updatedAt": (5, usd8(2000), t + 1),
    }


@pytest.mark.parametrize(
    "case", ["zero answer", "negative answer", "zero round id", "zero updatedAt", "future updatedAt"]
)
def test_invalid_answer_ignored_and_alone_reverts(protocol, case):
    o = protocol.oracle
    f1, f2, bad = feed(8, usd8(2000)), feed(8, usd8(2010)), feed(8, usd8(5000))
    replace_feeds(o, ETH, [f1.address, f2.address, bad.address], [3600] * 3)
    assert o.index_price(ETH) == 2010 * WAD  # median of 2000, 2010, 5000
    bad.set_round(*_invalid_rounds()[case])
    # the bad feed drops out: mean of the two valid ones
    assert o.index_price(ETH) == 2005 * WAD
    # alone it prices nothing
    replace_feeds(o, ETH, [f1.address], [3600])
    f1.set_round(*_invalid_rounds()[case])
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)


@pytest.mark.parametrize(
    "case", ["zero answer", "negative answer", "zero round id", "zero updatedAt", "future updatedAt"]
)
def test_set_feeds_rejects_invalid_answer(protocol, case):
    o = protocol.oracle
    bad = feed(8, usd8(2000))
    bad.set_round(*_invalid_rounds()[case])
    with boa.reverts("oracle: feed answer invalid"):
        o.set_feeds(ETH, [bad.address], [3600])


def test_set_feeds_rejects_stale_and_non_feed(protocol):
    p = protocol
    o = p.oracle
    old = feed(8, usd8(2000))
    boa.env.time_travel(seconds=120)
    with boa.reverts("oracle: feed answer invalid"):
        o.set_feeds(ETH, [old.address], [60])
    # a contract with decimals() but no latestRoundData(): the call reverts -> invalid, not fatal
    with boa.reverts("oracle: feed answer invalid"):
        o.set_feeds(ETH, [p.usdc.address], [3600])


def test_future_updated_at_is_valid_once_reached(protocol):
    o = protocol.oracle
    f1, f2 = feed(8, usd8(2000)), feed(8, usd8(2010))
    replace_feeds(o, ETH, [f1.address, f2.address], [3600, 3600])
    f2.set_round(9, usd8(2020), now() + 10)
    assert o.index_price(ETH) == 2000 * WAD
    boa.env.time_travel(seconds=10)
    assert o.index_price(ETH) == 2010 * WAD


# ------------------------------------------------------------------ heartbeat bounds, validation


def test_heartbeat_bounds(protocol):
    o = protocol.oracle
    f = feed(8, usd8(2000))
    with boa.reverts("oracle: heartbeat out of bounds"):
        o.set_feeds(ETH, [f.address], [MIN_HB - 1])
    with boa.reverts("oracle: heartbeat out of bounds"):
        o.set_feeds(ETH, [f.address], [MAX_HB + 1])
    with boa.reverts("oracle: heartbeat out of bounds"):
        o.set_feeds(ETH, [f.address, f.address], [3600, 0])
    replace_feeds(o, ETH, [f.address], [MIN_HB])
    assert o.feeds(ETH)[0].heartbeat == MIN_HB
    replace_feeds(o, ETH, [f.address], [MAX_HB])
    assert o.feeds(ETH)[0].heartbeat == MAX_HB
    boa.env.time_travel(seconds=MAX_HB)
    assert o.index_price(ETH) == 2000 * WAD
    boa.env.time_travel(seconds=1)
    with boa.reverts("oracle: no valid price"):
        o.index_price(ETH)


def test_set_feeds_argument_checks(protocol):
    o = protocol.oracle
    f = feed(8, usd8(2000))
    with boa.reverts("oracle: unknown price id"):
        o.set_feeds(3, [f.address], [3600])
    with boa.reverts("oracle: no feed"):
        o.set_feeds(ETH, [], [])
    with boa.reverts("oracle: length mismatch"):
        o.set_feeds(ETH, [f.address], [3600, 3600])
    with boa.reverts("oracle: length mismatch"):
        o.set_feeds(ETH, [f.address, f.address], [3600])


def test_set_feeds_replaces_and_emits(protocol):
    o = protocol.oracle
    f1, f2 = feed(8, usd8(2000)), feed(6, 2002_000000)
    replace_feeds(o, ETH, [f1.address, f2.address], [100, 200])
    (ev,) = events(o, "FeedsSet")
    assert ev.price_id == ETH
    assert list(ev.aggregators) == [f1.address, f2.address]
    assert list(ev.heartbeats) == [100, 200]
    feeds = o.feeds(ETH)
    assert [(x.aggregator, x.scale, x.heartbeat) for x in feeds] == [
        (f1.address, 10**10, 100),
        (f2.address, 10**12, 200),
    ]
    assert o.index_price(ETH) == 2001 * WAD
    replace_feeds(o, ETH, [f2.address], [300])
    assert len(o.feeds(ETH)) == 1
    assert o.index_price(ETH) == 2002 * WAD


def test_only_admin_sets_feeds(protocol):
    """Feed changes are the admin's (the longer-delay role), not the risk admin's (finding 1 of
    the bounded-trust review)."""
    p = protocol
    o = p.oracle
    f = feed(8, usd8(2000))
    with boa.env.prank(p.new_user().address):
        with boa.reverts("roles: not admin"):
            o.set_feeds(ETH, [f.address], [3600])
    risk = p.new_user().address
    o.set_risk_admin(risk)
    with boa.env.prank(risk):
        with boa.reverts("roles: not admin"):
            o.set_feeds(ETH, [f.address], [3600])
        with boa.reverts("roles: not admin"):
            o.add_price_id("SOL")
    replace_feeds(o, ETH, [f.address], [3600])
    assert o.feeds(ETH)[0].aggregator == f.address


def test_feed_replacement_is_proposed_checked_and_delayed(protocol):
    """Finding 1 of the bounded-trust review: a feed answering $4,000,000 for ETH drained the
    vault. A replacement must agree with the live index within 5% when proposed and when
    activated, and applies only FEED_DELAY after it is proposed."""
    p = protocol
    o = p.oracle
    old = o.feeds(ETH)[0].aggregator
    with boa.reverts("oracle: feeds disagree with the index"):
        o.set_feeds(ETH, [feed(8, usd8(4_000_000)).address], [3600])
    with boa.reverts("oracle: feeds disagree with the index"):
        o.set_feeds(ETH, [feed(8, usd8(2101)).address], [3600])
    with boa.reverts("oracle: no proposed feeds"):
        o.activate_feeds(ETH)
    new = feed(8, usd8(2100))  # 5% above the index: agrees
    o.set_feeds(ETH, [new.address], [3600])
    (ev,) = events(o, "FeedsProposed")
    assert (ev.price_id, list(ev.aggregators), ev.activates_at) == (ETH, [new.address], now() + FEED_DELAY)
    assert o.feeds(ETH)[0].aggregator == old and o.index_price(ETH) == 2000 * WAD
    boa.env.time_travel(seconds=FEED_DELAY - 1)
    with boa.reverts("oracle: feeds not yet active"):
        o.activate_feeds(ETH)
    boa.env.time_travel(seconds=1)
    republish(old)
    new.set_answer(usd8(3000))  # the proposed feed turned: checked again on activation
    with boa.env.prank(p.new_user().address), boa.reverts("oracle: feeds disagree with the index"):
        o.activate_feeds(ETH)
    new.set_answer(usd8(2050))
    with boa.env.prank(p.new_user().address):  # anyone may activate
        o.activate_feeds(ETH)
    assert o.feeds(ETH)[0].aggregator == new.address and o.index_price(ETH) == 2050 * WAD
    assert o.pending_feeds(ETH).activates_at == 0
    # the same feeds with longer heartbeats apply at once; a shorter one waits like a new feed
    o.set_feeds(ETH, [new.address], [7200])
    assert o.feeds(ETH)[0].heartbeat == 7200 and o.pending_feeds(ETH).activates_at == 0
    o.set_feeds(ETH, [new.address], [600])
    assert o.feeds(ETH)[0].heartbeat == 7200 and o.pending_feeds(ETH).activates_at == now() + FEED_DELAY


def test_circuit_breaker_cannot_refuse_the_live_price(protocol):
    """Finding 3 of the bounded-trust review: `min_price = 1e30` froze margin, liquidation and
    withdrawals. Bounds are relative to the live index; without one they only loosen."""
    p = protocol
    o = p.oracle
    for args in ((10**30, 0, 0), (400 * WAD + 1, 0, 0), (0, 10_000 * WAD - 1, 0)):
        with boa.reverts("oracle: breaker too close to the index"):
            o.set_circuit_breaker(ETH, *args)
    with boa.reverts("oracle: max_jump out of bounds"):
        o.set_circuit_breaker(ETH, 0, 0, 25 * 10**16 - 1)
    o.set_circuit_breaker(ETH, 400 * WAD, 10_000 * WAD, 25 * 10**16)  # the bounds themselves
    assert o.index_price(ETH) == 2000 * WAD
    # an outage (no live index): the breaker can be loosened, never tightened
    boa.env.time_travel(seconds=3601)
    with boa.reverts("oracle: breaker can only be loosened without an index"):
        o.set_circuit_breaker(ETH, 401 * WAD, 10_000 * WAD, 25 * 10**16)
    with boa.reverts("oracle: breaker can only be loosened without an index"):
        o.set_circuit_breaker(ETH, 400 * WAD, 9_999 * WAD, 30 * 10**16)
    o.set_circuit_breaker(ETH, 0, 0, 0)


# ------------------------------------------------------------------ price ids


def test_add_price_id(protocol):
    p = protocol
    o = p.oracle
    pid = o.add_price_id("SOL")
    assert pid == 3  # after ETH, BTC and USDC
    (ev,) = events(o, "PriceIdAdded")
    assert (ev.price_id, ev.name) == (3, "SOL")
    assert o.price_id_count() == 4
    assert o.price_id_name(3) == "SOL"
    # a price id without feeds has no price; the batch read shows 0 and the rest keep working
    with boa.reverts("oracle: no valid price"):
        o.index_price(3)
    assert o.index_prices() == [2000 * WAD, 30000 * WAD, WAD, 0]
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 10_000)
    p.trade(a, b, "ETH-PERP", WAD, 2000 * WAD)
    f = feed(8, usd8(150))
    o.set_feeds(3, [f.address], [3600])
    assert o.index_prices() == [2000 * WAD, 30000 * WAD, WAD, 150 * WAD]
    with boa.env.prank(p.new_user().address):
        with boa.reverts("roles: not admin"):
            o.add_price_id("DOGE")


def test_too_many_price_ids(protocol):
    o = protocol.oracle
    for i in range(3, 8):
        assert o.add_price_id(f"X{i}") == i
    with boa.reverts("oracle: too many price ids"):
        o.add_price_id("X8")
    assert o.price_id_count() == 8


def test_unknown_price_id(protocol):
    o = protocol.oracle
    with boa.reverts("oracle: unknown price id"):
        o.index_price(3)
    with boa.reverts("oracle: unknown price id"):
        o.index_price_with_time(99)


# ------------------------------------------------------------------ index_price_with_time


def test_index_price_with_time_returns_oldest_valid_update(protocol):
    o = protocol.oracle
    ETH = o.add_price_id("ETH2")  # a new price id: its first feeds apply at once
    t0 = now()
    f1, f2, f3 = feed(8, usd8(1990)), feed(8, usd8(2000)), feed(8, usd8(2010))
    replace_feeds(o, ETH, [f3.address, f1.address, f2.address], [3600, 120, 3600])
    assert o.index_price_with_time(ETH) == (2000 * WAD, t0)
    boa.env.time_travel(seconds=100)
    f2.set_answer(usd8(2000))  # t0 + 100
    boa.env.time_travel(seconds=50)
    f3.set_answer(usd8(2010))  # t0 + 150
    # f1 is 150 s old with a 120 s heartbeat: ignored, so the oldest valid update is f2's
    assert o.index_price_with_time(ETH) == (2005 * WAD, t0 + 100)
    f1.set_answer(usd8(1990))  # refreshed now (t0 + 150)
    assert o.index_price_with_time(ETH) == (2000 * WAD, t0 + 100)
    # a feed stamped in the past through set_round is the oldest
    f3.set_round(7, usd8(2010), t0 + 20)
    assert o.index_price_with_time(ETH) == (2000 * WAD, t0 + 20)
    # single feed: its own updatedAt (republished when the replacement activated)
    replace_feeds(o, ETH, [f2.address], [3600])
    assert o.index_price_with_time(ETH) == (2000 * WAD, f2.latestRoundData()[3])


# ------------------------------------------------------------------ expiry_price


def test_expiry_price_is_first_round_at_or_after_expiry_whenever_asked(protocol):
    """Finding 3 of the coalition review: the settlement price must not depend on when the
    settlement is called. Feed 2,000 at expiry + 1 s, 2,400 at expiry + 50 min: the answer is
    2,000 at any later moment."""
    o = protocol.oracle
    f = feed(8, usd8(1900))
    replace_feeds(o, ETH, [f.address], [3600])
    expiry = now() + 1000
    assert o.expiry_price(ETH, expiry) == 0  # before expiry: undecided
    boa.env.time_travel(seconds=1000)
    assert o.expiry_price(ETH, expiry) == 0  # no round since expiry yet, heartbeat not passed
    boa.env.time_travel(seconds=1)
    f.set_answer(usd8(2000))
    for _ in range(3):
        boa.env.time_travel(seconds=1000)
        f.set_answer(usd8(2400))
        assert o.expiry_price(ETH, expiry) == 2000 * WAD
    assert o.index_price(ETH) == 2400 * WAD


def test_expiry_price_median_of_each_feeds_first_round(protocol):
    o = protocol.oracle
    f1, f2, f3 = feed(8, usd8(1990)), feed(18, 2000 * WAD), feed(8, usd8(2010))
    replace_feeds(o, ETH, [f1.address, f2.address, f3.address], [3600, 3600, 3600])
    expiry = now() + 10
    boa.env.time_travel(seconds=10)
    f1.set_answer(usd8(2100))  # exactly at expiry counts
    boa.env.time_travel(seconds=5)
    f2.set_answer(2050 * WAD)
    assert o.expiry_price(ETH, expiry) == 0  # f3 has not published since expiry
    boa.env.time_travel(seconds=5)
    f3.set_answer(usd8(1000))
    boa.env.time_travel(seconds=5)
    f1.set_answer(usd8(5000))
    f2.set_answer(1 * WAD)
    assert o.expiry_price(ETH, expiry) == 2050 * WAD  # median of 2100, 2050, 1000


def test_expiry_price_excludes_a_feed_silent_past_its_heartbeat(protocol):
    o = protocol.oracle
    f1, f2 = feed(8, usd8(2000)), feed(8, usd8(2000))
    replace_feeds(o, ETH, [f1.address, f2.address], [3600, 600])
    expiry = now() + 10
    boa.env.time_travel(seconds=20)
    f1.set_answer(usd8(2222))
    assert o.expiry_price(ETH, expiry) == 0  # f2 may still publish within its heartbeat
    boa.env.time_travel(seconds=600)
    assert o.expiry_price(ETH, expiry) == 2222 * WAD  # f2 silent past its heartbeat: excluded
    f2.set_answer(usd8(9999))  # too late to count
    assert o.expiry_price(ETH, expiry) == 2222 * WAD
    boa.env.time_travel(seconds=3600)
    assert o.expiry_price(ETH, expiry) == 2222 * WAD


def test_expiry_price_refuses_an_answer_outside_the_breaker(protocol):
    o = protocol.oracle
    f = feed(8, usd8(2000))
    replace_feeds(o, ETH, [f.address], [3600])
    o.set_circuit_breaker(ETH, 100 * WAD, 10**6 * WAD, 0)
    expiry = now() + 10
    boa.env.time_travel(seconds=10)
    f.set_answer(usd8(50))  # at the floor: not a price
    boa.env.time_travel(seconds=10)
    f.set_answer(usd8(2000))
    assert o.expiry_price(ETH, expiry) == 0  # first post-expiry round invalid; every feed excluded


def test_expiry_price_found_among_many_rounds(protocol):
    """The first round at or after expiry is found by binary search, however many rounds came
    before and after it (a liquidation that settles a future first can never be blocked)."""
    o = protocol.oracle
    f = feed(8, usd8(2000))
    replace_feeds(o, ETH, [f.address], [3600])
    for i in range(100):
        f.set_answer(usd8(1900 + i))
    expiry = now() + 10
    boa.env.time_travel(seconds=10)
    for i in range(150):
        f.set_answer(usd8(2100 + i))
    assert o.expiry_price(ETH, expiry) == 2100 * WAD
    with boa.reverts("oracle: unknown price id"):
        o.expiry_price(9, expiry)
