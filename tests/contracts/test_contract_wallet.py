"""Contract wallets (a Safe, an ERC-4337 account) trading through `Matching`: ERC-1271 signatures.

`contracts/mocks/MockContractWallet.vy` signs the way a Safe does with approved hashes: its owner
approves the EIP-712 digest on chain (`approve_digest`), and `isValidSignature` answers the magic
value 0x1626ba7e for that digest whatever the signature bytes. The wallet funds itself through
`call` (approve + deposit as the wallet). A third party (a relayer, the keeper) submits the pair.

Refusals: an unapproved or revoked digest, and accounts whose code answers anything but the
ERC-1271 magic word (reverts, empty or short return data, a wrong word, an echo of the call
data, endless loops) must never count as a signature. Those "wallets" are a few bytes of
runtime code each (below), set directly on fresh addresses.
"""

from __future__ import annotations

import boa
import pytest
from eth_keys import keys
from eth_utils import keccak

from keeper.chain.orders import OptionOrder, Order, option_order_digest, order_digest, sign_order
from tests.boa_protocol import WAD, OptionsKit, deployer, events, now, sign_option_order

ETH_PERP = 0
ETH = 0  # oracle price id and engine underlying of ETH
DAY = 86400
MAGIC = bytes.fromhex("1626ba7e")
_nonce = [7 * 10**9]


def next_nonce() -> int:
    _nonce[0] += 1
    return _nonce[0]


def encode_call(contract, fn: str, *args) -> bytes:
    """Calldata of `contract.fn(*args)` (titanoboa's ABI encoding of the function)."""
    return getattr(contract, fn).prepare_calldata(*args)


def new_wallet(p):
    """A contract wallet owned by a fresh EOA, with 100,000 USDC deposited by the wallet itself."""
    owner = p.new_user()
    wallet = deployer("MockContractWallet").deploy(owner.address)
    amount = 100_000 * 10**p.config.settlement_decimals
    p.usdc.mint(wallet.address, amount)
    with boa.env.prank(owner.address):
        wallet.call(p.usdc.address, encode_call(p.usdc, "approve", p.vault.address, amount))
        wallet.call(p.vault.address, encode_call(p.vault, "deposit", p.usdc.address, amount))
    return wallet, owner


def eoa(p, dollars: int = 100_000):
    user = p.new_user()
    p.deposit_usd(user, dollars)
    return user


def perp_order(p, account: str, size: int, price: int) -> Order:
    return Order(account, ETH_PERP, size, price, next_nonce(), now() + 3600)


def eoa_signed(p, user, size: int, price: int) -> tuple[tuple, bytes]:
    order = perp_order(p, user.address, size, price)
    return order.as_tuple(), sign_order(order, user.key, boa.env.evm.patch.chain_id, p.matching.address)


@pytest.fixture
def setup(protocol):
    p = protocol
    wallet, owner = new_wallet(p)
    relayer = boa.env.generate_address("relayer")
    return p, wallet, owner, eoa(p), relayer


# ---------------------------------------------------------------- the mock itself


def test_wallet_answers_erc1271_only_for_approved_digests(setup):
    p, wallet, owner, _, _ = setup
    digest = keccak(b"an order")
    assert wallet.owner() == owner.address
    assert wallet.isValidSignature(digest, b"") == b"\xff\xff\xff\xff"
    with boa.reverts("wallet: not owner"):
        wallet.approve_digest(digest)
    with boa.reverts("wallet: not owner"):
        wallet.call(p.usdc.address, b"")
    with boa.env.prank(owner.address):
        wallet.approve_digest(digest)
    assert wallet.isValidSignature(digest, b"") == MAGIC
    assert wallet.isValidSignature(digest, b"\x01" * 65) == MAGIC  # the bytes are ignored
    assert wallet.isValidSignature(keccak(b"another"), b"") == b"\xff\xff\xff\xff"
    # the wallet deposited as itself (through `call`)
    assert p.vault.cash(wallet.address) == 100_000 * WAD
    assert p.usdc.balanceOf(wallet.address) == 0


# ---------------------------------------------------------------- perpetuals


