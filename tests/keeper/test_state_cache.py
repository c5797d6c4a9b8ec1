"""keeper.chain.state_cache without a chain: which accounts a snapshot re-reads, when it falls back
to a full read, and that what it returns is what a full read returns. The same against Anvil,
block by block: tests/integration/test_state_cache.py."""

from __future__ import annotations

import numpy as np
import pytest

from keeper.chain.client import TOUCHES_ALL, BlockInputs
from keeper.chain.state_cache import AccountStateCache
from keeper.chain.types import AccountState, PositionState
from keeper.risk.margin import AccountBook, MarketTable

MARKETS = MarketTable.from_states([(0, True, 0, 0, 0, 5 * 10**18), (0, False, 2_000_000_000, 0, 0, 0)], 1_000)
PRICES = np.array([2000 * 10**18, 1 * 10**18], dtype=object)


class Source:
    """A chain of in-memory account states; counts what is read, can fail the next read."""

    def __init__(self, n: int):
        self.states = {
            f"0x{i:040x}": AccountState(i * 10**18, (i, 0), (PositionState(0, (i + 1) * 10**17, 2000 * 10**18, 0),))
            for i in range(n)
        }
        self.reads: list[list[str]] = []
        self.fail = False

    def block_inputs(self, block: int) -> BlockInputs:
        return BlockInputs(block, PRICES, MARKETS, 2)

    def account_states(self, accounts, block="latest"):
        if self.fail:
            self.fail = False
            raise OSError("node down")
        self.reads.append(list(accounts))
        return [self.states[a] for a in accounts]

    def change(self, account: str, cash: int) -> None:
        self.states[account] = self.states[account]._replace(cash=cash)

    def full(self, accounts) -> AccountBook:
        return AccountBook.from_states([self.states[a] for a in accounts], 2, MARKETS.n_markets)


def assert_equal(book: AccountBook, want: AccountBook) -> None:
    for name in ("cash", "collateral", "size", "entry_price", "funding_index"):
        assert getattr(book, name).tolist() == getattr(want, name).tolist(), name


def test_a_block_re_reads_only_the_accounts_its_logs_name():
    src = Source(50)
    accounts = sorted(src.states)
    cache = AccountStateCache(resync_every_blocks=100)
    cache.snapshot(src, accounts, 10)
    assert cache.last.full and len(src.reads[-1]) == 50
    src.change(accounts[3], -7)
    src.change(accounts[40], 10**30)
    cache.note(11, 11, [accounts[3], accounts[40], "0x" + "ff" * 20])  # an address we do not follow
    snap = cache.snapshot(src, accounts, 11)
    assert not cache.last.full and sorted(src.reads[-1]) == [accounts[3], accounts[40]]
    assert cache.last.changed_rows.tolist() == [3, 40]
    assert_equal(snap.book, src.full(accounts))
    cache.note(12, 12, [])  # a quiet block: nothing read, nothing changed
    cache.snapshot(src, accounts, 12)
    assert cache.last.read == 0 and cache.last.changed_rows.tolist() == []


def test_new_accounts_are_read_and_the_book_follows_the_new_list():
    src = Source(30)
    accounts = sorted(src.states)[:20]
    cache = AccountStateCache()
    cache.snapshot(src, accounts, 5)
    more = sorted(src.states)
    cache.note(6, 6, [])
    snap = cache.snapshot(src, more, 6)
    assert not cache.last.full and sorted(src.reads[-1]) == more[20:]
    assert cache.last.changed_rows is None  # the list changed: the caller compares books
    assert_equal(snap.book, src.full(more))


@pytest.mark.parametrize(
    "why",
    ["gap", "unknown log", "resync", "reset", "rewound"],
)
def test_full_read_when_the_logs_cannot_be_trusted_or_at_the_resync(why):
    src = Source(10)
    accounts = sorted(src.states)
    cache = AccountStateCache(resync_every_blocks=5)
    cache.snapshot(src, accounts, 10)
    block = 11
    if why == "gap":
        cache.note(12, 12, [])  # block 11's logs never noted
        block = 12
    elif why == "unknown log":
        cache.note(11, 11, [TOUCHES_ALL])
    elif why == "resync":
        for b in range(11, 15):
            cache.note(b, b, [])
            cache.snapshot(src, accounts, b)
            assert not cache.last.full
        cache.note(15, 15, [])
        block = 15
    elif why == "reset":
        cache.note(11, 11, [])
        cache.reset("reorg")
    elif why == "rewound":
        block = 9
    src.change(accounts[0], 123)  # not named by any log: only a full read sees it
    snap = cache.snapshot(src, accounts, block)
    assert cache.last.full and len(src.reads[-1]) == 10, cache.last
    assert_equal(snap.book, src.full(accounts))


def test_a_failed_read_keeps_what_the_logs_named_for_the_next_try():
    src = Source(10)
    accounts = sorted(src.states)
    cache = AccountStateCache()
    cache.snapshot(src, accounts, 1)
    src.change(accounts[2], 5)
    cache.note(2, 2, [accounts[2]])
    src.fail = True
    with pytest.raises(OSError):
        cache.snapshot(src, accounts, 2)
    snap = cache.snapshot(src, accounts, 2)  # the same head again: the same account is read
    assert not cache.last.full and src.reads[-1] == [accounts[2]]
    assert_equal(snap.book, src.full(accounts))


def test_resync_interval_must_be_positive():
    with pytest.raises(ValueError):
        AccountStateCache(resync_every_blocks=0)
