"""EIP-712 signed inputs for `VolFeed.submit_vol` and `HealthAttestor.submit_attestation`.

Each message is built as EIP-712 typed data and hashed and signed with eth-account
(`encode_typed_data`); `sign_*` return the message as the tuple the contract function takes and
the signatures in the order the contracts require: one per signer, by strictly ascending signer
address, each 65 bytes (r, s, v) with v in {27, 28} and low s.

Units: vols, skews, prices and margins are WAD integers (1e18 = 1.0, or 1 USD); times are unix
seconds. `prices` are the oracle's `index_prices()`, one per price id, in id order.
An attestation's `scenario_params` is the 32-byte hash of the portfolio-margin parameters it was
computed with (keeper.risk.scenarios.scenario_params_hash); the attestor accepts only its
governed `scenario_params_hash`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

VOL_DOMAIN_NAME = "CrossMargin VolFeed"
ATTESTOR_DOMAIN_NAME = "CrossMargin HealthAttestor"
DOMAIN_VERSION = "1"
MAX_SIGNERS = 16

_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_VOL_UPDATE_FIELDS = [
    {"name": "underlying", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
    {"name": "atm_vol", "type": "uint256"},
    {"name": "skew", "type": "int256"},
    {"name": "timestamp", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_ATTESTATION_FIELDS = [
    {"name": "account", "type": "address"},
    {"name": "position_version", "type": "uint256"},
    {"name": "prices", "type": "uint256[]"},
    {"name": "initial_margin", "type": "uint256"},
    {"name": "maintenance_margin", "type": "uint256"},
    {"name": "issued_at", "type": "uint256"},
    {"name": "valid_until", "type": "uint256"},
    {"name": "scenario_params", "type": "bytes32"},
]


@dataclass(frozen=True)
class VolUpdate:
    """At-the-money implied vol (WAD, annualised) and skew (signed WAD vol change per unit of
    ln(K/F)) of `underlying` (oracle price id) for `expiry`, observed at `timestamp`, to be
    submitted by `deadline`."""

    underlying: int
    expiry: int
    atm_vol: int
    skew: int
    timestamp: int
    deadline: int

    def as_tuple(self) -> tuple:
        return astuple(self)


@dataclass(frozen=True)
class HealthAttestation:
    """Portfolio initial and maintenance margin (WAD USD) of `account` at its
    `position_version`, computed at index `prices` (WAD, by price id) with the scenario
    parameters hashing to `scenario_params` (32 bytes), valid from `issued_at` until
    `valid_until`. Raises ValueError if `scenario_params` is not 32 bytes."""

    account: str
    position_version: int
    prices: tuple[int, ...]
    initial_margin: int
    maintenance_margin: int
    issued_at: int
    valid_until: int
    scenario_params: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.scenario_params, (bytes, bytearray)) or len(self.scenario_params) != 32:
            raise ValueError(f"scenario_params: must be a 32-byte hash, got {self.scenario_params!r}")

    def as_tuple(self) -> tuple:
        return (
            self.account,
            self.position_version,
            list(self.prices),
            self.initial_margin,
            self.maintenance_margin,
            self.issued_at,
            self.valid_until,
            bytes(self.scenario_params),
        )


def _domain(name: str, chain_id: int, contract: str) -> dict:
    return {
        "name": name,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(contract),
    }


def vol_update_typed_data(update: VolUpdate, chain_id: int, feed: str) -> dict:
    """`update` as EIP-712 typed data for the VolFeed at `feed` on `chain_id`."""
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, "VolUpdate": _VOL_UPDATE_FIELDS},
        "primaryType": "VolUpdate",
        "domain": _domain(VOL_DOMAIN_NAME, chain_id, feed),
        "message": {
            "underlying": update.underlying,
            "expiry": update.expiry,
            "atm_vol": update.atm_vol,
            "skew": update.skew,
            "timestamp": update.timestamp,
            "deadline": update.deadline,
        },
    }


def attestation_typed_data(att: HealthAttestation, chain_id: int, attestor: str) -> dict:
    """`att` as EIP-712 typed data for the HealthAttestor at `attestor` on `chain_id`."""
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, "HealthAttestation": _ATTESTATION_FIELDS},
        "primaryType": "HealthAttestation",
        "domain": _domain(ATTESTOR_DOMAIN_NAME, chain_id, attestor),
        "message": {
            "account": to_checksum_address(att.account),
            "position_version": att.position_version,
            "prices": list(att.prices),
            "initial_margin": att.initial_margin,
            "maintenance_margin": att.maintenance_margin,
            "issued_at": att.issued_at,
            "valid_until": att.valid_until,
            "scenario_params": bytes(att.scenario_params),
        },
    }


def typed_data_digest(typed: dict) -> bytes:
    """The 32-byte EIP-712 digest keccak256(0x19 0x01 || domainSeparator || hashStruct)."""
    signable = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_typed_data(typed: dict, private_keys: Iterable[bytes | str]) -> list[bytes]:
    """Sign `typed` with each key; signatures sorted by strictly ascending signer address.

    Raises ValueError for no key, more than 16 keys, or two keys of the same signer.
    """
    accounts = [Account.from_key(k) for k in private_keys]
    if not accounts:
        raise ValueError("no signing key given")
    if len(accounts) > MAX_SIGNERS:
        raise ValueError(f"at most {MAX_SIGNERS} signers, got {len(accounts)}")
    addresses = [int(a.address, 16) for a in accounts]
    if len(set(addresses)) != len(addresses):
        raise ValueError("the same signer appears twice")
    signable = encode_typed_data(full_message=typed)
    signed = sorted(accounts, key=lambda a: int(a.address, 16))
    # eth-account signs with low s and v in {27, 28}, the form the contracts accept
    return [bytes(a.sign_message(signable).signature) for a in signed]


def sign_vol_update(
    update: VolUpdate, private_keys: Sequence[bytes | str], chain_id: int, feed: str
) -> tuple[tuple, list[bytes]]:
    """(update tuple, signatures): the arguments of `VolFeed.submit_vol`."""
    return update.as_tuple(), sign_typed_data(vol_update_typed_data(update, chain_id, feed), private_keys)


def sign_attestation(
    att: HealthAttestation, private_keys: Sequence[bytes | str], chain_id: int, attestor: str
) -> tuple[tuple, list[bytes]]:
    """(attestation tuple, signatures): the arguments of `HealthAttestor.submit_attestation`."""
    return att.as_tuple(), sign_typed_data(attestation_typed_data(att, chain_id, attestor), private_keys)
