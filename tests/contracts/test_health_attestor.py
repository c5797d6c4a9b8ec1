"""HealthAttestor: signed portfolio-margin attestations, their rejections, and the bounded
margin relief `effective_margin` grants (checked against hand calculations)."""

from __future__ import annotations

import random

import boa
import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from keeper.chain.attestations import (
    HealthAttestation,
    attestation_typed_data,
    sign_attestation,
    typed_data_digest,
)
from keeper.params.bounds import REQUIREMENT_RAMP
from keeper.risk.scenarios import ScenarioParams, scenario_params_hash
from tests.boa_protocol import WAD, ceil_div, deploy_unique, events, now, source_deployer

SIGNERS = [Account.from_key(keccak(text=f"attestor test signer {i}")) for i in range(3)]
OUTSIDER = Account.from_key(keccak(text="attestor test outsider"))
ETH_PRICE = 2000 * WAD
BTC_PRICE = 30000 * WAD
USD = WAD
PARAMS_HASH = scenario_params_hash(ScenarioParams())
OTHER_PARAMS_HASH = scenario_params_hash(ScenarioParams(spot_range=0.2))


@pytest.fixture(scope="module")
def admin():
    return boa.env.generate_address("attestor admin")


@pytest.fixture(scope="module")
def _setup(admin):
    oracle = deploy_unique(source_deployer("OracleRouter.vy"), admin)
    feeds = [
        deploy_unique(source_deployer("mocks/MockAggregator.vy"), 8, "ETH / USD", ETH_PRICE // 10**10),
        deploy_unique(source_deployer("mocks/MockAggregator.vy"), 8, "BTC / USD", BTC_PRICE // 10**10),
    ]
    with boa.env.prank(admin):
        for name, feed in zip(("ETH", "BTC"), feeds):
            price_id = oracle.add_price_id(name)
            oracle.set_feeds(price_id, [feed.address], [86400])
    engine = deploy_unique(source_deployer("mocks/MockVersioned.vy"))
    attestor = deploy_unique(
        source_deployer("HealthAttestor.vy"),
        admin,
        engine.address,
        oracle.address,
        [s.address for s in SIGNERS],
        2,
        PARAMS_HASH,
    )
    engine.set_health_attestor(attestor.address)
    return attestor, engine, oracle, feeds


@pytest.fixture
def env(_setup):
    with boa.env.anchor():
        yield _setup


@pytest.fixture
def attestor(env):
    return env[0]


ACCOUNT = boa.env.generate_address("attested account")


def chain_id() -> int:
    return boa.env.evm.patch.chain_id


def attestation(env, **kw) -> HealthAttestation:
    attestor, engine, oracle, _ = env
    t = now()
    fields = dict(
        account=ACCOUNT,
        position_version=engine.position_version(ACCOUNT),
        prices=tuple(oracle.index_prices()),
        initial_margin=400 * USD,
        maintenance_margin=300 * USD,
        issued_at=t,
        valid_until=t + 600,
        scenario_params=PARAMS_HASH,
    )
    fields.update(kw)
    return HealthAttestation(**fields)


def submit(attestor, att: HealthAttestation, signers=SIGNERS[:2], chain=None, contract=None):
    args = sign_attestation(att, [s.key for s in signers], chain or chain_id(), contract or attestor.address)
    attestor.submit_attestation(*args)


def set_price(feed, usd_wad: int):
    feed.set_answer(usd_wad // 10**10)  # 8-decimal feed


def reference_digest(att: HealthAttestation, chain: int, contract: str) -> bytes:
    """EIP-712 hashed by hand from the specification (uint256[] = keccak of its words)."""
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    domain = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="CrossMargin HealthAttestor"), keccak(text="1"), chain, contract],
        )
    )
    type_hash = keccak(
        text="HealthAttestation(address account,uint256 position_version,uint256[] prices,uint256 initial_margin,"
        "uint256 maintenance_margin,uint256 issued_at,uint256 valid_until,bytes32 scenario_params)"
    )
    prices_hash = keccak(b"".join(p.to_bytes(32, "big") for p in att.prices))
    struct = keccak(
        encode(
            ["bytes32", "address", "uint256", "bytes32", "uint256", "uint256", "uint256", "uint256", "bytes32"],
            [
                type_hash,
                att.account,
                att.position_version,
                prices_hash,
                att.initial_margin,
                att.maintenance_margin,
                att.issued_at,
                att.valid_until,
                att.scenario_params,
            ],
        )  # fmt: skip
    )
    return keccak(b"\x19\x01" + domain + struct)


