"""The m-of-n signer set (contracts/lib/signer_set.vy), exercised through the VolFeed that
initializes it: quorum, ordering, malleability and governance of signers and threshold."""

from __future__ import annotations

import boa
import pytest
from eth_account import Account
from eth_keys import keys
from eth_utils import keccak

from keeper.chain.attestations import VolUpdate, sign_typed_data, typed_data_digest, vol_update_typed_data
from tests.boa_protocol import deploy_unique, events, source_deployer

# secp256k1 group order
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SIGNERS = [Account.from_key(keccak(text=f"signer-set test signer {i}")) for i in range(4)]
OUTSIDER = Account.from_key(keccak(text="signer-set test outsider"))
DIGEST = keccak(text="any message")


def sign(digest: bytes, *accounts) -> list[bytes]:
    """Raw-digest signatures (r, s, v 27/28, low s), by ascending signer address."""
    ordered = sorted(accounts, key=lambda a: int(a.address, 16))
    return [bytes(a.unsafe_sign_hash(digest).signature) for a in ordered]


def high_s(signature: bytes) -> bytes:
    """The malleable twin (r, n - s, flipped v): same signer, high s."""
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])


@pytest.fixture(scope="module")
def admin():
    return boa.env.generate_address("signer-set admin")


@pytest.fixture(scope="module")
def _feed(admin):
    # signers 0..2, threshold 2; signer 3 is known but not authorised
    return deploy_unique(source_deployer("VolFeed.vy"), admin, [s.address for s in SIGNERS[:3]], 2)


@pytest.fixture
def feed(_feed):
    with boa.env.anchor():
        yield _feed


# ---------------------------------------------------------------- construction


def test_constructor_sets_signers_and_threshold(feed):
    assert feed.threshold() == 2
    assert feed.signer_count() == 3
    assert set(feed.signers()) == {s.address for s in SIGNERS[:3]}
    assert all(feed.is_signer(s.address) for s in SIGNERS[:3])
    assert not feed.is_signer(SIGNERS[3].address)
    assert feed.signer_set_version() == 1


@pytest.mark.parametrize(
    "signers, threshold, reason",
    [
        ([0, 1], 0, "signer_set: threshold out of bounds"),
        ([0, 1], 3, "signer_set: threshold out of bounds"),
        ([], 1, "signer_set: threshold out of bounds"),
        ([0, 0], 1, "signer_set: already a signer"),
        (["zero"], 1, "signer_set: zero signer"),
    ],
)
def test_constructor_rejects_bad_sets(admin, signers, threshold, reason):
    addresses = ["0x" + "00" * 20 if s == "zero" else SIGNERS[s].address for s in signers]
    with boa.reverts(reason):
        deploy_unique(source_deployer("VolFeed.vy"), admin, addresses, threshold)


def test_module_deploys_as_its_own_contract(admin):
    """Brownie compiles every file under contracts/ as a contract: the module must stand alone."""
    c = deploy_unique(source_deployer("lib/signer_set.vy"), admin, [SIGNERS[0].address], 1)
    assert c.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0]))
    with boa.reverts("roles: not admin"):
        c.add_signer(SIGNERS[1].address)
    with boa.env.prank(admin):
        c.add_signer(SIGNERS[1].address)
    assert c.signer_count() == 2


# ---------------------------------------------------------------- verification


def test_quorum_accepted(feed):
    assert feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0], SIGNERS[1]))
    assert feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[1], SIGNERS[2]))
    assert feed.verify_signatures(DIGEST, sign(DIGEST, *SIGNERS[:3]))


def test_below_threshold(feed):
    with boa.reverts("signer_set: below threshold"):
        feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0]))
    with boa.reverts("signer_set: below threshold"):
        feed.verify_signatures(DIGEST, [])


def test_duplicate_signer(feed):
    (one,) = sign(DIGEST, SIGNERS[0])
    with boa.reverts("signer_set: signers not ascending"):
        feed.verify_signatures(DIGEST, [one, one])


def test_unsorted_signers(feed):
    with boa.reverts("signer_set: signers not ascending"):
        feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0], SIGNERS[1])[::-1])


def test_wrong_signer(feed):
    with boa.reverts("signer_set: not a signer"):
        feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0], OUTSIDER))
    # strict: a quorum plus one outsider's signature is refused too
    with boa.reverts("signer_set: not a signer"):
        feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0], SIGNERS[1], OUTSIDER))


def test_signature_of_another_digest(feed):
    other = keccak(text="another message")
    with boa.reverts("signer_set: not a signer"):
        feed.verify_signatures(DIGEST, sign(other, SIGNERS[0], SIGNERS[1]))


def test_high_s_signature_refused(feed):
    first, second = sorted(SIGNERS[:2], key=lambda a: int(a.address, 16))
    a, b = sign(DIGEST, first, second)
    twin = high_s(a)
    # the twin is a valid ECDSA signature by the same signer: only the low-s rule refuses it
    r, s, v = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big"), twin[64]
    assert s > SECP256K1_N // 2
    recovered = keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(DIGEST)
    assert recovered.to_checksum_address() == first.address
    with boa.reverts("signature: malleable"):
        feed.verify_signatures(DIGEST, [twin, b])


