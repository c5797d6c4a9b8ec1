"""The keeper's auto-deleveraging arithmetic (`keeper.risk.adl`) by hand: which deficits qualify,
how a market's need is spread over the counterparties and what one cannot pay falls to the
next, the ranking the keeper proposes, and the block view its later plans see. The contract
agrees to the wei (tests/contracts/test_adl.py)."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.risk import adl

WAD = 10**18


def test_only_a_deficit_the_fund_cannot_pay_whole_is_deleveraged_whole():
    # equity -5,000, the collateral sale would raise 1,000 above its haircut value: 4,000 left
    assert adl.shortfall(-5000 * WAD, 1000 * WAD) == 4000 * WAD
    assert adl.uncovered(-5000 * WAD, 1000 * WAD, 4000 * WAD) == 0  # the fund pays it whole
    assert adl.uncovered(-5000 * WAD, 1000 * WAD, 3999 * WAD) == 4000 * WAD  # recovered whole
    assert adl.uncovered(100 * WAD, 0, 0) == 0


def test_market_need_is_its_share_rounded_up():
    # U = 1,000 over a gross notional of 3: a position of notional 1 carries ceil(1000 / 3)
    assert adl.market_need(1000, 1, 3) == 334
    assert adl.market_need(1000 * WAD, 66_000 * WAD, 66_000 * WAD) == 1000 * WAD


def test_score_is_profit_fraction_times_leverage():
    # short 20 from $2,000 at $1,650 on $1,007,000 of equity: 0.175 x 33,000 / 1,007,000
    score = adl.score(-20 * WAD, 2000 * WAD, 1650 * WAD, 1_007_000 * WAD)
    assert score == 175 * 10**15 * (33_000 * WAD) // (1_007_000 * WAD)
    assert adl.score(-20 * WAD, 1600 * WAD, 1650 * WAD, 10**24) == 0  # in loss
    assert adl.score(-20 * WAD, 2000 * WAD, 1650 * WAD, 0) == 0  # no equity


def test_what_one_counterparty_cannot_pay_falls_to_the_next():
    # a long of 40 at $1,650 needs $2,000; the first short (10 units) has $10 a unit of profit
    fills = adl.fills(40 * WAD, 1650 * WAD, 2000 * WAD, [(-10 * WAD, 1660 * WAD), (-40 * WAD, 2000 * WAD)])
    assert fills[0] == adl.Fill(10 * WAD, 1660 * WAD)  # capped at its entry: gives back $100
    # the other $1,900 over the 30 units left
    assert fills[1] == adl.Fill(30 * WAD, 1650 * WAD + -(-1900 * WAD * WAD // (30 * WAD)))
    recovered = sum(abs(f.price - 1650 * WAD) * abs(f.size) // WAD for f in fills)
    assert 2000 * WAD <= recovered < 2000 * WAD + 10**6
    # a bankrupt short buys back below the index from longs in profit
    assert adl.fills(-5 * WAD, 100 * WAD, 50 * WAD, [(8 * WAD, 90 * WAD)]) == [adl.Fill(-5 * WAD, 90 * WAD)]


def test_ranking_nominates_the_eligible_highest_score_first():
    price = 1650 * WAD
    sizes = [40 * WAD, -20 * WAD, -20 * WAD, 5 * WAD, -10 * WAD, -30 * WAD]
    entries = [1900 * WAD, 2000 * WAD, 1900 * WAD, 1000 * WAD, 1600 * WAD, 1700 * WAD]
    equity = [-2000 * WAD, 1_007_000 * WAD, 105_000 * WAD, 10**22, 10**22, 10**24]
    # row 3 is long (same side), row 4 in loss; row 2 outranks row 1 (more leverage), and row 5
    # (profit $50 a unit on $1e6 of equity) comes last
    assert adl.rank_counterparties(0, sizes, entries, equity, price) == [2, 1, 5]
    assert adl.in_turn(0, sizes, entries, equity, price, [5, 3, 4, 1, 2]) == [2, 1, 5]
    many = [40 * WAD] + [-WAD] * 12
    chosen = adl.rank_counterparties(0, many, [0] + [2000 * WAD] * 12, [0] + [10**22] * 12, price)
    assert chosen == list(range(1, adl.MAX_COUNTERPARTIES + 1))  # equal scores: by index


def test_turn_order_and_admission_by_hand():
    assert adl.turn_order([5, 0, 9, 5, 1]) == [2, 0, 3, 4]  # ties: the first nominated first
    full = list("abcdefgh")
    scores = [8, 7, 3, 6, 3, 5, 4, 2]
    assert adl.admit(full[:3], scores[:3], "z", 1) == ["a", "b", "c", "z"]  # room: appended
    assert adl.admit(full, scores, "z", 2) == full  # not above the lowest (h, 2)
    assert adl.admit(full, scores, "z", 3) == [*full[:7], "z"]
    assert adl.admit(full, [8, 7, 0, 6, 0, 5, 4, 2], "z", 1) == ["a", "b", "z", *full[3:]]  # first ineligible
    assert adl.admit(full, scores, "c", 99) == full  # already nominated


def test_round_states_by_hand():
    opened = 1_000
    assert adl.round_state(0, 5_000) == "none"
    assert adl.round_state(opened, opened + adl.NOTICE - 1) == "notice"
    assert adl.round_state(opened, opened + adl.NOTICE) == "ready"
    assert adl.round_state(opened, opened + adl.NOTICE + adl.ROUND_TIME) == "ready"
    assert adl.round_state(opened, opened + adl.NOTICE + adl.ROUND_TIME + 1) == "none"


def test_what_holds_a_liquidation_by_hand():
    t = 10_000
    assert not adl.holds_liquidation(t, t, [])  # flat: nothing for ADL to close
    assert adl.holds_liquidation(t + adl.NOTICE, t, [(0, [])])  # a next round may open
    assert not adl.holds_liquidation(t + adl.NOTICE + 1, t, [(0, [])])
    assert adl.holds_liquidation(t, 0, [(0, []), (t - adl.NOTICE, [0, 7])])  # an eligible nominee
    assert not adl.holds_liquidation(t, 0, [(t - adl.NOTICE, [0, 0])])  # its nominees left
    assert not adl.holds_liquidation(t, 0, [(t - adl.NOTICE - adl.ROUND_TIME - 1, [7])])  # lapsed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10**21), st.integers(1, 10**21), st.integers(1, 10**24)), min_size=1, max_size=8),
    st.integers(1, 10**21),
    st.integers(0, 10**24),
)
def test_block_view_conserves_equity_and_never_takes_more_than_profit(shorts, long_size, need):
    price = 10**21
    sizes = [long_size] + [-s for s, _, _ in shorts]
    entries = [price] + [price + gain for _, gain, _ in shorts]
    equity = [-need] + [e for _, _, e in shorts]
    chosen = list(range(1, len(sizes)))
    before_sizes, before_equity = list(sizes), list(equity)
    adl.apply_fills(0, sizes, entries, equity, price, need, chosen)
    assert sum(equity) == sum(before_equity)
    assert sizes[0] == long_size - sum(sizes[j] - before_sizes[j] for j in chosen) >= 0
    for j in chosen:
        given_back = before_equity[j] - equity[j]
        closed = sizes[j] - before_sizes[j]
        assert 0 <= closed <= -before_sizes[j]
        assert given_back <= (entries[j] - price) * closed // WAD
    # the account gains at most what it needs, plus the rounding up of each per-unit concession
    rounding = sum(-(-(sizes[j] - before_sizes[j]) // WAD) for j in chosen)
    assert equity[0] - before_equity[0] <= need + rounding


def test_round_constants_are_the_contracts():
    constants = (Path(__file__).resolve().parents[2] / "contracts" / "lib" / "constants.vy").read_text()
    for name, value in (
        ("MAX_ADL_COUNTERPARTIES", adl.MAX_COUNTERPARTIES),
        ("ADL_NOTICE", adl.NOTICE),
        ("ADL_ROUND_TIME", adl.ROUND_TIME),
    ):
        found = re.search(rf"{name}: constant\(uint256\) = (\d+)", constants)
        assert found and int(found.group(1)) == value, name