# ---------------------------------------------------------------- digest, happy path, arithmetic


@pytest.mark.parametrize("prices", [(ETH_PRICE,), (ETH_PRICE, BTC_PRICE), tuple(range(1, 9))])
def test_digest_matches_eip712_reference(env, prices):
    attestor = env[0]
    att = attestation(env, prices=prices, position_version=7)
    expected = reference_digest(att, chain_id(), attestor.address)
    assert attestor.attestation_digest(att.as_tuple()) == expected
    assert typed_data_digest(attestation_typed_data(att, chain_id(), attestor.address)) == expected


def test_defaults(attestor, env):
    assert attestor.margin_floor() == WAD // 2
    assert attestor.price_band() == WAD // 100
    assert attestor.max_validity() == 900
    assert attestor.engine() == env[1].address and attestor.oracle() == env[2].address
    assert attestor.scenario_params_hash() == PARAMS_HASH


def test_no_attestation_leaves_standard_margin(attestor):
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)
    assert attestor.effective_margin(ACCOUNT, 0, 0) == (0, 0, False)
    assert not attestor.attestation_holds(ACCOUNT)


def test_submit_stores_logs_and_lowers_margin(env, attestor):
    env[1].set_position_version(ACCOUNT, 5)
    att = attestation(env)
    submit(attestor, att)
    (ev,) = events(attestor, "AttestationSubmitted")
    assert (ev.account, ev.position_version, list(ev.prices), ev.initial_margin, ev.maintenance_margin) == (
        ACCOUNT,
        5,
        [ETH_PRICE, BTC_PRICE],
        400 * USD,
        300 * USD,
    )
    stored = attestor.attestation(ACCOUNT)
    assert (stored.position_version, list(stored.prices), stored.issued_at, stored.valid_until) == (
        5,
        [ETH_PRICE, BTC_PRICE],
        att.issued_at,
        att.valid_until,
    )
    assert attestor.attestation_holds(ACCOUNT)
    # standard (1000, 800), floor 0.5 -> floors (500, 400); attested (400, 300) is below them
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (500 * USD, 400 * USD, True)
    # standard (700, 560): floors (350, 280); attested (400, 300) applies
    assert attestor.effective_margin(ACCOUNT, 700 * USD, 560 * USD) == (400 * USD, 300 * USD, True)
    # attested above standard: the attestation never raises the requirement
    assert attestor.effective_margin(ACCOUNT, 350 * USD, 250 * USD) == (350 * USD, 250 * USD, True)
    # another account is unaffected
    other = boa.env.generate_address()
    assert attestor.effective_margin(other, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)


