"""VolFeed: signed ATM vol and skew per (underlying, expiry), its checks and its governance."""

from __future__ import annotations

import boa
import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from keeper.chain.attestations import VolUpdate, sign_vol_update, typed_data_digest, vol_update_typed_data
from keeper.params.bounds import REQUIREMENT_RAMP
from tests.boa_protocol import WAD, deploy_unique, events, now, source_deployer

SIGNERS = [Account.from_key(keccak(text=f"vol feed test signer {i}")) for i in range(3)]
OUTSIDER = Account.from_key(keccak(text="vol feed test outsider"))
DAY = 86400
ETH = 0


@pytest.fixture(scope="module")
def admin():
    return boa.env.generate_address("vol feed admin")


@pytest.fixture(scope="module")
def _feed(admin):
    return deploy_unique(source_deployer("VolFeed.vy"), admin, [s.address for s in SIGNERS], 2)


@pytest.fixture
def feed(_feed):
    with boa.env.anchor():
        yield _feed


def chain_id() -> int:
    return boa.env.evm.patch.chain_id


def update(**kw) -> VolUpdate:
    t = now()
    fields = dict(
        underlying=ETH, expiry=t + 30 * DAY, atm_vol=8 * WAD // 10, skew=-WAD // 5, timestamp=t, deadline=t + 60
    )
    fields.update(kw)
    return VolUpdate(**fields)


def submit(feed, u: VolUpdate, signers=SIGNERS[:2], chain=None, contract=None):
    args = sign_vol_update(u, [s.key for s in signers], chain or chain_id(), contract or feed.address)
    feed.submit_vol(*args)


def reference_digest(u: VolUpdate, chain: int, contract: str) -> bytes:
    """EIP-712 hashed by hand from the specification, independent of eth-account and the contract."""
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    domain = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="CrossMargin VolFeed"), keccak(text="1"), chain, contract],
        )
    )
    type_hash = keccak(
        text="VolUpdate(uint256 underlying,uint256 expiry,uint256 atm_vol,int256 skew,uint256 timestamp,uint256 deadline)"
    )
    struct = keccak(
        encode(
            ["bytes32", "uint256", "uint256", "uint256", "int256", "uint256", "uint256"],
            [type_hash, u.underlying, u.expiry, u.atm_vol, u.skew, u.timestamp, u.deadline],
        )
    )
    return keccak(b"\x19\x01" + domain + struct)


# ---------------------------------------------------------------- digest and happy path


