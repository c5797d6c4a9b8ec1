"""EIP-712 orders for `MarginEngine.match_orders`: hashing and signing.

The digest is built directly (typed-data hashing per EIP-712) so that signing thousands of
orders for a replay is fast; a test checks it against eth-account's `encode_typed_data` and the
contract's `order_digest`.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from eth_abi import encode
from eth_keys import keys
from eth_utils import keccak, to_canonical_address

ORDER_TYPE = "Order(address account,uint256 market,int256 size,uint256 limit_price,uint256 nonce,uint256 deadline)"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
ORDER_TYPEHASH = keccak(text=ORDER_TYPE)
DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)
DOMAIN_NAME = "CrossMargin"
DOMAIN_VERSION = "1"


@dataclass(frozen=True)
class Order:
    """A signed intent to trade `size` (WAD base units, > 0 buys) of `market` at `limit_price`
    (WAD USD) or better, valid until `deadline` (unix seconds), once per `nonce`."""

    account: str
    market: int
    size: int
    limit_price: int
    nonce: int
    deadline: int

    def as_tuple(self) -> tuple:
        return astuple(self)


def domain_separator(chain_id: int, engine: str) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [DOMAIN_TYPEHASH, keccak(text=DOMAIN_NAME), keccak(text=DOMAIN_VERSION), chain_id, engine],
        )
    )


def order_digest(order: Order, chain_id: int, engine: str) -> bytes:
    """The 32-byte EIP-712 digest of `order` for the engine at `engine` on `chain_id`."""
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "uint256", "int256", "uint256", "uint256", "uint256"],
            [ORDER_TYPEHASH, order.account, order.market, order.size, order.limit_price, order.nonce, order.deadline],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, engine) + struct_hash)


def sign_order(order: Order, private_key: bytes, chain_id: int, engine: str) -> bytes:
    """65-byte (r, s, v) signature with v in {27, 28} and low s, as the engine requires."""
    key = keys.PrivateKey(private_key)
    if key.public_key.to_canonical_address() != to_canonical_address(order.account):
        raise ValueError("private key does not belong to the order's account")
    sig = key.sign_msg_hash(order_digest(order, chain_id, engine))
    return sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])


def typed_data(order: Order, chain_id: int, engine: str) -> dict:
    """The order as EIP-712 typed data (for wallets and eth-account)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Order": [
                {"name": "account", "type": "address"},
                {"name": "market", "type": "uint256"},
                {"name": "size", "type": "int256"},
                {"name": "limit_price", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Order",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id, "verifyingContract": engine},
        "message": {
            "account": order.account,
            "market": order.market,
            "size": order.size,
            "limit_price": order.limit_price,
            "nonce": order.nonce,
            "deadline": order.deadline,
        },
    }


# ---------------------------------------------------------------- option orders (OptionMarket)

OPTION_ORDER_TYPE = (
    "OptionOrder(address account,uint256 series,int256 size,uint256 limit_price,uint256 nonce,uint256 deadline)"
)
OPTION_ORDER_TYPEHASH = keccak(text=OPTION_ORDER_TYPE)
OPTIONS_DOMAIN_NAME = "CrossMargin Options"


@dataclass(frozen=True)
class OptionOrder:
    """A signed intent to trade `size` (WAD units of the underlying, > 0 buys) of option
    `series` at premium `limit_price` (WAD USD per unit) or better, until `deadline`, once per
    `nonce`: the `OptionMarket.match_orders` struct."""

    account: str
    series: int
    size: int
    limit_price: int
    nonce: int
    deadline: int

    def as_tuple(self) -> tuple:
        return astuple(self)


def option_order_digest(order: OptionOrder, chain_id: int, market: str) -> bytes:
    """The 32-byte EIP-712 digest of `order` for the OptionMarket at `market` on `chain_id`
    (domain "CrossMargin Options", version "1")."""
    domain = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [DOMAIN_TYPEHASH, keccak(text=OPTIONS_DOMAIN_NAME), keccak(text=DOMAIN_VERSION), chain_id, market],
        )
    )
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "uint256", "int256", "uint256", "uint256", "uint256"],
            [OPTION_ORDER_TYPEHASH, order.account, order.series, order.size, order.limit_price, order.nonce,
             order.deadline],
        )
    )
    return keccak(b"\x19\x01" + domain + struct_hash)


def sign_option_order(order: OptionOrder, private_key: bytes, chain_id: int, market: str) -> bytes:
    """65-byte (r, s, v) signature (v in {27, 28}, low s) of an option order; ValueError if the
    key is not the order's account's."""
    key = keys.PrivateKey(private_key)
    if key.public_key.to_canonical_address() != to_canonical_address(order.account):
        raise ValueError("private key does not belong to the order's account")
    sig = key.sign_msg_hash(option_order_digest(order, chain_id, market))
    return sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])

