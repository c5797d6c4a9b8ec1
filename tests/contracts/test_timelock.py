"""Timelock: queue / execute / cancel paths, delay bounds, self-governed settings, governance
transfer, revert bubbling, and the hand-over of the protocol's roles (install_timelock)."""

from __future__ import annotations

import boa
import pytest
from eth_abi import encode
from eth_utils import keccak

from keeper.chain.governance import accept_admin_roles, install_timelock
from keeper.params import bounds
from keeper.params.plan import calldata
from keeper.params.timelock import operation_id
from tests.boa_protocol import WAD, BoaBackend, deployer, events, now

HOUR, DAY = 3600, 86400
MIN_DELAY, MAX_DELAY, GRACE = HOUR, 30 * DAY, 14 * DAY
DELAY = 2 * DAY
ZERO = "0x" + "00" * 20


class SenderBackend(BoaBackend):
    """The test backend, sending from `sender` (install_timelock compares it with governance)."""

    def __init__(self, sender: str):
        self.sender = sender

    def deploy(self, name: str, *args):
        with boa.env.prank(self.sender):
            return deployer(name).deploy(*args)

    def transact(self, contract, fn: str, *args):
        with boa.env.prank(self.sender):
            return getattr(contract, fn)(*args)

    def at(self, name: str, address: str):
        return deployer(name).at(address)


@pytest.fixture
def governance():
    return boa.env.generate_address("governance")


@pytest.fixture
def timelock(protocol, governance):
    """The protocol with both roles handed to a timelock (2-day delay) whose governance is not
    the deployer; governance accepted the admin roles."""
    address = install_timelock(SenderBackend(protocol.admin), protocol.deployment, governance, DELAY)
    accept_admin_roles(SenderBackend(governance), protocol.deployment)
    return deployer("Timelock").at(address)


def engine_call(p, fn: str, *args) -> bytes:
    return calldata("engine", fn, args)


def queue(tl, governance, target, data: bytes, eta: int | None = None) -> tuple[bytes, int]:
    eta = now() + tl.delay() if eta is None else eta
    with boa.env.prank(governance):
        op = tl.queue(target, data, eta)
    return op, eta


def run(tl, governance, fn: str, target, data: bytes, eta: int):
    with boa.env.prank(governance):
        return getattr(tl, fn)(target, data, eta)


ETH_RATES = (12 * 10**16, 6 * 10**16, 2 * 10**16, 10**16)  # IM 12%, MM 6%, spread 2% / 1%


# ------------------------------------------------------------------ hand-over


def test_install_hands_every_role_to_the_timelock_and_the_deployer_keeps_none(protocol, timelock, governance):
    p = protocol
    assert p.deployment.timelock == timelock.address
    assert (timelock.governance(), timelock.delay()) == (governance, DELAY)
    for c in (p.oracle, p.vault, p.engine):
        assert (c.admin(), c.risk_admin(), c.pending_admin()) == (timelock.address, timelock.address, ZERO)
    with boa.env.prank(p.admin):  # the deployer EOA: every role function and the timelock refuse it
        for c in (p.oracle, p.vault, p.engine):
            with boa.reverts("roles: not admin"):
                c.propose_admin(p.admin)
            with boa.reverts("roles: not admin"):
                c.set_risk_admin(p.admin)
        with boa.reverts("roles: not risk admin"):
            p.engine.set_underlying_params(0, *ETH_RATES)
        with boa.reverts("roles: not risk admin"):
            p.vault.set_asset_params(0, WAD, 0)
        with boa.reverts("roles: not risk admin"):
            p.oracle.set_circuit_breaker(0, 0, 0, 0)
        with boa.reverts("roles: not admin"):
            p.engine.list_market(0, 0)
        with boa.reverts("timelock: not governance"):
            timelock.queue(p.engine.address, engine_call(p, "set_underlying_params", 0, *ETH_RATES), now() + DELAY)
    with boa.env.prank(governance):  # governance has no direct power either
        with boa.reverts("roles: not risk admin"):
            p.engine.set_underlying_params(0, *ETH_RATES)


