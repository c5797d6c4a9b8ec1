"""Fault tests on a real Anvil chain with `keeper run` as its own process.

One protocol is set up once (a handful of leveraged accounts); every scenario starts from an
EVM snapshot of it, crashes the price so that several accounts become liquidatable, injects its
fault while the test mines block by block (automine off), and then checks that:

- every account that was liquidatable was liquidated exactly once, by someone (Liquidation
  events on the canonical chain);
- the keeper's journal has no two mined liquidations for one account;
- the node's pool never held two of the keeper's liquidations of one account at once
  (checked before every block is mined).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from web3.exceptions import TransactionNotFound

from keeper.chain.anvil import DEV_ACCOUNTS, free_port
from keeper.journal import TxJournal
from keeper.marketdata.prices import synthetic_path
from keeper.replay.driver import Replay, ReplayOptions

pytestmark = pytest.mark.anvil

WAD = 10**18
GWEI = 10**9
CRASH = 0.62  # both underlyings fall 38 %
KEEPER_TIMEOUT = 30.0


class TcpProxy:
    """A TCP forwarder from a local port to Anvil that can be killed and restarted (an RPC
    endpoint going away and coming back on the same address)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._server.close()
            self._server = None
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns = []


class Chain:
    """The protocol on Anvil plus helpers to drive it block by block."""

    def __init__(self, tmp: Path):
        # the keeper liquidates directly here (no seeded backstop vault): these tests follow its own
        # transactions to the engine
        self.replay = Replay(
            ReplayOptions(path=synthetic_path(steps=10, seed=3), accounts=10, seed=3, workdir=tmp, backstop_usd=0)
        )
        self.users = self.replay.setup()
        r = self.replay
        self.w3, self.client, self.dep = r.w3, r.client, r.deployment
        self.admin = r.admin
        self.keeper_address, self.keeper_key = DEV_ACCOUNTS[1]
        self.rival = DEV_ACCOUNTS[2][0]
        # a rival liquidator with collateral of its own
        usd = r.opts.config.settlement_symbol
        amount = 100_000_000 * 10 ** r.decimals[usd]
        token, vault = r.tokens[usd], self.client.vault
        r._confirm(
            [
                r._send(token.functions.mint(self.admin, amount), 200_000),
                r._send(token.functions.approve(vault.address, amount), 200_000),
            ],
            "mint",
        )
        r._confirm([r._send(vault.functions.deposit_for(token.address, amount, self.rival), 300_000)], "deposit")
        self.start_prices = {s: int(p) for s, p in r.opts.path.as_wad(0).items()}
        self.rpc("evm_setAutomine", [False])
        self.snapshot_id = self.rpc("evm_snapshot", [])

    def rpc(self, method: str, params: list):
        response = self.w3.provider.make_request(method, params)
        assert "error" not in response, (method, response)
        return response.get("result")

    def reset(self) -> None:
        self.rpc("evm_revert", [self.snapshot_id])
        self.snapshot_id = self.rpc("evm_snapshot", [])

    def mine(self) -> int:
        self.assert_no_duplicate_in_pool()
        latest = self.w3.eth.get_block("latest")
        self.rpc("evm_mine", [latest["timestamp"] + 12])
        return self.w3.eth.block_number

    def crash(self) -> list[str]:
        """Publish crashed prices in the next block; returns the accounts liquidatable then."""
        hashes = []
        for symbol, feed in self.replay.feeds.items():
            if symbol not in self.start_prices:  # the USDC / USD feed of the depeg rule stays at par
                continue
            answer = int(self.start_prices[symbol] * CRASH) // 10 ** (18 - self.dep.feed_decimals[symbol])
            hashes.append(
                feed.functions.set_answer(answer).transact(
                    {"from": self.admin, "gas": 100_000, "maxFeePerGas": 10**13, "maxPriorityFeePerGas": 0}
                )
            )
        self.mine()
        for h in hashes:
            assert self.w3.eth.get_transaction_receipt(h)["status"] == 1
        addresses = [u.address for u in self.users]
        summaries = self.client.margin_summaries(addresses, "latest")
        return [a for a, s in zip(addresses, summaries) if s[0] < s[2]]

    def pool_liquidations(self) -> list[str]:
        """Accounts named by the keeper's liquidations waiting in the pool."""
        content = self.rpc("txpool_content", [])
        out = []
        for section in ("pending", "queued"):
            for sender, by_nonce in content.get(section, {}).items():
                if sender.lower() != self.keeper_address.lower():
                    continue
                for tx in by_nonce.values():
                    if (tx.get("to") or "").lower() != self.client.engine.address.lower():
                        continue
                    fn, args = self.client.engine.decode_function_input(tx["input"])
                    if fn.fn_name == "liquidate":  # not its settle_market calls
                        out.append(args["account"])
        return out

    def assert_no_duplicate_in_pool(self) -> None:
        pooled = Counter(self.pool_liquidations())
        assert all(n == 1 for n in pooled.values()), f"two liquidations of one account in the pool: {pooled}"

    def liquidation_counts(self, from_block: int) -> Counter:
        return Counter(ev["account"] for ev in self.client.liquidations(from_block, self.w3.eth.block_number))