def test_floor_rounds_up(env, attestor, admin):
    with boa.env.prank(admin):
        attestor.set_margin_floor(3 * WAD // 10)
    submit(attestor, attestation(env, initial_margin=0, maintenance_margin=0))
    # by hand: ceil(1001 * 0.3) = ceil(300.3) = 301; ceil(7 * 0.3) = ceil(2.1) = 3; 10 * 0.3 = 3 exactly
    assert attestor.effective_margin(ACCOUNT, 1001, 7) == (301, 3, True)
    assert attestor.effective_margin(ACCOUNT, 10, 10) == (3, 3, True)
    # WAD amounts: 1234.567890123456789012 USD * 0.3 = 370.3703670370370367036 -> rounds up to ...037
    im = 1234_567890123456789012
    assert attestor.effective_margin(ACCOUNT, im, 0) == (370_370367037037036704, 0, True)
    assert ceil_div(im * 3, 10) == 370_370367037037036704
    # no overflow near the top of uint256: the margin check never reverts
    top = 2**256 - 1
    assert attestor.effective_margin(ACCOUNT, top, top) == (ceil_div(top * 3, 10),) * 2 + (True,)


def test_effective_margin_matches_reference_on_random_inputs(env, attestor, admin):
    """min(standard, max(attested, ceil(floor * standard))) against plain integer arithmetic,
    floor = the floor in force (a raise phases in: test_floor_raise_phases_in)."""
    rng = random.Random(20240917)
    for i in range(25):
        floor = rng.randint(2 * WAD // 10, WAD)
        with boa.env.prank(admin):
            attestor.set_margin_floor(floor)
        floor = attestor.margin_floor_now()
        account = boa.env.generate_address(f"random account {i}")
        att_mm = rng.choice([0, rng.randint(0, 10**24)])
        att_im = att_mm + rng.randint(0, 10**24)
        submit(attestor, attestation(env, account=account, initial_margin=att_im, maintenance_margin=att_mm))
        std_mm = rng.randint(0, 10**24)
        std_im = std_mm + rng.randint(0, 10**24)
        want_im = min(std_im, max(att_im, ceil_div(std_im * floor, WAD)))
        want_mm = min(std_mm, max(att_mm, ceil_div(std_mm * floor, WAD)))
        assert attestor.effective_margin(account, std_im, std_mm) == (want_im, want_mm, True)
        assert want_mm <= want_im


def test_floor_change_applies_to_stored_attestation(env, attestor, admin):
    """A lower floor applies at once to a stored attestation."""
    submit(attestor, attestation(env, initial_margin=100 * USD, maintenance_margin=50 * USD))
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (500 * USD, 400 * USD, True)
    with boa.env.prank(admin):
        attestor.set_margin_floor(2 * WAD // 10)
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (200 * USD, 160 * USD, True)


def test_floor_raise_phases_in(env, attestor, admin):
    """A higher floor (0.5 -> 1: attestations bring no relief) phases in over REQUIREMENT_RAMP
    (lib/ramp.vy): unchanged in the block of the change, so an attested account healthy then
    stays so; 600 s later the floor in force is 0.5 + 0.5 x 600 / 604,800 (rounded down)."""
    submit(attestor, attestation(env, initial_margin=100 * USD, maintenance_margin=50 * USD))
    with boa.env.prank(admin):
        attestor.set_margin_floor(WAD)
    assert attestor.margin_floor() == WAD and attestor.margin_floor_now() == WAD // 2
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (500 * USD, 400 * USD, True)
    boa.env.time_travel(seconds=599)
    floor = WAD // 2 + (WAD // 2) * 599 // REQUIREMENT_RAMP
    assert attestor.margin_floor_now() == floor
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (
        ceil_div(1000 * USD * floor, WAD),
        ceil_div(800 * USD * floor, WAD),
        True,
    )


def test_floor_applies_at_once_before_the_engine_uses_the_attestor(env, attestor, admin):
    """At deployment (the engine does not use this attestor yet, so no attestation applies)
    a higher floor needs no phase-in."""
    env[1].set_health_attestor("0x" + "00" * 20)
    with boa.env.prank(admin):
        attestor.set_margin_floor(WAD)
    assert attestor.margin_floor_now() == WAD


# ---------------------------------------------------------------- invalidation after submission


def test_expiry_restores_standard_margin(env, attestor):
    att = attestation(env)
    submit(attestor, att)
    boa.env.time_travel(seconds=att.valid_until - now() - 1)
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD)[2]
    boa.env.time_travel(seconds=1)  # now == valid_until: expired
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)


def test_position_change_restores_standard_margin(env, attestor):
    submit(attestor, attestation(env))
    env[1].set_position_version(ACCOUNT, 1)  # a trade, withdrawal or liquidation
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)


def test_price_band_edges(env, attestor):
    feeds = env[3]
    submit(attestor, attestation(env))
    # band 1% of the attested price: ETH 2000 -> [1980, 2020] holds
    set_price(feeds[0], 2020 * WAD)
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD)[2]
    set_price(feeds[0], 1980 * WAD)
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD)[2]
    set_price(feeds[0], 2020 * WAD + 10**10)  # one feed unit above the band
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)
    set_price(feeds[0], 2000 * WAD)
    set_price(feeds[1], 30300 * WAD + 10**10)  # BTC: every listed price is checked
    assert not attestor.attestation_holds(ACCOUNT)
    set_price(feeds[1], 30300 * WAD)
    assert attestor.attestation_holds(ACCOUNT)


