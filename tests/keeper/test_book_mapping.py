"""Chain state -> scenario book (keeper.risk.book): which markets and series become instruments,
WAD -> float conversions, the vol surface, positions per account, unpriced / stale series, and
the portfolio margin and option value of small books against hand calculations."""

from __future__ import annotations

import math

import pytest

from keeper.risk.book import SeriesInfo, VolPoint, build_book
from keeper.risk.portfolio import account_greeks
from keeper.risk.scenarios import CALL, FUTURE, PERPETUAL, PUT, ScenarioParams, build_risk_tables, portfolio_margin

WAD = 10**18
DAY = 86400
NOW = 1_700_000_000
E1, E2 = NOW + 30 * DAY, NOW + 60 * DAY
PRICES = [2000 * WAD, 30000 * WAD]
# markets: ETH-PERP, ETH-FUT (expiry E2), BTC-PERP, BTC-FUT (settled)
M_UNDERLYING, M_EXPIRY, M_SETTLED = [0, 0, 1, 1], [0, E2, 0, NOW - DAY], [0, 0, 0, 29000 * WAD]
NAMES = {0: "ETH-PERP", 1: "ETH-FUT", 2: "BTC-PERP", 3: "BTC-FUT"}
SERIES = [
    SeriesInfo(0, 0, 0, 2200 * WAD, E1, True),
    SeriesInfo(1, 0, 0, 1800 * WAD, E1, False),
    SeriesInfo(2, 0, 0, 2000 * WAD, NOW - 1, True),  # expired, not yet settled
    SeriesInfo(3, 1, 1, 30000 * WAD, E2, False),  # no vol published
    SeriesInfo(4, 0, 0, 2000 * WAD, NOW - DAY, True, settlement_price=2100 * WAD),
]
VOLS = {(0, E1): VolPoint(8 * WAD // 10, -WAD // 5, NOW - 60)}


def book(perps, options, vols=VOLS, heartbeat=None, accounts=None):
    accounts = accounts or [f"0x{i:040x}" for i in range(len(options))]
    return build_book(accounts, PRICES, [0, 1], M_UNDERLYING, M_EXPIRY, M_SETTLED, perps, SERIES, options, vols, NOW,
                      ("ETH", "BTC"), NAMES, heartbeat)  # fmt: skip


def test_instruments_positions_and_market():
    perps = [[3 * WAD // 2, -WAD, 0, 0], [0, 0, 0, 0], [0, 0, WAD // 4, 5 * WAD]]
    options = [{0: -2 * WAD, 1: 3 * WAD}, {3: WAD}, {4: WAD, 2: -WAD}]
    b = book(perps, options)
    # live markets (the settled BTC-FUT is left out), then live priced series (0 and 1)
    assert b.refs == (("market", 0), ("market", 1), ("market", 2), ("series", 0), ("series", 1))
    assert b.names == ("ETH-PERP", "ETH-FUT", "BTC-PERP", "ETH-20231214-2200-C", "ETH-20231214-1800-P")
    assert b.instruments.kind.tolist() == [PERPETUAL, FUTURE, PERPETUAL, CALL, PUT]
    assert b.instruments.underlying.tolist() == [0, 0, 1, 0, 0]
    assert b.instruments.strike.tolist() == [0, 0, 0, 2200.0, 1800.0]
    assert b.instruments.expiry.tolist() == [0, E2, 0, E1, E1]
    assert b.positions.tolist() == [[1.5, -1.0, 0, -2.0, 3.0], [0, 0, 0, 0, 0], [0, 0, 0.25, 0, 0]]
    assert b.market.spot.tolist() == [2000.0, 30000.0] and b.market.now == NOW and b.market.symbols == ("ETH", "BTC")
    assert (b.market.vol.underlying.tolist(), b.market.vol.expiry.tolist()) == ([0], [E1])
    assert (b.market.vol.atm_vol.tolist(), b.market.vol.skew.tolist()) == ([0.8], [-0.2])
    assert b.unpriced == {3} and b.holds_unpriced.tolist() == [False, True, False]
    assert b.stale == set() and b.has_options().tolist() == [True, False, False]


def test_stale_vol_is_used_but_named():
    b = book([[0] * 4], [{0: WAD}], heartbeat=30)  # the point is 60 s old
    assert b.stale == {0, 1} and b.holds_stale.tolist() == [True]
    assert book([[0] * 4], [{0: WAD}], heartbeat=60).stale == set()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(options=[{9: WAD}]), "unknown series 9"),
        (dict(options=[{}, {}]), "2 rows for 1 accounts"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        book([[0] * 4], kwargs["options"], accounts=["0xa"])


def test_missing_index_price_is_an_error():
    with pytest.raises(ValueError, match="no valid index price for price id 1"):
        build_book(
            ["0xa"], [2000 * WAD, 0], [0, 1], M_UNDERLYING, M_EXPIRY, M_SETTLED, [[0] * 4], SERIES, [{}], VOLS, NOW
        )


def test_long_perpetual_portfolio_margin_by_hand():
    """1.5 ETH long perpetual at 2,000: worst grid move -15% -> 450 USD (the extreme -30% counts
    35%: 315); delta-one contingency 3% x 2,000 x 1.5 = 90; MM 540, IM 1.25 x 540 = 675."""
    b = book([[3 * WAD // 2, 0, 0, 0]], [{}])
    pm = portfolio_margin(build_risk_tables(b.instruments, b.market, ScenarioParams()), b.positions)
    assert pm.grid_loss[0] == pytest.approx(450.0, abs=1e-9)
    assert (pm.mm[0], pm.im[0]) == (540.0, 675.0)


def test_option_value_matches_black76_by_hand():
    """Short 2 ETH 2200 calls, 30 days: vol on the smile 0.8 - 0.2 ln(2200/2000) = 0.780938;
    Black-76 (F = 2000, r = 0) from math.erf, value x -2."""
    b = book([[0] * 4], [{0: -2 * WAD}])
    tables = build_risk_tables(b.instruments, b.market, ScenarioParams())
    sigma = 0.8 - 0.2 * math.log(2200 / 2000)
    t = 30 * DAY / (365 * DAY)
    d1 = (math.log(2000 / 2200) + 0.5 * sigma**2 * t) / (sigma * math.sqrt(t))
    n = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    call = 2000 * n(d1) - 2200 * n(d1 - sigma * math.sqrt(t))
    g = account_greeks(tables, b.positions)
    assert g.value[0] == pytest.approx(-2 * call, rel=1e-9)
    assert g.delta[0, 0] == pytest.approx(-2 * n(d1), rel=1e-9)
    # a naked short call pays the naked contingency: 2% x 2,000 x 2 = 80
    assert portfolio_margin(tables, b.positions).naked_option_contingency[0] == pytest.approx(80.0)
