"""EIP-712 orders for `Matching.match_orders` and `Matching.match_option_orders`: hashing and
signing.

Both order types share the matching contract's domain (name "CrossMargin", version "1", the
chain, the matching contract's address; `Matching.eip712Domain()` publishes it). The digest is
built directly (typed-data hashing per EIP-712) so that signing thousands of orders for a
replay is fast; a test checks it against eth-account's `encode_typed_data` and the contract's
`order_digest`.
"""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Annotated

from eth_abi import encode
from eth_keys import keys
from eth_utils import keccak, to_canonical_address
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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


def domain_separator(chain_id: int, matching: str) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [DOMAIN_TYPEHASH, keccak(text=DOMAIN_NAME), keccak(text=DOMAIN_VERSION), chain_id, matching],
        )
    )


def order_digest(order: Order, chain_id: int, matching: str) -> bytes:
    """The 32-byte EIP-712 digest of `order` for the matching contract at `matching` on
    `chain_id`."""
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "uint256", "int256", "uint256", "uint256", "uint256"],
            [ORDER_TYPEHASH, order.account, order.market, order.size, order.limit_price, order.nonce, order.deadline],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, matching) + struct_hash)


def sign_order(order: Order, private_key: bytes, chain_id: int, matching: str) -> bytes:
    """65-byte (r, s, v) signature with v in {27, 28} and low s, as the matching contract
    requires of an EOA."""
    key = keys.PrivateKey(private_key)
    if key.public_key.to_canonical_address() != to_canonical_address(order.account):
        raise ValueError("private key does not belong to the order's account")
    sig = key.sign_msg_hash(order_digest(order, chain_id, matching))
    return sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])


def typed_data(order: Order, chain_id: int, matching: str) -> dict:
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
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id, "verifyingContract": matching},
        "message": {
            "account": order.account,
            "market": order.market,
            "size": order.size,
            "limit_price": order.limit_price,
            "nonce": order.nonce,
            "deadline": order.deadline,
        },
    }


# ---------------------------------------------------------------- quotes


class _QuoteModel(BaseModel):
    """One entry of a quotes file, as written: addresses and signatures hex, numbers as JSON
    integers (or decimal strings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: Annotated[str, Field(pattern="^0x[0-9a-fA-F]{40}$")]
    market: Annotated[int, Field(ge=0)]
    size: int
    limit_price: Annotated[int, Field(gt=0)]
    nonce: Annotated[int, Field(ge=0)]
    deadline: Annotated[int, Field(ge=0)]
    signature: Annotated[str, Field(pattern="^0x([0-9a-fA-F]{2})*$")]


_QUOTES = TypeAdapter(list[_QuoteModel])
ORDER_FIELDS = ("account", "market", "size", "limit_price", "nonce", "deadline")


@dataclass(frozen=True)
class Quote(Order):
    """A maker's signed `Order` that anyone may fill whole through `Matching.match_orders`
    (the maker's side), with its `signature`."""

    signature: bytes = b""

    def as_tuple(self) -> tuple:
        """The order alone, as `Matching.match_orders` takes it."""
        return (self.account, self.market, self.size, self.limit_price, self.nonce, self.deadline)

    def as_json(self) -> dict:
        return {**{k: v for k, v in zip(ORDER_FIELDS, self.as_tuple())}, "signature": "0x" + self.signature.hex()}


def load_quotes(path: Path) -> list[Quote]:
    """The quotes in the JSON file at `path` (a list of `Quote.as_json` objects). Raises
    ValueError with one line naming the file and the first problem."""
    try:
        entries = _QUOTES.validate_json(path.read_bytes())
    except OSError as e:
        raise ValueError(f"{path}: cannot read the quotes file ({e.strerror or e})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "file"
        raise ValueError(f"{path}: {where}: {err['msg']}") from None
    return [
        Quote(q.account, q.market, q.size, q.limit_price, q.nonce, q.deadline, bytes.fromhex(q.signature[2:]))
        for q in entries
    ]


def write_quotes(path: Path, quotes: list[Quote]) -> None:
    """Write `quotes` to `path` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([q.as_json() for q in quotes]))
    tmp.replace(path)


# ---------------------------------------------------------------- option orders

OPTION_ORDER_TYPE = (
    "OptionOrder(address account,uint256 series,int256 size,uint256 limit_price,uint256 nonce,uint256 deadline)"
)
OPTION_ORDER_TYPEHASH = keccak(text=OPTION_ORDER_TYPE)


@dataclass(frozen=True)
class OptionOrder:
    """A signed intent to trade `size` (WAD units of the underlying, > 0 buys) of option
    `series` at premium `limit_price` (WAD USD per unit) or better, until `deadline`, once per
    `nonce`: the `Matching.match_option_orders` struct."""

    account: str
    series: int
    size: int
    limit_price: int
    nonce: int
    deadline: int

    def as_tuple(self) -> tuple:
        return astuple(self)


def option_order_digest(order: OptionOrder, chain_id: int, matching: str) -> bytes:
    """The 32-byte EIP-712 digest of `order` for the matching contract at `matching` on
    `chain_id` (the same domain as perpetual and future orders)."""
    domain = domain_separator(chain_id, matching)
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "uint256", "int256", "uint256", "uint256", "uint256"],
            [
                OPTION_ORDER_TYPEHASH,
                order.account,
                order.series,
                order.size,
                order.limit_price,
                order.nonce,
                order.deadline,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain + struct_hash)


def sign_option_order(order: OptionOrder, private_key: bytes, chain_id: int, matching: str) -> bytes:
    """65-byte (r, s, v) signature (v in {27, 28}, low s) of an option order; ValueError if the
    key is not the order's account's."""
    key = keys.PrivateKey(private_key)
    if key.public_key.to_canonical_address() != to_canonical_address(order.account):
        raise ValueError("private key does not belong to the order's account")
    sig = key.sign_msg_hash(option_order_digest(order, chain_id, matching))
    return sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])
