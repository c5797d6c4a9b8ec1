"""The keeper's account-state cache (keeper.chain.state_cache) against a fresh full read, block by
block, on a real Anvil chain.

Forty accounts are opened as the replay opens them; then, for 60 blocks with automine off, each
block carries a seeded mix of what changes raw state: a step of a crash price path, deposits of
USDC and WETH (`deposit_for`), withdrawals (some revert below initial margin: no change),
trades between users and their market maker (`Matching.match_orders`), funding accruing, and
liquidations of every liquidatable account by a liquidator with collateral (positions moved,
penalties charged, collateral sold). At block 40 the chain is reverted to block 35 and grows
another way (a reorg): the test follows the head as `keeper run` does (ChainFollower, EventIndex
rewind, cache reset).

At every block the cached snapshot must equal `ProtocolClient.snapshot` of the same accounts at
the same block to the wei (prices, markets, cash, collateral, positions), the rows it reports as
changed must be exactly those whose state differs from the previous block's full read, and most
blocks must have read only a few accounts (counts, not times).
"""

from __future__ import annotations

import numpy as np
import pytest

from keeper.chain.anvil import DEV_ACCOUNTS
from keeper.chain.event_index import EventIndex
from keeper.chain.follower import ChainFollower
from keeper.chain.state_cache import AccountStateCache
from keeper.marketdata.prices import synthetic_path
from keeper.replay.driver import Replay, ReplayOptions
from keeper.units import WAD

pytestmark = pytest.mark.anvil

ACCOUNTS = 40
BLOCKS = 60
REORG_AT, REORG_BACK_TO = 40, 35
FEES = {"maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
FIELDS = ("cash", "collateral", "size", "entry_price", "funding_index")


def same_snapshot(a, b) -> None:
    assert a.block == b.block and a.accounts == b.accounts
    assert [int(x) for x in a.prices] == [int(x) for x in b.prices]
    for name in ("underlying", "settlement_price", "funding_index", "expiry"):
        assert getattr(a.markets, name).tolist() == getattr(b.markets, name).tolist(), name
    assert a.markets.timestamp == b.markets.timestamp
    for name in FIELDS:
        assert getattr(a.book, name).tolist() == getattr(b.book, name).tolist(), name


def differing_rows(book, previous) -> set[int]:
    rows = set()
    for name in FIELDS:
        new, old = getattr(book, name), getattr(previous, name)
        diff = new != old if new.ndim == 1 else (new != old).any(axis=1)
        rows |= set(np.flatnonzero(np.asarray(diff, dtype=bool)).tolist())
    return rows


class Driver:
    def __init__(self, tmp):
        self.replay = Replay(
            ReplayOptions(path=synthetic_path(steps=BLOCKS + 2, seed=11), accounts=ACCOUNTS, seed=11, workdir=tmp)
        )
        self.users = self.replay.setup()
        r = self.replay
        self.w3, self.client, self.dep, self.admin = r.w3, r.client, r.deployment, r.admin
        self.usdc = r.tokens[r.opts.config.settlement_symbol]
        self.weth = r.tokens["WETH"]
        self.liquidator = DEV_ACCOUNTS[1][0]
        vault = self.client.vault
        for token, amount in ((self.usdc, 10**15), (self.weth, 10**24)):
            self.send(token.functions.mint(self.admin, amount))
            self.send(token.functions.approve(vault.address, amount))
        self.send(vault.functions.deposit_for(self.usdc.address, 10**13, self.liquidator))
        for u in self.users[:10]:
            self.w3.provider.make_request("anvil_impersonateAccount", [u.address])
        self.rpc("evm_setAutomine", [False])
        self.rng = np.random.default_rng(5)

    def rpc(self, method, params):
        response = self.w3.provider.make_request(method, params)
        assert "error" not in response, (method, response)
        return response.get("result")

    def send(self, call, sender=None, gas=1_500_000):
        return call.transact({"from": sender or self.admin, "gas": gas, **FEES})

    def block(self, step: int) -> int:
        """One block's mix of state changes; returns the mined block's number."""
        r, vault, rng = self.replay, self.client.vault, self.rng
        r._publish(step)
        for u in rng.choice(self.users, 3, replace=False):
            token, amount = (self.usdc, 500 * 10**6) if rng.random() < 0.6 else (self.weth, 10**17)
            self.send(vault.functions.deposit_for(token.address, amount, u.address))
        for u in rng.choice(self.users[:10], 2, replace=False):
            self.send(vault.functions.withdraw(self.usdc.address, 200 * 10**6), sender=u.address)
        prices = {s: int(p) for s, p in r.opts.path.as_wad(step).items()}
        for u in rng.choice(self.users, 2, replace=False):
            maker = r.market_makers[self.users.index(u) % len(r.market_makers)]
            name = "ETH-PERP" if rng.random() < 0.5 else "BTC-PERP"
            size = (WAD // 100) * (1 if rng.random() < 0.5 else -1)
            market, price = self.dep.markets[name], prices[name.split("-")[0]]
            ours, sig = r._order(u, market, size, price)
            theirs, their_sig = r._order(maker, market, -size, price)
            self.send(self.client.matching.functions.match_orders(ours, sig, theirs, their_sig))
        addresses = [u.address for u in self.users]
        for a, s in zip(addresses, self.client.margin_summaries(addresses, "latest")):
            if s.equity < s.maintenance_margin:
                self.send(self.client.engine.functions.liquidate(a), sender=self.liquidator, gas=5_000_000)
        latest = self.w3.eth.get_block("latest")
        self.rpc("evm_mine", [latest["timestamp"] + 12])
        return self.w3.eth.block_number


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = Driver(tmp_path_factory.mktemp("state-cache"))
    yield d
    d.replay.close()


def test_cached_snapshot_equals_a_full_read_at_every_block(driver):
    d = driver
    client = d.client
    index = EventIndex(client, d.dep.deploy_block)
    follower = ChainFollower(d.w3, depth=32)
    cache = AccountStateCache(resync_every_blocks=25)
    previous = None
    incremental, full, liquidations, reorgs, changes = 0, 0, 0, 0, 0
    reorg_snapshot = None
    step = 1
    while step <= BLOCKS:
        if step == REORG_BACK_TO:
            reorg_snapshot = d.rpc("evm_snapshot", [])
        if step == REORG_AT and reorg_snapshot is not None:
            d.rpc("evm_revert", [reorg_snapshot])
            reorg_snapshot = None
            d.rng = np.random.default_rng(99)  # the new branch does other things
            step = REORG_BACK_TO
        d.block(step)
        update = follower.update()
        if update.reorg_ancestor is not None:
            reorgs += 1
            index.rewind(update.reorg_ancestor)
            cache.reset("reorg")
            previous = None
        scan = index.catch_up(update.head)
        cache.note(scan.from_block, scan.to_block, scan.touched)
        liquidations += len(scan.liquidations)
        accounts = sorted(index.accounts)
        block = update.head.number
        cached = cache.snapshot(client, accounts, block)
        fresh = client.snapshot(accounts, block)
        same_snapshot(cached, fresh)
        read = cache.last
        if read.full:
            full += 1
        else:
            incremental += 1
            assert read.read < len(accounts)
        if read.changed_rows is not None and previous is not None and previous.accounts == fresh.accounts:
            want = differing_rows(fresh.book, previous.book)
            assert set(read.changed_rows.tolist()) == want, block
            changes += len(want)
        previous = fresh
        step += 1
    assert reorgs == 1
    assert liquidations > 0 and changes > 0
    # full reads: the first block, the resyncs every 25 blocks, the reorg
    assert full <= 6 and incremental >= BLOCKS - 6
