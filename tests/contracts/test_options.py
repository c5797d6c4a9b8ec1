"""OptionMarket: listing, trading, Black-76 marks, standard option margin, settlement,
liquidation, and the engine's portfolio hook (options + health attestations).

Every requirement is checked against a hand calculation of the contract notice's formulas
(Derive SRM shapes), every mark against the keeper's float Black-Scholes (Hull), and settlement
against the intrinsic value.
"""

from __future__ import annotations

import boa
import pytest

from keeper.chain.attestations import sign_attestation, typed_data_digest
from keeper.chain.orders import OptionOrder, option_order_digest
from keeper.params import bounds
from keeper.risk.black_scholes import YEAR_SECONDS, bs_value
from keeper.risk.scenarios import smile_vol
from tests.boa_protocol import (
    WAD,
    ZERO_ADDRESS,
    OptionsKit,
    ceil_div,
    events,
    funded,
    now,
    option_order_typed_data,
    same_block,
)

ETH = 0  # engine underlying id and oracle price id
DAY = 86400
S0 = 2000 * WAD  # ETH index in config/local.yaml
ATM, SKEW = 8 * WAD // 10, -WAD // 5


@pytest.fixture
def kit(protocol) -> OptionsKit:
    return OptionsKit.deploy(protocol)


@pytest.fixture
def akit(protocol) -> OptionsKit:
    return OptionsKit.deploy(protocol, attestor=True)


def series_state(kit, series: int):
    return kit.market.series_states()[series]


def state_of(kit, user, series: int):
    return next(s for s in kit.market.option_states(user.address) if s.series == series)


def list_with_vol(kit, strike: int, days: int, is_call: bool, atm=ATM, skew=SKEW) -> int:
    expiry = now() + days * DAY
    series = kit.list(ETH, strike, expiry, is_call)
    kit.set_vol(ETH, expiry, atm, skew)
    return series


def refresh(kit, price_usd: float, *expiries: int) -> None:
    """A minute later: publish a new ETH price and fresh vols for `expiries`."""
    boa.env.time_travel(seconds=60)
    kit.p.set_price("ETH", price_usd)
    for expiry in expiries:
        kit.set_vol(ETH, expiry, ATM, SKEW)


# ---------------------------------------------------------------- listing and governance


