# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Mock contract wallet: ERC-1271 signatures by approved digests
@notice A minimal smart-contract account for tests, in the manner of a Safe's "approved hashes"
        (`approveHash` / SignMessageLib `signMessage`): its owner approves a digest on chain,
        after which `isValidSignature(digest, anything)` answers the ERC-1271 magic value
        0x1626ba7e; for any other digest it answers 0xffffffff. The signature bytes are ignored.
        `call` lets the owner act as the wallet (approve a token, deposit into the vault, send
        an order itself).
@dev Local chains and tests only: one owner, no replay protection beyond the digest itself, no
     signature recovery of its own (lib/signatures.vy stays the only source file that recovers).
     Source: EIP-1271; Safe `CompatibilityFallbackHandler.isValidSignature` with `SignMessageLib`.
"""

# @dev bytes4(keccak256("isValidSignature(bytes32,bytes)"))
ERC1271_MAGIC_VALUE: constant(bytes4) = 0x1626ba7e
ERC1271_INVALID: constant(bytes4) = 0xffffffff
MAX_SIGNATURE_LENGTH: constant(uint256) = 1024
MAX_CALLDATA: constant(uint256) = 4096
MAX_RETURNDATA: constant(uint256) = 1024

owner: public(immutable(address))
# @dev digest => approved by the owner
approved: public(HashMap[bytes32, bool])


event DigestApproved:
    digest: indexed(bytes32)
    approved: bool


@deploy
def __init__(owner_: address):
    """
    @param owner_ The only account that may approve digests and make the wallet call out.
    """
    assert owner_ != empty(address), "wallet: zero owner"
    owner = owner_


@external
def approve_digest(digest: bytes32):
    """
    @notice Sign `digest` for the wallet (ERC-1271 will accept it from now on).
    @dev Reverts "wallet: not owner".
    """
    assert msg.sender == owner, "wallet: not owner"
    self.approved[digest] = True
    log DigestApproved(digest=digest, approved=True)


@external
def revoke_digest(digest: bytes32):
    """
    @notice Withdraw the approval of `digest` (ERC-1271 refuses it again).
    @dev Reverts "wallet: not owner".
    """
    assert msg.sender == owner, "wallet: not owner"
    self.approved[digest] = False
    log DigestApproved(digest=digest, approved=False)


@external
@view
def isValidSignature(digest: bytes32, signature: Bytes[MAX_SIGNATURE_LENGTH]) -> bytes4:
    """
    @notice ERC-1271: 0x1626ba7e if the owner approved `digest`, 0xffffffff otherwise.
    @param digest The 32-byte hash being checked (e.g. an EIP-712 order digest).
    @param signature Ignored: the approval on chain is the signature.
    """
    if self.approved[digest]:
        return ERC1271_MAGIC_VALUE
    return ERC1271_INVALID


@external
@payable
def call(target: address, data: Bytes[MAX_CALLDATA]) -> Bytes[MAX_RETURNDATA]:
    """
    @notice Call `target` with `data` (and the ether sent) as the wallet; a revert is passed on.
    @dev Reverts "wallet: not owner", or with the target's revert data.
    @return The target's return data (at most 1024 bytes).
    """
    assert msg.sender == owner, "wallet: not owner"
    return raw_call(target, data, max_outsize=MAX_RETURNDATA, value=msg.value)
