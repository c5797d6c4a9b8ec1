"""Governance: the roles module on every contract (two-step admin, risk admin), who may call each
setter, and every on-chain bound on risk parameters."""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, deploy_unique, deployer, events, now

# a target of 1.0 would leave the account at MM, liquidatable again at the next tick
MIN_TARGET = 105 * 10**16

ZERO = "0x0000000000000000000000000000000000000000"
CONTRACTS = ["oracle", "vault", "engine"]


def addr(p) -> str:
    return p.new_user().address


# ------------------------------------------------------------------ roles module, on each contract


@pytest.mark.parametrize("name", CONTRACTS)
def test_initial_roles(protocol, name):
    p = protocol
    c = getattr(p, name)
    assert c.admin() == p.admin
    assert c.risk_admin() == p.admin
    assert c.pending_admin() == ZERO


@pytest.mark.parametrize("name", CONTRACTS)
def test_two_step_admin_transfer(protocol, name):
    p = protocol
    c = getattr(p, name)
    old, new, stranger = p.admin, addr(p), addr(p)
    with boa.env.prank(stranger):
        with boa.reverts("roles: not admin"):
            c.propose_admin(stranger)
    c.propose_admin(new)
    (ev,) = events(c, "AdminProposed")
    assert (ev.admin, ev.proposed) == (old, new)
    assert c.pending_admin() == new
    assert c.admin() == old  # nothing changes until accepted
    for who in (stranger, old):
        with boa.env.prank(who):
            with boa.reverts("roles: not pending admin"):
                c.accept_admin()
    with boa.env.prank(new):
        c.accept_admin()
        (ev,) = events(c, "AdminAccepted")
        assert (ev.previous, ev.admin) == (old, new)
        with boa.reverts("roles: not pending admin"):
            c.accept_admin()  # the proposal is consumed
    assert c.admin() == new
    assert c.pending_admin() == ZERO
    # the old admin lost the role; the risk role is separate and stays where it was
    with boa.reverts("roles: not admin"):
        c.propose_admin(old)
    with boa.reverts("roles: not admin"):
        c.set_risk_admin(old)
    assert c.risk_admin() == old
    with boa.env.prank(new):
        c.set_risk_admin(new)
        c.propose_admin(old)
    assert c.risk_admin() == new and c.pending_admin() == old


@pytest.mark.parametrize("name", CONTRACTS)
def test_propose_zero_cancels(protocol, name):
    p = protocol
    c = getattr(p, name)
    new = addr(p)
    c.propose_admin(new)
    c.propose_admin(ZERO)
    (ev,) = events(c, "AdminProposed")
    assert ev.proposed == ZERO
    with boa.env.prank(new):
        with boa.reverts("roles: not pending admin"):
            c.accept_admin()
    assert c.admin() == p.admin


@pytest.mark.parametrize("name", CONTRACTS)
def test_set_risk_admin(protocol, name):
    p = protocol
    c = getattr(p, name)
    risk = addr(p)
    with boa.env.prank(risk):
        with boa.reverts("roles: not admin"):
            c.set_risk_admin(risk)
    with boa.reverts("roles: zero risk admin"):
        c.set_risk_admin(ZERO)
    c.set_risk_admin(risk)
    (ev,) = events(c, "RiskAdminSet")
    assert (ev.previous, ev.risk_admin) == (p.admin, risk)
    assert c.risk_admin() == risk
    # the risk admin cannot reassign its own role
    with boa.env.prank(risk):
        with boa.reverts("roles: not admin"):
            c.set_risk_admin(addr(p))


def test_constructors_reject_zero_admin_and_log_roles(protocol):
    p = protocol
    with boa.reverts("roles: zero admin"):
        deploy_unique(deployer("OracleRouter"), ZERO)
    with boa.reverts("roles: zero admin"):
        deploy_unique(deployer("CollateralVault"), ZERO, p.usdc.address, p.oracle.address)
    engine_args = (p.vault.address, p.oracle.address, p.engine.LIQUIDATION(), p.engine.DELEVERAGING())
    with boa.reverts("roles: zero admin"):
        deploy_unique(deployer("MarginEngine"), ZERO, *engine_args)
    admin = addr(p)
    engine = deploy_unique(deployer("MarginEngine"), admin, *engine_args)
    logs = engine.get_logs()
    names = [type(x).__name__ for x in logs]
    assert names == ["AdminAccepted", "RiskAdminSet", "LiquidationParamsSet", "TradeParamsSet"]
    assert (logs[0].previous, logs[0].admin) == (ZERO, admin)
    assert (logs[1].previous, logs[1].risk_admin) == (ZERO, admin)
    assert (logs[2].liquidation_penalty, logs[2].liquidator_share, logs[2].liquidation_target) == (
        2 * 10**16,
        5 * 10**17,
        125 * 10**16,
    )
    assert (logs[3].max_price_deviation, logs[3].max_funding_rate, logs[3].funding_smoothing) == (
        5 * 10**16,
        5 * 10**15,
        10**17,
    )
    assert (engine.admin(), engine.risk_admin()) == (admin, admin)