class Keeper:
    """`keeper run` as its own process against `url`, with a state dir and a status file."""

    def __init__(
        self,
        chain: Chain,
        url: str,
        state: Path,
        *extra: str,
        env: dict | None = None,
        min_profit: str | None = "always",
    ):
        """`min_profit` None: the keeper's default (never at a loss). These fault scenarios crash
        prices far enough to leave accounts in bad debt, which pay a liquidator nothing: they
        run the protocol's own backstop keeper, `--min-profit-usd always`."""
        self.chain, self.state = chain, state
        self.status = state.parent / f"{state.name}-status.json"
        self.log_path = state.parent / f"{state.name}.log"
        profit = [] if min_profit is None else ["--min-profit-usd", min_profit]
        self.args = [
            "--rpc",
            url,
            "--manifest",
            str(chain.replay.manifest),
            "--state-dir",
            str(state),
            "--status-file",
            str(self.status),
            "--poll",
            "0.05",
            "--log-json",
            *profit,
            *extra,
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
        self.env.update({"KEEPER_PRIVATE_KEY": chain.keeper_key, **(env or {})})
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.status.unlink(missing_ok=True)
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keeper", "run", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stats(self) -> dict:
        try:
            return json.loads(self.status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait(self, block: int | None = None, until=None, timeout: float = KEEPER_TIMEOUT) -> dict:
        """Wait until the keeper reports `block` (default: the head) and `until(stats)` holds."""
        block = self.chain.w3.eth.block_number if block is None else block
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"keeper exited ({self.process.returncode}):\n{self.log_path.read_text()[-3000:]}"
            )
            stats = self.stats()
            if stats.get("block", -1) >= block and (until is None or until(stats)):
                return stats
            time.sleep(0.02)
        raise AssertionError(
            f"keeper did not reach block {block} in {timeout} s: {self.stats()}\n{self.log_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._log.close()

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def journal_mined_keys(self) -> Counter:
        """Keys of journalled transactions mined (on the canonical chain) with status 1."""
        with TxJournal(self.state / "tx-journal.sqlite") as journal:
            records = journal.records()
        mined = Counter()
        for rec in records:
            if rec.status == "mined":
                try:
                    receipt = self.chain.w3.eth.get_transaction_receipt(rec.mined_hash)
                except TransactionNotFound:  # mined in a block a reorg replaced
                    continue
                if receipt["status"] == 1:
                    mined[rec.key] += 1
        return mined


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    c = Chain(tmp_path_factory.mktemp("faults"))
    yield c
    c.replay.close()


@pytest.fixture
def fresh(chain):
    chain.reset()
    return chain


def assert_each_liquidated_once(chain: Chain, keeper: Keeper, accounts: list[str], from_block: int) -> None:
    keeper.stop()  # releases the journal
    counts = chain.liquidation_counts(from_block)
    assert accounts and set(counts) == set(accounts), (counts, accounts)
    assert all(n == 1 for n in counts.values()), counts
    mined = keeper.journal_mined_keys()
    assert all(n == 1 for n in mined.values()), mined


def drive(chain: Chain, keeper: Keeper, blocks: int) -> dict:
    stats = {}
    for _ in range(blocks):
        stats = keeper.wait(chain.mine())
    return stats


def test_rpc_killed_and_restarted_mid_run(fresh, tmp_path):
    chain = fresh
    proxy = TcpProxy(chain.replay.anvil.port)
    proxy.start()
    keeper = Keeper(chain, proxy.url, tmp_path / "state")
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        proxy.stop()  # the endpoint goes away; the chain moves on without the keeper
        liquidatable = chain.crash()
        chain.mine()
        time.sleep(0.5)
        proxy.start()
        stats = keeper.wait(until=lambda s: s["sent"] >= len(liquidatable))
        drive(chain, keeper, 2)
        stats = keeper.stats()
        assert stats["rpc_errors"] > 0
        assert stats["succeeded"] == len(liquidatable) and stats["failed"] == 0
        assert_each_liquidated_once(chain, keeper, liquidatable, start)
    finally:
        keeper.stop()
        proxy.stop()


def test_keeper_killed_with_liquidations_in_flight_and_restarted(fresh, tmp_path):
    chain = fresh
    keeper = Keeper(chain, chain.replay.rpc_url, tmp_path / "state")
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        liquidatable = chain.crash()
        keeper.wait(until=lambda s: s["sent"] >= len(liquidatable))
        assert sorted(chain.pool_liquidations()) == sorted(liquidatable)
        keeper.kill()  # SIGKILL with every liquidation in the pool, none mined
        keeper.start()
        restarted = keeper.wait()  # the restarted keeper has looked at the same head
        assert restarted["sent"] == 0, "re-sent liquidations that were already in flight"
        assert restarted["resumed_from"] is not None and restarted["resumed_from"] > chain.dep.deploy_block
        drive(chain, keeper, 2)
        stats = keeper.stats()
        assert stats["succeeded"] == len(liquidatable) and stats["sent"] == 0
        scans = [
            line["message"] for line in keeper.log_lines() if line["message"].startswith("event index: scanned blocks")
        ]
        assert not any(m.startswith(f"event index: scanned blocks {chain.dep.deploy_block}..") for m in scans[1:]), (
            scans
        )
        assert_each_liquidated_once(chain, keeper, liquidatable, start)
    finally:
        keeper.stop()


def test_reorg_drops_liquidations_and_they_are_sent_again_once(fresh, tmp_path):
    chain = fresh
    keeper = Keeper(chain, chain.replay.rpc_url, tmp_path / "state")
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        liquidatable = chain.crash()
        keeper.wait(until=lambda s: s["sent"] >= len(liquidatable))
        keeper.wait(chain.mine(), until=lambda s: s["succeeded"] >= len(liquidatable))
        assert chain.liquidation_counts(start) == Counter(liquidatable)
        chain.rpc("anvil_reorg", [1, []])  # the block holding the liquidations is replaced by an empty one
        assert chain.liquidation_counts(start) == Counter()
        stats = keeper.wait(until=lambda s: s["reorgs"] >= 1 and s["sent"] >= 2 * len(liquidatable))
        drive(chain, keeper, 2)
        stats = keeper.stats()
        assert stats["succeeded"] == 2 * len(liquidatable) and stats["failed"] == 0
        assert_each_liquidated_once(chain, keeper, liquidatable, start)
    finally:
        keeper.stop()


def test_base_fee_spike_50x_while_liquidations_are_pending(fresh, tmp_path):
    chain = fresh
    port = free_port()
    keeper = Keeper(chain, chain.replay.rpc_url, tmp_path / "state", "--metrics-port", str(port))
    keeper.start()
    try:
        chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(GWEI)])
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        liquidatable = chain.crash()  # base fee ~1 gwei: the keeper offers 2 x base + 1 gwei tip
        keeper.wait(until=lambda s: s["sent"] >= len(liquidatable))
        for _ in range(2):  # 50x: the pending liquidations cannot be included
            chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(50 * GWEI)])
            keeper.wait(chain.mine())
        assert chain.liquidation_counts(start) == Counter()
        for _ in range(4):  # the spike lasts; the keeper replaces its transactions with higher fees
            chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(50 * GWEI)])
            keeper.wait(chain.mine())
        stats = keeper.stats()
        assert stats["succeeded"] == len(liquidatable) and stats["sent"] == len(liquidatable)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert f"keeper_liquidations_succeeded_total {float(len(liquidatable))}" in metrics
        assert f"keeper_detection_latency_blocks_count {float(len(liquidatable))}" in metrics  # ours, once each
        assert (
            f"keeper_accounts_tracked {float(len(chain.users) + 2)}" in metrics
        )  # the users, the market maker, the rival
        assert "keeper_gas_spent_eth_total" in metrics and "keeper_balance_eth" in metrics
        assert_each_liquidated_once(chain, keeper, liquidatable, start)
        assert any("replaced after" in line["message"] for line in keeper.log_lines())
    finally:
        keeper.stop()


