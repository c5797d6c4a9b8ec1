"""The replay: deploy on a local chain, open a population of accounts, then push a price path
through the mock feeds one block per step while the keeper runs as its own process.

Blocks are mined by the driver (automine off): each step publishes the new index prices and
mines one block, whose timestamp advances by `block_seconds`. The keeper's transactions sent in
reaction to block N are mined in block N+1, ahead of that block's price updates (they pay a
priority fee; the driver's updates pay none). The driver waits for the keeper to report that it
has processed a block before mining the next, up to `keeper_timeout` seconds: a real chain's
12-second blocks are far longer than the keeper needs (the report gives its processing time).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import compiler_version, load_artifact
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Deployment, Web3Backend, deploy_protocol
from keeper.chain.manifest import save_manifest
from keeper.chain.orders import Order, sign_order
from keeper.config import ProtocolConfig, load_config
from keeper.replay.population import AccountSpec, make_population
from keeper.replay.prices import PricePath
from keeper.replay.report import ReplayReport, build_report
from keeper.risk.margin import isolated_initial_margin, margin

log = logging.getLogger("keeper.replay")

WAD = 10**18
SETUP_GAS = 2_000_000
MM_DEPOSIT_USD = 500_000_000  # per market maker
# accounts per market maker: keeps each maker's position within the listing's position caps
ACCOUNTS_PER_MAKER = 200
KEEPER_DEPOSIT_USD = 500_000_000
INSURANCE_USD = 1_000_000


class ReplayError(RuntimeError):
    """The replay could not run (chain, keeper process or setup failure)."""


@dataclass
class ReplayOptions:
    path: PricePath
    accounts: int = 100
    seed: int = 0
    block_seconds: int = 12
    rpc: str | None = None
    keeper_timeout: float = 30.0
    config: ProtocolConfig = field(default_factory=load_config)
    workdir: Path | None = None


@dataclass
class User:
    address: str
    key: bytes
    spec: AccountSpec | None = None
    nonce: int = 0


def _legs(spec: AccountSpec, index: dict[str, int]) -> list[tuple[str, float]]:
    """The spec's trades, split into interleaved chunks so that no intermediate state needs more
    than ~8x leverage on one leg (a 20x basis trade is opened as alternating perp/future slices,
    as a trader would with an order book)."""
    largest = max(abs(size) * index[m.split("-")[0]] / WAD for m, size in spec.trades)
    chunks = max(1, math.ceil(largest / (8 * spec.equity_usd)))
    return [(m, size / chunks) for _ in range(chunks) for m, size in spec.trades]


def _units(amount: float, decimals: int) -> int:
    """Whole units as token units, rounded down to 6 significant decimals for readability."""
    return int(round(amount * 10**6)) * 10 ** (decimals - 6) if decimals >= 6 else int(amount * 10**decimals)


class Replay:
    def __init__(self, opts: ReplayOptions, progress: Callable[[str, int, int], None] | None = None):
        self.opts = opts
        self.progress = progress or (lambda stage, done, total: None)
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="keeper-replay-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.anvil: Anvil | None = None
        self.keeper: subprocess.Popen | None = None

    # ------------------------------------------------------------------ chain helpers

    def _rpc(self, method: str, params: list) -> object:
        response = self.w3.provider.make_request(method, params)
        if "error" in response:
            raise ReplayError(f"{method} failed: {response['error'].get('message', response['error'])}")
        return response.get("result")

    def _send(self, call, gas: int = SETUP_GAS) -> bytes:
        return call.transact({"from": self.admin, "gas": gas, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0})

    def _confirm(self, hashes: list, what: str) -> None:
        for h in hashes:
            receipt = self.w3.eth.wait_for_transaction_receipt(h, timeout=60)
            if receipt["status"] != 1:
                raise ReplayError(f"{what} reverted during setup (tx 0x{bytes(h).hex()})")

    # ------------------------------------------------------------------ phases

    def _deploy(self) -> Deployment:
        self.admin = DEV_ACCOUNTS[0][0]
        first_block = self.w3.eth.block_number + 1
        dep = deploy_protocol(Web3Backend(self.w3, self.admin), self.opts.config, self.admin, self.w3.eth.chain_id)
        dep.compiler = f"vyper {compiler_version()}"
        dep.deploy_block = first_block
        self.manifest = save_manifest(dep, self.workdir / "deployment.json")
        self.client = ProtocolClient(self.w3, dep)
        self.feeds = {
            s: self.w3.eth.contract(address=a, abi=load_artifact("MockAggregator").abi) for s, a in dep.feeds.items()
        }
        erc20 = load_artifact("MockERC20").abi
        self.tokens = {s: self.w3.eth.contract(address=a, abi=erc20) for s, a in dep.tokens.items()}
        self.tokens[self.opts.config.settlement_symbol] = self.w3.eth.contract(address=dep.settlement_token, abi=erc20)
        self.decimals = {**dep.asset_decimals, self.opts.config.settlement_symbol: dep.settlement_decimals}
        return dep

    def _publish(self, step: int) -> list:
        prices = self.opts.path.as_wad(step)
        hashes = []
        for symbol, feed in self.feeds.items():
            answer = prices[symbol] // 10 ** (18 - self.deployment.feed_decimals[symbol])
            hashes.append(self._send(feed.functions.set_answer(answer), 100_000))
        return hashes

    def _open_accounts(self) -> list[User]:
        opts, cfg = self.opts, self.opts.config
        start = {s: float(opts.path.prices[0, i]) for i, s in enumerate(opts.path.symbols)}
        specs = make_population(opts.accounts, start, opts.seed, cfg.settlement_symbol)
        rng = np.random.Generator(np.random.PCG64(opts.seed + 1))
        users = [User(*self._keypair(rng), spec=s) for s in specs]
        self.market_makers = [User(*self._keypair(rng)) for _ in range(math.ceil(len(users) / ACCOUNTS_PER_MAKER))]
        self.keeper_address, self.keeper_key = DEV_ACCOUNTS[1]
        usd = cfg.settlement_symbol
        deposits: list[tuple[str, str, int]] = [
            *((mm.address, usd, MM_DEPOSIT_USD * 10 ** self.decimals[usd]) for mm in self.market_makers),
            (self.keeper_address, usd, KEEPER_DEPOSIT_USD * 10 ** self.decimals[usd]),
        ]
        for u in users:
            for symbol, amount in u.spec.deposits.items():
                deposits.append((u.address, symbol, _units(amount, self.decimals[symbol])))
        vault = self.client.vault
        hashes = []
        totals: dict[str, int] = {}
        for _, symbol, amount in deposits:
            totals[symbol] = totals.get(symbol, 0) + amount
        insurance = INSURANCE_USD * 10 ** self.decimals[usd]
        totals[usd] += insurance
        for symbol, total in totals.items():
            token = self.tokens[symbol]
            hashes.append(self._send(token.functions.mint(self.admin, total), 200_000))
            hashes.append(self._send(token.functions.approve(vault.address, total), 200_000))
        hashes.append(self._send(vault.functions.fund_insurance(insurance), 300_000))
        for i, (account, symbol, amount) in enumerate(deposits):
            hashes.append(self._send(vault.functions.deposit(self.tokens[symbol].address, amount, account), 300_000))
            self.progress("deposits", i + 1, len(deposits))
        self._confirm(hashes, "deposit")
        return users

    def _keypair(self, rng: np.random.Generator) -> tuple[str, bytes]:
        from eth_keys import keys

        key = keys.PrivateKey(rng.bytes(32))
        return key.public_key.to_checksum_address(), key.to_bytes()

    def _order(self, user: User, market: int, size: int, price: int) -> tuple[tuple, bytes]:
        user.nonce += 1
        order = Order(user.address, market, size, price, user.nonce, 2**63)
        return order.as_tuple(), sign_order(order, user.key, self.deployment.chain_id, self.deployment.engine)

    def _trade(self, users: list[User]) -> None:
        dep = self.deployment
        index = self.opts.path.as_wad(0)
        engine = self.client.engine
        hashes = []
        trades = [(i, u, m, s) for i, u in enumerate(users) for m, s in _legs(u.spec, index)]
        for n, (i, user, market_name, size_units) in enumerate(trades):
            market = dep.markets[market_name]
            underlying = market_name.split("-")[0]
            size = int(round(size_units * 10**6)) * 10**12
            if size == 0:
                continue
            price = index[underlying]
            maker, maker_sig = self._order(user, market, size, price)
            taker, taker_sig = self._order(self.market_makers[i % len(self.market_makers)], market, -size, price)
            hashes.append(self._send(engine.functions.match_orders(maker, maker_sig, taker, taker_sig)))
            self.progress("trades", n + 1, len(trades))
        self._confirm(hashes, "trade")

    # ------------------------------------------------------------------ keeper process

    def _start_keeper(self, from_block: int) -> Path:
        status = self.workdir / "keeper-status.json"
        status.unlink(missing_ok=True)
        env = {**os.environ, "KEEPER_PRIVATE_KEY": self.keeper_key}
        cmd = [
            sys.executable, "-m", "keeper", "run",
            "--rpc", self.rpc_url,
            "--manifest", str(self.manifest),
            "--from-block", str(from_block),
            "--status-file", str(status),
            "--poll", "0.05",
        ]  # fmt: skip
        self.keeper_log = open(self.workdir / "keeper.log", "w")
        self.keeper = subprocess.Popen(cmd, env=env, stdout=self.keeper_log, stderr=subprocess.STDOUT)
        return status

    def _wait_keeper(self, status: Path, block: int) -> dict:
        deadline = time.monotonic() + self.opts.keeper_timeout
        while time.monotonic() < deadline:
            if self.keeper.poll() is not None:
                raise ReplayError(f"the keeper process exited (code {self.keeper.returncode}); see {self.workdir / 'keeper.log'}")
            try:
                stats = json.loads(status.read_text())
                if stats["block"] >= block:
                    return stats
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.01)
        log.warning("keeper did not report block %d within %.0f s", block, self.opts.keeper_timeout)
        return {}

    # ------------------------------------------------------------------ main

    def setup(self) -> list[User]:
        """Start (or connect to) the chain, deploy, publish the first prices, open the accounts."""
        if self.opts.rpc:
            self.rpc_url = self.opts.rpc
        else:
            self.anvil = Anvil(extra_args=("--base-fee", "0"))
            self.rpc_url = self.anvil.start()
        self.w3 = connect(self.rpc_url)
        self.deployment = self._deploy()
        self._confirm(self._publish(0), "price update")
        users = self._open_accounts()
        self._trade(users)
        return users

    def run(self) -> ReplayReport:
        """Set up, replay every step with the keeper running, and build the report."""
        try:
            users = self.setup()
            addresses = [u.address for u in users]
            setup_block = self.w3.eth.block_number
            params = self.client.risk_params(setup_block)
            snap = self.client.snapshot(addresses, setup_block)
            start = margin(snap.book, snap.markets, params, snap.prices)
            isolated = isolated_initial_margin(snap.book, snap.markets, params, snap.prices)

            self._rpc("evm_setAutomine", [False])
            status = self._start_keeper(self.deployment.deploy_block)
            self._mine()
            self._wait_keeper(status, self.w3.eth.block_number)

            liquidatable_at: list[tuple[int, set[str]]] = []
            processing: list[float] = []
            steps = self.opts.path.steps
            tail_blocks = 2  # let the keeper act on the last prices
            for step in range(1, steps + tail_blocks):
                if step < steps:
                    self._publish(step)
                block = self._mine()
                stats = self._wait_keeper(status, block)
                if stats:
                    processing.append(stats["processing_ms"])
                summaries = self.client.margin_summaries(addresses, block)
                liquidatable_at.append((block, {a for a, s in zip(addresses, summaries) if s[0] < s[2]}))
                self.progress("replay", step, steps + tail_blocks - 1)
            end_block = self.w3.eth.block_number
            keeper_stats = json.loads(status.read_text()) if status.exists() else {}
            return build_report(
                client=self.client,
                users=users,
                tokens=self.tokens,
                settlement_symbol=self.opts.config.settlement_symbol,
                start_block=setup_block,
                end_block=end_block,
                liquidatable_at=liquidatable_at,
                cross_margin=sum(start.initial_margin),
                isolated_margin=sum(isolated),
                keeper_stats=keeper_stats,
                processing_ms=processing,
                path=self.opts.path,
                workdir=self.workdir,
            )
        finally:
            self.close()

    def _mine(self) -> int:
        latest = self.w3.eth.get_block("latest")
        self._rpc("evm_mine", [latest["timestamp"] + self.opts.block_seconds])
        return self.w3.eth.block_number

    def close(self) -> None:
        if self.keeper and self.keeper.poll() is None:
            self.keeper.terminate()
            try:
                self.keeper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.keeper.kill()
        if getattr(self, "keeper_log", None):
            self.keeper_log.close()
        if self.anvil:
            self.anvil.stop()