def test_contract_wallet_order_matched_by_a_third_party(setup):
    p, wallet, owner, trader, relayer = setup
    price = 2000 * WAD
    maker = perp_order(p, wallet.address, 3 * WAD, price)  # the wallet buys 3 ETH-PERP
    digest = p.matching.order_digest(maker.as_tuple())
    assert digest == order_digest(maker, boa.env.evm.patch.chain_id, p.matching.address)
    with boa.env.prank(owner.address):
        wallet.approve_digest(digest)
    taker, taker_sig = eoa_signed(p, trader, -3 * WAD, price)
    with boa.env.prank(relayer):
        p.matching.match_orders(maker.as_tuple(), b"", taker, taker_sig)
    fills = events(p.matching, "OrderFilled")
    assert [(f.account, f.nonce, f.size, f.price) for f in fills] == [
        (wallet.address, maker.nonce, 3 * WAD, price),
        (trader.address, taker[4], -3 * WAD, price),
    ]
    assert p.engine.positions(wallet.address, ETH_PERP).size == 3 * WAD
    assert p.engine.positions(trader.address, ETH_PERP).size == -3 * WAD
    assert p.engine.open_markets(wallet.address) == [ETH_PERP]
    summary = p.engine.margin_summary(wallet.address)
    assert summary.initial_margin == 3 * 2000 * WAD // 10  # ETH IM 10% of 6,000
    assert p.matching.nonce_used(wallet.address, maker.nonce)
    # the approval is not a standing permission: the same order cannot be filled twice
    taker2, taker2_sig = eoa_signed(p, trader, -3 * WAD, price)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(maker.as_tuple(), b"", taker2, taker2_sig)


def test_contract_wallet_as_taker_with_signature_bytes(setup):
    """The wallet may be either side; whatever bytes come with its order are passed to it."""
    p, wallet, owner, trader, relayer = setup
    maker, maker_sig = eoa_signed(p, trader, 2 * WAD, 2010 * WAD)
    taker = perp_order(p, wallet.address, -2 * WAD, 2000 * WAD)
    with boa.env.prank(owner.address):
        wallet.approve_digest(p.matching.order_digest(taker.as_tuple()))
    with boa.env.prank(relayer):
        p.matching.match_orders(maker, maker_sig, taker.as_tuple(), b"\x42" * 65)
    assert p.engine.positions(wallet.address, ETH_PERP).size == -2 * WAD
    assert p.engine.positions(wallet.address, ETH_PERP).entry_price == 2010 * WAD  # the maker's price


def test_unapproved_revoked_or_other_digest_is_refused(setup):
    p, wallet, owner, trader, relayer = setup
    maker = perp_order(p, wallet.address, WAD, 2000 * WAD)
    taker, taker_sig = eoa_signed(p, trader, -WAD, 2000 * WAD)
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_orders(maker.as_tuple(), b"", taker, taker_sig)
    # approved, then revoked before the match
    digest = p.matching.order_digest(maker.as_tuple())
    with boa.env.prank(owner.address):
        wallet.approve_digest(digest)
        wallet.revoke_digest(digest)
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_orders(maker.as_tuple(), b"", taker, taker_sig)
    # an approval of one order does not cover a bigger one with the same nonce
    with boa.env.prank(owner.address):
        wallet.approve_digest(digest)
    bigger = Order(maker.account, maker.market, 2 * WAD, maker.limit_price, maker.nonce, maker.deadline)
    taker2, taker2_sig = eoa_signed(p, trader, -2 * WAD, 2000 * WAD)
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_orders(bigger.as_tuple(), b"", taker2, taker2_sig)
    # a digest for another verifying contract (another chain's or another deployment's domain)
    foreign = order_digest(maker, boa.env.evm.patch.chain_id + 1, p.matching.address)
    other = perp_order(p, wallet.address, WAD, 2000 * WAD)
    with boa.env.prank(owner.address):
        wallet.approve_digest(order_digest(other, boa.env.evm.patch.chain_id, p.vault.address))
        wallet.approve_digest(foreign)
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_orders(other.as_tuple(), b"", taker, taker_sig)
    # nothing was traded or consumed
    assert p.engine.positions(wallet.address, ETH_PERP).size == 0
    assert not p.matching.nonce_used(wallet.address, maker.nonce)
    assert not p.matching.nonce_used(trader.address, taker[4])
    # the original approval still fills
    with boa.env.prank(relayer):
        p.matching.match_orders(maker.as_tuple(), b"", taker, taker_sig)
    assert p.engine.positions(wallet.address, ETH_PERP).size == WAD


