"""Packed storage: option series, option and engine positions, each account's list of held
series and of open markets, market headers and oracle feeds are stored several fields to a slot
(gas: one cold read instead of two to nine).

Each packing is checked against a plain model of what it stores: the list against a Python
list with the contract's swap-and-pop removal, positions and series against the values traded
or listed, feeds against the configuration deployed.
"""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, OptionsKit, events, funded, liquidate, now, republish, source_deployer

ETH = 0
DAY = 86400
ATM, SKEW = 8 * WAD // 10, -WAD // 5


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
            p.engine.positions(user.address, m).size
            * (
                full[p.engine.underlyings(p.engine.markets(m).underlying).price_id]
                - p.engine.positions(user.address, m).entry_price
            )
            // WAD
            for m in p.engine.open_markets(user.address)
        ) - sum(
            -(
                -p.engine.positions(user.address, m).size
                * (p.engine.funding_index_now(m) - p.engine.positions(user.address, m).funding_index)
                // WAD
            )
            for m in p.engine.open_markets(user.address)
        )


def index(p, symbol: str) -> int:
    return p.oracle.index_prices()[p.deployment.price_ids[symbol]]


def test_open_market_list_follows_swap_and_pop_and_positions_read_back(protocol):
    """An account's open markets are one packed word (count, then one byte per market id): with
    the admin listing futures up to 9 markets, 8 positions fill the list and a 9th reverts "too
    many positions"; closing from the front, the middle and the back and re-opening keeps the
    exact order a swap-and-pop list has, and every position reads back its signed size, entry
    price and funding index."""
    p, e = protocol, protocol.engine
    while e.market_count() < 9:
        market = e.list_market(e.market_count() % 2, now() + (30 + e.market_count()) * DAY)
        e.set_position_caps(market, 2000 * WAD, 1500 * WAD)
    symbol = {m: ("ETH", "BTC")[e.markets(m).underlying] for m in range(9)}
    size = {"ETH": WAD, "BTC": WAD // 20}
    user, maker = funded(p, 1_000_000), funded(p, 10_000_000)
    order = [5, 0, 7, 2, 8, 1, 3, 6]
    model: list[int] = []
    for i, m in enumerate(order):
        if i % 2 == 0:
            p.trade(user, maker, m, size[symbol[m]], index(p, symbol[m]))  # long
        else:
            p.trade(maker, user, m, size[symbol[m]], index(p, symbol[m]))  # short
        model.append(m)
        assert list(e.open_markets(user.address)) == model
    with boa.reverts("engine: too many positions"):
        p.trade(user, maker, 4, size[symbol[4]], index(p, symbol[4]))
    for i, m in enumerate(order):
        position, other = e.positions(user.address, m), e.positions(maker.address, m)
        assert position.size == (1 if i % 2 == 0 else -1) * size[symbol[m]] == -other.size
        assert position.entry_price == other.entry_price == index(p, symbol[m])
        assert position.funding_index == other.funding_index == e.markets(m).funding_index

    def close(m: int) -> None:
        held = e.positions(user.address, m).size
        if held > 0:
            p.trade(maker, user, m, held, index(p, symbol[m]))
        else:
            p.trade(user, maker, m, -held, index(p, symbol[m]))
        i = model.index(m)
        model[i] = model[-1]
        model.pop()
        assert tuple(e.positions(user.address, m)) == (0, 0, 0)
        assert list(e.open_markets(user.address)) == model

    for m in (5, 2, 6, 0):  # front, middle, back, front again
        close(m)
    p.trade(user, maker, 4, size[symbol[4]], index(p, symbol[4]))
    model.append(4)
    assert list(e.open_markets(user.address)) == model
    for m in list(model):
        close(m)
    assert list(e.open_markets(user.address)) == []


def test_account_word_keeps_markets_opened_block_and_flag_apart(protocol):
    """An account's open markets, the block of its last trade that grew a position and the time
    it was flagged liquidatable share one word: each changes alone, and a liquidation that
    restores health clears the flag and nothing else."""
    p, e = protocol, protocol.engine
    a, b, liq = funded(p, 10_000), funded(p, 1_000_000), funded(p, 1_000_000)
    eth_perp, btc_perp = p.deployment.markets["ETH-PERP"], p.deployment.markets["BTC-PERP"]
    p.trade(a, b, "ETH-PERP", 40 * WAD, index(p, "ETH"))
    opened = boa.env.evm.patch.block_number
    assert (e.opened_block(a.address), e.liquidatable_since(a.address)) == (opened, 0)
    assert list(e.open_markets(a.address)) == [eth_perp]
    p.trade(a, b, "BTC-PERP", WAD // 100, index(p, "BTC"))
    opened = boa.env.evm.patch.block_number
    assert list(e.open_markets(a.address)) == [eth_perp, btc_perp]
    assert e.opened_block(a.address) == opened
    p.set_price("ETH", 1820)
    e.flag_liquidatable(a.address)
    flagged = now()
    assert (e.opened_block(a.address), e.liquidatable_since(a.address)) == (opened, flagged)
    assert list(e.open_markets(a.address)) == [eth_perp, btc_perp]
    p.trade(b, a, "BTC-PERP", WAD // 100, index(p, "BTC"))  # reduces: the block stays
    assert list(e.open_markets(a.address)) == [eth_perp]
    assert (e.opened_block(a.address), e.liquidatable_since(a.address)) == (opened, flagged)
    liquidate(p, liq, a)
    assert not e.is_liquidatable(a.address)
    assert (e.opened_block(a.address), e.liquidatable_since(a.address)) == (opened, 0)
    assert list(e.open_markets(a.address)) == [eth_perp]
    assert e.positions(a.address, eth_perp).size > 0


def test_vault_account_word_holds_cash_and_which_assets_are_held(protocol):
    """The vault keeps an account's cash and one bit per asset it holds in one word: the bit
    follows the balance through deposits, withdrawals and a collateral liquidation (checked
    against the balances each time), the cash reads back signed, and cash beyond int128
    reverts instead of wrapping."""
    p, v = protocol, protocol.vault
    ids = p.deployment.price_ids

    def check_bits(user) -> None:
        held = [i for i, a in enumerate(("WETH", "WBTC")) if v.balances(user.address, i) != 0]
        mask = 1 << ids["USDC"]
        for i in held:
            mask |= 1 << ids[("ETH", "BTC")[i]]
        assert (v.has_collateral(user.address), v.price_mask(user.address)) == (bool(held), mask)

    user = funded(p, 1_000)
    assert v.cash(user.address) == 1_000 * WAD
    check_bits(user)
    p.deposit(user, "WETH", WAD)
    check_bits(user)
    assert v.cash(user.address) == 1_000 * WAD
    with boa.env.prank(user.address):
        v.withdraw(p.tokens["WETH"].address, WAD)
    check_bits(user)
    assert (v.collateral_value(user.address), v.cash(user.address)) == (0, 1_000 * WAD)
    # a borrower margined with WBTC only goes bankrupt: its WBTC is sold to the liquidator
    borrower, maker, liq = p.new_user(), funded(p, 1_000_000), funded(p, 1_000_000)
    p.deposit(borrower, "WBTC", 10**7)  # 0.1 BTC
    p.trade(borrower, maker, "ETH-PERP", 5 * WAD, index(p, "ETH"))
    p.set_price("ETH", 1400)
    liquidate(p, liq, borrower)
    assert v.balances(borrower.address, 1) == 0 < v.balances(liq.address, 1)
    check_bits(borrower)
    check_bits(liq)
    assert v.cash(borrower.address) == 0  # the deficit was written off
    big = p.new_user()
    huge = 2**127 // 10**12 + 1  # USDC units whose WAD credit passes 2**127
    p.usdc.mint(big.address, huge)
    with boa.env.prank(big.address):
        p.usdc.approve(v.address, huge)
        with boa.reverts("vault: cash out of range"):
            v.deposit(p.usdc.address, huge)
    assert v.cash(big.address) == 0


def test_engine_position_out_of_packing_range_reverts(protocol):
    """A size beyond int128 cannot be stored in its half slot: the fill reverts with a reason
    before anything is written, never truncated into a smaller (or opposite) position."""
    p, e = protocol, protocol.engine
    e.set_position_caps(p.deployment.markets["ETH-PERP"], 0, 0)
    user, maker = funded(p, 1_000), funded(p, 1_000)
    with boa.reverts("engine: position out of range"):
        p.trade(user, maker, "ETH-PERP", 2**127, index(p, "ETH"))
    assert tuple(e.positions(user.address, p.deployment.markets["ETH-PERP"])) == (0, 0, 0)


def test_markets_read_back_funding_index_for_perpetuals_and_settlement_for_futures(protocol):
    """`_market` reads a perpetual's funding index and a future's settlement price (the other
    field of each is never written): the views match the values the events state."""
    p, e = protocol, protocol.engine
    user, maker = funded(p, 100_000), funded(p, 100_000)
    perp, fut = p.deployment.markets["ETH-PERP"], p.deployment.markets["ETH-FUT"]
    p.trade(user, maker, perp, 10 * WAD, index(p, "ETH") * 1001 // 1000)
    boa.env.time_travel(seconds=8 * 3600)
    p.set_price("ETH", 2000)
    p.trade(user, maker, perp, WAD, index(p, "ETH"))
    funding = events(e, "FundingUpdated")[-1]
    assert e.markets(perp).funding_index == funding.funding_index != 0
    assert e.markets(perp).settlement_price == 0
    p.trade(user, maker, fut, WAD, index(p, "ETH"))
    boa.env.time_travel(seconds=e.markets(fut).expiry - now() + 60)
    for symbol in p.feeds:
        republish(p.feeds[symbol].address)
    e.settle_market(fut)
    settled = events(e, "MarketSettled")[-1]
    assert e.markets(fut).settlement_price == settled.settlement_price > 0
    assert e.markets(fut).funding_index == 0


@pytest.mark.parametrize(
    "x, high",
    [(0, 0), (1, 2), (-1, 2**128 - 1), (2**127 - 1, 7), (-(2**127), 2**128 - 1), (-3 * 10**18, 2000 * 10**18)],
)
def test_signed_field_round_trips_at_its_bounds(x, high):
    """lib/packing.vy: a signed amount in the low 128 bits (two's complement) and an unsigned
    field above it read back exactly, at both ends of int128 and uint128."""
    packing = source_deployer("lib/packing.vy").deploy()
    word = packing.pack(x, high)
    assert word == (x % 2**128) | (high << 128)  # the two's-complement reference
    assert packing.unpack(word) == (x, high)


@pytest.mark.parametrize("x, high", [(2**127, 0), (-(2**127) - 1, 0), (0, 2**128)])
def test_signed_field_out_of_range_is_refused(x, high):
    packing = source_deployer("lib/packing.vy").deploy()
    with boa.reverts("packing: out of range"):
        packing.pack(x, high)