def test_install_leaves_the_admin_proposal_pending_when_the_sender_is_not_governance(protocol, governance):
    p = protocol
    address = install_timelock(SenderBackend(p.admin), p.deployment, governance, DELAY)
    tl = deployer("Timelock").at(address)
    for c in (p.oracle, p.vault, p.engine):
        assert (c.admin(), c.pending_admin(), c.risk_admin()) == (p.admin, address, address)
    stranger = boa.env.generate_address()
    with boa.env.prank(stranger):
        with boa.reverts("timelock: not governance"):
            tl.accept_admin_of(p.engine.address)
    with boa.env.prank(governance):
        tl.accept_admin_of(p.engine.address)
        with boa.reverts("roles: not pending admin"):  # consumed
            tl.accept_admin_of(p.engine.address)
    assert p.engine.admin() == address


def test_install_by_governance_itself_completes_at_once(protocol):
    p = protocol
    address = install_timelock(SenderBackend(p.admin), p.deployment, p.admin, HOUR)
    for c in (p.oracle, p.vault, p.engine):
        assert (c.admin(), c.pending_admin(), c.risk_admin()) == (address, ZERO, address)


# ------------------------------------------------------------------ queue / execute / cancel


def test_queue_wait_execute_changes_the_parameter(protocol, timelock, governance):
    p = protocol
    data = engine_call(p, "set_underlying_params", 0, *ETH_RATES)
    eta = now() + DELAY
    op, _ = queue(timelock, governance, p.engine.address, data, eta)
    (ev,) = events(timelock, "Queued")
    assert (ev.id, ev.target, ev.data, ev.eta) == (op, p.engine.address, data, eta)
    # independent reference: keccak256 of the ABI encoding (address, bytes, uint256)
    assert op == keccak(encode(["address", "bytes", "uint256"], [p.engine.address, data, eta]))
    assert "0x" + op.hex() == operation_id(p.engine.address, data, eta)
    assert timelock.operation_id(p.engine.address, data, eta) == op
    assert timelock.queued(op) and not timelock.executed(op)
    boa.env.time_travel(seconds=DELAY - 1)
    with boa.reverts("timelock: not ready"):
        run(timelock, governance, "execute", p.engine.address, data, eta)
    boa.env.time_travel(seconds=1)  # exactly at eta
    run(timelock, governance, "execute", p.engine.address, data, eta)
    (ev,) = events(timelock, "Executed")
    assert (ev.id, ev.eta) == (op, eta)
    assert tuple(p.engine.underlyings(0))[1:] == ETH_RATES
    assert not timelock.queued(op) and timelock.executed(op)
    with boa.reverts("timelock: not queued"):  # never twice
        run(timelock, governance, "execute", p.engine.address, data, eta)
    with boa.reverts("timelock: eta before delay"):
        queue(timelock, governance, p.engine.address, data, eta)


def test_eta_must_be_at_least_the_delay_away(protocol, timelock, governance):
    data = engine_call(protocol, "set_underlying_params", 0, *ETH_RATES)
    with boa.reverts("timelock: eta before delay"):
        queue(timelock, governance, protocol.engine.address, data, now() + DELAY - 1)
    op, eta = queue(timelock, governance, protocol.engine.address, data, now() + DELAY)
    with boa.reverts("timelock: already queued"):
        queue(timelock, governance, protocol.engine.address, data, eta)


def test_stale_after_the_grace_period(protocol, timelock, governance):
    p = protocol
    data = engine_call(p, "set_underlying_params", 0, *ETH_RATES)
    _, eta = queue(timelock, governance, p.engine.address, data)
    boa.env.time_travel(seconds=DELAY + GRACE + 1)
    with boa.reverts("timelock: stale"):
        run(timelock, governance, "execute", p.engine.address, data, eta)
    # the last second of the grace period still executes
    _, eta2 = queue(timelock, governance, p.engine.address, data)
    boa.env.time_travel(seconds=DELAY + GRACE)
    run(timelock, governance, "execute", p.engine.address, data, eta2)
    assert tuple(p.engine.underlyings(0))[1:] == ETH_RATES


