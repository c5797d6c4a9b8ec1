# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Signer set: an m-of-n quorum of authorised signers for EIP-712 messages
@notice A contract that `initializes` this module accepts a signed message only if at least
        `threshold` (m) of its `signer_count` (n) authorised signers signed its digest. The
        admin (a governance action) adds and removes signers and sets m, with
        1 <= m <= n <= MAX_SIGNERS always.
@dev Signatures are 65-byte (r, s, v), v in {27, 28}, s in the lower half of the curve order
     (EIP-2: the high-s twin of a signature is refused), listed in strictly ascending order of
     their signers' addresses, so a duplicate signer is refused in O(n) without a scratch set
     (the pattern of Gnosis Safe `checkNSignatures`). Every signature listed must be valid and
     from an authorised signer. Source: Derive (Lyra v2) `BaseLyraFeed` (requiredSigners,
     isSigner, duplicate-signer check).
     `signer_set_version` increases on every removal and threshold change, so a contract that
     stores signed results can drop those signed under a set that no longer holds.
     This module initializes `roles`; a contract using it reaches the roles as
     `signer_set.roles`.
@license MIT
"""

from . import roles
from . import signatures as signature_checks

initializes: roles

MAX_SIGNERS: constant(uint256) = 16

is_signer: public(HashMap[address, bool])
threshold: public(uint256)
signer_set_version: public(uint256)
_signers: DynArray[address, MAX_SIGNERS]


event SignerAdded:
    signer: indexed(address)
    signer_count: uint256


event SignerRemoved:
    signer: indexed(address)
    signer_count: uint256


event ThresholdSet:
    previous: uint256
    threshold: uint256


@deploy
def __init__(admin_: address, signers_: DynArray[address, MAX_SIGNERS], threshold_: uint256):
    """
    @dev Reverts as `add_signer` and `set_threshold` do (zero / duplicate signer, threshold
         outside [1, n]); roles: "roles: zero admin".
    """
    roles.__init__(admin_)
    for signer: address in signers_:
        self._add_signer(signer)
    self._set_threshold(threshold_)


@internal
def _add_signer(signer: address):
    assert signer != empty(address), "signer_set: zero signer"
    assert not self.is_signer[signer], "signer_set: already a signer"
    assert len(self._signers) < MAX_SIGNERS, "signer_set: too many signers"
    self.is_signer[signer] = True
    self._signers.append(signer)
    log SignerAdded(signer=signer, signer_count=len(self._signers))


@internal
def _set_threshold(threshold_: uint256):
    assert threshold_ >= 1 and threshold_ <= len(self._signers), "signer_set: threshold out of bounds"
    previous: uint256 = self.threshold
    self.threshold = threshold_
    self.signer_set_version += 1
    log ThresholdSet(previous=previous, threshold=threshold_)


@internal
@view
def _verify(digest: bytes32, signatures: DynArray[Bytes[65], MAX_SIGNERS]):
    """
    @dev Reverts unless `signatures` holds at least `threshold` signatures of `digest`, each
         valid and by an authorised signer, ordered by strictly ascending signer address.
         Reverts: "signer_set: below threshold", "signature: bad length",
         "signature: malleable", "signature: bad v", "signature: invalid" (lib/signatures.vy),
         "signer_set: not a signer" (also what a message
         signed for another chain or contract recovers to), "signer_set: signers not
         ascending" (a duplicate or unsorted signer).
    """
    # threshold >= 1 always holds (constructor and setters), so no list can be empty
    assert len(signatures) >= self.threshold, "signer_set: below threshold"
    last: uint256 = 0
    for signature: Bytes[65] in signatures:
        signer: address = signature_checks._recover(digest, signature)
        assert self.is_signer[signer], "signer_set: not a signer"
        key: uint256 = convert(signer, uint256)
        assert key > last, "signer_set: signers not ascending"
        last = key


@external
@view
def verify_signatures(digest: bytes32, signatures: DynArray[Bytes[65], MAX_SIGNERS]) -> bool:
    """
    @notice Check a quorum of signatures over any digest, as the contract's submit functions do.
    @dev Reverts with the reason a submit would give (see `_verify`); lets a keeper check its
         signatures before sending.
    @param digest The 32-byte EIP-712 digest.
    @param signatures 65-byte (r, s, v) signatures, by strictly ascending signer address.
    @return True (otherwise it reverts).
    """
    self._verify(digest, signatures)
    return True


@external
@view
def signers() -> DynArray[address, MAX_SIGNERS]:
    """
    @notice The authorised signers, in no particular order.
    @return The n signer addresses.
    """
    return self._signers


@external
@view
def signer_count() -> uint256:
    """
    @notice n, the number of authorised signers.
    @return The signer count.
    """
    return len(self._signers)


@external
def add_signer(signer: address):
    """
    @notice Authorise a new signer (admin). Leaves the threshold unchanged.
    @dev Reverts: "roles: not admin", "signer_set: zero signer", "signer_set: already a signer",
         "signer_set: too many signers" (at most MAX_SIGNERS = 16).
    @param signer The signer's address.
    """
    roles._check_admin()
    self._add_signer(signer)


@external
def remove_signer(signer: address):
    """
    @notice Revoke a signer (admin). Messages it signed are refused from now on, and
            `signer_set_version` increases.
    @dev Reverts: "roles: not admin", "signer_set: not a signer", "signer_set: threshold above
         signers" (lower the threshold first: m <= n must keep holding).
    @param signer An authorised signer.
    """
    roles._check_admin()
    assert self.is_signer[signer], "signer_set: not a signer"
    n: uint256 = len(self._signers)
    assert n - 1 >= self.threshold, "signer_set: threshold above signers"
    # swap with the last and pop: order carries no meaning
    for i: uint256 in range(n, bound=MAX_SIGNERS):
        if self._signers[i] == signer:
            self._signers[i] = self._signers[n - 1]
            self._signers.pop()
            break
    self.is_signer[signer] = False
    self.signer_set_version += 1
    log SignerRemoved(signer=signer, signer_count=n - 1)


@external
def set_threshold(threshold_: uint256):
    """
    @notice Set m, the number of signatures a message needs (admin); `signer_set_version`
            increases.
    @dev Reverts: "roles: not admin", "signer_set: threshold out of bounds" (needs 1 <= m <= n).
    @param threshold_ The new threshold.
    """
    roles._check_admin()
    self._set_threshold(threshold_)