def test_dropped_transaction_is_sent_again_once(fresh, tmp_path):
    chain = fresh
    keeper = Keeper(chain, chain.replay.rpc_url, tmp_path / "state")
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        liquidatable = chain.crash()
        keeper.wait(until=lambda s: s["sent"] >= len(liquidatable))
        content = chain.rpc("txpool_content", [])["pending"]
        ours = next(v for k, v in content.items() if k.lower() == chain.keeper_address.lower())
        first = ours[min(ours, key=int)]
        chain.rpc("anvil_dropTransaction", [first["hash"]])  # the node forgets the lowest nonce
        drive(chain, keeper, 4)
        stats = keeper.stats()
        assert stats["succeeded"] == len(liquidatable)
        assert_each_liquidated_once(chain, keeper, liquidatable, start)
    finally:
        keeper.stop()


def test_rival_liquidator_front_runs(fresh, tmp_path):
    chain = fresh
    keeper = Keeper(chain, chain.replay.rpc_url, tmp_path / "state")
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        liquidatable = chain.crash()
        keeper.wait(until=lambda s: s["sent"] >= len(liquidatable))
        target = liquidatable[0]
        # the rival outbids the keeper's tip and is mined first in the same block
        chain.client.engine.functions.liquidate(target).transact(
            {"from": chain.rival, "gas": 3_000_000, "maxFeePerGas": 50 * GWEI, "maxPriorityFeePerGas": 50 * GWEI}
        )
        drive(chain, keeper, 3)
        stats = keeper.stats()
        assert stats["failed"] == 1 and stats["succeeded"] == len(liquidatable) - 1
        assert stats["sent"] == len(liquidatable), "retried a liquidation someone else did"
        events = chain.client.liquidations(start, chain.w3.eth.block_number)
        assert [ev["liquidator"] for ev in events if ev["account"] == target] == [chain.rival]
        assert_each_liquidated_once(chain, keeper, liquidatable, start)
    finally:
        keeper.stop()