def test_cancel_removes_the_operation(protocol, timelock, governance):
    p = protocol
    data = engine_call(p, "set_underlying_params", 0, *ETH_RATES)
    op, eta = queue(timelock, governance, p.engine.address, data)
    run(timelock, governance, "cancel", p.engine.address, data, eta)
    (ev,) = events(timelock, "Cancelled")
    assert (ev.id, ev.target, ev.data, ev.eta) == (op, p.engine.address, data, eta)
    assert not timelock.queued(op) and not timelock.executed(op)
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("timelock: not queued"):
        run(timelock, governance, "execute", p.engine.address, data, eta)
    with boa.reverts("timelock: not queued"):
        run(timelock, governance, "cancel", p.engine.address, data, eta)
    assert tuple(p.engine.underlyings(0))[1] == 10**17  # unchanged


@pytest.mark.parametrize("fn", ["queue", "execute", "cancel"])
def test_only_governance_queues_executes_cancels(protocol, timelock, governance, fn):
    p = protocol
    data = engine_call(p, "set_underlying_params", 0, *ETH_RATES)
    _, eta = queue(timelock, governance, p.engine.address, data)
    boa.env.time_travel(seconds=DELAY)
    for who in (boa.env.generate_address(), p.admin):
        with boa.env.prank(who):
            with boa.reverts("timelock: not governance"):
                getattr(timelock, fn)(p.engine.address, data, eta + (DELAY if fn == "queue" else 0))


def test_execute_refuses_a_target_without_code(protocol, timelock, governance):
    eoa = boa.env.generate_address()
    _, eta = queue(timelock, governance, eoa, b"\x12\x34\x56\x78")
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("timelock: target not a contract"):
        run(timelock, governance, "execute", eoa, b"\x12\x34\x56\x78", eta)


# ------------------------------------------------------------------ bounds, revert reasons