# ------------------------------------------------------------------ who may call what


@pytest.fixture
def split_roles(protocol):
    """Give the risk role of every contract to a separate address."""
    p = protocol
    risk = addr(p)
    for c in (p.oracle, p.vault, p.engine):
        c.set_risk_admin(risk)
    return p, risk


def test_admin_only_setters_refuse_risk_admin(split_roles):
    p, risk = split_roles
    token = deploy_unique(deployer("MockERC20"), "N", "N", 18)
    calls = [
        lambda: p.oracle.add_price_id("SOL"),
        lambda: p.vault.list_asset(token.address, 0, WAD // 2, 1),
        lambda: p.vault.set_engine(risk),
        lambda: p.engine.add_underlying(0, 10**17, 5 * 10**16, 0, 0),
        lambda: p.engine.list_market(0, 0),
    ]
    for who in (risk, addr(p)):
        with boa.env.prank(who):
            for call in calls:
                with boa.reverts("roles: not admin"):
                    call()
    # the admin still can (set_engine aside: it is set once)
    p.oracle.add_price_id("SOL")
    p.vault.list_asset(token.address, 0, WAD // 2, 1)
    p.engine.add_underlying(0, 10**17, 5 * 10**16, 0, 0)
    p.engine.list_market(0, 0)


def test_risk_setters_refuse_admin(split_roles):
    p, risk = split_roles
    calls = [
        lambda: p.vault.set_asset_params(0, WAD // 2, 1),
        lambda: p.engine.set_underlying_params(0, 10**17, 5 * 10**16, 0, 0),
        lambda: p.engine.set_liquidation_params(10**16, WAD, MIN_TARGET),
        lambda: p.engine.set_trade_params(10**16, 0, WAD, 0),
    ]
    for who in (p.admin, addr(p)):
        with boa.env.prank(who):
            for call in calls:
                with boa.reverts("roles: not risk admin"):
                    call()
    with boa.env.prank(risk):
        for call in calls:
            call()
    assert p.engine.liquidation_penalty() == 10**16
    assert p.engine.funding_smoothing() == WAD
    assert p.vault.assets(0).haircut == WAD // 2


# ------------------------------------------------------------------ underlyings


def test_add_underlying(protocol):
    p = protocol
    e = p.engine
    with boa.reverts("engine: unknown price id"):
        e.add_underlying(3, 10**17, 5 * 10**16, 0, 0)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.add_underlying(0, 10**17, 4 * 10**16 - 1, 0, 0)
    u = e.add_underlying(1, 2 * 10**17, 10**17, 3 * 10**16, 10**16)
    assert u == 2
    added, params = events(e, "UnderlyingAdded"), events(e, "UnderlyingParamsSet")
    assert (added[0].underlying, added[0].price_id) == (2, 1)
    assert (
        params[0].underlying,
        params[0].im_rate,
        params[0].mm_rate,
        params[0].spread_im_rate,
        params[0].spread_mm_rate,
    ) == (
        2,
        2 * 10**17,
        10**17,
        3 * 10**16,
        10**16,
    )
    x = e.underlyings(2)
    assert (x.price_id, x.im_rate, x.mm_rate, x.spread_im_rate, x.spread_mm_rate) == (
        1,
        2 * 10**17,
        10**17,
        3 * 10**16,
        10**16,
    )
    assert e.underlying_count() == 3
    assert e.add_underlying(0, WAD, WAD, WAD, WAD) == 3
    with boa.reverts("engine: too many underlyings"):
        e.add_underlying(0, 10**17, 5 * 10**16, 0, 0)


BAD_UNDERLYING_PARAMS = [
    ((10**16 - 1, 5 * 10**15, 0, 0), "engine: im_rate out of bounds"),
    ((WAD + 1, 5 * 10**16, 0, 0), "engine: im_rate out of bounds"),
    ((10**17, 5 * 10**15 - 1, 0, 0), "engine: mm_rate out of bounds"),
    ((10**17, 10**17 + 1, 0, 0), "engine: mm_rate out of bounds"),
    ((10**17, 4 * 10**16 - 1, 0, 0), "engine: mm_rate below 2x penalty"),
    ((10**17, 5 * 10**16, 10**17 + 1, 0), "engine: spread_im_rate out of bounds"),
    ((10**17, 5 * 10**16, 10**16, 10**16 + 1), "engine: spread_mm_rate out of bounds"),
    ((10**17, 4 * 10**16, 10**17, 4 * 10**16 + 1), "engine: spread_mm_rate out of bounds"),
]


@pytest.mark.parametrize("args,reason", BAD_UNDERLYING_PARAMS)
def test_underlying_param_bounds(protocol, args, reason):
    e = protocol.engine
    e.set_penalty_ramp(e.liquidation_penalty(), 3600)  # no growth: the bound is 2 x the base penalty
    with boa.reverts(reason):
        e.set_underlying_params(0, *args)
    with boa.reverts(reason):
        e.add_underlying(0, *args)
    assert e.underlyings(0).im_rate == 10**17


def test_underlying_params_valid_extremes(protocol):
    p = protocol
    e = p.engine
    e.set_penalty_ramp(e.liquidation_penalty(), 3600)  # no growth: the bound is 2 x the base penalty
    with boa.reverts("engine: unknown underlying"):
        e.set_underlying_params(2, 10**17, 5 * 10**16, 0, 0)
    e.set_underlying_params(0, WAD, WAD, WAD, WAD)
    (ev,) = events(e, "UnderlyingParamsSet")
    assert (ev.underlying, ev.im_rate, ev.mm_rate, ev.spread_im_rate, ev.spread_mm_rate) == (0, WAD, WAD, WAD, WAD)
    e.set_underlying_params(0, 10**17, 4 * 10**16, 0, 0)  # mm exactly twice the penalty
    assert e.underlyings(0).price_id == 0  # the price id is not a parameter
    # the 1% IM floor with 0.5% MM needs a penalty of at most 0.25%
    e.set_liquidation_params(10**15, 5 * 10**17, 125 * 10**16)
    e.set_penalty_ramp(10**15, 3600)
    e.set_underlying_params(1, 10**16, 5 * 10**15, 0, 0)
    u = e.underlyings(1)
    assert (u.price_id, u.im_rate, u.mm_rate, u.spread_im_rate, u.spread_mm_rate) == (1, 10**16, 5 * 10**15, 0, 0)


# ------------------------------------------------------------------ markets


def test_list_market(protocol):
    p = protocol
    e = p.engine
    with boa.reverts("engine: unknown underlying"):
        e.list_market(2, 0)
    with boa.reverts("engine: expiry in the past"):
        e.list_market(0, now())
    with boa.reverts("engine: expiry in the past"):
        e.list_market(0, 1)
    m = e.list_market(1, now() + 1)
    assert m == 4
    (ev,) = events(e, "MarketListed")
    assert (ev.market, ev.underlying, ev.is_perpetual, ev.expiry) == (4, 1, False, now() + 1)
    x = e.markets(4)
    assert (
        x.underlying,
        x.is_perpetual,
        x.expiry,
        x.settlement_price,
        x.funding_rate,
        x.funding_index,
        x.funding_time,
    ) == (
        1,
        False,
        now() + 1,
        0,
        0,
        0,
        now(),
    )
    assert e.list_market(0, 0) == 5
    assert e.markets(5).is_perpetual
    for i in range(6, 16):
        assert e.list_market(0, 0) == i
    with boa.reverts("engine: too many markets"):
        e.list_market(0, 0)
    assert e.market_count() == 16
    assert len(p.lens.market_states()) == 16


# ------------------------------------------------------------------ liquidation parameters


@pytest.mark.parametrize(
    "args,reason",
    [
        ((10**15 - 1, 5 * 10**17, 125 * 10**16), "engine: penalty out of bounds"),
        ((10**17 + 1, 5 * 10**17, 125 * 10**16), "engine: penalty out of bounds"),
        ((2 * 10**16, WAD + 1, 125 * 10**16), "engine: liquidator_share out of bounds"),
        ((2 * 10**16, 5 * 10**17, MIN_TARGET - 1), "engine: target out of bounds"),
        ((2 * 10**16, 5 * 10**17, 2 * WAD + 1), "engine: target out of bounds"),
        ((25 * 10**15 + 1, 5 * 10**17, 125 * 10**16), "engine: mm_rate below 2x penalty"),
    ],
)
def test_liquidation_param_bounds(protocol, args, reason):
    e = protocol.engine
    with boa.reverts(reason):
        e.set_liquidation_params(*args)
    assert e.liquidation_penalty() == 2 * 10**16


def test_liquidation_params_valid_extremes(protocol):
    e = protocol.engine
    e.set_liquidation_params(25 * 10**15, WAD, 2 * WAD)  # penalty = mm / 2 exactly
    (ev,) = events(e, "LiquidationParamsSet")
    assert (ev.liquidation_penalty, ev.liquidator_share, ev.liquidation_target) == (25 * 10**15, WAD, 2 * WAD)
    e.set_liquidation_params(10**15, 0, MIN_TARGET)
    assert (e.liquidation_penalty(), e.liquidator_share(), e.liquidation_target()) == (10**15, 0, MIN_TARGET)
    # the 10% ceiling needs every underlying's mm >= 20%
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_liquidation_params(10**17, 0, MIN_TARGET)
    e.set_underlying_params(0, 2 * 10**17, 2 * 10**17, 0, 0)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_liquidation_params(10**17, 0, MIN_TARGET)  # BTC still at 5%
    e.set_underlying_params(1, 2 * 10**17, 2 * 10**17, 0, 0)
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_liquidation_params(10**17, 0, MIN_TARGET)  # the raises still phase in
    protocol.phase_in()
    e.set_liquidation_params(10**17, 0, MIN_TARGET)
    assert e.liquidation_penalty() == 10**17
    # and then an underlying cannot drop its mm below twice that penalty
    with boa.reverts("engine: mm_rate below 2x penalty"):
        e.set_underlying_params(0, 2 * 10**17, 2 * 10**17 - 1, 0, 0)


# ------------------------------------------------------------------ trade parameters


@pytest.mark.parametrize(
    "args,reason",
    [
        ((10**15 - 1, 5 * 10**15, 10**17, 0), "engine: max_price_deviation out of bounds"),
        ((2 * 10**17 + 1, 5 * 10**15, 10**17, 0), "engine: max_price_deviation out of bounds"),
        ((5 * 10**16, 10**16 + 1, 10**17, 0), "engine: max_funding_rate out of bounds"),
        ((5 * 10**16, 5 * 10**15, 0, 0), "engine: funding_smoothing out of bounds"),
        ((5 * 10**16, 5 * 10**15, WAD + 1, 0), "engine: funding_smoothing out of bounds"),
        ((5 * 10**16, 5 * 10**15, 10**17, 1000 * WAD + 1), "engine: min_position_notional out of bounds"),
    ],
)
def test_trade_param_bounds(protocol, args, reason):
    e = protocol.engine
    with boa.reverts(reason):
        e.set_trade_params(*args)
    assert e.max_price_deviation() == 5 * 10**16


def test_trade_params_valid_extremes(protocol):
    e = protocol.engine
    e.set_trade_params(10**15, 0, 1, 0)
    (ev,) = events(e, "TradeParamsSet")
    assert (ev.max_price_deviation, ev.max_funding_rate, ev.funding_smoothing, ev.min_position_notional) == (
        10**15,
        0,
        1,
        0,
    )
    e.set_trade_params(2 * 10**17, 10**16, WAD, 1000 * WAD)
    assert (e.max_price_deviation(), e.max_funding_rate(), e.funding_smoothing(), e.min_position_notional()) == (
        2 * 10**17,
        10**16,
        WAD,
        1000 * WAD,
    )


def test_zero_funding_cap_stops_funding(protocol):
    p = protocol
    e = p.engine
    e.set_trade_params(5 * 10**16, 0, WAD, 0)
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 10_000)
    p.trade(a, b, "ETH-PERP", WAD, 2090 * WAD)
    assert e.markets(0).funding_rate == 0


# ------------------------------------------------------------------ vault and oracle parameters


def test_haircut_bound_and_events(protocol):
    p = protocol
    v = p.vault
    with boa.reverts("vault: haircut out of bounds"):
        v.set_asset_params(0, WAD + 1, 1)
    v.set_asset_params(1, WAD, 5)
    (ev,) = events(v, "AssetParamsSet")
    assert (ev.asset_id, ev.haircut, ev.deposit_cap) == (1, WAD, 5)
    token = deploy_unique(deployer("MockERC20"), "N", "N", 18)
    with boa.reverts("vault: haircut out of bounds"):
        v.list_asset(token.address, 0, WAD + 1, 1)


def test_haircut_change_moves_margin(protocol):
    p = protocol
    a = p.new_user()
    p.deposit(a, "WETH", WAD)
    assert p.equity(a.address) == 1700 * WAD
    p.vault.set_asset_params(0, 5 * 10**17, 10**30)
    assert p.equity(a.address) == 1700 * WAD  # a cut phases in (lib/ramp.vy)
    p.phase_in()
    assert p.equity(a.address) == 1000 * WAD