def test_unavailable_price_restores_standard_margin(env, attestor):
    submit(attestor, attestation(env))
    env[3][1].set_answer(0)  # the oracle now reports 0 for BTC
    assert env[2].index_prices() == [ETH_PRICE, 0]
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)


def test_signer_removal_voids_stored_attestations(env, attestor, admin):
    submit(attestor, attestation(env))
    with boa.env.prank(admin):
        attestor.remove_signer(SIGNERS[2].address)  # not even one of the attestation's signers
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)


# ---------------------------------------------------------------- governed scenario parameters


def test_ungoverned_scenario_params_refused(env, attestor):
    """Signed by a full quorum, but computed with another grid: refused."""
    with boa.reverts("attestor: scenario parameters not governed"):
        submit(attestor, attestation(env, scenario_params=OTHER_PARAMS_HASH))
    with boa.reverts("attestor: scenario parameters not governed"):
        submit(attestor, attestation(env, scenario_params=b"\0" * 32))
    assert not attestor.attestation_holds(ACCOUNT)


def test_scenario_params_hash_change_voids_and_switches(env, attestor, admin):
    submit(attestor, attestation(env))
    assert attestor.attestation_scenario_params(ACCOUNT) == PARAMS_HASH
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (500 * USD, 400 * USD, True)
    with boa.env.prank(admin):
        attestor.set_scenario_params_hash(OTHER_PARAMS_HASH)
    (ev,) = events(attestor, "ScenarioParamsHashSet")
    assert (ev.previous, ev.current) == (PARAMS_HASH, OTHER_PARAMS_HASH)
    assert attestor.scenario_params_hash() == OTHER_PARAMS_HASH
    # the stored attestation is void at once, and the old grid is no longer accepted
    assert not attestor.attestation_holds(ACCOUNT)
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)
    boa.env.time_travel(seconds=1)
    with boa.reverts("attestor: scenario parameters not governed"):
        submit(attestor, attestation(env))
    submit(attestor, attestation(env, scenario_params=OTHER_PARAMS_HASH))
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (500 * USD, 400 * USD, True)


def test_scenario_params_hash_only_risk_admin(env, attestor, admin):
    risk_admin = boa.env.generate_address("attestor risk admin")
    with boa.env.prank(admin):
        attestor.set_risk_admin(risk_admin)
    for who in (admin, boa.env.generate_address("anyone")):  # the admin is no longer the risk admin
        with boa.env.prank(who), boa.reverts("roles: not risk admin"):
            attestor.set_scenario_params_hash(OTHER_PARAMS_HASH)
    with boa.env.prank(risk_admin), boa.reverts("attestor: zero scenario params hash"):
        attestor.set_scenario_params_hash(b"\0" * 32)
    with boa.env.prank(risk_admin):
        attestor.set_scenario_params_hash(OTHER_PARAMS_HASH)
    assert attestor.scenario_params_hash() == OTHER_PARAMS_HASH


def test_constructor_refuses_zero_scenario_params_hash(env, admin):
    with boa.reverts("attestor: zero scenario params hash"):
        deploy_unique(
            source_deployer("HealthAttestor.vy"),
            admin,
            env[1].address,
            env[2].address,
            [s.address for s in SIGNERS],
            2,
            b"\0" * 32,
        )


# ---------------------------------------------------------------- rejections at submission


