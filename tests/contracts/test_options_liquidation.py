"""Bounded option liquidation: `OptionMarket.liquidate_options` moves at most
MAX_LIQUIDATION_SERIES series per call, and the protocol, not the account or the liquidator,
chooses which (`options_core._liquidation_subset`): every short before any long, then by the
position's maintenance margin (MM), largest first, then by series id.

The attack the rule closes: with a bound on series per call, a rule that follows the account's
own list (or lets the liquidator pick) lets a coalition put its long hedges first, have a
friendly liquidator take them, and keep the naked shorts whose later loss lands on the
insurance fund. Ranking by MM alone is not enough either: a long's MM here is
(1 - long_mm_haircut) of its value, so a deep in-the-money long outranks an at-the-money short.
"""

from __future__ import annotations

from pathlib import Path

import boa
import pytest

from tests.boa_protocol import WAD, OptionsKit, ceil_div, events, funded, now

ETH = 0
DAY = 86400
ATM, SKEW = 8 * WAD // 10, -WAD // 5
# contracts/lib/constants.vy
MAX_LIQUIDATION_SERIES = 8


def test_the_bound_here_is_the_contracts():
    """MAX_LIQUIDATION_SERIES of this file and of the coalition machine is the contracts' (it is
    not in the ABI: a constant)."""
    from tests.contracts import test_coalition

    source = (Path(__file__).resolve().parents[2] / "contracts" / "lib" / "constants.vy").read_text()
    for bound in (MAX_LIQUIDATION_SERIES, test_coalition.MAX_LIQUIDATION_SERIES):
        assert f"MAX_LIQUIDATION_SERIES: constant(uint256) = {bound}\n" in source


@pytest.fixture
def kit(protocol) -> OptionsKit:
    return OptionsKit.deploy(protocol)


def mark_of(kit, series: int) -> int:
    return kit.market.series_states()[series].mark


def expected_subset(kit, account: str) -> list[int]:
    """The rule, from the market's own per-position states: live positions ranked by (short,
    MM, -series id), descending; the first MAX_LIQUIDATION_SERIES."""
    t = now()
    live = [
        s
        for s in kit.market.option_states(account)
        if s.size != 0 and kit.market.series(s.series).settlement_price == 0 and t < kit.market.series(s.series).expiry
    ]
    live.sort(key=lambda s: (s.size < 0, s.maintenance_margin, -s.series), reverse=True)
    return [s.series for s in live[:MAX_LIQUIDATION_SERIES]]


def liquidate_options(kit, liquidator, account: str):
    """One call; returns (the OptionLiquidated events in order, the OptionsLiquidation event)."""
    with boa.env.prank(liquidator.address):
        kit.market.liquidate_options(account)
    (call,) = events(kit.market, "OptionsLiquidation")
    return events(kit.market, "OptionLiquidated"), call


def coalition_book(kit, account, buyer, long_ids, short_ids, short_sizes, hedges_first: bool = True):
    """`account` buys 2 units of every long (its hedges) and sells the shorts, opening the longs
    first when `hedges_first`, so they head its own list."""
    longs = [lambda s=s: kit.trade(account, buyer, s, 2 * WAD, mark_of(kit, s)) for s in long_ids]
    shorts = [lambda s=s, n=n: kit.trade(buyer, account, s, n, mark_of(kit, s)) for s, n in zip(short_ids, short_sizes)]
    for open_position in longs + shorts if hedges_first else shorts + longs:
        open_position()


