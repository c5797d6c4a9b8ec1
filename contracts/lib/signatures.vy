# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Signature checks: the protocol's one path to `ecrecover`
@notice `_recover` returns the EOA that signed a digest, refusing malformed and malleable
        signatures; `_is_valid` also accepts a contract wallet's signature (a Safe, an ERC-4337
        account) through ERC-1271 `isValidSignature`.
@dev An EOA signature is 65 bytes (r, s, v) with v in {27, 28} and s in the lower half of the
     curve order (EIP-2: the high-s twin of a valid signature is refused), recovering a
     non-zero address. Sources: EIP-2, EIP-1271; OpenZeppelin `SignatureChecker`.
@custom:security A contract wallet decides its own validity: an account that is a contract is
     trusted to answer only for digests its owners approved, exactly as it would be for any
     ERC-1271 integration. An address without code is never asked.
@license MIT
"""

from . import constants

# @dev secp256k1n / 2: larger s values are the malleable twin of a valid signature (EIP-2).
SECP256K1N_HALF: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168
# @dev bytes4(keccak256("isValidSignature(bytes32,bytes)")) as the ABI returns it (left-aligned in
#      one word): what a valid ERC-1271 check answers.
ERC1271_MAGIC_WORD: constant(bytes32) = 0x1626ba7e00000000000000000000000000000000000000000000000000000000


@internal
@pure
def _try_recover(digest: bytes32, signature: Bytes[constants.MAX_SIGNATURE_LENGTH]) -> address:
    """
    @dev The address `ecrecover` returns for a well-formed signature (zero when none recovers).
         Reverts "signature: bad length", "signature: malleable", "signature: bad v".
    """
    assert len(signature) == 65, "signature: bad length"
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    assert s <= SECP256K1N_HALF, "signature: malleable"
    assert v == 27 or v == 28, "signature: bad v"
    return ecrecover(digest, v, r, s)


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[constants.MAX_SIGNATURE_LENGTH]) -> address:
    """
    @dev The EOA that signed `digest`. Reverts as `_try_recover`, and "signature: invalid" when
         no address recovers.
    """
    signer: address = self._try_recover(digest, signature)
    assert signer != empty(address), "signature: invalid"
    return signer


@internal
@view
def _is_valid(signer: address, digest: bytes32, signature: Bytes[constants.MAX_SIGNATURE_LENGTH]) -> bool:
    """
    @dev Whether `signer` signed `digest`: for an address with code, its ERC-1271
         `isValidSignature(digest, signature)` returned the magic value (a revert or any other
         answer is False); otherwise the EOA recovered from `signature` is `signer`, which is
         never the zero address (a malformed EOA signature reverts as in `_try_recover`).
    """
    if signer.is_contract:
        ok: bool = False
        answer: Bytes[32] = b""
        ok, answer = raw_call(
            signer,
            abi_encode(digest, signature, method_id=method_id("isValidSignature(bytes32,bytes)")),
            max_outsize=32,
            is_static_call=True,
            revert_on_failure=False,
        )
        # the whole word, as OpenZeppelin's SignatureChecker: the call data itself starts with the
        # magic value, so a fallback that echoes it must not pass
        return ok and len(answer) == 32 and convert(answer, bytes32) == ERC1271_MAGIC_WORD
    return signer != empty(address) and self._try_recover(digest, signature) == signer


# @dev External wrapper: recovery for reference tests, and so the file also compiles as a
#      contract (brownie builds every file under contracts/).
@external
@pure
def recover(digest: bytes32, signature: Bytes[constants.MAX_SIGNATURE_LENGTH]) -> address:
    return self._recover(digest, signature)
