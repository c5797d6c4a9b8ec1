"""Unwinding the keeper's inventory (`keeper.risk.unwind`, `keeper.replay.quotes`, the quotes
file of `keeper.chain.orders`), by hand."""

from __future__ import annotations

import pytest
from eth_keys import keys
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.chain.orders import Order, Quote, load_quotes, order_digest, write_quotes
from keeper.replay import quotes
from keeper.risk import unwind
from keeper.risk.unwind import Lot

WAD = 10**18
MAKER = "0x" + "ab" * 20


def q(size: float, price: float, market: int = 0, deadline: int = 1_000, nonce: int = 0) -> Quote:
    return Quote(MAKER, market, int(size * WAD), int(price * WAD), nonce, deadline, b"\x01" * 65)


def test_price_bound_by_hand():
    # 50 bps of $2,000: sell at $1,990 or better, buy at $2,010 or better
    assert unwind.price_bound(1, 2000 * WAD, 50) == 1990 * WAD
    assert unwind.price_bound(-1, 2000 * WAD, 50) == 2010 * WAD
    # never looser than the bound when it is not a whole wei
    assert unwind.price_bound(1, 333, 50) == 332  # 331.3335 up
    assert unwind.price_bound(-1, 333, 50) == 334  # 334.665 down


def test_plan_takes_the_best_whole_quotes_on_the_other_side_within_the_bound():
    book = [
        q(4, 1995),  # a bid: what a long inventory sells into
        q(2, 1998),
        q(1, 1989),  # below the 50 bps bound
        q(8, 1999, deadline=99),  # expired
        q(3, 1999, market=1),  # another market
        q(-5, 2001),  # an ask: for a short inventory
        q(16, 1999),  # larger than the inventory
    ]
    plan = unwind.plan(7 * WAD, 0, 2000 * WAD, book, 50, 0, now=100)
    assert [(x.size // WAD, x.limit_price // WAD) for x in plan] == [(2, 1998), (4, 1995)]
    short = unwind.plan(-7 * WAD, 0, 2000 * WAD, book, 50, 0, now=100)
    assert [(x.size // WAD, x.limit_price // WAD) for x in short] == [(-5, 2001)]
    assert unwind.plan(0, 0, 2000 * WAD, book, 50, 0, now=100) == []
    assert unwind.plan(7 * WAD, 0, 2000 * WAD, book, 0, 0, now=100) == []  # nothing at the index


def test_plan_never_leaves_dust_the_engine_would_refuse():
    book = [q(4, 2000), q(2.995, 2000), q(2, 2000)]
    # 5 ETH: 4 leaves $2,000; then 2.995 would overshoot; 2 overshoots too
    assert [x.size for x in unwind.plan(5 * WAD, 0, 2000 * WAD, book, 50, 10 * WAD, now=0)] == [4 * WAD]
    # 4.999: taking 4 would leave 0.999 ($1,998) fine, but 2.995 after 2 would leave 0.004 ($8 < $10)
    plan = unwind.plan(int(4.999 * WAD), 0, 2000 * WAD, [q(2.995, 2000), q(2, 2000)], 50, 10 * WAD, now=0)
    assert [x.size for x in plan] == [int(2.995 * WAD)]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**24), st.integers(1, 10**5), st.booleans())
def test_a_ladder_closes_any_inventory_to_less_than_one_lot(size_wad, price_usd, long_):
    """The replay makers' ladder (LOT_USD x 2^k) against any inventory up to its capacity:
    what is left is worth less than two lots at the index, never flips side, and every quote
    taken is within the maker's spread."""
    price = price_usd * WAD
    lot = quotes.LOT_USD * WAD * WAD // price
    capacity = lot * (2**quotes.LEVELS - 1)
    size = min(size_wad, capacity) * (1 if long_ else -1)
    nonce = iter(range(10**6))
    # the maker holds the other side, enough for the whole ladder
    held = {0: -capacity if long_ else capacity}
    book = quotes.ladder(MAKER, held, {}, {"ETH-PERP": 0}, {"ETH": price}, 10, lambda: next(nonce), lambda o: b"")
    assert len(book) == 2 * quotes.LEVELS
    plan = unwind.plan(size, 0, price, book, 50, 10 * WAD, now=0)
    left = size - sum(x.size for x in plan)  # a bid's size is what the keeper sells
    assert (left == 0 or (left > 0) == long_) and abs(left) < 2 * lot + 1
    assert all(abs(x.limit_price - price) <= price * quotes.SPREAD_BPS // 10_000 + 1 for x in plan)


def test_lots_first_in_first_out_by_hand():
    lots = unwind.update_lots([], 5, block=10)
    lots = unwind.update_lots(lots, 8, block=11)  # grows: a new lot
    assert lots == [Lot(10, 5), Lot(11, 3)]
    lots = unwind.update_lots(lots, 4, block=12)  # reduces: the oldest first
    assert lots == [Lot(10, 1), Lot(11, 3)]
    assert unwind.update_lots(lots, -2, block=13) == [Lot(13, -2)]  # another side: starts over
    assert unwind.update_lots(lots, 0, block=13) == []
    # age: blocks held at the end of, the oldest dust left out
    price = 2000 * WAD
    assert unwind.age([Lot(10, WAD)], 10, price) == 1
    assert unwind.age([Lot(10, WAD)], 14, price) == 5
    dust = WAD * unwind.DUST_USD // 2000 // 2  # $50
    assert unwind.age([Lot(3, dust), Lot(10, WAD)], 14, price) == 5
    assert unwind.age([Lot(3, dust)], 14, price) == 0


def test_quotes_file_round_trip_and_one_line_errors(tmp_path):
    key = keys.PrivateKey(b"\x07" * 32)
    order = Order(key.public_key.to_checksum_address(), 2, -3 * WAD, 2001 * WAD, 9, 10**10)
    sig = key.sign_msg_hash(order_digest(order, 31337, MAKER))
    quote = Quote(*order.as_tuple(), signature=sig.to_bytes())
    path = tmp_path / "quotes.json"
    write_quotes(path, [quote])
    assert load_quotes(path) == [quote] and load_quotes(path)[0].as_tuple() == order.as_tuple()
    path.write_text('[{"account": "0x12", "market": 0}]')
    with pytest.raises(ValueError, match=r"quotes.json: 0.account: String should match pattern"):
        load_quotes(path)
    with pytest.raises(ValueError, match="cannot read the quotes file"):
        load_quotes(tmp_path / "missing.json")


def test_a_maker_never_flips_nor_grows_past_its_cap():
    price = 2000 * WAD
    lot = quotes.LOT_USD * WAD * WAD // price
    nonce = iter(range(10**6))
    markets = {"ETH-PERP": 0, "ETH-FUT": 1, "BTC-PERP": 2}
    held = {0: -10 * lot, 1: 3 * lot}  # short 10 lots, long 3, flat in BTC
    caps = {0: 14 * lot, 1: 5 * lot, 2: 0}  # no cap in BTC
    book = quotes.ladder(
        MAKER, held, caps, markets, {"ETH": price, "BTC": price}, 10, lambda: next(nonce), lambda o: b""
    )

    def sizes(market, side):
        return [x.size // lot for x in book if x.market == market and (x.size > 0) == (side > 0)]

    assert sizes(0, 1) == [1, 2, 4]  # buys back at most its short: 1 + 2 + 4 + 8 would flip it
    assert sizes(0, -1) == [-1, -2]  # sells at most the 4 lots its cap leaves
    assert sizes(1, -1) == [-1, -2] and sizes(1, 1) == [1]  # sells its 3 lots; 2 left under the cap
    assert len(sizes(2, 1)) == len(sizes(2, -1)) == quotes.LEVELS  # no cap: the whole ladder
    assert all(x.limit_price < price for x in book if x.size > 0)
    assert all(x.limit_price > price for x in book if x.size < 0)