@pytest.fixture
def hedged_books(kit):
    """Two accounts with the same book, 6 deep in-the-money long calls of 2 units (its hedges; a
    long's MM is 20% of its value) and 20 short puts and calls of three sizes (ties in MM), one
    holding the hedges first in its list, the other last. ETH then falls until both are
    liquidatable."""
    p = kit.p
    expiry = now() + 30 * DAY
    long_ids = [kit.list(ETH, k * WAD, expiry, True) for k in (900, 950, 1000, 1050, 1100, 1150)]
    short_ids = [kit.list(ETH, (1800 + 40 * i) * WAD, expiry, i % 2 == 0) for i in range(20)]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    sizes = [(WAD, 2 * WAD, WAD // 2)[i % 3] for i in range(20)]
    buyer = funded(p, 50_000_000)
    first, last = funded(p, 11_000), funded(p, 11_000)
    coalition_book(kit, first, buyer, long_ids, short_ids, sizes, hedges_first=True)
    coalition_book(kit, last, buyer, long_ids, short_ids, sizes, hedges_first=False)
    held = [s.series for s in kit.market.option_states(first.address)]
    assert held[: len(long_ids)] == long_ids, "the coalition's list starts with its hedges"
    price = 2000
    while not (p.engine.is_liquidatable(first.address) and p.engine.is_liquidatable(last.address)):
        price -= 20
        boa.env.time_travel(seconds=60)
        p.set_price("ETH", price)
        kit.set_vol(ETH, expiry, ATM, SKEW)
        assert price > 1000
    boa.env.time_travel(seconds=1)
    return kit, first, last, long_ids, short_ids, expiry


def test_longs_ranked_by_mm_alone_would_come_before_shorts(hedged_books):
    """Why shorts rank first: in this book a hedge's MM (20% of a deep in-the-money mark) is
    above some shorts' MM, so a rule ranking by MM alone would hand the coalition's friendly
    liquidator hedges in the first call."""
    kit, first, _, long_ids, short_ids, _ = hedged_books
    states = kit.market.option_states(first.address)
    by_mm_alone = sorted(states, key=lambda s: (s.maintenance_margin, -s.series), reverse=True)
    assert {s.series for s in by_mm_alone[:MAX_LIQUIDATION_SERIES]} & set(long_ids)
    assert not set(expected_subset(kit, first.address)) & set(long_ids)


def test_coalition_cannot_have_its_hedges_stripped_first(hedged_books):
    """A coalition account lists its long hedges first and a friendly liquidator (cash only, or
    already holding the hedges' series) liquidates it: the call moves the largest-MM shorts,
    never a long while a short is live, and the same series whatever the account's list order
    and whoever liquidates."""
    kit, first, last, long_ids, short_ids, _ = hedged_books
    p = kit.p
    expected = expected_subset(kit, first.address)
    assert len(short_ids) > MAX_LIQUIDATION_SERIES and set(expected) <= set(short_ids)
    assert expected == expected_subset(kit, last.address)

    friendly = funded(p, 10_000_000)
    holds_hedges = funded(p, 10_000_000)
    seller = funded(p, 10_000_000)
    for s in long_ids:  # the second liquidator already holds the hedges' series
        kit.trade(holds_hedges, seller, s, WAD, mark_of(kit, s))

    outcomes = []
    for account in (first, last):
        for liquidator in (friendly, holds_hedges):
            with boa.env.anchor():
                moved, call = liquidate_options(kit, liquidator, account.address)
                outcomes.append([(m.series, m.size) for m in moved])
                assert [m.series for m in moved] == expected
                assert all(m.size < 0 for m in moved), "a long moved while shorts were live"
                assert call.health_after >= call.health_before
                for s in long_ids:
                    assert kit.market.positions(account.address, s).size == 2 * WAD, "a hedge left the account"
    assert all(o == outcomes[0] for o in outcomes)


def needs_two_calls(kit, account: str, solvent: bool) -> bool:
    """Whether the account is liquidatable and still would be (equity below MM) after its whole
    subset moved at mark (equity less the penalty on the subset's value, against the MM of the
    rest), with equity above 0 (`solvent`) or below it."""
    p = kit.p
    summary = p.engine.margin_summary(account)
    if not p.engine.is_liquidatable(account) or (summary.equity > 0) != solvent:
        return False
    states = {s.series: s for s in kit.market.option_states(account)}
    subset = expected_subset(kit, account)
    rate = p.engine.liquidation_penalty()
    gross = sum(ceil_div(abs(states[s].size) * states[s].mark, WAD) for s in subset)
    rest = summary.maintenance_margin - sum(states[s].maintenance_margin for s in subset)
    return summary.equity - ceil_div(gross * rate, WAD) < rest


@pytest.mark.parametrize("solvent", [True, False], ids=["solvent", "in_debt"])
def test_more_series_than_the_bound_need_several_calls(kit, solvent):
    """An account short 28 puts (four sizes: ties in MM, broken by series id) and long 4 calls
    is liquidated by repeated calls, at a price where one call cannot be enough: each call moves
    exactly the protocol's subset of the book as it then is, in rank order, at most
    MAX_LIQUIDATION_SERIES series; a call leaves the health factor no lower unless it moved
    every position of its subset whole; a long moves only in a call that also takes every live
    short. Solvent: the account ends no longer liquidatable; in debt: every live option is
    moved, then the engine writes off the rest."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    short_ids = [kit.list(ETH, (1700 + 20 * i) * WAD, expiry, False) for i in range(28)]
    long_ids = [kit.list(ETH, k * WAD, expiry, True) for k in (1000, 1100, 1200, 1300)]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, account = funded(p, 50_000_000), funded(p, 1_000_000)
    for s in long_ids:
        kit.trade(account, buyer, s, WAD // 4, mark_of(kit, s))
    for i, s in enumerate(short_ids):
        kit.trade(buyer, account, s, (WAD, 3 * WAD // 2, WAD // 2, 2 * WAD)[i % 4], mark_of(kit, s))
    # cash down to initial margin
    summary = p.engine.margin_summary(account.address)
    with boa.env.prank(account.address):
        p.vault.withdraw(p.usdc.address, (summary.equity - summary.initial_margin) // 10**12 - 1)
    assert len(m.option_states(account.address)) == 32
    liquidator = funded(p, 50_000_000)

    price = 2000
    while not needs_two_calls(kit, account.address, solvent):
        price -= 10
        boa.env.time_travel(seconds=60)
        p.set_price("ETH", price)
        kit.set_vol(ETH, expiry, ATM, SKEW)
        assert price > 1000
    option_calls = 0
    while p.engine.is_liquidatable(account.address) and option_calls < 12:
        expected = expected_subset(kit, account.address)
        if not expected:
            break
        sizes = {s: m.positions(account.address, s).size for s in expected}
        live_shorts = {s for s in short_ids if m.positions(account.address, s).size < 0}
        moved, call = liquidate_options(kit, liquidator, account.address)
        option_calls += 1
        assert [x.series for x in moved] == expected and len(moved) <= MAX_LIQUIDATION_SERIES
        whole = all(x.size == sizes[x.series] for x in moved)
        assert call.health_after >= call.health_before or whole, (call, sizes)
        if any(x.size > 0 for x in moved):
            assert live_shorts <= set(expected), "a long moved while a short outside the call was live"
        boa.env.time_travel(seconds=60)
        kit.set_vol(ETH, expiry, ATM, SKEW)
        p.set_price("ETH", price)
    assert option_calls >= 2, "a 32-series account should need more than one bounded call"
    if not solvent:
        assert not m.option_states(account.address), "every live option is moved"
        with boa.env.prank(liquidator.address):
            p.engine.liquidate(account.address)
    assert not p.engine.is_liquidatable(account.address)


def test_the_bound_and_the_order_hold_for_a_liquidator_with_little_room(kit):
    """A liquidator with few free slots takes the subset's series in rank order until its book is
    full and leaves the rest (finding 5's rule); it never reaches past the subset to series that
    rank lower."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    free = MAX_LIQUIDATION_SERIES // 2  # free slots, fewer than the bound
    ids = [kit.list(ETH, (1700 + 20 * i) * WAD, expiry, True) for i in range(20 + 32 - free)]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, victim, liquidator, helper = (funded(p, 20_000_000) for _ in range(4))
    with boa.env.prank(victim.address):
        p.vault.withdraw(p.usdc.address, 19_960_000 * 10**6)
    for i, s in enumerate(ids[:20]):
        kit.trade(buyer, victim, s, WAD + i * WAD // 10, mark_of(kit, s))
    for s in ids[20:]:  # 32 - free series of its own
        kit.trade(liquidator, helper, s, WAD, mark_of(kit, s))
    price = 2000
    while not p.engine.is_liquidatable(victim.address):
        price += 50
        boa.env.time_travel(seconds=60)
        p.set_price("ETH", price)
        kit.set_vol(ETH, expiry, ATM, SKEW)
    boa.env.time_travel(seconds=60)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    expected = expected_subset(kit, victim.address)
    moved, _ = liquidate_options(kit, liquidator, victim.address)
    assert [x.series for x in moved] == expected[:free]
    assert len(m.option_states(liquidator.address)) == 32


def test_subset_fraction_by_hand(kit):
    """f over the subset: f = ceil((ceil(t MM) - E) / (t M_S - penalty G_S)), M_S and G_S the
    subset's MM and gross value (sum of ceil(|size| mark)); every subset position moves
    ceil(f |size|), and the series outside the subset keep their size."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    ids = [kit.list(ETH, (1800 + 20 * i) * WAD, expiry, i % 2 == 1) for i in range(20)]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, account, liquidator = funded(p, 20_000_000), funded(p, 9_000), funded(p, 20_000_000)
    for i, s in enumerate(ids):
        kit.trade(buyer, account, s, WAD // 2 + i * WAD // 20, mark_of(kit, s))
    price = 2000
    while not p.engine.is_liquidatable(account.address):
        price -= 10
        boa.env.time_travel(seconds=60)
        p.set_price("ETH", price)
        kit.set_vol(ETH, expiry, ATM, SKEW)
    boa.env.time_travel(seconds=60)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    before = p.engine.margin_summary(account.address)
    states = {s.series: s for s in m.option_states(account.address)}
    subset = expected_subset(kit, account.address)
    target, rate = p.engine.liquidation_target(), p.engine.liquidation_penalty()
    mm_s = sum(states[s].maintenance_margin for s in subset)
    gross = sum(ceil_div(-states[s].size * states[s].mark, WAD) for s in subset)
    denominator = mm_s * target // WAD - gross * rate // WAD
    deficit = ceil_div(before.maintenance_margin * target, WAD) - before.equity
    assert denominator > 0 and deficit > 0
    fraction = min(WAD, ceil_div(deficit * WAD, denominator))
    moved, call = liquidate_options(kit, liquidator, account.address)
    assert [x.series for x in moved] == subset
    for x in moved:
        size = -states[x.series].size
        assert (x.size, x.price) == (-min(ceil_div(size * fraction, WAD), size), states[x.series].mark)
    for s in set(ids) - set(subset):
        assert m.positions(account.address, s).size == states[s].size
    value = sum(ceil_div(-x.size * x.price, WAD) for x in moved)
    assert (call.value_moved, call.penalty) == (value, min(ceil_div(value * rate, WAD), max(before.equity, 0)))
