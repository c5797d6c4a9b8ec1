"""MarginEngine trading: match_orders, EIP-712 signatures, nonces, limits, margin checks."""

from __future__ import annotations

import boa
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak

from keeper.chain.orders import Order, domain_separator, order_digest, sign_order, typed_data
from tests.boa_protocol import WAD, events, now

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
_nonce = [10**9]


def chain_id() -> int:
    return boa.env.evm.patch.chain_id


def make(p, user, market, size, price, *, nonce=None, deadline=None, key=None):
    """An order of `user` signed by `key` (default: the user's own key)."""
    if nonce is None:
        _nonce[0] += 1
        nonce = _nonce[0]
    order = Order(user.address, market, size, price, nonce, now() + 3600 if deadline is None else deadline)
    digest = order_digest(order, chain_id(), p.matching.address)
    sig = keys.PrivateKey(key or user.key).sign_msg_hash(digest)
    return order.as_tuple(), sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])


@pytest.fixture
def ab(protocol):
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 100_000)
    p.deposit_usd(b, 100_000)
    return p, a, b


def pos(p, user, market):
    x = p.engine.positions(user.address, market)
    return (x.size, x.entry_price, x.funding_index)


# ------------------------------------------------------------------ happy path


def test_match_orders_happy_path(ab):
    p, a, b = ab
    e = p.engine
    maker, msig = make(p, a, ETH_PERP, 2 * WAD, 2010 * WAD)
    taker, tsig = make(p, b, ETH_PERP, -2 * WAD, 2005 * WAD)  # seller willing to go lower
    relayer = p.new_user().address
    with boa.env.prank(relayer):
        p.matching.match_orders(maker, msig, taker, tsig)
    fills = events(e, "OrderFilled")
    assert [(f.account, f.nonce, f.market, f.size, f.price) for f in fills] == [
        (a.address, maker[4], ETH_PERP, 2 * WAD, 2010 * WAD),
        (b.address, taker[4], ETH_PERP, -2 * WAD, 2010 * WAD),
    ]
    changes = events(e, "PositionChanged")
    assert [(c.account, c.market, c.size, c.entry_price, c.realized_pnl) for c in changes] == [
        (a.address, ETH_PERP, 2 * WAD, 2010 * WAD, 0),
        (b.address, ETH_PERP, -2 * WAD, 2010 * WAD, 0),
    ]
    # premium 10/2000 = 0.5%, smoothing 10% -> rate 0.05% per 8h
    funding = events(e, "FundingUpdated")
    assert (funding[-1].market, funding[-1].funding_rate) == (ETH_PERP, 5 * 10**14)
    assert pos(p, a, ETH_PERP) == (2 * WAD, 2010 * WAD, 0)
    assert pos(p, b, ETH_PERP) == (-2 * WAD, 2010 * WAD, 0)
    assert e.open_markets(a.address) == [ETH_PERP]
    assert e.open_markets(b.address) == [ETH_PERP]
    assert p.matching.nonce_used(a.address, maker[4]) and p.matching.nonce_used(b.address, taker[4])
    # no cash moves on opening; the trade price vs index shows up in equity
    assert p.vault.cash(a.address) == 100_000 * WAD
    assert p.equity(a.address) == 100_000 * WAD - 20 * WAD
    assert p.equity(b.address) == 100_000 * WAD + 20 * WAD