def test_an_eoa_signature_for_a_contract_account_is_refused(setup):
    """An account with code is asked through ERC-1271 only: its owner's ECDSA signature of the
    digest does not count (the owner key is not the account)."""
    p, wallet, owner, trader, relayer = setup
    maker = perp_order(p, wallet.address, WAD, 2000 * WAD)
    sig = keys.PrivateKey(owner.key).sign_msg_hash(p.matching.order_digest(maker.as_tuple()))
    owner_sig = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])
    taker, taker_sig = eoa_signed(p, trader, -WAD, 2000 * WAD)
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_orders(maker.as_tuple(), owner_sig, taker, taker_sig)


def test_wallet_sending_its_own_order_needs_no_signature(setup):
    """`msg.sender == account`: the wallet submits the pair itself through `call`."""
    p, wallet, owner, trader, _ = setup
    maker = perp_order(p, wallet.address, WAD, 2000 * WAD)
    taker, taker_sig = eoa_signed(p, trader, -WAD, 2000 * WAD)
    data = encode_call(p.matching, "match_orders", maker.as_tuple(), b"", taker, taker_sig)
    with boa.env.prank(owner.address):
        wallet.call(p.matching.address, data)
    assert p.engine.positions(wallet.address, ETH_PERP).size == WAD
    assert not wallet.approved(p.matching.order_digest(maker.as_tuple()))


# ---------------------------------------------------------------- accounts that answer garbage

PUSH0, MSTORE, RETURN, REVERT = "5f", "52", "f3", "fd"


def _return_word(word: bytes, size: int = 32) -> bytes:
    """Runtime code: return `size` bytes of memory holding the 32-byte `word` at 0."""
    assert len(word) == 32 and size <= 0xFF
    return bytes.fromhex("7f" + word.hex() + PUSH0 + MSTORE + f"60{size:02x}" + PUSH0 + RETURN)


GARBAGE = {
    # an empty revert, and a revert that echoes the call data (a revert carries no answer)
    "revert": bytes.fromhex(PUSH0 + PUSH0 + REVERT),
    "revert-with-data": bytes.fromhex("36" + PUSH0 + PUSH0 + "37" + "36" + PUSH0 + REVERT),
    # success without an answer (a contract with a plain fallback), STOP, and 4 bytes only
    "empty-return": bytes.fromhex(PUSH0 + PUSH0 + RETURN),
    "stop": bytes.fromhex("00"),
    "short-return": _return_word(MAGIC + bytes(28), size=4),
    # the wrong word, the magic as a right-aligned number (a bytes4 mis-encoded as uint)
    "wrong-magic": _return_word(bytes.fromhex("1626ba7f") + bytes(28)),
    "invalid-value": _return_word(b"\xff" * 4 + bytes(28)),
    "right-aligned-magic": _return_word(bytes(28) + MAGIC),
    "bool-true": _return_word((1).to_bytes(32, "big")),
    # burns all gas it is given
    "endless-loop": bytes.fromhex("5b" + PUSH0 + "56"),
}

# Answers that OpenZeppelin's `SignatureChecker.isValidERC1271SignatureNow` refuses (it requires
# the whole first word to be `bytes32(0x1626ba7e)`), but `lib/signatures.vy` accepts because it
# compares only the first 4 of the 32 returned bytes:
LAX = {
    # a fallback that returns its call data: the data starts with the selector of
    # isValidSignature(bytes32,bytes), which IS the magic value, so such a contract "signs" any
    # digest with any bytes, and anyone can trade for it
    "echo-calldata": bytes.fromhex("36" + PUSH0 + PUSH0 + "37" + "36" + PUSH0 + RETURN),
    # the magic followed by non-zero bytes (not a valid ABI encoding of bytes4)
    "dirty-magic": _return_word(MAGIC + b"\x01" * 28),
}