def test_signature_rejections(env, attestor, admin):
    att = attestation(env)
    with boa.reverts("signer_set: not a signer"):
        submit(attestor, att, signers=[SIGNERS[0], OUTSIDER])  # wrong signer
    with boa.reverts("signer_set: below threshold"):
        submit(attestor, att, signers=SIGNERS[:1])
    tup, (a, b) = sign_attestation(att, [s.key for s in SIGNERS[:2]], chain_id(), attestor.address)
    with boa.reverts("signer_set: signers not ascending"):
        attestor.submit_attestation(tup, [a, a])  # duplicate signer
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = a[:32] + (n - int.from_bytes(a[32:64], "big")).to_bytes(32, "big") + bytes([55 - a[64]])
    with boa.reverts("signature: malleable"):
        attestor.submit_attestation(tup, [twin, b])
    with boa.reverts("signer_set: not a signer"):
        submit(attestor, att, chain=chain_id() + 1)  # wrong chain
    other = deploy_unique(
        source_deployer("HealthAttestor.vy"),
        admin,
        env[1].address,
        env[2].address,
        [s.address for s in SIGNERS],
        2,
        PARAMS_HASH,
    )
    with boa.reverts("signer_set: not a signer"):
        submit(attestor, att, contract=other.address)  # wrong contract
    with boa.reverts("signer_set: not a signer"):
        # fields changed after signing
        attestor.submit_attestation(attestation(env, initial_margin=350 * USD).as_tuple(), [a, b])
    with boa.env.prank(admin):
        attestor.remove_signer(SIGNERS[0].address)
    with boa.reverts("signer_set: not a signer"):
        submit(attestor, att, signers=SIGNERS[:2])  # removed signer
    submit(attestor, att, signers=SIGNERS[1:])
    assert attestor.attestation_holds(ACCOUNT)