def test_stale_node_pauses_sending_and_low_balance_warns(fresh, caplog):
    """In-process: a follower whose clock is far ahead of the head sees a stale node; the loop
    goes on without sending; once the head is fresh the liquidations go out. A warning level
    above the keeper's balance logs the low-balance line."""
    from keeper.bot import Liquidator
    from keeper.chain.event_index import EventIndex
    from keeper.chain.follower import ChainFollower
    from keeper.metrics import KeeperMetrics
    from keeper.txmanager import TxManager

    chain = fresh
    now = [time.time() + 100_000]
    metrics = KeeperMetrics()
    bot = Liquidator(
        chain.client, TxManager(chain.w3, chain.keeper_key), EventIndex(chain.client, chain.dep.deploy_block),
        ChainFollower(chain.w3, 8, stale_after_seconds=60, clock=lambda: now[0]), metrics, low_balance_eth=1e9,
        min_profit_usd=None,  # the crash leaves bad debt: the backstop keeper ("always")
    )  # fmt: skip
    caplog.set_level("INFO", logger="keeper")
    start = chain.w3.eth.block_number
    liquidatable = chain.crash()
    bot.step()
    assert bot.stats.stale and metrics.value("keeper_node_stale") == 1
    assert bot.stats.sent == 0 and chain.pool_liquidations() == []
    assert metrics.value("keeper_liquidations_skipped_total", reason="stale_node") == len(liquidatable)
    assert any("node is stale" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith("LOW BALANCE") for r in caplog.records)
    assert metrics.value("keeper_low_balance") == 1
    now[0] = time.time()  # the node follows the chain again
    chain.mine()
    bot.step()
    assert not bot.stats.stale and bot.stats.sent == len(liquidatable)
    chain.mine()
    bot.step()
    assert bot.stats.succeeded == len(liquidatable)
    # once per liquidation, seen stale first: at least the block sent in, so nothing in le=0
    assert metrics.value("keeper_detection_latency_blocks_count") == len(liquidatable)
    assert metrics.value("keeper_detection_latency_blocks_bucket", le="0.0") == 0
    counts = chain.liquidation_counts(start)
    assert counts == Counter(liquidatable)