def test_taker_buys_from_maker_and_close_realizes_pnl(ab):
    p, a, b = ab
    e, v = p.engine, p.vault
    maker, msig = make(p, b, ETH_FUT, -3 * WAD, 1990 * WAD)  # b offers 3 at 1990
    taker, tsig = make(p, a, ETH_FUT, 3 * WAD, 1995 * WAD)
    p.matching.match_orders(maker, msig, taker, tsig)
    fills = events(e, "OrderFilled")
    assert [(f.account, f.size, f.price) for f in fills] == [
        (b.address, -3 * WAD, 1990 * WAD),
        (a.address, 3 * WAD, 1990 * WAD),
    ]
    # futures have no funding rate
    assert e.markets(ETH_FUT).funding_rate == 0
    p.set_price("ETH", 2021.5)
    # a closes at 2021.5: realized 3 * 31.5 = 94.5 exactly
    p.trade(b, a, ETH_FUT, 3 * WAD, 20215 * WAD // 10)
    changes = events(e, "PositionChanged")
    assert [(c.account, c.size, c.realized_pnl) for c in changes] == [
        (b.address, 0, -945 * WAD // 10),
        (a.address, 0, 945 * WAD // 10),
    ]
    cash = events(e, "CashSettled")
    assert sorted((c.account, c.delta) for c in cash) == sorted(
        [(b.address, -945 * WAD // 10), (a.address, 945 * WAD // 10)]
    )
    assert v.cash(a.address) == 100_000 * WAD + 945 * WAD // 10
    assert v.cash(b.address) == 100_000 * WAD - 945 * WAD // 10
    assert pos(p, a, ETH_FUT) == (0, 0, 0)
    assert e.open_markets(a.address) == [] and e.open_markets(b.address) == []


def test_flip_realizes_whole_position(ab):
    p, a, b = ab
    v = p.vault
    p.trade(a, b, ETH_PERP, 2 * WAD, 2000 * WAD)
    p.set_price("ETH", 2050)
    p.trade(b, a, ETH_PERP, 5 * WAD, 2050 * WAD)  # a sells 5: long 2 -> short 3
    assert pos(p, a, ETH_PERP)[:2] == (-3 * WAD, 2050 * WAD)
    assert pos(p, b, ETH_PERP)[:2] == (3 * WAD, 2050 * WAD)
    # realized 2 * 50 for a, minus funding accrued over 0 seconds (none)
    assert v.cash(a.address) == 100_000 * WAD + 100 * WAD
    assert v.cash(b.address) == 100_000 * WAD - 100 * WAD


def test_partial_increase_resets_entry_at_fill_price(ab):
    p, a, b = ab
    v = p.vault
    p.trade(a, b, BTC_PERP, WAD, 30000 * WAD)
    p.set_price("BTC", 31000)
    p.trade(a, b, BTC_PERP, WAD // 2, 31000 * WAD)
    # realize-at-every-fill: the old position's PnL (1 * 1000) becomes cash, entry resets
    assert pos(p, a, BTC_PERP)[:2] == (3 * WAD // 2, 31000 * WAD)
    assert v.cash(a.address) == 101_000 * WAD
    assert v.cash(b.address) == 99_000 * WAD


# ------------------------------------------------------------------ argument checks


def test_markets_differ(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, BTC_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: markets differ"):
        p.matching.match_orders(m, ms, t, ts)


@pytest.mark.parametrize("sizes", [(WAD, -2 * WAD), (WAD, WAD), (0, 0), (-WAD, -WAD)])
def test_sizes_do_not_match(ab, sizes):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, sizes[0], 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, sizes[1], 2000 * WAD)
    with boa.reverts("matching: sizes do not match"):
        p.matching.match_orders(m, ms, t, ts)


def test_self_trade(ab):
    p, a, _ = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, a, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: self trade"):
        p.matching.match_orders(m, ms, t, ts)


def test_unknown_market(ab):
    p, a, b = ab
    m, ms = make(p, a, 4, WAD, 2000 * WAD)
    t, ts = make(p, b, 4, -WAD, 2000 * WAD)
    with boa.reverts("engine: unknown market"):
        p.matching.match_orders(m, ms, t, ts)


def test_order_expired(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, deadline=now() - 1)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: order expired"):
        p.matching.match_orders(m, ms, t, ts)
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD, deadline=now() - 1)
    with boa.reverts("matching: order expired"):
        p.matching.match_orders(m, ms, t, ts)
    # a deadline equal to the block time is still valid
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, deadline=now())
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD, deadline=now())
    p.matching.match_orders(m, ms, t, ts)
    assert pos(p, a, ETH_PERP)[0] == WAD


def test_nonce_replay(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    p.matching.match_orders(m, ms, t, ts)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m, ms, t, ts)
    # the used maker order with a fresh taker is refused too
    t2, ts2 = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m, ms, t2, ts2)
    # and a fresh maker with the used taker
    m2, ms2 = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m2, ms2, t, ts)
    assert pos(p, a, ETH_PERP)[0] == WAD
    # the same nonce is independent per account
    m3, ms3 = make(p, b, ETH_PERP, WAD, 2000 * WAD, nonce=m[4])
    t3, ts3 = make(p, a, ETH_PERP, -WAD, 2000 * WAD, nonce=t[4])
    p.matching.match_orders(m3, ms3, t3, ts3)
    assert pos(p, a, ETH_PERP)[0] == 0


def test_failed_match_does_not_consume_nonce(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2001 * WAD)  # seller wants more than the bid
    with boa.reverts("matching: price worse than limit"):
        p.matching.match_orders(m, ms, t, ts)
    assert not p.matching.nonce_used(a.address, m[4])
    assert not p.matching.nonce_used(b.address, t[4])


def test_cancel_nonce(ab):
    p, a, b = ab
    with boa.env.prank(a.address):
        p.matching.cancel_nonce(777)
        (ev,) = events(p.matching, "NoncesCancelled")
        assert (ev.account, ev.word, ev.mask) == (a.address, 777 >> 8, 1 << (777 & 255))
        with boa.reverts("matching: nonce used"):
            p.matching.cancel_nonce(777)
    assert p.matching.nonce_used(a.address, 777)
    assert not p.matching.nonce_used(b.address, 777)
    assert not p.matching.nonce_used(a.address, 776) and not p.matching.nonce_used(a.address, 778)
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, nonce=777)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m, ms, t, ts)
    # cancelling an already filled order's nonce fails
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    p.matching.match_orders(m, ms, t, ts)
    with boa.env.prank(a.address):
        with boa.reverts("matching: nonce used"):
            p.matching.cancel_nonce(m[4])


