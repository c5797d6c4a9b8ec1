# pragma version 0.4.3
# pragma evm-version cancun
# pragma optimize gas
# pragma nonreentrancy off
"""
@title Matching: signed orders for every instrument, settled against each other
@notice Verifies two EIP-712 orders (deadline, nonce, signature) and hands the matched trade to
        the instrument's contract: perpetuals and futures to the `MarginEngine`, options to the
        `OptionMarket` the engine has wired. Any sender may submit a pair; an order sent by its
        own account needs no signature. The maker's limit price is the execution price.
        - Signatures: an EOA's 65-byte (r, s, v) signature or, for an account with code (a Safe,
          an ERC-4337 account), whatever its ERC-1271 `isValidSignature` accepts.
        - Nonces: one space per account across all instruments, kept as bitmaps of 256 nonces
          per storage word (Permit2 `UnorderedNonce`), so a market maker's stream of orders
          pays for a fresh slot once per 256 orders.
        - The signing domain is discoverable through EIP-5267 `eip712Domain()`: name
          "CrossMargin", version "1", this chain, this contract.
@dev The engine and the option market accept trades only from this contract; margin, caps,
     price bands and the trade rule are theirs (`lib/trade_rules.vy`).
@custom:security Trusts the engine (immutable) and the option market the engine names. Guarantees
     that a trade reaches them only with both accounts' consent (signature, or the account is
     the sender), within both limit prices and deadlines, at most once per nonce.
@license MIT
"""

import lib.constants as constants
import lib.types as types
import lib.eip712 as eip712
import lib.signatures as signatures

initializes: eip712

exports: (
    eip712.eip712Domain,
    eip712.domain_separator,
    constants.__version__,
)


interface IEngine:
    def trade(maker: address, taker: address, market_id: uint256, size: int256, price: uint256): nonpayable
    def option_market() -> address: view


interface IOptionMarket:
    def trade(maker: address, taker: address, series_id: uint256, size: int256, price: uint256): nonpayable


ORDER_TYPEHASH: constant(bytes32) = keccak256(
    "Order(address account,uint256 market,int256 size,uint256 limit_price,uint256 nonce,uint256 deadline)"
)
OPTION_ORDER_TYPEHASH: constant(bytes32) = keccak256(
    "OptionOrder(address account,uint256 series,int256 size,uint256 limit_price,uint256 nonce,uint256 deadline)"
)

ENGINE: public(immutable(address))

# @dev account => word (nonce >> 8) => bit (nonce & 255) set when the nonce is used or cancelled.
nonce_bitmap: public(HashMap[address, HashMap[uint256, uint256]])


event OrderFilled:
    account: indexed(address)
    nonce: indexed(uint256)
    market: indexed(uint256)
    size: int256
    price: uint256


event OptionOrderFilled:
    account: indexed(address)
    nonce: indexed(uint256)
    series: indexed(uint256)
    size: int256
    price: uint256


event NoncesCancelled:
    account: indexed(address)
    word: indexed(uint256)
    mask: uint256


@deploy
def __init__(engine: address):
    """
    @param engine The MarginEngine; it must name this contract as its matching contract.
    """
    assert engine != empty(address), "matching: zero address"
    eip712.__init__("CrossMargin", "1")
    ENGINE = engine


@internal
def _use_nonce(account: address, nonce: uint256):
    word: uint256 = nonce >> 8
    bit: uint256 = 1 << (nonce & 255)
    bitmap: uint256 = self.nonce_bitmap[account][word]
    assert bitmap & bit == 0, "matching: nonce used"
    self.nonce_bitmap[account][word] = bitmap | bit


@internal
def _authorise(account: address, nonce: uint256, deadline: uint256, struct_hash: bytes32, signature: Bytes[constants.MAX_SIGNATURE_LENGTH]):
    """
    @dev Checks the deadline and the signature (unless the account sent the call), and consumes
         the nonce.
    """
    assert deadline >= block.timestamp, "matching: order expired"
    self._use_nonce(account, nonce)
    if msg.sender == account:
        return
    assert signatures._is_valid(account, eip712._hash_typed_data(struct_hash), signature), "matching: invalid signature"


@internal
@pure
def _check_pair(maker_account: address, taker_account: address, maker_size: int256, taker_size: int256, maker_limit: uint256, taker_limit: uint256):
    assert maker_size != 0 and maker_size == -taker_size, "matching: sizes do not match"
    assert maker_account != taker_account, "matching: self trade"
    if taker_size > 0:
        assert taker_limit >= maker_limit, "matching: price worse than limit"
    else:
        assert taker_limit <= maker_limit, "matching: price worse than limit"


@internal
@pure
def _order_hash(order: types.Order) -> bytes32:
    return keccak256(abi_encode(ORDER_TYPEHASH, order.account, order.market, order.size, order.limit_price, order.nonce, order.deadline))


@internal
@pure
def _option_order_hash(order: types.OptionOrder) -> bytes32:
    return keccak256(abi_encode(OPTION_ORDER_TYPEHASH, order.account, order.series, order.size, order.limit_price, order.nonce, order.deadline))


