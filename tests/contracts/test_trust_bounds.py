"""What a compromised risk admin can do within the on-chain bounds, in dollars, on the default
deployment (config/local.yaml: ETH $2,000, BTC $30,000, IM 10% / MM 5%, penalty 2% ramping to
2.5%, liquidator share 50%, target 1.25, WETH haircut 0.85) with the demo's scale (a $1,000,000
insurance fund, keeper/dev_cli.py INSURANCE_USD).

For every risk setter (MarginEngine, CollateralVault, OracleRouter) the test sets it to each
extreme of its bound, in one block with the attempted liquidations (the block the timelock's
`execute` lands in), and:

(a) checks that de-risking never becomes impossible there: a reducing trade at the index, a
    liquidation of an account below maintenance margin ("engine: account not liquidatable" is
    the only accepted refusal, when the change made it healthy) and a withdrawal of all cash by
    an account without positions all still go through;
(b) checks that a liquidator takes nothing from the healthy accounts below in that block
    (finding 2: a stricter requirement phases in over REQUIREMENT_RAMP, lib/ramp.vy), and
    `test_no_healthy_seizure_in_the_block_of_a_change` prints the figures with -s.

The accounts (each healthy before the change):
    long4x  $20,000 USDC, long 40 ETH-PERP at $2,000 ($80,000 notional, 4x)
    basis   $20,000 USDC, long 40 ETH-PERP and short 40 ETH-FUT (a hedged basis trade)
    weth    10 WETH ($17,000 after the 0.85 haircut) + $3,000 USDC, long 40 ETH-PERP (4x)
    idle    $5,000 USDC, no positions (withdraws everything)
and, for (a), `under`: $3,000, long 1 BTC-PERP at $30,000, BTC then at $28,400 (equity $1,400
< MM $1,420: liquidatable before any change).

How long the ramp gives an account that does nothing (the docs' figures) is measured against
hand calculations in `test_a_raise_phases_in`, `test_a_haircut_cut_phases_in` and
`test_penalty_waits_for_the_rates_in_force`; the minimum position notional (finding 4) in
`test_dust_accounts_make_the_keeper_pay_and_wait`.

The oracle's feed replacement (admin, FEED_DELAY, agreement with the index) and circuit
breaker bounds (relative to the live index) are tested at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import boa
import pytest

from keeper.config import load_config
from keeper.params import bounds
from tests.boa_protocol import WAD, deploy_unique, deployer, events, same_block

ROOT = Path(__file__).resolve().parents[2]
ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
ETH, BTC = 0, 1  # engine underlying ids = oracle price ids
WETH_ID = 0
USDC = 10**6
DAY = 86400
PCT = WAD // 100

# config/local.yaml, as deployed
PENALTY, MAX_PENALTY, RAMP, SHARE, TARGET = 2 * PCT, 25 * PCT // 10, 3600, 50 * PCT, 125 * PCT
DEVIATION, FUNDING, SMOOTHING = 5 * PCT, PCT // 2, 10 * PCT
INSURANCE_USD = 1_000_000  # keeper/dev_cli.py


@dataclass
class Book:
    p: object
    mm: object  # market maker: the other side of every trade
    liq: object  # liquidator
    long4x: object
    basis: object
    weth: object
    idle: object
    under: object


HEALTHY = ("long4x", "basis", "weth")


@pytest.fixture(scope="module")
def _book(_deployed) -> Book:
    """Built once per module; each test runs in its own anchor (see `book`)."""
    with boa.env.anchor():
        yield build(_deployed)


@pytest.fixture
def book(_book) -> Book:
    with boa.env.anchor():
        yield _book


def build(p) -> Book:
    mm, liq, long4x, basis, weth, idle, under = (p.new_user() for _ in range(7))
    p.deposit_usd(mm, 10_000_000)
    p.deposit_usd(liq, 10_000_000)
    p.usdc.mint(p.admin, INSURANCE_USD * USDC)
    with boa.env.prank(p.admin):
        p.usdc.approve(p.vault.address, INSURANCE_USD * USDC)
        p.vault.fund_insurance(INSURANCE_USD * USDC)
    p.deposit_usd(long4x, 20_000)
    p.trade(long4x, mm, "ETH-PERP", 40 * WAD, 2000 * WAD)
    p.deposit_usd(basis, 20_000)
    p.trade(basis, mm, "ETH-PERP", 40 * WAD, 2000 * WAD)
    p.trade(mm, basis, "ETH-FUT", 40 * WAD, 2000 * WAD)
    p.deposit(weth, "WETH", 10 * WAD)
    p.deposit_usd(weth, 3_000)
    p.trade(weth, mm, "ETH-PERP", 40 * WAD, 2000 * WAD)
    p.deposit_usd(idle, 5_000)
    p.deposit_usd(under, 3_000)
    p.trade(under, mm, "BTC-PERP", WAD, 30_000 * WAD)
    p.set_price("BTC", 28_400)
    b = Book(p, mm, liq, long4x, basis, weth, idle, under)
    for name in HEALTHY + ("idle",):
        eq, im, mm_, _ = summary(b, getattr(b, name))
        assert eq >= im > 0 or name == "idle", name
    eq, _, mm_, _ = summary(b, under)
    assert eq < mm_  # liquidatable before any change
    return b


def summary(b: Book, user) -> tuple:
    return tuple(b.p.engine.margin_summary(user.address))


def usd(wad: int) -> float:
    return round(wad / WAD, 2)


def reason(err: Exception) -> str:
    """The revert string of a BoaError (str(err) decodes storage and can fail)."""
    frame = err.stack_trace.last_frame
    return frame if isinstance(frame, str) else str(frame.pretty_vm_reason)


# ------------------------------------------------------------------ the extremes of every setter
# name -> list of (contract attribute, function, args); applied in order by the risk admin (the
# deployer holds both roles in the default deployment; behind a timelock, one `execute` each).
# Orders matter only where a bound depends on another parameter (MM >= 2 x penalty).

E, V, OR = "engine", "vault", "oracle"
ETH_LIVE = 2000 * WAD

EXTREMES: dict[str, list[tuple[str, str, tuple]]] = {
    # MarginEngine.set_underlying_params: IM in [1%, 100%], MM in [max(0.5%, 2 x penalty), IM],
    # spread IM <= IM, spread MM <= min(spread IM, MM); a raise phases in over REQUIREMENT_RAMP
    "eth_rates_max": [(E, "set_underlying_params", (ETH, WAD, WAD, WAD, WAD))],
    "eth_rates_min": [
        (E, "set_liquidation_params", (bounds.MIN_PENALTY, SHARE, TARGET)),
        (E, "set_penalty_ramp", (bounds.MIN_PENALTY, RAMP)),
        (E, "set_underlying_params", (ETH, bounds.MIN_IM_RATE, bounds.MIN_MM_RATE, 0, 0)),
    ],
    # the worst of finding 2 in one block: rates at 100% and the liquidation parameters at the
    # largest the rates IN FORCE allow (penalty 2.5% = MM 5% / 2; the 10% of the second review
    # needs MM >= 20% in force, i.e. the raise phased in: test_penalty_waits_for_the_rates_in_force)
    "rates_and_liquidation_max": [
        (E, "set_underlying_params", (ETH, WAD, WAD, WAD, WAD)),
        (E, "set_underlying_params", (BTC, WAD, WAD, WAD, WAD)),
        (E, "set_liquidation_params", (MAX_PENALTY, WAD, bounds.MAX_TARGET)),
        (E, "set_penalty_ramp", (MAX_PENALTY, bounds.MAX_PENALTY_RAMP)),
    ],
    # MarginEngine.set_liquidation_params: penalty in [0.1%, 10%] and <= MM / 2 (5% / 2 here),
    # share <= 100%, target in [1.05, 2]
    "liquidation_max": [(E, "set_liquidation_params", (MAX_PENALTY, WAD, bounds.MAX_TARGET))],
    "liquidation_min": [(E, "set_liquidation_params", (bounds.MIN_PENALTY, 0, bounds.MIN_TARGET))],
    # MarginEngine.set_penalty_ramp: max penalty in [penalty, 10%] and <= MM / 2, ramp [60 s, 1 day]
    "penalty_ramp_max": [(E, "set_penalty_ramp", (MAX_PENALTY, bounds.MAX_PENALTY_RAMP))],
    "penalty_ramp_min": [(E, "set_penalty_ramp", (PENALTY, bounds.MIN_PENALTY_RAMP))],
    # MarginEngine.set_position_caps: any; 1 wei caps every position and the OI
    "position_caps_min": [(E, "set_position_caps", (m, 1, 1)) for m in range(4)],
    "position_caps_none": [(E, "set_position_caps", (m, 0, 0)) for m in range(4)],
    # MarginEngine.set_trade_params: deviation [0.1%, 20%], funding cap [0, 1%], smoothing (0, 1],
    # minimum position notional [0, $1,000]
    "trade_max": [
        (
            E,
            "set_trade_params",
            (bounds.MAX_PRICE_DEVIATION, bounds.MAX_FUNDING_RATE_BOUND, WAD, bounds.MAX_MIN_POSITION_NOTIONAL),
        )
    ],
    "trade_min": [(E, "set_trade_params", (bounds.MIN_PRICE_DEVIATION, 0, 1, 0))],
    # CollateralVault.set_asset_params: haircut [0, 100%], any deposit cap; a cut phases in
    "weth_haircut_zero": [(V, "set_asset_params", (WETH_ID, 0, 0))],
    "weth_haircut_full": [(V, "set_asset_params", (WETH_ID, bounds.MAX_HAIRCUT, 2**256 - 1))],
    # OracleRouter.set_circuit_breaker: min <= 20% of the index, max >= 5x or 0, jump 0 or >= 25%
    "breaker_tightest": [
        (OR, "set_circuit_breaker", (ETH, ETH_LIVE // 5, ETH_LIVE * 5, 25 * PCT)),
        (OR, "set_circuit_breaker", (BTC, 28_400 * WAD // 5, 28_400 * WAD * 5, 25 * PCT)),
    ],
    "breaker_off": [(OR, "set_circuit_breaker", (ETH, 0, 0, 0)), (OR, "set_circuit_breaker", (BTC, 0, 0, 0))],
}


def apply(b: Book, name: str) -> None:
    p = b.p
    for contract, fn, args in EXTREMES[name]:
        getattr(getattr(p, contract), fn)(*args, sender=p.admin)


def take_all(b: Book) -> dict[str, tuple[int, int]]:
    """Try to liquidate every healthy account; {name: (liquidator gain, account loss)} in WAD USD."""
    out = {}
    for name in HEALTHY:
        acct = getattr(b, name)
        acct0, liq0 = summary(b, acct)[0], summary(b, b.liq)[0]
        try:
            b.p.engine.liquidate(acct.address, sender=b.liq.address)
        except boa.BoaError as err:
            assert "engine: account not liquidatable" in reason(err), (name, reason(err))
        out[name] = (summary(b, b.liq)[0] - liq0, acct0 - summary(b, acct)[0])
    return out


def measure(b: Book, name: str) -> dict[str, tuple[int, int]]:
    with boa.env.anchor(), same_block():
        apply(b, name)
        return take_all(b)


@pytest.mark.parametrize("name", list(EXTREMES))
def test_derisking_stays_possible(book, name):
    """(a): in the block of the change, a reducing trade at the index, the liquidation of an
    account below MM (or its refusal as healthy, if the change loosened it) and a full
    withdrawal by an account without positions all still go through."""
    b, p = book, book.p
    with same_block():
        apply(b, name)
        # a reducing trade at the index, 1 of the 40 ETH (and the BTC under-margined account's)
        p.trade(b.mm, b.long4x, "ETH-PERP", WAD, 2000 * WAD)
        p.trade(b.mm, b.weth, "ETH-PERP", WAD, 2000 * WAD)
        p.trade(b.basis, b.mm, "ETH-FUT", WAD, 2000 * WAD)
        p.trade(b.mm, b.under, "BTC-PERP", WAD // 10, 28_400 * WAD)
    with same_block():
        try:
            p.engine.liquidate(b.under.address, sender=b.liq.address)
            liquidated = True
        except boa.BoaError as err:
            assert "engine: account not liquidatable" in reason(err), reason(err)
            liquidated = False
        assert liquidated or summary(b, b.under)[0] >= summary(b, b.under)[2]
        p.vault.withdraw(p.usdc.address, 5_000 * USDC, sender=b.idle.address)
    assert p.usdc.balanceOf(b.idle.address) == 5_000 * USDC
    assert p.vault.cash(b.idle.address) == 0


@pytest.mark.parametrize("name", list(EXTREMES))
def test_no_healthy_seizure_in_the_block_of_a_change(book, name):
    """(b), finding 2: no account healthy before a change can be liquidated in the block it
    lands in, at every extreme of every setter: a liquidator takes $0 from the three healthy
    accounts (print with -s). Before the phase-in ramp, eth_rates_max took $2,623.13, the
    second review's rates + liquidation extreme $30,292.40 ($7,368.42 from the 4x long) and a
    zero WETH haircut $470.59."""
    took = measure(book, name)
    print(f"\n{name}: " + ", ".join(f"{k} +{usd(g):,.2f}/-{usd(x):,.2f}" for k, (g, x) in took.items()))
    assert all(g == 0 and x == 0 for g, x in took.values()), took


# ------------------------------------------------------------------ the ramp (finding 2)

RAMP_TIME = bounds.REQUIREMENT_RAMP


def fresh_prices(b: Book) -> None:
    """New rounds at the same prices (ETH $2,000, BTC $28,400), stamped now."""
    b.p.set_price("ETH", 2000)
    b.p.set_price("BTC", 28_400)


def liquidatable_from(b: Book, acct, lo: int, hi: int) -> int:
    """The first second in (lo, hi] after now at which `acct` is liquidatable (bisection on
    `is_liquidatable`, which reads the rates in force at the block's timestamp)."""
    t0 = boa.env.evm.patch.timestamp
    while hi - lo > 1:
        mid = (lo + hi) // 2
        with boa.env.anchor():
            boa.env.evm.patch.timestamp = t0 + mid
            fresh_prices(b)
            if b.p.engine.is_liquidatable(acct.address):
                hi = mid
            else:
                lo = mid
    return hi


def test_a_raise_phases_in(book):
    """MM 5% -> 100% phases in linearly over 7 days: in force 5% + 95% x t / 7 days (rounded
    down). long4x ($20,000 equity, $80,000 ETH long, MM = notional x rate) becomes
    liquidatable when the rate in force exceeds 25%, after 20/95 x 7 days = 127,327 s
    (35.4 hours) by hand; the rates read back at the start, midway and after the ramp."""
    b, p = book, book.p
    p.engine.set_underlying_params(ETH, WAD, WAD, WAD, WAD, sender=p.admin)
    assert tuple(p.engine.rates_now(ETH))[1:] == (10 * PCT, 5 * PCT, 2 * PCT, PCT)  # unchanged in the block
    assert tuple(p.engine.underlyings(ETH))[1:] == (WAD,) * 4  # the targets
    with boa.env.anchor():
        boa.env.time_travel(seconds=RAMP_TIME // 2)
        assert tuple(p.engine.rates_now(ETH))[1:] == (
            10 * PCT + 45 * PCT,
            5 * PCT + 475 * PCT // 10,
            2 * PCT + 49 * PCT,
            PCT + 495 * PCT // 10,
        )
    with boa.env.anchor():
        boa.env.time_travel(seconds=RAMP_TIME)
        assert tuple(p.engine.rates_now(ETH))[1:] == (WAD,) * 4
    # rate(t) = 5% + floor(95% x t / RAMP) > 25%  <=>  95% x t / RAMP >= 20% + 1 wei
    by_hand = -(-(20 * PCT + 1) * RAMP_TIME // (95 * PCT))
    assert liquidatable_from(b, b.long4x, 0, RAMP_TIME) == by_hand == 127_327


def test_a_haircut_cut_phases_in(book):
    """WETH 0.85 -> 0 phases in over 7 days: in force 0.85 x (1 - t / 7 days). The weth
    account (10 WETH + $3,000, long $80,000 ETH, MM $4,000) becomes liquidatable when its 10
    WETH count for less than $1,000, i.e. the haircut in force is below 0.05, after
    0.80 / 0.85 x 7 days = 569,224 s (6.6 days) by hand."""
    b, p = book, book.p
    p.vault.set_asset_params(WETH_ID, 0, 0, sender=p.admin)
    assert p.vault.haircut_now(WETH_ID) == 85 * PCT
    assert not p.engine.is_liquidatable(b.weth.address)
    # haircut(t) = 0.85 - floor(0.85 x t / RAMP); equity 3,000 + 17,000 x h / 0.85 < 4,000  <=>  h < 0.05
    by_hand = (80 * PCT * RAMP_TIME) // (85 * PCT) + 1
    assert liquidatable_from(b, b.weth, 0, RAMP_TIME) == by_hand == 569_224


def test_a_change_during_a_ramp_restarts_it_from_the_rate_in_force(book):
    """Setting the same target again cannot speed a ramp up: the new ramp starts from the rate
    in force, so after 1 day + 1 day of a restarted ramp the rate in force is below what 2 days
    of the first ramp give. A lower target applies at once."""
    p = book.p
    e = p.engine
    e.set_underlying_params(ETH, WAD, WAD, WAD, WAD, sender=p.admin)
    boa.env.time_travel(seconds=DAY)
    e.set_underlying_params(ETH, WAD, WAD, WAD, WAD, sender=p.admin)
    boa.env.time_travel(seconds=DAY)
    restarted = e.rates_now(ETH).mm_rate
    first = 5 * PCT + 95 * PCT * DAY // RAMP_TIME
    assert restarted == first + (WAD - first) * DAY // RAMP_TIME < 5 * PCT + 95 * PCT * 2 * DAY // RAMP_TIME
    e.set_underlying_params(ETH, 10 * PCT, 5 * PCT, 2 * PCT, PCT, sender=p.admin)  # back down: at once
    assert tuple(e.rates_now(ETH))[1:] == (10 * PCT, 5 * PCT, 2 * PCT, PCT)


def test_a_change_that_raises_one_rate_and_cuts_another_ramps_only_the_raise(book):
    """A change marks the underlying's word only when it raises a rate (a margin check then
    reads when it changed): raising IM while cutting the spread rates ramps the raise and
    applies the cuts at once; a later change that raises nothing ends the ramp at once."""
    p = book.p
    e = p.engine
    e.set_underlying_params(ETH, 20 * PCT, 5 * PCT, PCT, PCT // 2, sender=p.admin)
    boa.env.time_travel(seconds=DAY)
    im = 10 * PCT + 10 * PCT * DAY // RAMP_TIME
    assert tuple(e.rates_now(ETH))[1:] == (im, 5 * PCT, PCT, PCT // 2)
    e.set_underlying_params(ETH, im, 5 * PCT, PCT, PCT // 2, sender=p.admin)  # nothing raised
    boa.env.time_travel(seconds=1)
    assert tuple(e.rates_now(ETH))[1:] == (im, 5 * PCT, PCT, PCT // 2)
    assert tuple(e.underlyings(ETH))[1:] == (im, 5 * PCT, PCT, PCT // 2)


def test_penalty_waits_for_the_rates_in_force(book):
    """The second review's extreme (rates 100%, penalty 10%, share 100%, target 2.0, which took
    $7,368.42 from long4x in one block) cannot land in one block any more: a 10% penalty needs
    every MM rate in force >= 20%, which a raise from 5% reaches after 15/95 x 7 days."""
    b, p = book, book.p
    e = p.engine
    for u in (ETH, BTC):
        e.set_underlying_params(u, WAD, WAD, WAD, WAD, sender=p.admin)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_liquidation_params(bounds.MAX_PENALTY, WAD, bounds.MAX_TARGET, sender=p.admin)
    wait = -(-15 * PCT * RAMP_TIME // (95 * PCT))
    with boa.env.anchor():
        boa.env.time_travel(seconds=wait - 1)
        fresh_prices(b)
        with boa.reverts("engine: mm_rate below 2x penalty"):
            e.set_liquidation_params(bounds.MAX_PENALTY, WAD, bounds.MAX_TARGET, sender=p.admin)
    boa.env.time_travel(seconds=wait)
    fresh_prices(b)
    e.set_liquidation_params(bounds.MAX_PENALTY, WAD, bounds.MAX_TARGET, sender=p.admin)


# ------------------------------------------------------------------ dust (finding 4)


def test_dust_accounts_make_the_keeper_pay_and_wait(book):
    """Finding 4: with the default $10 minimum position notional (config/local.yaml; the
    contract tests' listing sets none, to exercise 1-wei trades), a pair of
    accounts cannot open a 1-wei (or $9.99) position, nor reduce a position to dust; opening
    $10 and closing it fully both work. The keeper side (no gas on dust, real value first) is
    tests/integration/test_keeper_stall.py."""
    b, p = book, book.p
    default = load_config(ROOT / "config" / "local.yaml").min_position_notional
    assert default == 10 * WAD
    p.engine.set_trade_params(DEVIATION, FUNDING, SMOOTHING, default, sender=p.admin)
    a, c = p.new_user(), p.new_user()
    p.deposit_usd(a, 100)
    p.deposit_usd(c, 100)
    for size in (1, 10 * WAD // 2000 - 1):  # 1 wei, $9.99...
        with boa.reverts("engine: position below minimum notional"):
            p.trade(a, c, "ETH-PERP", size, 2000 * WAD)
    p.trade(a, c, "ETH-PERP", 10 * WAD // 2000, 2000 * WAD)  # exactly $10 at the index
    with boa.reverts("engine: position below minimum notional"):
        p.trade(c, a, "ETH-PERP", 10 * WAD // 2000 - 1, 2000 * WAD)  # leaves 1 wei
    p.trade(c, a, "ETH-PERP", 10 * WAD // 2000, 2000 * WAD)  # flat again
    assert p.engine.positions(a.address, ETH_PERP).size == p.engine.positions(c.address, ETH_PERP).size == 0
    # the bound: at most $1,000, and closing stays possible at any minimum
    with boa.reverts("engine: min_position_notional out of bounds"):
        p.engine.set_trade_params(DEVIATION, FUNDING, SMOOTHING, bounds.MAX_MIN_POSITION_NOTIONAL + 1, sender=p.admin)
    p.engine.set_trade_params(DEVIATION, FUNDING, SMOOTHING, bounds.MAX_MIN_POSITION_NOTIONAL, sender=p.admin)
    p.trade(b.mm, b.long4x, "ETH-PERP", 40 * WAD, 2000 * WAD)  # long4x closes its $80,000 long
    assert p.engine.positions(b.long4x.address, ETH_PERP).size == 0


# ------------------------------------------------------------------ the oracle (findings 1 and 3)

FEED_DELAY = 2 * DAY


def new_feed(usd_answer: int):
    """A fresh 8-decimal mock ETH feed answering `usd_answer`, stamped now."""
    return deploy_unique(deployer("MockAggregator"), 8, "ETH / USD", usd_answer * 10**8)


def test_set_feeds_is_admin_only_and_refuses_a_disagreeing_feed(book):
    """Finding 1 (fixed): the risk admin cannot touch feeds, and the admin cannot propose a
    feed answering $4,000,000 for ETH (the index is $2,000)."""
    p = book.p
    risk = boa.env.generate_address("risk")
    p.oracle.set_risk_admin(risk, sender=p.admin)
    honest = p.feeds["ETH"].address
    with boa.reverts("roles: not admin"):
        p.oracle.set_feeds(ETH, [new_feed(2000).address], [3600], sender=risk)
    with boa.reverts("oracle: feeds disagree with the index"):
        p.oracle.set_feeds(ETH, [new_feed(4_000_000).address], [3600], sender=p.admin)
    # a majority of lying feeds is refused too (the median is what must agree)
    with boa.reverts("oracle: feeds disagree with the index"):
        p.oracle.set_feeds(
            ETH, [honest, new_feed(4_000_000).address, new_feed(4_000_000).address], [3600] * 3, sender=p.admin
        )
    assert [f[0] for f in p.oracle.feeds(ETH)] == [honest]
    assert p.oracle.index_price(ETH) == 2000 * WAD


def test_agreeing_replacement_is_only_proposed_and_activates_after_two_days(book):
    """A replacement within 5% of the index is proposed (FeedsProposed), the old feed keeps
    pricing for FEED_DELAY = 2 days, then anyone activates it; activation checks agreement
    again, so a feed that agreed when proposed and lies later is still refused."""
    p = book.p
    honest = p.feeds["ETH"]
    liar = new_feed(2050)  # 2.5% off: agrees
    p.oracle.set_feeds(ETH, [liar.address], [3600], sender=p.admin)
    (ev,) = events(p.oracle, "FeedsProposed")
    assert ev.price_id == ETH and list(ev.aggregators) == [liar.address]
    t0 = boa.env.evm.patch.timestamp
    assert ev.activates_at == t0 + FEED_DELAY
    assert [f[0] for f in p.oracle.feeds(ETH)] == [honest.address]
    assert p.oracle.index_price(ETH) == 2000 * WAD  # old feed still used
    with boa.reverts("oracle: feeds not yet active"):
        p.oracle.activate_feeds(ETH)
    boa.env.time_travel(seconds=FEED_DELAY - 10)
    honest.set_answer(2000 * 10**8)
    liar.set_answer(2050 * 10**8)
    with boa.reverts("oracle: feeds not yet active"):
        p.oracle.activate_feeds(ETH)
    boa.env.time_travel(seconds=10)
    honest.set_answer(2000 * 10**8)
    with boa.env.anchor():
        liar.set_answer(4_000_000 * 10**8)  # lies after the proposal: refused on activation
        with boa.reverts("oracle: feeds disagree with the index"):
            p.oracle.activate_feeds(ETH, sender=book.liq.address)
    liar.set_answer(2050 * 10**8)
    p.oracle.activate_feeds(ETH, sender=book.liq.address)  # anyone
    assert [f[0] for f in p.oracle.feeds(ETH)] == [liar.address]
    assert p.oracle.index_price(ETH) == 2050 * WAD


def test_circuit_breaker_cannot_freeze_the_index(book):
    """Finding 3 (fixed): min_price = 1e30 (or anything above 20% of the index, a ceiling below
    5x, a max jump under 25%) is refused; the tightest allowed breaker still prices."""
    p = book.p
    for args in ((ETH, 10**30, 0, 0), (ETH, 400 * WAD + 1, 0, 0), (ETH, 0, 10_000 * WAD - 1, 0)):
        with boa.reverts("oracle: breaker too close to the index"):
            p.oracle.set_circuit_breaker(*args, sender=p.admin)
    with boa.reverts("oracle: max_jump out of bounds"):
        p.oracle.set_circuit_breaker(ETH, 0, 0, 25 * PCT - 1, sender=p.admin)
    p.oracle.set_circuit_breaker(ETH, 400 * WAD, 10_000 * WAD, 25 * PCT, sender=p.admin)
    assert p.oracle.index_price(ETH) == 2000 * WAD


def test_heartbeat_tightening_cannot_stop_liquidations(book):
    """The admin's set_feeds with the current aggregators and MIN_HEARTBEAT = 60 s: a shorter
    heartbeat waits FEED_DELAY like a new feed, so two minutes without a new round (a Chainlink
    ETH/USD feed updates hourly or on a 0.5% move) and the liquidation of the under-margined
    account still goes through."""
    p = book.p
    p.oracle.set_feeds(BTC, [p.feeds["BTC"].address], [bounds.MIN_HEARTBEAT], sender=p.admin)
    boa.env.time_travel(seconds=120)
    p.engine.liquidate(book.under.address, sender=book.liq.address)
