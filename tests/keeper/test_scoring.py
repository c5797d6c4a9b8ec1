"""Event-driven re-scoring (keeper.scoring): the same liquidatable accounts as the full re-score,
block after block, on a synthetic book through a crash, trades and funding; and the plan values
only the accounts exposed to what moved."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.risk_engine import synthetic
from keeper.config import load_config
from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin
from keeper.scoring import RescoreIndex, score_rows

WAD = 10**18


@pytest.fixture(scope="module")
def params() -> RiskParams:
    return RiskParams.from_config(load_config())


def with_funding(markets: MarketTable, step: int) -> MarketTable:
    funding = markets.funding_index.copy()
    funding[0] += step * 3 * 10**15  # the perpetuals accrue funding every block
    funding[2] += step * -(4 * 10**16)
    return MarketTable(markets.underlying, markets.settlement_price, funding, markets.expiry, markets.timestamp)


def traded(book: AccountBook, rows: list[int], rng) -> AccountBook:
    size = book.size.copy()
    cash = book.cash.copy()
    for i in rows:
        size[i, 0] = size[i, 0] + int(rng.integers(1, 10)) * WAD
        cash[i] = cash[i] - 1000 * WAD
    return AccountBook(cash, book.collateral, size, book.entry_price, book.funding_index)


def event_driven_liquidatable(index, block, accounts, book, markets, params, prices):
    plan = index.plan(block, accounts, book, markets, params, prices)
    result = score_rows(book, markets, params, prices, plan.rows)
    index.record(block, book, markets, params, prices, result)
    return set(result.rows[result.liquidatable].tolist()), plan, result


def test_same_liquidations_as_the_full_rescore_through_a_crash(params):
    n = 3000
    book, markets, prices = synthetic(n, 11)
    accounts = [f"0x{i:040x}" for i in range(n)]
    rng = np.random.default_rng(3)
    index = RescoreIndex(rescore_every_blocks=7, resync_every_blocks=25)
    eth, btc = int(prices[0]), int(prices[1])
    valued = 0
    for block in range(1, 61):
        # a crash in ETH over blocks 10-30, BTC drifting; small moves every block, stale in some
        if 10 <= block <= 30:
            eth = eth * 97 // 100
        elif block % 3:
            eth = eth + int(rng.integers(-(10**15), 10**15)) * 1000
        if block % 4 == 0:
            btc = btc * (1000 + int(rng.integers(-15, 10))) // 1000
        p = np.array([eth, btc], dtype=object)
        m = with_funding(markets, block)
        if block % 5 == 0:
            book = traded(book, rng.choice(n, 20, replace=False).tolist(), rng)
        full = margin(book, m, params, p)
        expected = set(np.flatnonzero(full.liquidatable).tolist())
        got, plan, result = event_driven_liquidatable(index, block, accounts, book, m, params, p)
        assert got == expected, f"block {block}: {sorted(got ^ expected)[:5]}"
        for row in got:  # the numbers the keeper acts on are the exact mirror's
            assert result.equity[row] == full.equity[row]
            assert result.exact_health[row] == full.health_factor[row]
        valued += len(plan.rows)
    assert valued < 0.6 * 60 * n  # and it valued far fewer accounts than the full re-score


def test_a_move_in_one_underlying_values_only_accounts_exposed_to_it(params):
    n = 2000
    book, markets, prices = synthetic(n, 5)
    accounts = [f"0x{i:040x}" for i in range(n)]
    index = RescoreIndex(rescore_every_blocks=100_000, resync_every_blocks=100_000)
    event_driven_liquidatable(index, 1, accounts, book, markets, params, prices)  # first block: all
    quiet, _, _ = event_driven_liquidatable(index, 2, accounts, book, markets, params, prices)
    plan = index.plan(3, accounts, book, markets, params, prices)
    # nothing moved: only what is liquidatable or unpriced (valued every block) is due
    assert set(plan.rows.tolist()) == quiet
    moved = np.array([prices[0], prices[1] * 98 // 100], dtype=object)  # BTC -2 %
    plan = index.plan(4, accounts, book, markets, params, moved)
    btc = set(index.exposed(1))
    assert {accounts[i] for i in plan.rows.tolist()} - {accounts[i] for i in quiet} <= btc
    assert 0 < len(plan.rows) < len(btc)
    # the index answers from the accounts' holdings: BTC markets (2, 3) or WBTC collateral (asset 1)
    holds = (book.size[:, [2, 3]] != 0).any(axis=1) | (book.collateral[:, 1] != 0)
    assert btc == {accounts[i] for i in np.flatnonzero(holds)}


def test_a_trade_is_valued_the_block_it_happens_and_a_resync_values_everyone(params):
    n = 500
    book, markets, prices = synthetic(n, 9)
    accounts = [f"0x{i:040x}" for i in range(n)]
    index = RescoreIndex(rescore_every_blocks=1000, resync_every_blocks=10)
    event_driven_liquidatable(index, 1, accounts, book, markets, params, prices)
    after = traded(book, [17], np.random.default_rng(0))
    plan = index.plan(2, accounts, after, markets, params, prices)
    assert 17 in plan.rows.tolist() and plan.changed == 1
    assert index.plan(11, accounts, after, markets, params, prices).full
    # a new account is valued at once
    more = AccountBook(
        np.append(after.cash, 5 * WAD), np.vstack([after.collateral, after.collateral[:1] * 0]),
        np.vstack([after.size, after.size[:1] * 0]), np.vstack([after.entry_price, after.entry_price[:1] * 0]),
        np.vstack([after.funding_index, after.funding_index[:1] * 0]),
    )  # fmt: skip
    index.reset()
    event_driven_liquidatable(index, 12, accounts, after, markets, params, prices)
    plan = index.plan(13, [*accounts, "0x" + "f" * 40], more, markets, params, prices)
    assert n in plan.rows.tolist()


def test_the_bot_sends_the_same_liquidations_with_and_without_event_driven_rescoring():
    """Two bots on the same chain (a fake client whose book and prices change block by block: an
    ETH crash, funding accruing, trades): the one with a RescoreIndex sends the same liquidations
    in the same blocks, in the same order, as the one valuing every account every block."""
    from collections import Counter

    from keeper.bot import Liquidator
    from keeper.chain.client import Snapshot
    from keeper.metrics import KeeperMetrics
    from tests.keeper.test_bot_decisions import PARAMS, BookClient, BookIndex, CountingCall, LatencyTx, process_at

    rng = np.random.default_rng(21)
    n = 400
    lev = rng.uniform(1.5, 25.0, n)
    notional = rng.lognormal(np.log(20_000), 1.0, n)
    size = [int(x / 2000 * 1e6) * 10**12 * (1 if rng.random() < 0.7 else -1) for x in notional]
    cash = [int(x / v * 1e6) * 10**12 for x, v in zip(notional, lev)]
    weth = [int(rng.integers(0, 3)) * WAD // 2 for _ in range(n)]
    entry = [2000 * WAD + int(rng.integers(-50, 50)) * WAD for _ in range(n)]
    accounts = tuple(f"0x{i:040x}" for i in range(n))

    def snap_at(block: int) -> Snapshot:
        eth = 2000 * WAD * (100 - min(max(block - 3, 0), 12) * 2) // 100 + (block % 3) * 10**15
        sizes = list(size)
        if block >= 8:  # some accounts trade
            for i in range(0, n, 37):
                sizes[i] += WAD
        book = AccountBook(
            cash=cash, collateral=[[w] for w in weth], size=[[s] for s in sizes], entry_price=[[e] for e in entry],
            funding_index=[[0] for _ in range(n)],
        )  # fmt: skip
        markets = MarketTable(underlying=[0], settlement_price=[0], funding_index=[block * 10**17], expiry=[0])
        return Snapshot(block, accounts, np.array([eth], dtype=object), markets, book)

    runs = []
    for rescore in (None, RescoreIndex(rescore_every_blocks=5, resync_every_blocks=12)):
        calls = {a: CountingCall(Counter(), a, 50_000 * WAD, 300_000) for a in accounts}
        client = BookClient(snap_at(1), calls)
        tx = LatencyTx()
        bot = Liquidator(
            client, tx, BookIndex(accounts), follower=None, metrics=KeeperMetrics(), rescore=rescore,
            min_profit_usd=None,
        )  # fmt: skip
        sent = []
        for block in range(1, 30):
            client.snap = snap_at(block)
            process_at(bot, block)
            sent.append(list(tx.sent))
            tx.sent.clear()
        runs.append((sent, bot.stats.rescored))
    (full, full_count), (event, event_count) = runs
    assert sum(len(s) for s in full) > 50  # the crash liquidates many accounts, every block
    assert event == full
    assert full_count == n and event_count < n
    assert PARAMS.n_underlyings == 1