def _garbage_account(p, code: bytes) -> str:
    """A fresh address with `code` and 100,000 USDC of margin (deposited for it by a friend)."""
    account = boa.env.generate_address()
    boa.env.set_code(account, code)
    amount = 100_000 * 10**p.config.settlement_decimals
    friend = p.new_user()
    p.usdc.mint(friend.address, amount)
    with boa.env.prank(friend.address):
        p.usdc.approve(p.vault.address, amount)
        p.vault.deposit_for(p.usdc.address, amount, account)
    return account


def _try_match_for(p, account: str, trader, relayer) -> None:
    maker = perp_order(p, account, WAD, 2000 * WAD)
    taker, taker_sig = eoa_signed(p, trader, -WAD, 2000 * WAD)
    with boa.env.prank(relayer):
        p.matching.match_orders(maker.as_tuple(), b"\x01" * 65, taker, taker_sig, gas=5_000_000)


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_contract_answering_garbage_is_refused(setup, kind):
    p, _, _, trader, relayer = setup
    account = _garbage_account(p, GARBAGE[kind])
    # an account that burns all gas leaves the transaction 1/64 of it: out of gas or refused,
    # never filled
    expected = "matching: invalid signature" if kind != "endless-loop" else None
    with boa.reverts(expected) if expected else pytest.raises(boa.BoaError):
        _try_match_for(p, account, trader, relayer)
    assert p.engine.positions(account, ETH_PERP).size == 0


@pytest.mark.parametrize("kind", sorted(LAX))
def test_contract_answering_magic_prefix_is_refused(setup, kind):
    """Only the whole word bytes32(0x1626ba7e) counts (OpenZeppelin's SignatureChecker): the
    call data of `isValidSignature` itself starts with the magic value, so a contract whose
    fallback echoes it, or that appends bytes to it, must not sign for anyone."""
    p, _, _, trader, relayer = setup
    account = _garbage_account(p, LAX[kind])
    with boa.reverts("matching: invalid signature"):
        _try_match_for(p, account, trader, relayer)


# ---------------------------------------------------------------- options


def test_contract_wallet_option_order(protocol):
    p = protocol
    kit = OptionsKit.deploy(p)
    expiry = now() + 30 * DAY
    series = kit.list(ETH, 2100 * WAD, expiry, True)
    kit.set_vol(ETH, expiry, 8 * WAD // 10, -WAD // 5)
    mark = kit.market.series_states()[series].mark
    wallet, owner = new_wallet(p)
    writer = eoa(p)
    # the wallet buys 2 calls at the mark from an EOA
    maker = OptionOrder(wallet.address, series, 2 * WAD, mark, next_nonce(), now() + 3600)
    digest = p.matching.option_order_digest(maker.as_tuple())
    assert digest == option_order_digest(maker, boa.env.evm.patch.chain_id, p.matching.address)
    assert digest != p.matching.order_digest(maker.as_tuple())  # another type hash
    taker = (writer.address, series, -2 * WAD, mark, next_nonce(), now() + 3600)
    taker_sig = sign_option_order(taker, writer.key, boa.env.evm.patch.chain_id, p.matching.address)
    relayer = boa.env.generate_address("relayer")
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_option_orders(maker.as_tuple(), b"", taker, taker_sig)
    # a perpetual approval of the same fields does not sign the option order
    with boa.env.prank(owner.address):
        wallet.approve_digest(p.matching.order_digest(maker.as_tuple()))
    with boa.env.prank(relayer), boa.reverts("matching: invalid signature"):
        p.matching.match_option_orders(maker.as_tuple(), b"", taker, taker_sig)
    with boa.env.prank(owner.address):
        wallet.approve_digest(digest)
    with boa.env.prank(relayer):
        p.matching.match_option_orders(maker.as_tuple(), b"", taker, taker_sig)
    fills = events(p.matching, "OptionOrderFilled")
    assert [(f.account, f.series, f.size) for f in fills] == [
        (wallet.address, series, 2 * WAD),
        (writer.address, series, -2 * WAD),
    ]
    assert tuple(kit.market.positions(wallet.address, series)) == (2 * WAD, mark)
    assert tuple(kit.market.positions(writer.address, series)) == (-2 * WAD, mark)
