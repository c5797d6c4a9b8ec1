"""Packed storage: option series, option positions, each account's list of held series, and
oracle feeds are stored several fields to a slot (gas: one cold read instead of three to six).

Each packing is checked against a plain model of what it stores: the list against a Python
list with the contract's swap-and-pop removal, positions and series against the values traded
or listed, feeds against the configuration deployed.
"""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, OptionsKit

ETH = 0
DAY = 86400
ATM, SKEW = 8 * WAD // 10, -WAD // 5


def now() -> int:
    return boa.env.evm.patch.timestamp


def funded(p, dollars: int):
    user = p.new_user()
    p.deposit_usd(user, dollars)
    return user


@pytest.fixture
def kit(protocol) -> OptionsKit:
    return OptionsKit.deploy(protocol)


def mark(kit, sid: int) -> int:
    return kit.market.series_states()[sid].mark


def held(kit, user) -> list[int]:
    return [s.series for s in kit.market.option_states(user.address)]


def test_held_series_list_follows_swap_and_pop_across_both_words(kit):
    """32 positions span both words of the packed list (entry 31 is the first byte of word 1);
    removals from the front, the back and the middle, and re-adds, keep the exact order a
    swap-and-pop list has, and every position reads back its signed size and entry."""
    p, m = kit.p, kit.market
    expiry = now() + 30 * DAY
    ids = [kit.list(ETH, (1500 + 25 * i) * WAD, expiry, i % 2 == 0) for i in range(33)]
    kit.set_vol(ETH, expiry, ATM, SKEW)
    user, other = funded(p, 10_000_000), funded(p, 10_000_000)
    model: list[int] = []
    for i, sid in enumerate(ids[:32]):
        size = (i + 1) * WAD // 10
        if i % 3 == 0:
            kit.trade(user, other, sid, size, mark(kit, sid))  # long
        else:
            kit.trade(other, user, sid, size, mark(kit, sid))  # short
        model.append(sid)
    assert held(kit, user) == model
    for i, sid in enumerate(ids[:32]):
        size = (i + 1) * WAD // 10
        position = m.positions(user.address, sid)
        assert position.size == (size if i % 3 == 0 else -size)
        assert position.size == -m.positions(other.address, sid).size
        assert position.entry_price == m.positions(other.address, sid).entry_price > 0
    with boa.reverts("options: too many positions"):
        kit.trade(user, other, ids[32], WAD, mark(kit, ids[32]))

    def close(sid: int) -> None:
        size = m.positions(user.address, sid).size
        if size > 0:
            kit.trade(other, user, sid, size, mark(kit, sid))
        else:
            kit.trade(user, other, sid, -size, mark(kit, sid))
        i = model.index(sid)
        model[i] = model[-1]
        model.pop()
        assert m.positions(user.address, sid).size == 0
        assert held(kit, user) == model

    front = model[0]
    close(front)  # the front: the entry in word 1 moves to word 0, and word 1 is cleared
    kit.trade(user, other, front, WAD, mark(kit, front))  # back into word 1: no stale byte
    model.append(front)
    assert held(kit, user) == model
    close(model[0])
    close(model[-1])  # the back
    close(model[len(model) // 2])  # the middle
    kit.trade(user, other, ids[32], WAD, mark(kit, ids[32]))
    model.append(ids[32])
    assert held(kit, user) == model
    for sid in list(model):
        close(sid)
    assert held(kit, user) == [] and not m.has_positions(user.address)
    kit.trade(user, other, ids[5], WAD, mark(kit, ids[5]))  # no stale byte survives
    assert held(kit, user) == [ids[5]]


def test_series_reads_back_as_listed_and_settled(kit):
    p, m = kit.p, kit.market
    expiry = now() + 2 * DAY
    call = kit.list(ETH, 2100 * WAD, expiry, True)
    put = kit.list(ETH, 1900 * WAD + 1, expiry, False)
    assert tuple(m.series(call)) == (ETH, 0, 2100 * WAD, expiry, True, 0)
    assert tuple(m.series(put)) == (ETH, 0, 1900 * WAD + 1, expiry, False, 0)
    boa.env.time_travel(seconds=expiry - now() + 60)
    p.set_price("ETH", 2250)
    m.settle_series(call)
    settlement = m.series(call).settlement_price
    assert settlement == p.oracle.expiry_price(0, expiry) > 0
    assert tuple(m.series(call)) == (ETH, 0, 2100 * WAD, expiry, True, settlement)
    assert m.series(put).settlement_price == 0  # settled one by one


def test_oracle_feeds_read_back_as_configured(protocol):
    p = protocol
    for symbol, price_id in p.deployment.price_ids.items():
        feeds = p.oracle.feeds(price_id)
        assert len(feeds) == 1
        feed = feeds[0]
        assert feed.aggregator == p.feeds[symbol].address
        assert feed.scale == 10 ** (18 - p.feeds[symbol].decimals())
        assert feed.heartbeat == next(c.heartbeat for c in p.config.price_ids if c.symbol == symbol)


def test_index_prices_of_reads_only_the_asked_ids(protocol):
    """A price not asked for is 0, like an unavailable one, which every valuation rejects."""
    p = protocol
    full = list(p.oracle.index_prices())
    n = len(full)
    assert n >= 3 and all(full)
    for mask in range(2**n):
        got = list(p.oracle.index_prices_of(mask))
        assert got == [price if mask >> i & 1 else 0 for i, price in enumerate(full)]


def test_vault_price_mask_is_the_settlement_id_and_each_held_asset(protocol):
    p = protocol
    ids = p.deployment.price_ids
    settlement = 1 << ids["USDC"]
    user = funded(p, 1_000)
    assert p.vault.price_mask(user.address) == settlement
    p.deposit(user, "WETH", WAD)
    assert p.vault.price_mask(user.address) == settlement | 1 << ids["ETH"]
    p.deposit(user, "WBTC", 10**6)
    assert p.vault.price_mask(user.address) == settlement | 1 << ids["ETH"] | 1 << ids["BTC"]


def test_margin_of_each_holding_reads_what_it_needs(protocol):
    """The engine reads the prices of the account's markets and collateral only; an account
    valued with a price left out would revert "no valid price", so each summary succeeding and
    matching the lens's full-price inputs shows the mask covers what is held."""
    p = protocol
    maker = funded(p, 5_000_000)
    cases = []
    eth_perp = funded(p, 10_000)
    p.trade(eth_perp, maker, "ETH-PERP", WAD, p.oracle.index_prices()[p.deployment.price_ids["ETH"]])
    cases.append(eth_perp)
    wbtc_only = p.new_user()
    p.deposit(wbtc_only, "WBTC", 10**7)
    cases.append(wbtc_only)
    btc_with_weth = p.new_user()
    p.deposit(btc_with_weth, "WETH", 10 * WAD)
    p.trade(maker, btc_with_weth, "BTC-PERP", WAD // 10, p.oracle.index_prices()[p.deployment.price_ids["BTC"]])
    cases.append(btc_with_weth)
    full = p.oracle.index_prices()
    for user in cases:
        summary = p.engine.margin_summary(user.address)
        cash, collateral = p.vault.margin_inputs(user.address, full)
        assert summary.equity - cash - collateral == sum(
            p.engine.positions(user.address, m).size * (full[p.engine.underlyings(p.engine.markets(m).underlying).price_id] - p.engine.positions(user.address, m).entry_price) // WAD
            for m in p.engine.open_markets(user.address)
        ) - sum(
            -(-p.engine.positions(user.address, m).size * (p.engine.funding_index_now(m) - p.engine.positions(user.address, m).funding_index) // WAD)
            for m in p.engine.open_markets(user.address)
        )