def test_replay_rejected(env, attestor):
    att = attestation(env)
    submit(attestor, att)
    with boa.reverts("attestor: not newer"):
        submit(attestor, att)
    boa.env.time_travel(seconds=10)
    with boa.reverts("attestor: not newer"):
        submit(attestor, attestation(env, issued_at=att.issued_at))
    newer = attestation(env, initial_margin=450 * USD)
    submit(attestor, newer)
    assert attestor.attestation(ACCOUNT).initial_margin == 450 * USD
    with boa.reverts("attestor: not newer"):
        submit(attestor, att)  # the older one cannot come back


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda t: dict(issued_at=t + 1, valid_until=t + 600), "attestor: issued in the future"),
        (lambda t: dict(issued_at=t - 600, valid_until=t), "attestor: expired"),
        (lambda t: dict(issued_at=t - 100, valid_until=t + 801), "attestor: validity too long"),
        (lambda t: dict(initial_margin=299 * USD), "attestor: IM below MM"),
        (lambda t: dict(position_version=1), "attestor: position changed"),
        (lambda t: dict(prices=(ETH_PRICE,)), "attestor: price count mismatch"),
        (lambda t: dict(prices=(ETH_PRICE, BTC_PRICE, 1)), "attestor: price count mismatch"),
        (lambda t: dict(prices=()), "attestor: price count mismatch"),
        (lambda t: dict(prices=(0, BTC_PRICE)), "attestor: zero price"),
        (lambda t: dict(prices=(ETH_PRICE, 2**255)), "attestor: prices out of band"),
        (lambda t: dict(prices=(ETH_PRICE * 102 // 100, BTC_PRICE)), "attestor: prices out of band"),
    ],
)
def test_bad_attestation_rejected(env, attestor, change, reason):
    att = attestation(env, **change(now()))
    with boa.reverts(reason):
        submit(attestor, att)


def test_stale_and_moved_state_rejected(env, attestor):
    att = attestation(env)
    env[1].set_position_version(ACCOUNT, 3)  # position changed after signing
    with boa.reverts("attestor: position changed"):
        submit(attestor, att)
    env[1].set_position_version(ACCOUNT, 0)
    set_price(env[3][0], 1979 * WAD)  # price moved out of band after signing
    with boa.reverts("attestor: prices out of band"):
        submit(attestor, att)
    set_price(env[3][0], 2000 * WAD)
    env[3][1].set_answer(0)  # current BTC price unavailable
    with boa.reverts("attestor: zero price"):
        submit(attestor, att)
    set_price(env[3][1], BTC_PRICE)
    boa.env.time_travel(seconds=600)  # stale: valid_until reached
    with boa.reverts("attestor: expired"):
        submit(attestor, att)


# ---------------------------------------------------------------- compromised signers


def test_single_compromised_signer_can_do_nothing(env, attestor):
    """2-of-3: one key alone cannot submit, whatever it signs or repeats."""
    evil = attestation(env, initial_margin=0, maintenance_margin=0)
    with boa.reverts("signer_set: below threshold"):
        submit(attestor, evil, signers=SIGNERS[:1])
    tup, (sig,) = sign_attestation(evil, [SIGNERS[0].key], chain_id(), attestor.address)
    with boa.reverts("signer_set: signers not ascending"):
        attestor.submit_attestation(tup, [sig, sig])
    with boa.reverts("signer_set: not a signer"):
        submit(attestor, evil, signers=[SIGNERS[0], OUTSIDER])
    assert attestor.effective_margin(ACCOUNT, 1000 * USD, 800 * USD) == (1000 * USD, 800 * USD, False)


@pytest.mark.parametrize("standard_im, standard_mm", [(1000 * USD, 800 * USD), (10**6 * USD + 7, 333), (1, 1), (5, 0)])
def test_compromised_quorum_bounded_by_floor(env, attestor, admin, standard_im, standard_mm):
    """With a quorum of bad keys the worst is IM = MM = 0 attested: the requirement falls to the
    floor (at its lowest, 0.2) times the standard margin, rounded up, and no lower."""
    with boa.env.prank(admin):
        attestor.set_margin_floor(2 * WAD // 10)
    submit(attestor, attestation(env, initial_margin=0, maintenance_margin=0), signers=SIGNERS[1:])
    im, mm, applied = attestor.effective_margin(ACCOUNT, standard_im, standard_mm)
    assert applied
    assert (im, mm) == (ceil_div(standard_im * 2, 10), ceil_div(standard_mm * 2, 10))
    assert im * 5 >= standard_im and mm * 5 >= standard_mm
    with boa.env.prank(admin), boa.reverts("attestor: floor out of bounds"):
        attestor.set_margin_floor(2 * WAD // 10 - 1)


# ---------------------------------------------------------------- governance


def test_governance_setters(attestor, admin):
    for setter, value, event, field in [
        ("set_margin_floor", 7 * WAD // 10, "MarginFloorSet", "margin_floor"),
        ("set_price_band", 5 * WAD // 100, "PriceBandSet", "price_band"),
        ("set_max_validity", 3600, "MaxValiditySet", "max_validity"),
    ]:
        with boa.reverts("roles: not risk admin"):
            getattr(attestor, setter)(value)
        previous = getattr(attestor, field)()
        with boa.env.prank(admin):
            getattr(attestor, setter)(value)
        (ev,) = events(attestor, event)
        assert (ev.previous, getattr(ev, field)) == (previous, value)
        assert getattr(attestor, field)() == value


@pytest.mark.parametrize(
    "setter, value, reason",
    [
        ("set_margin_floor", WAD + 1, "attestor: floor out of bounds"),
        ("set_margin_floor", 2 * WAD // 10 - 1, "attestor: floor out of bounds"),
        ("set_price_band", 0, "attestor: band out of bounds"),
        ("set_price_band", WAD // 10 + 1, "attestor: band out of bounds"),
        ("set_max_validity", 59, "attestor: validity out of bounds"),
        ("set_max_validity", 86401, "attestor: validity out of bounds"),
    ],
)
def test_governance_bounds(attestor, admin, setter, value, reason):
    with boa.env.prank(admin), boa.reverts(reason):
        getattr(attestor, setter)(value)


def test_wiring_is_admin_only(env, attestor, admin):
    new = boa.env.generate_address("new engine")
    risk_admin = boa.env.generate_address("attestor risk admin")
    with boa.env.prank(admin):
        attestor.set_risk_admin(risk_admin)
    with boa.env.prank(risk_admin):
        with boa.reverts("roles: not admin"):
            attestor.set_engine(new)
        with boa.reverts("roles: not admin"):
            attestor.set_oracle(new)
    with boa.env.prank(admin):
        with boa.reverts("attestor: zero engine"):
            attestor.set_engine("0x" + "00" * 20)
        with boa.reverts("attestor: zero oracle"):
            attestor.set_oracle("0x" + "00" * 20)
        attestor.set_engine(new)
        (ev,) = events(attestor, "EngineSet")
        assert (ev.previous, ev.engine) == (env[1].address, new)
        attestor.set_oracle(env[2].address)
        (ev,) = events(attestor, "OracleSet")
        assert ev.oracle == env[2].address
    assert attestor.engine() == new