def test_malformed_signatures(feed):
    a, b = sign(DIGEST, SIGNERS[0], SIGNERS[1])
    with boa.reverts("signature: bad v"):
        feed.verify_signatures(DIGEST, [a[:64] + bytes([a[64] - 27]), b])  # v in {0, 1}
    with boa.reverts("signature: bad length"):
        feed.verify_signatures(DIGEST, [a[:64], b])
    with boa.reverts("signature: invalid"):
        feed.verify_signatures(DIGEST, [bytes(32) + a[32:], b])  # r = 0: ecrecover fails


def test_removed_signer_refused(feed, admin):
    signatures = sign(DIGEST, SIGNERS[0], SIGNERS[1])
    assert feed.verify_signatures(DIGEST, signatures)
    with boa.env.prank(admin):
        feed.remove_signer(SIGNERS[0].address)
    with boa.reverts("signer_set: not a signer"):
        feed.verify_signatures(DIGEST, signatures)


def test_python_signatures_sorted_and_checked(feed):
    update = VolUpdate(0, 2, 3, 4, 1, 5)
    typed = vol_update_typed_data(update, boa.env.evm.patch.chain_id, feed.address)
    signatures = sign_typed_data(typed, [SIGNERS[2].key, SIGNERS[0].key, SIGNERS[1].key])
    assert feed.verify_signatures(typed_data_digest(typed), signatures)
    with pytest.raises(ValueError, match="same signer appears twice"):
        sign_typed_data(typed, [SIGNERS[0].key, SIGNERS[0].key])
    with pytest.raises(ValueError, match="no signing key"):
        sign_typed_data(typed, [])


# ---------------------------------------------------------------- governance


def test_add_signer(feed, admin):
    with boa.env.prank(admin):
        feed.add_signer(SIGNERS[3].address)
    (ev,) = events(feed, "SignerAdded")
    assert (ev.signer, ev.signer_count) == (SIGNERS[3].address, 4)
    assert feed.is_signer(SIGNERS[3].address) and feed.signer_count() == 4
    assert feed.threshold() == 2
    assert feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0], SIGNERS[3]))


def test_add_signer_rejections(feed, admin):
    with boa.reverts("roles: not admin"):
        feed.add_signer(SIGNERS[3].address)
    with boa.env.prank(admin):
        with boa.reverts("signer_set: already a signer"):
            feed.add_signer(SIGNERS[0].address)
        with boa.reverts("signer_set: zero signer"):
            feed.add_signer("0x" + "00" * 20)
        for i in range(13):
            feed.add_signer(boa.env.generate_address(f"extra signer {i}"))
        assert feed.signer_count() == 16
        with boa.reverts("signer_set: too many signers"):
            feed.add_signer(SIGNERS[3].address)


def test_remove_signer(feed, admin):
    version = feed.signer_set_version()
    with boa.env.prank(admin):
        feed.remove_signer(SIGNERS[1].address)
    (ev,) = events(feed, "SignerRemoved")
    assert (ev.signer, ev.signer_count) == (SIGNERS[1].address, 2)
    assert not feed.is_signer(SIGNERS[1].address)
    assert set(feed.signers()) == {SIGNERS[0].address, SIGNERS[2].address}
    assert feed.signer_set_version() == version + 1


def test_remove_signer_rejections(feed, admin):
    with boa.reverts("roles: not admin"):
        feed.remove_signer(SIGNERS[0].address)
    with boa.env.prank(admin):
        with boa.reverts("signer_set: not a signer"):
            feed.remove_signer(OUTSIDER.address)
        feed.remove_signer(SIGNERS[0].address)  # 2 of 2 left
        with boa.reverts("signer_set: threshold above signers"):
            feed.remove_signer(SIGNERS[1].address)
        feed.set_threshold(1)
        feed.remove_signer(SIGNERS[1].address)
        assert feed.signers() == [SIGNERS[2].address]


def test_set_threshold(feed, admin):
    version = feed.signer_set_version()
    with boa.env.prank(admin):
        feed.set_threshold(3)
    (ev,) = events(feed, "ThresholdSet")
    assert (ev.previous, ev.threshold) == (2, 3)
    assert feed.signer_set_version() == version + 1
    with boa.reverts("signer_set: below threshold"):
        feed.verify_signatures(DIGEST, sign(DIGEST, SIGNERS[0], SIGNERS[1]))
    assert feed.verify_signatures(DIGEST, sign(DIGEST, *SIGNERS[:3]))


def test_set_threshold_rejections(feed, admin):
    risk_admin = boa.env.generate_address("risk admin only")
    with boa.env.prank(admin):
        feed.set_risk_admin(risk_admin)
        with boa.reverts("signer_set: threshold out of bounds"):
            feed.set_threshold(0)
        with boa.reverts("signer_set: threshold out of bounds"):
            feed.set_threshold(4)
    # signer-set changes are governance (admin) actions, not risk parameters
    with boa.env.prank(risk_admin), boa.reverts("roles: not admin"):
        feed.set_threshold(1)