def test_digest_matches_eip712_reference(feed):
    u = update(skew=-3 * WAD // 10)
    expected = reference_digest(u, chain_id(), feed.address)
    assert feed.vol_update_digest(u.as_tuple()) == expected
    assert typed_data_digest(vol_update_typed_data(u, chain_id(), feed.address)) == expected


def test_submit_stores_and_logs(feed):
    u = update()
    submit(feed, u)
    (ev,) = events(feed, "VolUpdated")
    assert (ev.underlying, ev.expiry, ev.atm_vol, ev.skew, ev.timestamp) == (
        ETH,
        u.expiry,
        u.atm_vol,
        u.skew,
        u.timestamp,
    )
    assert feed.vol_params(ETH, u.expiry) == (u.atm_vol, u.skew, u.timestamp)
    assert feed.is_fresh(ETH, u.expiry)
    # other keys untouched
    assert feed.vol_params(1, u.expiry) == (0, 0, 0)
    assert not feed.is_fresh(1, u.expiry)


def test_all_signers_and_edges_accepted(feed):
    t = now()
    # deadline == now and timestamp == now are both allowed
    u = update(deadline=t, timestamp=t, atm_vol=feed.min_atm_vol(), skew=-feed.max_abs_skew())
    submit(feed, u, signers=SIGNERS)
    assert feed.vol_params(ETH, u.expiry) == (u.atm_vol, u.skew, t)
    boa.env.time_travel(seconds=1)
    u2 = update(expiry=u.expiry, atm_vol=feed.max_atm_vol(), skew=feed.max_abs_skew())
    submit(feed, u2, signers=SIGNERS[1:])
    assert feed.vol_params(ETH, u.expiry) == (u2.atm_vol, u2.skew, t + 1)


def test_freshness_follows_heartbeat_and_expiry(feed):
    u = update(expiry=now() + 2 * DAY)
    submit(feed, u)
    heartbeat = feed.heartbeat()
    assert heartbeat == 1200
    boa.env.time_travel(seconds=heartbeat)
    assert feed.is_fresh(ETH, u.expiry)  # exactly heartbeat old: still fresh
    boa.env.time_travel(seconds=1)
    assert not feed.is_fresh(ETH, u.expiry)
    # a newer update restores it; past expiry nothing is fresh
    submit(feed, update(expiry=u.expiry))
    assert feed.is_fresh(ETH, u.expiry)
    boa.env.time_travel(seconds=u.expiry - now() - 100)
    submit(feed, update(expiry=u.expiry))
    assert feed.is_fresh(ETH, u.expiry)
    boa.env.time_travel(seconds=100)
    assert not feed.is_fresh(ETH, u.expiry)  # expired, though only 100 s old


def test_fresh_vol_is_is_fresh_and_vol_params_in_one_call(feed):
    """`fresh_vol` (what the option market reads per valuation) agrees with `is_fresh` and
    `vol_params` at every stage: never published, fresh, stale, expired."""
    u = update(expiry=now() + 2 * DAY, skew=WAD // 7)

    def agrees() -> bool:
        fresh, atm_vol, skew = feed.fresh_vol(ETH, u.expiry)
        return (fresh, atm_vol, skew) == (feed.is_fresh(ETH, u.expiry), *feed.vol_params(ETH, u.expiry)[:2])

    assert agrees() and feed.fresh_vol(ETH, u.expiry) == (False, 0, 0)
    submit(feed, u)
    assert agrees() and feed.fresh_vol(ETH, u.expiry) == (True, u.atm_vol, u.skew)
    boa.env.time_travel(seconds=feed.heartbeat() + 1)
    assert agrees() and feed.fresh_vol(ETH, u.expiry) == (False, u.atm_vol, u.skew)
    submit(feed, update(expiry=u.expiry))
    boa.env.time_travel(seconds=u.expiry - now())
    assert agrees() and not feed.fresh_vol(ETH, u.expiry)[0]


def test_timestamps_are_per_underlying_and_expiry(feed):
    t = now()
    submit(feed, update(timestamp=t))
    # an older observation for another expiry or underlying is accepted
    submit(feed, update(timestamp=t - 100, expiry=t + 60 * DAY))
    submit(feed, update(timestamp=t - 100, underlying=1))
    assert feed.vol_params(1, t + 30 * DAY)[2] == t - 100


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda t: dict(deadline=t - 1), "vol: deadline passed"),
        (lambda t: dict(timestamp=t + 1, deadline=t + 60), "vol: timestamp in the future"),
        (lambda t: dict(expiry=t), "vol: expiry not after timestamp"),
        (lambda t: dict(expiry=t + 2 * 365 * DAY + 1), "vol: expiry too far"),
        (lambda t: dict(atm_vol=5 * WAD // 100 - 1), "vol: atm vol out of bounds"),
        (lambda t: dict(atm_vol=3 * WAD + 1), "vol: atm vol out of bounds"),
        (lambda t: dict(skew=WAD + 1), "vol: skew out of bounds"),
        (lambda t: dict(skew=-WAD - 1), "vol: skew out of bounds"),
    ],
)
def test_bad_update_rejected(feed, change, reason):
    u = update(**change(now()))
    with boa.reverts(reason):
        submit(feed, u)


def test_non_increasing_timestamp_rejected(feed):
    u = update()
    submit(feed, u)
    with boa.reverts("vol: not newer"):
        submit(feed, u)  # replay
    with boa.reverts("vol: not newer"):
        submit(feed, update(expiry=u.expiry, timestamp=u.timestamp - 1))
    boa.env.time_travel(seconds=5)
    with boa.reverts("vol: not newer"):
        submit(feed, update(expiry=u.expiry, timestamp=u.timestamp))


def test_signature_rejections(feed, admin):
    u = update()
    with boa.reverts("signer_set: below threshold"):
        submit(feed, u, signers=SIGNERS[:1])
    with boa.reverts("signer_set: not a signer"):
        submit(feed, u, signers=[SIGNERS[0], OUTSIDER])
    with boa.reverts("signer_set: not a signer"):
        submit(feed, u, chain=chain_id() + 1)  # signed for another chain
    other = deploy_unique(source_deployer("VolFeed.vy"), admin, [s.address for s in SIGNERS], 2)
    with boa.reverts("signer_set: not a signer"):
        submit(feed, u, contract=other.address)  # signed for another feed
    tup, (a, b) = sign_vol_update(u, [s.key for s in SIGNERS[:2]], chain_id(), feed.address)
    with boa.reverts("signer_set: signers not ascending"):
        feed.submit_vol(tup, [a, a])  # duplicate signer
    # changing any field after signing breaks the signatures
    forged = update(atm_vol=u.atm_vol // 2)
    with boa.reverts("signer_set: not a signer"):
        feed.submit_vol(forged.as_tuple(), [a, b])
    with boa.env.prank(admin):
        feed.remove_signer(SIGNERS[0].address)
    with boa.reverts("signer_set: not a signer"):
        submit(feed, u, signers=SIGNERS[:2])  # removed signer
    submit(feed, u, signers=SIGNERS[1:])


def test_high_s_rejected(feed):
    u = update()
    tup, (a, b) = sign_vol_update(u, [s.key for s in SIGNERS[:2]], chain_id(), feed.address)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = b[:32] + (n - int.from_bytes(b[32:64], "big")).to_bytes(32, "big") + bytes([55 - b[64]])
    with boa.reverts("signature: malleable"):
        feed.submit_vol(tup, [a, twin])


# ---------------------------------------------------------------- governance


def test_default_bounds(feed):
    assert (feed.min_atm_vol(), feed.max_atm_vol(), feed.max_abs_skew(), feed.heartbeat()) == (
        5 * WAD // 100,
        3 * WAD,
        WAD,
        1200,
    )


def test_set_vol_bounds(feed, admin):
    with boa.reverts("roles: not risk admin"):
        feed.set_vol_bounds(WAD // 10, 2 * WAD, WAD // 2)
    with boa.env.prank(admin):
        feed.set_vol_bounds(WAD // 10, 2 * WAD, WAD // 2)
        (ev,) = events(feed, "VolBoundsSet")
        assert (ev.min_atm_vol, ev.max_atm_vol, ev.max_abs_skew) == (WAD // 10, 2 * WAD, WAD // 2)
        feed.set_vol_bounds(WAD // 100, 5 * WAD, 5 * WAD)  # the hard bounds themselves
        for args, reason in [
            ((WAD // 100 - 1, WAD, WAD), "vol: min vol below hard bound"),
            ((WAD // 10, 5 * WAD + 1, WAD), "vol: max vol above hard bound"),
            ((WAD, WAD, WAD), "vol: empty vol range"),
            ((WAD // 10, WAD, 5 * WAD + 1), "vol: max skew above hard bound"),
        ]:
            with boa.reverts(reason):
                feed.set_vol_bounds(*args)
        feed.set_vol_bounds(WAD // 10, 2 * WAD, WAD // 2)
    with boa.reverts("vol: atm vol out of bounds"):
        submit(feed, update(atm_vol=WAD // 10 - 1))
    with boa.reverts("vol: skew out of bounds"):
        submit(feed, update(skew=-WAD // 2 - 1))


def test_set_heartbeat(feed, admin):
    with boa.reverts("roles: not risk admin"):
        feed.set_heartbeat(600)
    with boa.env.prank(admin):
        feed.set_heartbeat(600)
        (ev,) = events(feed, "HeartbeatSet")
        assert (ev.previous, ev.heartbeat) == (1200, 600)
        with boa.reverts("vol: heartbeat out of bounds"):
            feed.set_heartbeat(59)
        with boa.reverts("vol: heartbeat out of bounds"):
            feed.set_heartbeat(DAY + 1)
    u = update()
    submit(feed, u)  # nothing was published before: the shorter heartbeat is in force already
    assert feed.heartbeat_now() == 600
    boa.env.time_travel(seconds=601)
    assert not feed.is_fresh(ETH, u.expiry)


def test_a_shorter_heartbeat_phases_in_once_vols_are_published(feed, admin):
    """Shortening the heartbeat from 20 min to 60 s would turn every vol older than a minute
    stale in the block of the change (a stale vol marks shorts at intrinsic + 15% of spot): it
    phases in over REQUIREMENT_RAMP (lib/ramp.vy) instead, 1200 - floor(1140 x t / 7 days)."""
    u = update(expiry=now() + 30 * DAY)
    submit(feed, u)
    boa.env.time_travel(seconds=600)
    with boa.env.prank(admin):
        feed.set_heartbeat(60)
    assert feed.heartbeat() == 60 and feed.heartbeat_now() == 1200
    assert feed.is_fresh(ETH, u.expiry)  # 600 s old: still fresh in the block of the change
    boa.env.time_travel(seconds=DAY)
    assert feed.heartbeat_now() == 1200 - 1140 * DAY // REQUIREMENT_RAMP
    boa.env.time_travel(seconds=REQUIREMENT_RAMP)
    assert feed.heartbeat_now() == 60
    with boa.env.prank(admin):
        feed.set_heartbeat(3600)  # longer: at once
    assert feed.heartbeat_now() == 3600