@external
@nonreentrant
def match_orders(maker: types.Order, maker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH], taker: types.Order, taker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH]):
    """
    @notice Settle two signed perpetual or future orders against each other, in full, at the
            maker's limit price (`MarginEngine.trade` then checks the market, the price band,
            both accounts' margin and the caps).
    @dev Reverts "matching: markets differ", "matching: sizes do not match" (sizes must be exact
         opposites), "matching: self trade", "matching: order expired", "matching: nonce used",
         "matching: invalid signature", "signature: bad length" / "malleable" / "bad v" /
         "invalid" (a malformed EOA signature), "matching: price worse than limit", and the
         engine's reverts ("engine: unknown market", "engine: market expired", "engine: price
         too far from index", "engine: below initial margin", ...).
    @param maker The resting order; its limit price (WAD USD) is the execution price.
    @param maker_signature EIP-712 signature of `maker` by `maker.account` (65-byte (r, s, v)
           for an EOA, anything its ERC-1271 check accepts for a contract; empty if the
           account sends the call).
    @param taker The opposite order.
    @param taker_signature Likewise for `taker`.
    """
    assert maker.market == taker.market, "matching: markets differ"
    self._check_pair(maker.account, taker.account, maker.size, taker.size, maker.limit_price, taker.limit_price)
    self._authorise(maker.account, maker.nonce, maker.deadline, self._order_hash(maker), maker_signature)
    self._authorise(taker.account, taker.nonce, taker.deadline, self._order_hash(taker), taker_signature)
    extcall IEngine(ENGINE).trade(maker.account, taker.account, maker.market, maker.size, maker.limit_price)
    log OrderFilled(account=maker.account, nonce=maker.nonce, market=maker.market, size=maker.size, price=maker.limit_price)
    log OrderFilled(account=taker.account, nonce=taker.nonce, market=maker.market, size=taker.size, price=maker.limit_price)


@external
@nonreentrant
def match_option_orders(maker: types.OptionOrder, maker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH], taker: types.OptionOrder, taker_signature: Bytes[constants.MAX_SIGNATURE_LENGTH]):
    """
    @notice Settle two signed option orders against each other, in full, at the maker's limit
            premium (`OptionMarket.trade` then checks the series, the band around the mark,
            both accounts' margin and the caps).
    @dev Reverts "matching: series differ", "matching: no option market" (the engine has none
         wired), and as `match_orders` otherwise, then the option market's reverts
         ("options: unknown series", "options: series expired", "options: stale vol", ...).
    @param maker The resting order; its limit price (premium per unit, WAD USD) is the price.
    @param maker_signature As in `match_orders`.
    @param taker The opposite order (size = -maker.size).
    @param taker_signature As in `match_orders`.
    """
    assert maker.series == taker.series, "matching: series differ"
    self._check_pair(maker.account, taker.account, maker.size, taker.size, maker.limit_price, taker.limit_price)
    market: address = staticcall IEngine(ENGINE).option_market()
    assert market != empty(address), "matching: no option market"
    self._authorise(maker.account, maker.nonce, maker.deadline, self._option_order_hash(maker), maker_signature)
    self._authorise(taker.account, taker.nonce, taker.deadline, self._option_order_hash(taker), taker_signature)
    extcall IOptionMarket(market).trade(maker.account, taker.account, maker.series, maker.size, maker.limit_price)
    log OptionOrderFilled(account=maker.account, nonce=maker.nonce, series=maker.series, size=maker.size, price=maker.limit_price)
    log OptionOrderFilled(account=taker.account, nonce=taker.nonce, series=maker.series, size=taker.size, price=maker.limit_price)


@external
def cancel_nonce(nonce: uint256):
    """
    @notice Invalidate one of the caller's order nonces (any instrument).
    @dev Reverts "matching: nonce used".
    """
    self._use_nonce(msg.sender, nonce)
    log NoncesCancelled(account=msg.sender, word=nonce >> 8, mask=1 << (nonce & 255))


@external
def cancel_nonces(word: uint256, mask: uint256):
    """
    @notice Invalidate every nonce `word * 256 + i` of the caller whose bit i is set in `mask`,
            in one transaction (Permit2 `invalidateUnorderedNonces`); already used ones stay used.
    """
    self.nonce_bitmap[msg.sender][word] |= mask
    log NoncesCancelled(account=msg.sender, word=word, mask=mask)


@external
@view
def nonce_used(account: address, nonce: uint256) -> bool:
    """
    @notice Whether `account` has used or cancelled `nonce`.
    """
    return self.nonce_bitmap[account][nonce >> 8] & (1 << (nonce & 255)) != 0


@external
@view
def order_digest(order: types.Order) -> bytes32:
    """
    @notice The EIP-712 digest an order's account signs for `match_orders`.
    """
    return eip712._hash_typed_data(self._order_hash(order))


@external
@view
def option_order_digest(order: types.OptionOrder) -> bytes32:
    """
    @notice The EIP-712 digest an option order's account signs for `match_option_orders`.
    """
    return eip712._hash_typed_data(self._option_order_hash(order))