# (setter, args, revert string): every one is outside the bounds the setter enforces
OUT_OF_BOUNDS = [
    ("engine", "set_underlying_params", (0, 2 * WAD, 5 * 10**16, 0, 0), "engine: im_rate out of bounds"),
    ("engine", "set_underlying_params", (0, 10**17, 2 * 10**15, 0, 0), "engine: mm_rate out of bounds"),
    ("engine", "set_underlying_params", (0, 10**17, 4 * 10**16, 0, 0), "engine: mm_rate below 2x penalty"),
    ("engine", "set_underlying_params", (0, 10**17, 5 * 10**16, 2 * 10**17, 0), "engine: spread_im_rate out of bounds"),
    ("engine", "set_liquidation_params", (2 * 10**17, WAD // 2, 125 * 10**16), "engine: penalty out of bounds"),
    ("engine", "set_liquidation_params", (2 * 10**16, WAD // 2, WAD), "engine: target out of bounds"),
    ("engine", "set_liquidation_params", (3 * 10**16, WAD // 2, 125 * 10**16), "engine: mm_rate below 2x penalty"),
    ("engine", "set_penalty_ramp", (10**16, 3600), "engine: max penalty out of bounds"),
    ("engine", "set_penalty_ramp", (25 * 10**15, 10), "engine: ramp time out of bounds"),
    ("engine", "set_position_caps", (0, 10 * WAD, 20 * WAD), "engine: position cap above OI cap"),
    ("engine", "set_trade_params", (3 * 10**17, 5 * 10**15, 10**17, 0), "engine: max_price_deviation out of bounds"),
    ("engine", "set_trade_params", (5 * 10**16, 2 * 10**16, 10**17, 0), "engine: max_funding_rate out of bounds"),
    ("engine", "set_trade_params", (5 * 10**16, 5 * 10**15, 0, 0), "engine: funding_smoothing out of bounds"),
    (
        "engine",
        "set_trade_params",
        (5 * 10**16, 5 * 10**15, 10**17, 1000 * 10**18 + 1),
        "engine: min_position_notional out of bounds",
    ),
    ("vault", "set_asset_params", (0, WAD + 1, 0), "vault: haircut out of bounds"),
    ("oracle", "set_circuit_breaker", (0, 10 * WAD, 5 * WAD, 0), "oracle: empty price band"),
    ("oracle", "set_circuit_breaker", (0, 0, 0, WAD + 1), "oracle: max_jump out of bounds"),
]


def _python_check(function: str, args: tuple, p) -> list[str]:
    """The keeper's mirror of the same bound, with the deployed state (penalty 2%, max 2.5%,
    every mm_rate 5%)."""
    mm = {"ETH": 5 * 10**16, "BTC": 5 * 10**16}
    a = (
        args[1:]
        if function in ("set_underlying_params", "set_position_caps", "set_asset_params", "set_circuit_breaker")
        else args
    )
    named = {
        "set_underlying_params": lambda: bounds.check_underlying(dict(zip(("im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate"), a)), 2 * 10**16, 25 * 10**15),
        "set_liquidation_params": lambda: bounds.check_liquidation(dict(zip(("penalty", "liquidator_share", "target"), a)), 25 * 10**15, mm),
        "set_penalty_ramp": lambda: bounds.check_penalty_ramp(dict(zip(("max_penalty", "penalty_ramp_seconds"), a)), 2 * 10**16, mm),
        "set_position_caps": lambda: bounds.check_position_caps(dict(zip(("max_open_interest", "max_position"), a))),
        "set_trade_params": lambda: bounds.check_trading(dict(zip(("max_price_deviation", "max_funding_rate", "funding_smoothing", "min_position_notional"), a))),
        "set_asset_params": lambda: bounds.check_asset(dict(zip(("haircut", "deposit_cap"), a))),
        "set_circuit_breaker": lambda: bounds.check_circuit_breaker(dict(zip(("min_price", "max_price", "max_jump"), a))),
    }  # fmt: skip
    return named[function]()


@pytest.mark.parametrize("contract,function,args,reason", OUT_OF_BOUNDS, ids=[r[3] + " " + r[1] for r in OUT_OF_BOUNDS])
def test_setter_bounds_still_hold_through_the_timelock_and_the_keeper_mirrors_them(
    protocol, timelock, governance, contract, function, args, reason
):
    p = protocol
    assert p.engine.liquidation_penalty() == 2 * 10**16 and p.engine.max_liquidation_penalty() == 25 * 10**15
    problems = _python_check(function, args, p)
    assert any(f"({reason})" in x for x in problems), problems
    target = getattr(p, contract).address
    data = calldata(contract, function, args)
    op, eta = queue(timelock, governance, target, data)
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts(reason):  # the target's own revert string, bubbled up unchanged
        run(timelock, governance, "execute", target, data, eta)
    assert timelock.queued(op) and not timelock.executed(op)  # the whole execution reverted


def test_a_valid_change_passes_the_mirror_too(protocol):
    assert (
        bounds.check_underlying(
            dict(zip(("im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate"), ETH_RATES)), 2 * 10**16, 25 * 10**15
        )
        == []
    )


# ------------------------------------------------------------------ delay and governance


def test_delay_bounds_at_deployment(governance):
    factory = deployer("Timelock")
    for bad in (MIN_DELAY - 1, MAX_DELAY + 1, 0):
        with boa.reverts("timelock: delay out of bounds"):
            factory.deploy(governance, bad)
    with boa.reverts("timelock: zero governance"):
        factory.deploy(ZERO, DELAY)
    for ok in (MIN_DELAY, MAX_DELAY):
        assert factory.deploy(governance, ok).delay() == ok
    tl = factory.deploy(governance, DELAY)
    assert (tl.MIN_DELAY(), tl.MAX_DELAY(), tl.GRACE_PERIOD()) == (MIN_DELAY, MAX_DELAY, GRACE)


def test_set_delay_only_through_a_delayed_call(governance):
    tl = deployer("Timelock").deploy(governance, DELAY)
    for who in (governance, boa.env.generate_address()):
        with boa.env.prank(who):
            with boa.reverts("timelock: only through a delayed call"):
                tl.set_delay(HOUR)
    data = tl.set_delay.prepare_calldata(HOUR)
    _, eta = queue(tl, governance, tl.address, data)
    boa.env.time_travel(seconds=DELAY)
    run(tl, governance, "execute", tl.address, data, eta)
    (ev,) = events(tl, "DelaySet")
    assert (ev.previous, ev.delay) == (DELAY, HOUR)
    assert tl.delay() == HOUR
    for bad in (MIN_DELAY - 1, MAX_DELAY + 1):
        data = tl.set_delay.prepare_calldata(bad)
        _, eta = queue(tl, governance, tl.address, data)
        boa.env.time_travel(seconds=HOUR)
        with boa.reverts("timelock: delay out of bounds"):
            run(tl, governance, "execute", tl.address, data, eta)


def test_governance_transfer_is_delayed_and_two_step(governance):
    tl = deployer("Timelock").deploy(governance, DELAY)
    new, stranger = boa.env.generate_address(), boa.env.generate_address()
    with boa.env.prank(governance):
        with boa.reverts("timelock: only through a delayed call"):
            tl.propose_governance(new)
    data = tl.propose_governance.prepare_calldata(new)
    _, eta = queue(tl, governance, tl.address, data)
    boa.env.time_travel(seconds=DELAY)
    run(tl, governance, "execute", tl.address, data, eta)
    (ev,) = events(tl, "GovernanceProposed")
    assert (ev.governance, ev.proposed) == (governance, new)
    assert (tl.governance(), tl.pending_governance()) == (governance, new)
    for who in (stranger, governance):
        with boa.env.prank(who):
            with boa.reverts("timelock: not pending governance"):
                tl.accept_governance()
    with boa.env.prank(new):
        tl.accept_governance()
        (ev,) = events(tl, "GovernanceAccepted")
        assert (ev.previous, ev.governance) == (governance, new)
    assert (tl.governance(), tl.pending_governance()) == (new, ZERO)
    with boa.env.prank(governance):
        with boa.reverts("timelock: not governance"):
            tl.queue(tl.address, data, now() + DELAY)


def test_bounds_mirror_equals_the_contract_constants():
    """The keeper's bounds are the constants of the Vyper sources (read back from them)."""
    import re

    from keeper.chain.artifacts import CONTRACTS

    found = {}
    for name in ("lib/constants.vy", "lib/engine_core.vy", "CollateralVault.vy", "OracleRouter.vy"):
        for m in re.finditer(r"^([A-Z_]+): constant\(uint256\) = ([0-9* ]+)$", (CONTRACTS / name).read_text(), re.M):
            found[m.group(1)] = eval(m.group(2))  # noqa: S307 - integer literals of our own sources
    names = ["MIN_IM_RATE", "MAX_IM_RATE", "MIN_MM_RATE", "MIN_PENALTY", "MAX_PENALTY", "MIN_TARGET", "MAX_TARGET",
             "MIN_PRICE_DEVIATION", "MAX_PRICE_DEVIATION", "MAX_FUNDING_RATE_BOUND", "MIN_PENALTY_RAMP",
             "MAX_PENALTY_RAMP", "MAX_MIN_POSITION_NOTIONAL", "MAX_HAIRCUT", "MIN_HEARTBEAT", "MAX_HEARTBEAT", "MAX_FEEDS",
             "REQUIREMENT_RAMP"]  # fmt: skip
    for n in names:
        assert getattr(bounds, n) == found[n], n