def test_expired_future_is_settled_within_two_blocks(fresh, tmp_path):
    """A dated future listed to expire 30 s later. Past expiry with no price published since,
    the keeper waits quietly (settle_market would revert "price before expiry"); the block that
    publishes prices is the one the keeper sends settle_market in, and the next block settles
    the market. The keeper logs and counts it; liquidations are untouched."""
    chain = fresh
    engine = chain.client.engine
    market = engine.functions.market_count().call()
    expiry = chain.w3.eth.get_block("latest")["timestamp"] + 30
    fees = {"from": chain.admin, "gas": 500_000, "maxFeePerGas": 10**13, "maxPriorityFeePerGas": 0}
    listed = engine.functions.list_market(chain.dep.underlyings["ETH"], expiry).transact(fees)
    chain.mine()
    assert chain.w3.eth.get_transaction_receipt(listed)["status"] == 1
    port = free_port()
    keeper = Keeper(chain, chain.replay.rpc_url, tmp_path / "state", "--metrics-port", str(port))
    keeper.start()
    try:
        keeper.wait(chain.mine())
        while chain.w3.eth.get_block("latest")["timestamp"] < expiry + 12:  # expired for a block or more
            keeper.wait(chain.mine())
        stats = keeper.stats()
        assert stats["settlements_sent"] == 0 and stats["settlement_errors"] == 0
        assert engine.functions.markets(market).call()[3] == 0
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        waited = next(
            line
            for line in metrics.splitlines()
            if line.startswith('keeper_settlements_skipped_total{reason="price_not_published"}')
        )
        assert float(waited.split()[-1]) >= 1
        # the feeds publish (unchanged prices) at or after expiry
        hashes = []
        for symbol, feed in chain.replay.feeds.items():
            if symbol not in chain.start_prices:  # the settlement asset's own feed (depeg rule)
                continue
            answer = chain.start_prices[symbol] // 10 ** (18 - chain.dep.feed_decimals[symbol])
            hashes.append(feed.functions.set_answer(answer).transact({**fees, "gas": 100_000}))
        published = chain.mine()
        assert all(chain.w3.eth.get_transaction_receipt(h)["status"] == 1 for h in hashes)
        keeper.wait(published, until=lambda s: s["settlements_sent"] == 1)
        stats = keeper.wait(chain.mine(), until=lambda s: s["settlements_succeeded"] == 1)
        events = engine.events.MarketSettled.get_logs(from_block=published, to_block=chain.w3.eth.block_number)
        assert [ev["args"]["market"] for ev in events] == [market]
        assert events[0]["blockNumber"] <= published + 2  # within a block or two of the price
        settlement = engine.functions.markets(market).call()[3]
        assert settlement == events[0]["args"]["settlement_price"] == chain.start_prices["ETH"]
        drive(chain, keeper, 2)  # settled: nothing more is sent
        stats = keeper.stats()
        assert stats["settlements_sent"] == 1 and stats["settlements_failed"] == 0 and stats["settlement_errors"] == 0
        assert stats["sent"] == 0 and stats["failed"] == 0  # no liquidation counted
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'keeper_settlements_succeeded_total{kind="market"} 1.0' in metrics
        assert 'keeper_settlements_sent_total{kind="market"} 1.0' in metrics
        lines = keeper.log_lines()
        messages = [line["message"] for line in lines]
        assert (
            sum(m == f"settle market {market}: expired, waiting for a price published after expiry" for m in messages)
            == 1
        )
        assert any(m.startswith(f"settle market {market} (expiry {expiry}): sent 0x") for m in messages)
        assert (
            f"settled market {market} at {settlement / WAD:.6f} USD in block {events[0]['blockNumber']} (tx {events[0]['transactionHash'].to_0x_hex()})"
            in messages
        )
        assert not [line for line in lines if line.get("logger") == "keeper.settle" and line["level"] != "INFO"]
    finally:
        keeper.stop()