def test_listing_bounds_and_event(kit):
    p, m = kit.p, kit.market
    t = now()
    with boa.env.prank(p.new_user().address), boa.reverts("roles: not admin"):
        m.list_option(ETH, S0, t + DAY, True)
    with boa.env.prank(p.admin):
        with boa.reverts("options: unknown underlying"):
            m.list_option(2, S0, t + DAY, True)
        with boa.reverts("options: expiry in the past"):
            m.list_option(ETH, S0, t, True)
        with boa.reverts("options: expiry too far"):
            m.list_option(ETH, S0, t + 2 * 365 * DAY + 1, True)
        with boa.reverts("options: strike out of bounds"):
            m.list_option(ETH, S0 // 10 - 1, t + DAY, False)
        with boa.reverts("options: strike out of bounds"):
            m.list_option(ETH, S0 * 10 + 1, t + DAY, True)
        sid = m.list_option(ETH, S0 // 10, t + DAY, False)  # the bounds themselves are allowed
        (ev,) = events(m, "SeriesListed")
        assert (ev.series, ev.underlying, ev.strike, ev.expiry, ev.is_call) == (sid, ETH, S0 // 10, t + DAY, False)
        with boa.reverts("options: series exists"):
            m.list_option(ETH, S0 // 10, t + DAY, False)
        assert m.list_option(ETH, S0 // 10, t + DAY, True) == sid + 1  # the call is another series
    assert tuple(m.series(sid)) == (ETH, ETH, S0 // 10, t + DAY, False, 0)
    assert m.series_count() == 2


def test_risk_params_bounds(kit):
    p, m = kit.p, kit.market
    default = (15 * 10**16, 13 * 10**16, 9 * 10**16, 75 * 10**16, 8 * 10**17, 5 * 10**15, 10**17)
    assert tuple(m.risk_params()) == default
    with boa.env.prank(p.new_user().address), boa.reverts("roles: not risk admin"):
        m.set_risk_params(default)
    bad_margin = [
        (15 * 10**16, 13 * 10**16, 10**16 - 1, 75 * 10**16, 8 * 10**17),  # MM below 1%
        (15 * 10**16, 8 * 10**16, 9 * 10**16, 75 * 10**16, 8 * 10**17),  # floor below MM
        (12 * 10**16, 13 * 10**16, 9 * 10**16, 75 * 10**16, 8 * 10**17),  # rate below floor
        (WAD + 1, 13 * 10**16, 9 * 10**16, 75 * 10**16, 8 * 10**17),  # rate above 100%
        (15 * 10**16, 13 * 10**16, 9 * 10**16, 85 * 10**16, 8 * 10**17),  # IM haircut above MM's
        (15 * 10**16, 13 * 10**16, 9 * 10**16, 75 * 10**16, 9 * 10**17 + 1),  # haircut above 90%
    ]
    with boa.env.prank(p.admin):
        for params in bad_margin:
            with boa.reverts("options: margin params out of bounds"):
                m.set_risk_params(params + default[5:])
        for band in (
            (10**14 - 1, 10**17),
            (5 * 10**16 + 1, 10**17),
            (5 * 10**15, 10**15 - 1),
            (5 * 10**15, WAD // 2 + 1),
        ):
            with boa.reverts("options: price band out of bounds"):
                m.set_risk_params(default[:5] + band)
        new = (20 * 10**16, 10 * 10**16, 10**16, 0, 9 * 10**17, 10**14, WAD // 2)
        m.set_risk_params(new)  # no series listed yet: every value applies at once
        assert tuple(m.risk_params_now()) == new
        (ev,) = events(m, "RiskParamsSet")
        assert ev.short_im_rate == new[0] and ev.long_mm_haircut == new[4] and ev.rel_price_band == new[6]
    assert tuple(m.risk_params()) == new


def test_option_margin_raise_phases_in(kit):
    """A stricter option margin (short IM 15% -> 100%, floor 13% -> 95%, MM 9% -> 90%, long MM
    haircut 80% -> 90%) phases in over REQUIREMENT_RAMP from the rates in force (lib/ramp.vy);
    a lower long IM haircut (75% -> 50%) and the bands apply at once. A short call worth 7 x 9% x $2,000 = $1,260 of MM keeps it
    in the block of the change and carries 9% + 81% / 2 = 49.5% of spot midway."""
    p, m = kit.p, kit.market
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    mark = series_state(kit, series).mark
    buyer, seller = funded(p, 100_000), funded(p, 2_000)
    kit.trade(buyer, seller, series, 7 * WAD, mark)
    mm0 = p.engine.margin_summary(seller.address).maintenance_margin
    assert mm0 == 7 * 9 * 2000 * WAD // 100
    old = tuple(m.risk_params())
    new = (WAD, 95 * 10**16, 90 * 10**16, 50 * 10**16, 9 * 10**17, 10**14, WAD // 2)
    m.set_risk_params(new, sender=p.admin)
    assert tuple(m.risk_params()) == new  # the targets
    assert tuple(m.risk_params_now()) == old[:3] + (new[3], old[4]) + new[5:]
    assert p.engine.margin_summary(seller.address).maintenance_margin == mm0
    assert not p.engine.is_liquidatable(seller.address)
    with boa.env.anchor():
        boa.env.time_travel(seconds=bounds.REQUIREMENT_RAMP // 2)
        now = tuple(m.risk_params_now())
        assert now[2] == 9 * 10**16 + 81 * 10**16 // 2 and now[4] == 8 * 10**17 + 10**17 // 2
    boa.env.time_travel(seconds=bounds.REQUIREMENT_RAMP)
    assert tuple(m.risk_params_now()) == new


OPTION_EXTREMES = {
    # OptionMarket.set_risk_params: every margin rate 100%, long haircuts 90%, widest bands
    "risk_max": lambda k: k.market.set_risk_params(
        (WAD, WAD, WAD, bounds.MAX_LONG_HAIRCUT, bounds.MAX_LONG_HAIRCUT, bounds.MAX_ABS_BAND, bounds.MAX_REL_BAND),
        sender=k.p.admin,
    ),
    "risk_min": lambda k: k.market.set_risk_params(
        (bounds.MIN_SHORT_MM_RATE,) * 3 + (0, 0, bounds.MIN_ABS_BAND, bounds.MIN_REL_BAND), sender=k.p.admin
    ),
    # VolFeed: the shortest heartbeat, the narrowest bounds
    "heartbeat_min": lambda k: k.vol_feed.set_heartbeat(bounds.MIN_VOL_HEARTBEAT, sender=k.p.admin),
    "vol_bounds_narrowest": lambda k: k.vol_feed.set_vol_bounds(
        bounds.HARD_MIN_ATM_VOL, bounds.HARD_MIN_ATM_VOL + 1, 0, sender=k.p.admin
    ),
}


@pytest.mark.parametrize("name", list(OPTION_EXTREMES))
def test_option_setters_at_their_extremes_seize_nothing_in_the_block(kit, name):
    """Finding 2 for the option market and its vol feed: a writer short 7 calls (MM $1,260 on
    $2,000) with vols published 10 minutes earlier stays healthy in the block in which each
    setter goes to an extreme of its bound. The attestor's floor is
    tests/contracts/test_health_attestor.py::test_floor_raise_phases_in."""
    p = kit.p
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    buyer, writer = funded(p, 100_000), funded(p, 2_000)
    kit.trade(buyer, writer, series, 7 * WAD, series_state(kit, series).mark)
    boa.env.time_travel(seconds=600)
    p.set_price("ETH", 2000)
    before = p.engine.margin_summary(writer.address)
    assert before.equity >= before.maintenance_margin
    with same_block():
        OPTION_EXTREMES[name](kit)
        after = p.engine.margin_summary(writer.address)
        assert after.equity >= after.maintenance_margin and not p.engine.is_liquidatable(writer.address)
        assert after.maintenance_margin <= before.maintenance_margin


def test_dust_option_positions_are_refused(kit):
    """Finding 4 for options: the engine's minimum position notional ($10 here) applies to the
    underlying's notional at the index: at ETH $2,000 an option position is flat or at least
    0.005 ETH; closing one is always allowed."""
    p = kit.p
    e = p.engine
    e.set_trade_params(e.max_price_deviation(), e.max_funding_rate(), e.funding_smoothing(), 10 * WAD, sender=p.admin)
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    mark = series_state(kit, series).mark
    a, b = funded(p, 10_000), funded(p, 10_000)
    least = 10 * WAD * WAD // (2000 * WAD)  # 0.005 ETH
    for size in (1, least - 1):
        with boa.reverts("options: position below minimum notional"):
            kit.trade(a, b, series, size, mark)
    kit.trade(a, b, series, least, mark)
    with boa.reverts("options: position below minimum notional"):
        kit.trade(b, a, series, least - 1, mark)  # would leave 1 wei
    kit.trade(b, a, series, least, mark)  # flat again
    assert kit.market.positions(a.address, series)[0] == kit.market.positions(b.address, series)[0] == 0


def test_portfolio_module_wiring_is_admin_only(protocol):
    p = protocol
    kit = OptionsKit.deploy(p, wire=False)
    with boa.env.prank(p.new_user().address):
        with boa.reverts("roles: not admin"):
            p.engine.set_portfolio_modules(kit.market.address, ZERO_ADDRESS)
        with boa.reverts("roles: not admin"):
            p.vault.set_option_market(kit.market.address)
    with boa.reverts("vault: not engine"):
        p.vault.settle_cash(p.admin, 1)  # nobody but the engine and the option market moves cash
    with boa.env.prank(p.admin):
        p.engine.set_portfolio_modules(kit.market.address, ZERO_ADDRESS)
        (ev,) = events(p.engine, "PortfolioModulesSet")
        assert (ev.option_market, ev.health_attestor) == (kit.market.address, ZERO_ADDRESS)
        p.vault.set_option_market(kit.market.address)
        (ev,) = events(p.vault, "OptionMarketSet")
        assert (ev.previous, ev.option_market) == (ZERO_ADDRESS, kit.market.address)
    assert p.engine.option_market() == p.vault.option_market() == kit.market.address


# ---------------------------------------------------------------- marks


def test_mark_equals_keeper_black_scholes(kit):
    """Black-76 with forward = index and the smile vol, against the keeper's float BS (r = q = 0)."""
    cases = []
    for days, atm, skew in ((7, 6 * WAD // 10, -WAD // 4), (30, ATM, SKEW), (180, 11 * WAD // 10, WAD // 10)):
        expiry = now() + days * DAY
        kit.set_vol(ETH, expiry, atm, skew)
        for strike_usd in (1500, 1900, 2000, 2150, 2600):
            for is_call in (True, False):
                cases.append((kit.list(ETH, strike_usd * WAD, expiry, is_call), strike_usd, days, is_call, atm, skew))
    states = kit.market.series_states()
    for series, strike_usd, days, is_call, atm, skew in cases:
        st = states[series]
        assert st.vol_fresh and st.index_price == S0
        sigma = float(smile_vol(atm / WAD, skew / WAD, strike_usd, 2000.0))
        assert st.sigma == pytest.approx(sigma * WAD, rel=1e-15)
        expected = float(bs_value(2000.0, strike_usd, (st.expiry - now()) / YEAR_SECONDS, sigma, is_call))
        assert st.mark / WAD == pytest.approx(expected, rel=1e-8), (strike_usd, days, is_call)


def test_smile_floor_and_stale_vol(kit):
    # a skew that would push the vol below 1% is floored at 1%, as keeper.risk.scenarios.smile_vol
    series = list_with_vol(kit, 2600 * WAD, 30, True, atm=5 * 10**16, skew=-WAD)
    st = series_state(kit, series)
    assert st.sigma == 10**16 == int(float(smile_vol(0.05, -1.0, 2600.0, 2000.0)) * WAD)
    boa.env.time_travel(seconds=1201)  # past the VolFeed heartbeat
    kit.p.set_price("ETH", 2000)
    st = series_state(kit, series)
    assert not st.vol_fresh and st.sigma == 0 and st.mark == 0  # out of the money: intrinsic 0


# ---------------------------------------------------------------- trading


def test_trade_fills_at_maker_price_and_checks_initial_margin(kit):
    p, m = kit.p, kit.market
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    mark = series_state(kit, series).mark
    buyer, seller, poor = funded(p, 100_000), funded(p, 100_000), funded(p, 2_000)
    price = mark + 3 * WAD
    kit.trade(buyer, seller, series, 10 * WAD, price)
    fills = events(p.matching, "OptionOrderFilled")
    assert [(f.account, f.series, f.size, f.price) for f in fills] == [
        (buyer.address, series, 10 * WAD, price),
        (seller.address, series, -10 * WAD, price),
    ]
    assert tuple(m.positions(buyer.address, series)) == (10 * WAD, price)
    assert tuple(m.positions(seller.address, series)) == (-10 * WAD, price)
    assert m.open_interest(series) == 10 * WAD
    # the buyer paid 3 over mark: futures-style, that is an unrealized loss of 30 at once
    assert state_of(kit, buyer, series).value == -30 * WAD
    assert p.equity(buyer.address) == 100_000 * WAD - 30 * WAD
    assert p.equity(seller.address) == 100_000 * WAD + 30 * WAD
    # short call IM: 10 x max(15% x 2000 - 100 OTM, 13% x 2000) = 2,600 > 2,000 of equity
    with boa.reverts("options: below initial margin"):
        kit.trade(buyer, poor, series, 10 * WAD, mark)
    kit.trade(buyer, poor, series, 7 * WAD, mark)  # 7 x 260 = 1,820 <= 2,000
    assert p.engine.margin_summary(poor.address).initial_margin == 1_820 * WAD


def test_trade_rejections(kit, protocol):
    p, m = kit.p, kit.market
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    mark = series_state(kit, series).mark
    a, b = funded(p, 100_000), funded(p, 100_000)
    band = max(5 * 10**15 * 2000, 10**17 * mark // WAD)  # max(0.5% of the index, 10% of mark)
    with boa.reverts("options: price too far from mark"):
        kit.trade(a, b, series, WAD, mark + band + WAD // 10**6)
    kit.trade(a, b, series, WAD, mark + band - WAD // 10**6)
    maker, maker_sig = kit.order(a, series, WAD, mark)
    taker, taker_sig = kit.order(b, series, -WAD, mark)
    with boa.reverts("matching: invalid signature"):
        p.matching.match_option_orders(maker, taker_sig, taker, taker_sig)
    with boa.reverts("matching: sizes do not match"):
        p.matching.match_option_orders(maker, maker_sig, maker, maker_sig)
    p.matching.match_option_orders(maker, maker_sig, taker, taker_sig)
    with boa.reverts("matching: nonce used"):
        p.matching.match_option_orders(maker, maker_sig, taker, taker_sig)
    with boa.env.prank(p.admin):
        m.set_series_caps(series, 5 * WAD, 3 * WAD)
    with boa.reverts("options: position above cap"):
        kit.trade(a, b, series, 2 * WAD, mark)  # a would hold 4 > 3
    boa.env.time_travel(seconds=1201)
    p.set_price("ETH", 2000)
    with boa.reverts("options: stale vol"):
        kit.trade(a, b, series, WAD // 2, mark)


def test_order_digest_is_eip712(kit):
    """The keeper's digest is eth-account's EIP-712 digest, and the market accepts an order
    signed over it (relayed by a third party, so the signature path is taken)."""
    order = (kit.p.admin, 7, -(3 * WAD + 1), 123 * WAD, 42, 1_900_000_000)
    typed = option_order_typed_data(order, boa.env.evm.patch.chain_id, kit.p.matching.address)
    assert option_order_digest(
        OptionOrder(*order), boa.env.evm.patch.chain_id, kit.p.matching.address
    ) == typed_data_digest(typed)
    assert kit.p.matching.option_order_digest(order) == typed_data_digest(typed)
    p = kit.p
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    a, b = funded(p, 100_000), funded(p, 100_000)
    with boa.env.prank(p.new_user().address):
        kit.trade(a, b, series, WAD, series_state(kit, series).mark)
    assert kit.market.positions(a.address, series).size == WAD


def test_trade_needs_the_engine_to_count_options(protocol):
    """Orders reach only the option market the engine counts: with none wired the matching
    contract refuses them, and a market the engine does not count refuses a trade itself."""
    p = protocol
    kit = OptionsKit.deploy(p, wire=False)
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    a, b = funded(p, 100_000), funded(p, 100_000)
    with boa.reverts("matching: no option market"):
        kit.trade(a, b, series, WAD, series_state(kit, series).mark)
    with boa.env.prank(p.matching.address), boa.reverts("options: not wired"):
        kit.market.trade(a.address, b.address, series, WAD, series_state(kit, series).mark)


def test_under_margined_account_may_reduce_but_not_grow(kit):
    p = kit.p
    expiry = now() + 30 * DAY
    series = kit.list(ETH, 2100 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    rich, seller = funded(p, 1_000_000), funded(p, 2_700)
    kit.trade(rich, seller, series, 10 * WAD, series_state(kit, series).mark)
    refresh(kit, 2030, expiry)  # calls gain: the seller falls below IM, not below MM
    s = p.engine.margin_summary(seller.address)
    assert s.maintenance_margin < s.equity < s.initial_margin
    mark = series_state(kit, series).mark
    with boa.reverts("options: below initial margin"):
        kit.trade(rich, seller, series, WAD, mark)
    kit.trade(seller, rich, series, 4 * WAD, mark)  # buying back at mark lowers IM, keeps equity
    assert p.engine.margin_summary(seller.address).initial_margin < s.initial_margin


# ---------------------------------------------------------------- standard margin


def short_charges(strike: int, index: int, is_call: bool, size: int) -> tuple[int, int]:
    """Hand calculation of a short's (IM, MM): per unit max(ceil(15% S) - OTM, ceil(13% S)) and
    ceil(9% S), a put's capped at its strike; then ceil(|size| x unit)."""
    otm = max(strike - index, 0) if is_call else max(index - strike, 0)
    im_unit = max(ceil_div(15 * index, 100) - otm, ceil_div(13 * index, 100))
    mm_unit = ceil_div(9 * index, 100)
    if not is_call:
        im_unit, mm_unit = min(im_unit, strike), min(mm_unit, strike)
    return ceil_div(size * im_unit, WAD), ceil_div(size * mm_unit, WAD)


@pytest.mark.parametrize(
    "strike_usd, is_call, size",
    [
        (2100, True, 10 * WAD),
        (1800, True, 3 * WAD + 7),
        (1900, False, 5 * WAD),
        (2200, False, 2 * WAD),
        (250, False, 4 * WAD),
    ],
)
def test_short_option_margin_by_hand(kit, strike_usd, is_call, size):
    p = kit.p
    series = list_with_vol(kit, strike_usd * WAD, 30, is_call)
    mark = series_state(kit, series).mark
    short, long = funded(p, 100_000), funded(p, 1_000_000)
    kit.trade(long, short, series, size, mark)
    im, mm = short_charges(strike_usd * WAD, S0, is_call, size)
    st = state_of(kit, short, series)
    assert (st.size, st.entry_price, st.mark, st.value) == (-size, mark, mark, 0)
    assert (st.initial_margin, st.maintenance_margin) == (im, mm)
    assert tuple(kit.market.margin_contribution(short.address, p.oracle.index_prices())) == (0, im, mm)
    summary = p.engine.margin_summary(short.address)
    assert (summary.equity, summary.initial_margin, summary.maintenance_margin) == (100_000 * WAD, im, mm)


def test_long_option_counts_its_value_at_a_haircut(kit):
    p = kit.p
    series = list_with_vol(kit, 1950 * WAD, 30, True)
    mark = series_state(kit, series).mark
    buyer, seller = funded(p, 100_000), funded(p, 100_000)
    size = 4 * WAD + 3
    kit.trade(buyer, seller, series, size, mark - WAD)  # bought 1 under mark: +size/1e18 of PnL
    st = state_of(kit, buyer, series)
    value = size  # floor(size x (mark - entry) / 1e18) with mark - entry = 1 USD
    im = ceil_div(size * mark * 25 * 10**16, WAD * WAD)  # 1 - 0.75 of the value
    mm = ceil_div(size * mark * 20 * 10**16, WAD * WAD)  # 1 - 0.8
    assert (st.value, st.initial_margin, st.maintenance_margin) == (value, im, mm)
    summary = p.engine.margin_summary(buyer.address)
    assert (summary.equity, summary.initial_margin, summary.maintenance_margin) == (100_000 * WAD + value, im, mm)


def test_covered_call_is_additive(kit):
    """Long 1 ETH perpetual + short 1 call: standard margin adds both (no netting)."""
    p = kit.p
    series = list_with_vol(kit, 2100 * WAD, 30, True)
    a, b = funded(p, 100_000), funded(p, 1_000_000)
    p.trade(a, b, "ETH-PERP", WAD, S0)
    kit.trade(b, a, series, WAD, series_state(kit, series).mark)
    call_im, call_mm = short_charges(2100 * WAD, S0, True, WAD)
    assert (call_im, call_mm) == (260 * WAD, 180 * WAD)
    summary = p.engine.margin_summary(a.address)
    assert summary.initial_margin == 200 * WAD + call_im  # perpetual: 10% of 2,000
    assert summary.maintenance_margin == 100 * WAD + call_mm  # perpetual: 5%
    # the engine's hook adds exactly the market's contribution
    value, im, mm = kit.market.margin_contribution(a.address, p.oracle.index_prices())
    assert (value, im, mm) == (0, call_im, call_mm)


def test_missing_vol_uses_conservative_marks(kit):
    """Without a fresh vol: long at intrinsic, short at min(intrinsic + ceil(15% S), S); the
    margin check still works (liquidations are never blocked by the vol feed)."""
    p = kit.p
    series = list_with_vol(kit, 1900 * WAD, 30, True)
    entry = series_state(kit, series).mark
    a, b = funded(p, 100_000), funded(p, 100_000)
    kit.trade(a, b, series, 2 * WAD, entry)
    boa.env.time_travel(seconds=1201)
    p.set_price("ETH", 2000)
    long_mark, short_mark = 100 * WAD, 100 * WAD + 300 * WAD
    la, sb = state_of(kit, a, series), state_of(kit, b, series)
    assert (la.mark, sb.mark) == (long_mark, short_mark)
    assert la.value == 2 * (long_mark - entry) and sb.value == -2 * (short_mark - entry)
    assert (la.initial_margin, la.maintenance_margin) == (
        ceil_div(2 * long_mark * 25, 100),
        ceil_div(2 * long_mark * 20, 100),
    )
    assert (sb.initial_margin, sb.maintenance_margin) == short_charges(1900 * WAD, S0, True, 2 * WAD)
    assert p.engine.margin_summary(b.address).equity == 100_000 * WAD + sb.value


# ---------------------------------------------------------------- settlement


def _settle_many_holders(kit, sizes):
    p, m = kit.p, kit.market
    expiry = now() + 7 * DAY
    series = kit.list(ETH, 2000 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    users = [funded(p, 200_000) for _ in range(6)]
    cash0 = [p.vault.cash(u.address) for u in users]
    pairs = [(0, 1), (2, 0), (3, 4), (1, 5), (4, 2), (5, 3), (0, 4)]
    for step, ((i, j), size) in enumerate(zip(pairs, sizes)):
        refresh(kit, 2000 + 5 * step, expiry)
        mark = series_state(kit, series).mark
        kit.trade(users[i], users[j], series, size, mark - mark % 10**12)  # a premium on a 1e-6 USD grid
    with boa.reverts("options: not expired"):
        m.settle_series(series)
    boa.env.time_travel(seconds=expiry - now() - 30)
    p.set_price("ETH", 2300)
    boa.env.time_travel(seconds=60)
    with boa.reverts("options: price before expiry"):
        m.settle_series(series)  # the feed's last round is from before expiry
    # after expiry and before settlement an option is marked at its intrinsic value
    holder = next(u for u in users if m.has_positions(u.address))
    assert state_of(kit, holder, series).mark == 300 * WAD
    p.set_price("ETH", 2345.67)
    index = 234567 * 10**16
    m.settle_series(series)
    (ev,) = events(m, "SeriesSettled")
    assert (ev.settlement_price, ev.settlement_value) == (index, index - 2000 * WAD)
    p.set_price("ETH", 2500)
    m.settle_series(series)  # once: a later call changes nothing
    assert events(m, "SeriesSettled") == [] and m.series(series).settlement_price == index
    # settled, not yet realized: worth its settlement value, nothing left at risk
    st = state_of(kit, holder, series)
    assert (st.mark, st.initial_margin, st.maintenance_margin) == (index - 2000 * WAD, 0, 0)
    assert series_state(kit, series).mark == index - 2000 * WAD
    expected = {}
    for u in users:
        pos = m.positions(u.address, series)
        expected[u.address] = wad_floor(pos.size * (index - 2000 * WAD - pos.entry_price))
    for u in users:
        m.settle_account(u.address)
        changes = events(m, "OptionPositionChanged")
        if expected[u.address] or changes:
            (ch,) = changes
            assert (ch.size, ch.realized_pnl) == (0, expected[u.address])
        m.settle_account(u.address)  # realized once: nothing left to realize
        assert events(m, "OptionPositionChanged") == []
        assert not m.has_positions(u.address)
    assert m.open_interest(series) == 0
    return sum(p.vault.cash(u.address) - c for u, c in zip(users, cash0))


def wad_floor(x: int) -> int:
    return x // WAD


def test_settlement_is_intrinsic_once_and_zero_sum(kit):
    # sizes on a 0.1 unit grid and premiums on a 1e-6 USD grid: every PnL is exact, so what the
    # winners are paid equals exactly what the losers pay
    sizes = [3 * WAD, 2 * WAD, 15 * WAD // 10, WAD, 7 * WAD // 10, 24 * WAD // 10, 5 * WAD // 10]
    assert _settle_many_holders(kit, sizes) == 0


def test_settlement_rounding_never_pays_out_more_than_collected(kit):
    sizes = [
        3 * WAD + 1,
        2 * WAD + 7,
        15 * WAD // 10 + 3,
        WAD - 1,
        7 * WAD // 10 + 11,
        24 * WAD // 10,
        5 * WAD // 10 + 5,
    ]
    total = _settle_many_holders(kit, sizes)
    # at most 1 wei per realization (2 per fill, 1 per settled holder), kept by the protocol
    assert -(2 * len(sizes) + 6) <= total <= 0


# ---------------------------------------------------------------- liquidation


def test_liquidation_of_an_under_margined_short(kit):
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    series = kit.list(ETH, 2100 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, seller, liquidator = funded(p, 1_000_000), funded(p, 3_000), funded(p, 1_000_000)
    kit.trade(buyer, seller, series, 10 * WAD, series_state(kit, series).mark)
    with boa.env.prank(liquidator.address):
        with boa.reverts("options: account not liquidatable"):
            m.liquidate_options(seller.address)
    refresh(kit, 2250, expiry)
    before = p.engine.margin_summary(seller.address)
    assert before.equity < before.maintenance_margin and p.engine.is_liquidatable(seller.address)
    with boa.env.prank(liquidator.address):
        with boa.reverts("engine: nothing to liquidate"):
            p.engine.liquidate(seller.address)  # its only positions are options: not the engine's
    with boa.env.prank(seller.address):
        with boa.reverts("options: self liquidation"):
            m.liquidate_options(seller.address)

    # hand calculation of the fraction: f = ceil((t MM - E) / (t M_o - penalty G_o))
    st = state_of(kit, seller, series)
    mark, target, rate = st.mark, 125 * 10**16, 2 * 10**16
    gross = ceil_div(10 * WAD * mark, WAD)
    denominator = st.maintenance_margin * target // WAD - gross * rate // WAD
    deficit = ceil_div(before.maintenance_margin * target, WAD) - before.equity
    fraction = min(WAD, ceil_div(deficit * WAD, denominator))
    moved = min(ceil_div(10 * WAD * fraction, WAD), 10 * WAD)
    insurance0 = p.vault.insurance_fund()
    with boa.env.prank(liquidator.address):
        m.liquidate_options(seller.address)
    (ev,) = events(m, "OptionsLiquidation")
    value_moved = ceil_div(moved * mark, WAD)
    penalty = ceil_div(value_moved * rate, WAD)
    assert (ev.value_moved, ev.penalty, ev.health_before) == (value_moved, penalty, before.health_factor)
    assert m.positions(seller.address, series).size == -(10 * WAD - moved)
    assert tuple(m.positions(liquidator.address, series)) == (-moved, mark)
    assert p.vault.insurance_fund() - insurance0 == penalty - penalty // 2
    after = p.engine.margin_summary(seller.address)
    assert after.health_factor == ev.health_after >= 125 * 10**16 > before.health_factor
    assert 0 < moved < 10 * WAD  # partial


def test_liquidation_settles_each_accounts_realized_pnl_once_and_exactly(kit):
    """A liquidation moving several series realizes PnL at every fill (OptionPositionChanged
    states it) and moves each account's sum into cash in one CashSettled: the account's cash
    changes by exactly its realized PnL less the penalty, the liquidator's (which already held
    two of the series, so realizes too) by its realized PnL plus its share."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    series = [kit.list(ETH, k * WAD, expiry, is_call) for k in (1900, 2100) for is_call in (True, False)]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, seller, liquidator = funded(p, 1_000_000), funded(p, 4_000), funded(p, 1_000_000)
    for s in series:
        kit.trade(buyer, seller, s, 3 * WAD, series_state(kit, s).mark)
    for s in series[:2]:
        kit.trade(buyer, liquidator, s, WAD, series_state(kit, s).mark)
    refresh(kit, 2600, expiry)
    assert p.engine.is_liquidatable(seller.address)
    cash0 = {u.address: p.vault.cash(u.address) for u in (seller, liquidator)}
    with boa.env.prank(liquidator.address):
        m.liquidate_options(seller.address)
    (ev,) = events(m, "OptionsLiquidation")
    changes = events(m, "OptionPositionChanged")
    realized = {u.address: sum(c.realized_pnl for c in changes if c.account == u.address) for u in (seller, liquidator)}
    assert len([c for c in changes if c.account == seller.address]) == len(series)
    assert realized[seller.address] != 0 and realized[liquidator.address] != 0
    share = ev.penalty // 2
    # one settlement of realized PnL per account, then the penalty's (charge_penalty)
    assert [(str(c.account), c.delta) for c in events(p.vault, "CashSettled")] == [
        (seller.address, realized[seller.address]),
        (liquidator.address, realized[liquidator.address]),
        (seller.address, -ev.penalty),
        (liquidator.address, share),
    ]
    assert p.vault.cash(seller.address) - cash0[seller.address] == realized[seller.address] - ev.penalty
    assert p.vault.cash(liquidator.address) - cash0[liquidator.address] == realized[liquidator.address] + share


def test_liquidation_works_without_a_fresh_vol(kit):
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    series = kit.list(ETH, 2100 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, seller, liquidator = funded(p, 1_000_000), funded(p, 3_000), funded(p, 1_000_000)
    kit.trade(buyer, seller, series, 10 * WAD, series_state(kit, series).mark)
    boa.env.time_travel(seconds=1201)  # the vol feed goes quiet
    p.set_price("ETH", 2150)
    st = state_of(kit, seller, series)
    assert st.mark == min(50 * WAD + ceil_div(15 * 2150 * WAD, 100), 2150 * WAD)  # intrinsic + short charge
    assert p.engine.is_liquidatable(seller.address)
    with boa.env.prank(liquidator.address):
        m.liquidate_options(seller.address)
    (moved,) = [x for x in events(m, "OptionLiquidated") if x.account == seller.address]
    assert moved.price == st.mark and moved.size < 0
    assert not p.engine.is_liquidatable(seller.address)


def test_nothing_to_liquidate_without_live_options(kit):
    p, m = kit.p, kit.market
    a, b, liquidator = funded(p, 1_000), funded(p, 1_000_000), funded(p, 1_000_000)
    p.trade(a, b, "ETH-PERP", 4 * WAD, S0)
    p.set_price("ETH", 1800)  # equity 200 < MM 360: liquidatable, but through the engine
    assert p.engine.is_liquidatable(a.address)
    with boa.env.prank(liquidator.address), boa.reverts("options: nothing to liquidate"):
        m.liquidate_options(a.address)


def test_account_with_options_is_not_written_off_before_they_are_liquidated(kit):
    """Negative cash while short options are open: the engine's waterfall waits (the options are
    part of the equity); once liquidate_options has moved them, the deficit is covered."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    series = kit.list(ETH, 2100 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    rich, seller, liquidator = funded(p, 10_000_000), funded(p, 3_000), funded(p, 10_000_000)
    p.usdc.mint(p.admin, 100_000 * 10**6)
    with boa.env.prank(p.admin):
        p.usdc.approve(p.vault.address, 100_000 * 10**6)
        p.vault.fund_insurance(100_000 * 10**6)
    kit.trade(rich, seller, series, 10 * WAD, series_state(kit, series).mark)
    refresh(kit, 2900, expiry)
    kit.trade(seller, rich, series, 5 * WAD, series_state(kit, series).mark)  # buy back half at a loss
    assert p.vault.cash(seller.address) < 0 and p.equity(seller.address) < 0
    with boa.env.prank(liquidator.address):
        with boa.reverts("engine: nothing to liquidate"):
            p.engine.liquidate(seller.address)
        m.liquidate_options(seller.address)
        assert not m.has_positions(seller.address)  # too deep for a partial move: all of it
        p.engine.liquidate(seller.address)
    (cover,) = events(p.engine, "DeficitCovered")
    assert cover.account == seller.address and cover.from_insurance > 0
    assert p.vault.cash(seller.address) == 0


# ---------------------------------------------------------------- the engine hook and attestations


def test_modules_unset_change_nothing(protocol):
    p = protocol
    a, b = funded(p, 100_000), funded(p, 100_000)
    p.trade(a, b, "ETH-PERP", 3 * WAD, S0)

    def check():
        p.engine.margin_summary(a.address)  # titanoboa keeps slots warm across calls: compare warm gas
        summary = tuple(p.engine.margin_summary(a.address))
        return summary, p.engine._computation.get_gas_used()

    baseline = check()
    kit = OptionsKit.deploy(p, wire=False)
    assert check() == baseline  # deployed but not wired: same numbers, same gas
    kit.wire()
    assert check()[0] == baseline[0]  # wired, no options held: same numbers
    with boa.env.prank(p.admin):
        p.engine.set_portfolio_modules(ZERO_ADDRESS, ZERO_ADDRESS)
    assert check() == baseline


def attest(kit, user, im: int, mm: int) -> None:
    boa.env.time_travel(seconds=1)  # each attestation must be newer than the stored one
    att = kit.attestation(user.address, im, mm)
    kit.attestor.submit_attestation(
        *sign_attestation(att, [kit.signer.key], boa.env.evm.patch.chain_id, kit.attestor.address)
    )
    assert kit.attestor.attestation_holds(user.address)


def attested_account(akit):
    """Long 1 ETH perpetual + short 10 calls (standard IM 200 + 2,600, MM 100 + 1,800), with an
    attestation of IM 1,400 / MM 1,390 and equity 1,400 after a withdrawal."""
    p = akit.p
    expiry = now() + 30 * DAY
    series = akit.list(ETH, 2100 * WAD, expiry, True)
    akit.set_vol(ETH, expiry, ATM, SKEW)
    a, rich = funded(p, 3_000), funded(p, 10_000_000)
    p.trade(a, rich, "ETH-PERP", WAD, S0)
    akit.trade(rich, a, series, 10 * WAD, series_state(akit, series).mark)
    return a, rich, series, expiry


def test_attestation_lowers_margin_to_the_floor_and_a_withdrawal_voids_it(akit):
    p = akit.p
    a, rich, series, expiry = attested_account(akit)
    standard = p.engine.margin_summary(a.address)
    assert (standard.initial_margin, standard.maintenance_margin) == (2_800 * WAD, 1_900 * WAD)
    version = p.engine.position_version(a.address)
    # the engine's fills (counted while an attestor is wired) + the vault's and the market's counters
    assert version > p.vault.withdrawal_count(a.address) + akit.market.position_version(a.address) > 0
    attest(akit, a, 500 * WAD, 300 * WAD)
    # max(attested, ceil(floor 0.5 x standard))
    s = p.engine.margin_summary(a.address)
    assert (s.initial_margin, s.maintenance_margin) == (1_400 * WAD, 950 * WAD)
    attest(akit, a, 2_000 * WAD, 1_000 * WAD)
    s = p.engine.margin_summary(a.address)
    assert (s.initial_margin, s.maintenance_margin) == (2_000 * WAD, 1_000 * WAD)
    attest(akit, a, 1_400 * WAD, 1_000 * WAD)
    # the withdrawal is judged on the attested IM (1,400), then voids the attestation
    room = (p.engine.margin_summary(a.address).equity - 1_400 * WAD) // 10**12  # USDC units
    assert room > 1_599 * 10**6  # about 1,600 (the short calls' time decay adds a little)
    with boa.env.prank(a.address):
        with boa.reverts("vault: below initial margin"):
            p.vault.withdraw(p.usdc.address, room + 1)
        p.vault.withdraw(p.usdc.address, room)
    assert p.engine.position_version(a.address) == version + 1
    assert not akit.attestor.attestation_holds(a.address)
    s = p.engine.margin_summary(a.address)
    assert 1_400 * WAD <= s.equity < 1_400 * WAD + 10**12
    assert (s.initial_margin, s.maintenance_margin) == (2_800 * WAD, 1_900 * WAD)
    assert p.engine.is_liquidatable(a.address)  # standard margin again
    attest(akit, a, 1_400 * WAD, 1_000 * WAD)
    assert not p.engine.is_liquidatable(a.address)


def test_a_trade_voids_the_attestation(akit):
    p = akit.p
    a, rich, series, expiry = attested_account(akit)
    attest(akit, a, 1_400 * WAD, 1_000 * WAD)
    akit.trade(a, rich, series, WAD, series_state(akit, series).mark)  # buys back one call
    assert not akit.attestor.attestation_holds(a.address)
    im, _ = short_charges(2100 * WAD, S0, True, 9 * WAD)
    assert p.engine.margin_summary(a.address).initial_margin == 200 * WAD + im
    attest(akit, a, 1_400 * WAD, 1_000 * WAD)
    p.trade(rich, a, "ETH-PERP", WAD // 2, S0)  # an engine trade voids it too
    assert not akit.attestor.attestation_holds(a.address)


@pytest.mark.parametrize("via", ["options", "engine"])
def test_liquidation_under_an_attestation_voids_it(akit, via):
    p = akit.p
    a, rich, series, expiry = attested_account(akit)
    attest(akit, a, 1_400 * WAD, 1_000 * WAD)
    with boa.env.prank(a.address):
        p.vault.withdraw(p.usdc.address, 1_600 * 10**6)  # equity 1,400
    attest(akit, a, 1_400 * WAD, 1_390 * WAD)
    liquidator = funded(p, 10_000_000)
    with boa.env.prank(liquidator.address):
        with boa.reverts("options: account not liquidatable"):
            akit.market.liquidate_options(a.address)  # healthy under the attestation
    refresh(akit, 2010, expiry)  # +0.5%, inside the attestation's 1% price band
    assert akit.attestor.attestation_holds(a.address)
    s = p.engine.margin_summary(a.address)
    assert s.equity < s.maintenance_margin == 1_390 * WAD
    with boa.env.prank(liquidator.address):
        if via == "options":
            akit.market.liquidate_options(a.address)
        else:
            p.engine.liquidate(a.address)
    assert not akit.attestor.attestation_holds(a.address)


# ---------------------------------------------------------------- coalition review findings


def test_finding1_underwater_short_cannot_buy_back_from_a_colluder_above_mark(kit):
    """Finding 1 (options): a short already under water buying back its calls from a colluder at
    mark + 10% moved 6,400 to the colluder. Below maintenance margin a reducing trade must not
    lower equity; at the mark (or better) it may still de-risk."""
    p = kit.p
    expiry = now() + 30 * DAY
    series = kit.list(ETH, 2100 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, seller = funded(p, 1_000_000), funded(p, 3_000)
    kit.trade(buyer, seller, series, 10 * WAD, series_state(kit, series).mark)
    refresh(kit, 2600, expiry)
    before = p.engine.margin_summary(seller.address)
    assert before.equity < before.maintenance_margin
    mark = series_state(kit, series).mark
    with boa.reverts("options: below initial margin"):
        kit.trade(seller, buyer, series, 10 * WAD, mark * 110 // 100)  # seller buys back at +10%
    with boa.reverts("options: below initial margin"):
        kit.trade(seller, buyer, series, 1, mark + mark // 100)  # 1 wei at +1%: still refused
    kit.trade(seller, buyer, series, 5 * WAD, mark)  # at the mark: allowed, equity kept
    assert p.engine.margin_summary(seller.address).equity >= before.equity


def test_finding5_liquidator_with_full_book_still_liquidates_what_fits(kit):
    """Finding 5: a partial option liquidation moved a slice of every series, so a victim spread
    over 32 series made it revert "options: too many positions" for any liquidator holding
    another series. Series the liquidator has no room for are now left for another liquidator."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    n = 32
    strikes = [(1500 + 25 * i) * WAD for i in range(n + 1)]
    ids = [kit.list(ETH, k, expiry, True) for k in strikes]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    buyer, victim, liquidator = funded(p, 10_000_000), funded(p, 25_000), funded(p, 10_000_000)
    for sid in ids[:n]:
        kit.trade(buyer, victim, sid, WAD, series_state(kit, sid).mark)
    # the liquidator holds 31 other positions of its own: one free slot
    helper = funded(p, 10_000_000)
    kit.trade(liquidator, helper, ids[n], WAD, series_state(kit, ids[n]).mark)
    for sid in ids[1 : n - 1]:
        kit.trade(liquidator, helper, sid, WAD, series_state(kit, sid).mark)
    assert len([s for s in m.option_states(liquidator.address)]) == n - 1
    price = 2000
    while not p.engine.is_liquidatable(victim.address):
        price += 100
        refresh(kit, price, expiry)
    assert price < 4000
    with boa.env.prank(liquidator.address):
        m.liquidate_options(victim.address)
    moved = events(m, "OptionLiquidated")
    assert moved, "nothing moved"
    assert len(m.option_states(liquidator.address)) <= n  # never past its book


def test_attestation_cannot_be_stored_while_the_engine_does_not_use_its_attestor(protocol):
    """Position versions count only while an attestor is wired (a counter that costs nothing
    without attestations). An attestation stored in that window would bind to a version that no
    longer moves: the account could grow its position and keep the lower requirement once the
    attestor is wired. So the attestor refuses to store one unless the engine uses it."""
    kit = OptionsKit.deploy(protocol, attestor=True, wire=False)
    p = kit.p
    a, rich = funded(p, 3_000), funded(p, 10_000_000)
    with boa.env.prank(p.admin):
        p.vault.set_option_market(kit.market.address)
        p.engine.set_portfolio_modules(kit.market.address, ZERO_ADDRESS)  # options on, attestor off
    p.trade(a, rich, "ETH-PERP", WAD, S0)
    boa.env.time_travel(seconds=1)
    att = kit.attestation(a.address, 10 * WAD, 5 * WAD)
    with boa.reverts("attestor: not wired"):
        kit.attestor.submit_attestation(
            *sign_attestation(att, [kit.signer.key], boa.env.evm.patch.chain_id, kit.attestor.address)
        )
    # the same account trades on unseen (the engine's counter is still); once wired, the old
    # signed attestation cannot be replayed either: it was never stored
    p.trade(a, rich, "ETH-PERP", WAD, S0)
    kit.wire()
    assert not kit.attestor.attestation_holds(a.address)
    assert p.engine.margin_summary(a.address).initial_margin > 10 * WAD