# ------------------------------------------------------------------ signatures


def test_invalid_signature_other_key(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, key=b.key)  # a's order, b's signature
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(m, ms, t, ts)
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD, key=a.key)
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(m, ms, t, ts)


def test_invalid_signature_tampered_order(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    tampered_m = (m[0], m[1], 2 * WAD) + m[3:]
    tampered_t = (t[0], t[1], -2 * WAD) + t[3:]
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(tampered_m, ms, tampered_t, ts)
    # signed for another engine (domain): invalid here
    order = Order(*m[:4], m[4] + 1, m[5])
    foreign = sign_order(order, a.key, chain_id(), p.vault.address)
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(order.as_tuple(), foreign, t, ts)
    # signed for another chain id
    foreign = sign_order(order, a.key, chain_id() + 1, p.matching.address)
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(order.as_tuple(), foreign, t, ts)


def test_malleable_signature_rejected(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    r = int.from_bytes(ms[:32], "big")
    s = int.from_bytes(ms[32:64], "big")
    v = ms[64]
    s_twin = SECP256K1_N - s
    v_twin = 55 - v  # 27 <-> 28
    twin = r.to_bytes(32, "big") + s_twin.to_bytes(32, "big") + bytes([v_twin])
    # the twin really is a valid ECDSA signature of the same digest by the same key
    digest = order_digest(Order(*m), chain_id(), p.matching.address)
    recovered = keys.Signature(vrs=(v_twin - 27, r, s_twin)).recover_public_key_from_msg_hash(digest)
    assert recovered.to_checksum_address() == a.address
    with boa.reverts("signature: malleable"):
        p.matching.match_orders(m, twin, t, ts)
    # the low-s original works
    p.matching.match_orders(m, ms, t, ts)
    assert pos(p, a, ETH_PERP)[0] == WAD


def test_bad_signature_length_and_v(ab):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    for bad in (ms[:64], b"", ms[:1]):
        with boa.reverts("signature: bad length"):
            p.matching.match_orders(m, bad, t, ts)
    for v in (0, 1, 29, 255):
        with boa.reverts("signature: bad v"):
            p.matching.match_orders(m, ms[:64] + bytes([v]), t, ts)
    with boa.reverts("signature: bad length"):
        p.matching.match_orders(m, ms, t, ts[:64])


def test_self_submitted_order_needs_no_signature(ab):
    p, a, b = ab
    m, _ = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    # anyone else must bring a's signature
    with boa.reverts("signature: bad length"):
        p.matching.match_orders(m, b"", t, ts)
    with boa.env.prank(a.address):
        p.matching.match_orders(m, b"", t, ts)
    assert pos(p, a, ETH_PERP)[0] == WAD
    assert p.matching.nonce_used(a.address, m[4])
    # as taker too, and a junk signature is ignored for the sender's own order
    m2, ms2 = make(p, b, ETH_PERP, 2 * WAD, 2000 * WAD)
    t2, _ = make(p, a, ETH_PERP, -2 * WAD, 2000 * WAD)
    with boa.env.prank(a.address):
        p.matching.match_orders(m2, ms2, t2, b"\x01" * 65)
    assert pos(p, a, ETH_PERP)[0] == -WAD
    assert pos(p, b, ETH_PERP)[0] == WAD


def test_order_digest_matches_keeper_and_eth_account(protocol):
    p = protocol
    user = Account.create()
    for size in (3 * WAD + 1, -(7 * WAD) - 5):
        order = Order(user.address, ETH_FUT, size, 1234_567 * 10**15, 42, 1_900_000_000)
        ours = order_digest(order, chain_id(), p.matching.address)
        signable = encode_typed_data(full_message=typed_data(order, chain_id(), p.matching.address))
        reference = keccak(b"\x19" + signable.version + signable.header + signable.body)
        assert p.matching.order_digest(order.as_tuple()) == ours == reference
        assert p.matching.domain_separator() == signable.header == domain_separator(chain_id(), p.matching.address)
        sig = sign_order(order, bytes(user.key), chain_id(), p.matching.address)
        assert Account.recover_message(signable, signature=sig) == user.address
        assert int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2
        assert sig[64] in (27, 28)
    with pytest.raises(ValueError):
        sign_order(order, bytes(Account.create().key), chain_id(), p.matching.address)


# ------------------------------------------------------------------ price checks


def test_price_worse_than_limit(ab):
    p, a, b = ab
    # taker buys below the maker's ask
    m, ms = make(p, a, ETH_PERP, -WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, WAD, 2000 * WAD - 1)
    with boa.reverts("matching: price worse than limit"):
        p.matching.match_orders(m, ms, t, ts)
    # taker sells above the maker's bid
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD + 1)
    with boa.reverts("matching: price worse than limit"):
        p.matching.match_orders(m, ms, t, ts)
    # equal limits fill
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    p.matching.match_orders(m, ms, t, ts)
    assert pos(p, a, ETH_PERP)[:2] == (WAD, 2000 * WAD)


@pytest.mark.parametrize(
    "price,ok",
    [(2100 * WAD, True), (2100 * WAD + 1, False), (1900 * WAD, True), (1900 * WAD - 1, False)],
)
def test_price_too_far_from_index(ab, price, ok):
    p, a, b = ab
    m, ms = make(p, a, ETH_PERP, WAD, price)
    t, ts = make(p, b, ETH_PERP, -WAD, price)
    if ok:
        p.matching.match_orders(m, ms, t, ts)
        assert pos(p, a, ETH_PERP)[:2] == (WAD, price)
    else:
        with boa.reverts("engine: price too far from index"):
            p.matching.match_orders(m, ms, t, ts)


def test_price_deviation_follows_governance(ab):
    p, a, b = ab
    p.engine.set_trade_params(10**16, 5 * 10**15, 10**17, 0)  # 1%
    m, ms = make(p, a, BTC_PERP, WAD, 30301 * WAD)
    t, ts = make(p, b, BTC_PERP, -WAD, 30301 * WAD)
    with boa.reverts("engine: price too far from index"):
        p.matching.match_orders(m, ms, t, ts)
    m, ms = make(p, a, BTC_PERP, WAD, 30300 * WAD)
    t, ts = make(p, b, BTC_PERP, -WAD, 30300 * WAD)
    p.matching.match_orders(m, ms, t, ts)


# ------------------------------------------------------------------ margin checks


def test_below_initial_margin(protocol):
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 100)
    p.deposit_usd(b, 100_000)
    m, ms = make(p, a, ETH_PERP, 10 * WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -10 * WAD, 2000 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)
    # exactly at IM: 100 USD supports 0.5 ETH at 2000 with IM 10%
    p.trade(a, b, ETH_PERP, WAD // 2, 2000 * WAD)
    assert p.equity(a.address) == p.initial_margin(a.address) == 100 * WAD
    # the taker side is checked as well (an empty account cannot sell)
    c = p.new_user()
    m, ms = make(p, b, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, c, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)


def test_market_expired(ab):
    p, a, b = ab
    expiry = p.deployment.market_expiries["ETH-FUT"]
    boa.env.time_travel(seconds=expiry - 1 - now())
    p.set_price("ETH", 2000)
    p.set_price("BTC", 30000)
    p.trade(a, b, ETH_FUT, WAD, 2000 * WAD)  # one second before expiry: open
    boa.env.time_travel(seconds=1)
    assert now() == expiry
    m, ms = make(p, a, ETH_FUT, WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_FUT, -WAD, 2000 * WAD)
    with boa.reverts("engine: market expired"):
        p.matching.match_orders(m, ms, t, ts)
    # after settlement too
    p.set_price("ETH", 2000)
    p.engine.settle_market(ETH_FUT)
    with boa.reverts("engine: market expired"):
        p.matching.match_orders(m, ms, t, ts)
    # perpetuals never expire
    p.trade(a, b, ETH_PERP, WAD, 2000 * WAD)


def test_reduce_only_allowed_below_im_but_increase_reverts(protocol):
    p = protocol
    e = p.engine
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 1_000)
    p.deposit_usd(b, 100_000)
    p.trade(a, b, ETH_PERP, 4 * WAD, 2000 * WAD)
    p.set_price("ETH", 1900)
    s = e.margin_summary(a.address)
    assert (s.equity, s.initial_margin, s.maintenance_margin) == (600 * WAD, 760 * WAD, 380 * WAD)
    assert not p.engine.meets_initial_margin(a.address) and not p.engine.is_liquidatable(a.address)
    # risk-increasing: refused
    m, ms = make(p, a, ETH_PERP, WAD // 10, 1900 * WAD)
    t, ts = make(p, b, ETH_PERP, -WAD // 10, 1900 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)
    # flipping to a short of the same size is not a reduction
    m, ms = make(p, b, ETH_PERP, 8 * WAD, 1900 * WAD)
    t, ts = make(p, a, ETH_PERP, -8 * WAD, 1900 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)
    # partial close, still below IM afterwards: allowed
    p.trade(b, a, ETH_PERP, WAD // 2, 1900 * WAD)
    s = e.margin_summary(a.address)
    assert (s.equity, s.initial_margin) == (600 * WAD, 665 * WAD)
    assert e.positions(a.address, ETH_PERP).size == 7 * WAD // 2
    assert p.vault.cash(a.address) == 600 * WAD  # the 400 loss realized at the fill


def test_reduce_that_grows_the_shortfall_reverts(protocol):
    p = protocol
    e = p.engine
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 1_000)
    p.deposit_usd(b, 100_000)
    p.trade(a, b, ETH_PERP, 4 * WAD, 2000 * WAD)
    p.set_price("ETH", 1900)
    e.set_trade_params(2 * 10**17, 5 * 10**15, 10**17, 0)  # allow trades 20% off the index
    # selling 0.5 at 1520 lowers IM by 95 but equity by 190: the shortfall grows
    m, ms = make(p, b, ETH_PERP, WAD // 2, 1520 * WAD)
    t, ts = make(p, a, ETH_PERP, -WAD // 2, 1520 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)
    # at 1805 (loss 47.5 < IM relief 95) it is allowed
    p.trade(b, a, ETH_PERP, WAD // 2, 1805 * WAD)
    s = e.margin_summary(a.address)
    assert s.equity == 600 * WAD - 475 * WAD // 10
    assert s.initial_margin == 665 * WAD


def test_reduce_that_raises_im_reverts_below_im(protocol):
    """Reducing one leg of a basis trade un-nets it: IM rises, so it is not risk-reducing, even
    when a generous price shrinks the shortfall."""
    p = protocol
    e = p.engine
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 2_000)
    p.deposit_usd(b, 100_000)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.trade(b, a, ETH_FUT, 10 * WAD, 2000 * WAD)  # hedged: IM 400
    with boa.env.prank(a.address):
        p.vault.withdraw(p.usdc.address, 1_600 * 10**6)
    p.set_price("ETH", 2100)
    assert e.margin_summary(a.address)[:2] == (400 * WAD, 420 * WAD)
    e.set_trade_params(2 * 10**17, 5 * 10**15, 10**17, 0)
    # sell 0.01 perp at +20%: equity 404.2 and shortfall 17.48 < 20, but IM 420 -> 421.68
    m, ms = make(p, b, ETH_PERP, WAD // 100, 2520 * WAD)
    t, ts = make(p, a, ETH_PERP, -WAD // 100, 2520 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)
    # buying back part of the future un-nets the other way: refused as well
    m, ms = make(p, a, ETH_FUT, WAD // 100, 2100 * WAD)
    t, ts = make(p, b, ETH_FUT, -WAD // 100, 2100 * WAD)
    with boa.reverts("engine: below initial margin"):
        p.matching.match_orders(m, ms, t, ts)


def test_cancel_nonces_invalidates_a_word_at_once(ab):
    """Permit2-style bitmap nonces: one word holds 256 nonces; cancelling a mask invalidates
    exactly those bits, including orders already signed, and leaves used ones used."""
    p, a, b = ab
    word = 3
    with boa.env.prank(a.address):
        p.matching.cancel_nonces(word, (1 << 5) | (1 << 200))
    assert p.matching.nonce_used(a.address, word * 256 + 5) and p.matching.nonce_used(a.address, word * 256 + 200)
    assert not p.matching.nonce_used(a.address, word * 256 + 6)
    assert not p.matching.nonce_used(a.address, (word + 1) * 256 + 5)
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, nonce=word * 256 + 200)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m, ms, t, ts)
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, nonce=word * 256 + 6)
    p.matching.match_orders(m, ms, t, ts)
    assert p.matching.nonce_used(a.address, word * 256 + 6)
