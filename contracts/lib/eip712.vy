# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title EIP-712 domain of a contract that verifies typed signatures
@notice Builds the domain separator (name, version, chain id, this contract) and the digest
        `keccak256(0x1901 || domain separator || struct hash)` a signer signs, and publishes
        the domain for wallets and front ends through EIP-5267 `eip712Domain()` and
        `domain_separator()`.
@dev The separator is cached at deployment and recomputed only when the chain id differs
     from the deployment's (a fork gets its own domain). Sources: EIP-712, EIP-5267;
     the caching follows OpenZeppelin `EIP712` and snekmate `eip712_domain_separator`.
@license MIT
"""

# @dev EIP-5267 `fields`: name, version, chainId and verifyingContract are used (0b01111).
FIELDS: constant(bytes1) = 0x0f
DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

_NAME: immutable(String[50])
_VERSION: immutable(String[20])
_HASHED_NAME: immutable(bytes32)
_HASHED_VERSION: immutable(bytes32)
_CACHED_CHAIN_ID: immutable(uint256)
_CACHED_DOMAIN_SEPARATOR: immutable(bytes32)


@deploy
def __init__(name_: String[50], version_: String[20]):
    _NAME = name_
    _VERSION = version_
    _HASHED_NAME = keccak256(name_)
    _HASHED_VERSION = keccak256(version_)
    _CACHED_CHAIN_ID = chain.id
    _CACHED_DOMAIN_SEPARATOR = keccak256(abi_encode(DOMAIN_TYPEHASH, _HASHED_NAME, _HASHED_VERSION, chain.id, self))


@internal
@view
def _domain_separator() -> bytes32:
    if chain.id == _CACHED_CHAIN_ID:
        return _CACHED_DOMAIN_SEPARATOR
    return keccak256(abi_encode(DOMAIN_TYPEHASH, _HASHED_NAME, _HASHED_VERSION, chain.id, self))


@internal
@view
def _hash_typed_data(struct_hash: bytes32) -> bytes32:
    """
    @dev The EIP-712 digest of a message whose `hashStruct` is `struct_hash`.
    """
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@external
@view
def domain_separator() -> bytes32:
    """
    @notice This contract's EIP-712 domain separator (changes with the chain id).
    """
    return self._domain_separator()


@external
@view
def eip712Domain() -> (bytes1, String[50], String[20], uint256, address, bytes32, DynArray[uint256, 1]):
    """
    @notice EIP-5267: the fields of this contract's EIP-712 domain, for wallets and front ends
            (ethers 6 / viem read it to build typed data).
    @return (fields 0x0f, name, version, chain id, this contract, salt 0 (unused), no extensions).
    """
    return (FIELDS, _NAME, _VERSION, chain.id, self, empty(bytes32), empty(DynArray[uint256, 1]))
