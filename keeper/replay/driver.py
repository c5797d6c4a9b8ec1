"""The replay: deploy on a local chain, open a population of accounts, then push a price path
through the mock feeds one block per step while the keeper runs as its own process.

Blocks are mined by the driver (automine off): each step publishes the new index prices and
mines one block, whose timestamp advances by `block_seconds`. The keeper's transactions sent in
reaction to block N are mined in block N+1, ahead of that block's price updates (they pay a
priority fee; the driver's updates pay none). The driver waits for the keeper to report that it
has processed a block before mining the next, up to `keeper_timeout` seconds: a real chain's
12-second blocks are far longer than the keeper needs (the report gives its processing time).

Set-up (after the deployment) sends its transactions in batches with explicit nonces and
automine off, mines blocks until each batch is in and checks its receipts (`confirm`): thousands
of accounts never queue thousands of transactions at the node, and a stall is one line naming
what stalled. The report gives the set-up time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import compiler_version, load_artifact
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Web3Backend, deploy_protocol
from keeper.chain.deployment import Deployment
from keeper.chain.manifest import save_manifest
from keeper.chain.orders import Order, sign_order, write_quotes
from keeper.chain.state_cache import AccountStateCache
from keeper.config import ProtocolConfig, load_config
from keeper.errors import KeeperError
from keeper.marketdata.prices import PricePath
from keeper.params.rehearsal import revert_message
from keeper.replay import option_books, quotes
from keeper.replay.population import AccountSpec, make_population, trade_size
from keeper.replay.report import ReplayReport, build_report
from keeper.replay.timeline import TimelineRecorder
from keeper.risk import unwind
from keeper.risk.margin import isolated_initial_margin, margin
from keeper.units import WAD

log = logging.getLogger("keeper.replay")

SETUP_GAS = 2_000_000
REPLAY_STALE_AFTER_SECONDS = 10_000_000  # the keepers' freshness gate, off on the replay's own clock
MM_DEPOSIT_USD = 500_000_000  # per market maker
# accounts per market maker: keeps each maker's position within the listing's position caps
# (config/local.yaml: 1,500 ETH / 120 BTC; 20 accounts' net is at most about 1,300 ETH / 110 BTC)
ACCOUNTS_PER_MAKER = 20
KEEPER_DEPOSIT_USD = 500_000_000
KEEPER_GAS_ETH = 100  # each keeper beyond Anvil's account 1 (`--keepers`) gets this much ETH for gas
INSURANCE_USD = 1_000_000  # when the config states no backstop.insurance_fund_usd
# USD deposited in the backstop vault before the crash (`--backstop`): twice the insurance fund
# of config/local.yaml. With max_margin_usage 0.5 it carries the initial margin of several times
# the liquidated notional of the 100-account Black Thursday replay ($1.7M), so the default run
# shows every liquidation routed and a keeper with no inventory; its max_exposure (scaled to the
# path's start prices as the markets' caps are) stays the per-market limit
BACKSTOP_USD = 2_000_000
# Anvil's account 2 deposits the seed in the backstop vault (account 0 deploys, 1 is the keeper)
BACKSTOP_SEEDER = 2
# set-up sends its transactions in batches of this many (explicit nonces, automine off), then
# mines blocks until the batch is in: thousands of accounts never queue thousands of transactions
SETUP_BATCH = 250
# how long a batch may take to be mined, and how many blocks may pass without one of its
# transactions being included, before set-up is declared stalled
STALL_BASE_SECONDS = 60.0
STALL_SECONDS_PER_TX = 0.5
STALL_BLOCKS = 5
# a batch also ends once its declared gas fills this many blocks: the driver's max fee (twice the
# base fee when the batch starts) then still covers the base fee when its last block is mined
BATCH_BLOCKS = 5


def at_start_prices(config: ProtocolConfig, start: dict[str, float]) -> ProtocolConfig:
    """`config` for a replay whose path starts at `start` (USD per unit, by price id symbol):
    each mock feed starts there, and each market's caps are scaled by reference price / start
    price, so that they bound the same USD exposure as the config states at its reference
    price (the open-interest cap rule of keeper.params.backstop is in USD; caps are in units,
    and Black Thursday's ETH at $195 is a tenth of the $2,000 local.yaml judges its caps at)."""
    price_ids = list(config.price_ids)
    underlyings = list(config.underlyings)
    scale: dict[int, Fraction] = {}
    for i, p in enumerate(price_ids):
        if p.symbol in start and not p.feeds:
            new = max(1, round(start[p.symbol]))
            price_ids[i] = dataclasses.replace(p, initial_price=new)
    for j, u in enumerate(underlyings):
        p = config.price_ids[u.price_id]
        if p.symbol in start and not p.feeds:
            reference = u.reference_price or p.initial_price
            scale[j] = Fraction(reference) / Fraction(price_ids[u.price_id].initial_price)
            underlyings[j] = dataclasses.replace(u, reference_price=price_ids[u.price_id].initial_price)
    markets = tuple(
        dataclasses.replace(
            m,
            max_open_interest=int(m.max_open_interest * scale[m.underlying]),
            max_position=int(m.max_position * scale[m.underlying]),
        )
        if m.underlying in scale
        else m
        for m in config.markets
    )
    backstop = config.backstop_vault
    if backstop is not None and backstop.max_exposure:
        underlying_of = {m.name: m.underlying for m in config.markets}
        exposure = tuple(
            (name, int(size * scale[underlying_of[name]]) if underlying_of.get(name) in scale else size)
            for name, size in backstop.max_exposure
        )
        backstop = dataclasses.replace(backstop, max_exposure=exposure)
    return dataclasses.replace(
        config, price_ids=tuple(price_ids), underlyings=tuple(underlyings), markets=markets, backstop_vault=backstop
    )


def population_caps_problem(config: ProtocolConfig, specs: list[AccountSpec], makers: int) -> str | None:
    """A line naming the first market whose open interest (sum of longs) or largest position
    (a user's, or a market maker's net over its users) the population would push above the
    config's caps, or None. Checked before the first deposit: the trades would revert."""
    from collections import defaultdict

    positions: dict[tuple[str, str], float] = defaultdict(float)
    for i, spec in enumerate(specs):
        for market, size in spec.trades:
            positions[(f"account {i}", market)] += size
            positions[(f"market maker {i % makers}", market)] -= size
    oi: dict[str, float] = defaultdict(float)
    largest: dict[str, float] = defaultdict(float)
    for (_, market), size in positions.items():
        oi[market] += max(size, 0.0)
        largest[market] = max(largest[market], abs(size))
    for m in config.markets:
        cap, pos = m.max_open_interest / WAD, m.max_position / WAD
        symbol = config.underlyings[m.underlying].symbol
        if cap and oi[m.name] > cap:
            return (
                f"{len(specs)} accounts need {oi[m.name]:,.1f} {symbol} of {m.name} open interest, above the config's cap "
                f"{cap:,.6g} (sized to its insurance fund, docs/threat-model.md): use fewer --accounts or a config "
                "with larger caps and insurance fund"
            )
        if pos and largest[m.name] > pos:
            return (
                f"the population needs a {m.name} position of {largest[m.name]:,.1f} {symbol}, above the config's "
                f"max_position {pos:,.6g}: use a config with a larger max_position"
            )
    return None


class ReplayError(KeeperError, RuntimeError):
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
    # option books (the config needs an `options:` section), vols from this data folder
    # (default: keeper.marketdata.daily.data_dir(), $KEEPER_DATA_DIR) and the keeper's attestation service on
    options: bool = False
    vol_data_dir: Path | None = None
    # keeper processes, each `keeper run --shard i/keepers` with its own key and collateral
    keepers: int = 1
    # (keeper i, step s): stop keeper i just before step s, to watch the other shards take over
    stop_keeper: tuple[int, int] | None = None
    # USD the insurance fund starts with (0: none, deficits become bad debt); None: the config's
    # backstop.insurance_fund_usd, else INSURANCE_USD
    insurance_fund_usd: int | None = None
    # the gas limit of every block of the Anvil the replay starts (not of a chain given with rpc):
    # a step's liquidations are mined in the block after it, so the block must hold them all
    block_gas_limit: int = 100_000_000
    # USD deposited in the backstop vault before the crash (0: none; the keepers then liquidate
    # directly); ignored when the config deploys no backstop vault
    backstop_usd: int = BACKSTOP_USD
    # the keepers' auto-deleveraging duty (settings `liquidation.deleverage`); off: a deficit
    # beyond the insurance fund and the backstop vault becomes bad debt
    deleverage: bool = True


@dataclass
class User:
    """A trader: its address, the key that signs its orders, its portfolio spec and the last
    order nonce it used (the next order takes nonce + 1)."""

    address: str
    key: bytes
    spec: AccountSpec | None = None
    nonce: int = 0

    def order(self, market: int, size: int, price: int, chain_id: int, matching: str) -> tuple[tuple, bytes]:
        """The next order (as the tuple `Matching.match_orders` takes) and its EIP-712 signature."""
        order = Order(self.address, market, size, price, self.next_nonce(), 2**63)
        return order.as_tuple(), sign_order(order, self.key, chain_id, matching)

    def next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce


# send(contract_call, gas) -> transaction hash, without waiting for the receipt
Send = Callable[[Any, int], bytes]


def _receipt(w3, h):
    try:
        return w3.eth.get_transaction_receipt(h)
    except TransactionNotFound:
        return None


def stall_timeout(n: int) -> float:
    """Seconds `n` set-up transactions may take to be mined."""
    return STALL_BASE_SECONDS + STALL_SECONDS_PER_TX * n


def _stalled(what: str, done: int, total: int, h, seconds: float, how: str) -> ReplayError:
    return ReplayError(
        f"set-up stalled: {total - done} of {total} {what} transaction(s) not mined after {seconds:.0f} s{how} "
        f"(first: 0x{bytes(h).hex()}); the node may be overloaded, its block gas limit too low, or something "
        "else sending from the set-up account"
    )


def check_receipts(w3, hashes: list, receipts: list, what: str) -> None:
    """ReplayError naming `what` and the revert reason if a transaction reverted."""
    for h, receipt in zip(hashes, receipts):
        if receipt["status"] != 1:
            reason = revert_reason(w3, h, receipt["blockNumber"])
            raise ReplayError(f"{what} reverted during setup: {reason} (tx 0x{bytes(h).hex()})")


def confirm(w3, hashes: list, what: str, mine: Callable[[], None] | None = None) -> None:
    """Wait for every transaction in `hashes` (in order: one sender's are mined in nonce order),
    calling `mine` (when given) whenever the next one is not in yet; ReplayError naming `what`
    and the revert reason if one reverted, or one line naming what stalled (never web3's
    TimeExhausted) if they are not all mined within `stall_timeout(len(hashes))` seconds or,
    when mining, `STALL_BLOCKS` blocks pass without progress."""
    started = time.monotonic()
    deadline = started + stall_timeout(len(hashes))
    receipts: list = []
    idle = 0
    while len(receipts) < len(hashes):
        receipt = _receipt(w3, hashes[len(receipts)])
        if receipt is not None:
            receipts.append(receipt)
            idle = 0
            continue
        now = time.monotonic()
        if now > deadline:
            raise _stalled(what, len(receipts), len(hashes), hashes[len(receipts)], now - started, "")
        if mine is None:
            time.sleep(0.05)
            continue
        if idle >= STALL_BLOCKS:
            raise _stalled(
                what, len(receipts), len(hashes), hashes[len(receipts)], now - started,
                f" and {idle} blocks without one of them",
            )  # fmt: skip
        mine()
        idle += 1
    check_receipts(w3, hashes, receipts, what)


def revert_reason(w3, tx_hash, block: int) -> str:
    """The reason a mined transaction reverted: the same call replayed on the state before its
    block (`block`; set-up batches put several transactions in a block, whose earlier ones the
    replayed call does not see), or a phrase saying it is unknown."""
    traced = _traced_revert(w3, tx_hash)
    if traced is not None:
        return traced
    try:
        tx = w3.eth.get_transaction(tx_hash)
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "gas": tx["gas"], "value": tx["value"]}
        w3.eth.call(call, block_identifier=block - 1)
    except (ContractLogicError, Web3RPCError) as e:
        return revert_message(e)
    except Exception as e:  # noqa: BLE001 - the reason is a courtesy: never hide the revert itself
        return f"reason unknown ({e.__class__.__name__} replaying it)"
    return "reason unknown (the call succeeds when replayed)"


def _traced_revert(w3, tx_hash) -> str | None:
    """The revert string of a mined transaction from the node's trace of it (Anvil's
    `debug_traceTransaction`: the state just before it, earlier transactions of its block
    included), or None when the node does not trace or the output is not an Error(string)."""
    try:
        response = w3.provider.make_request(
            "debug_traceTransaction", ["0x" + bytes(tx_hash).hex(), {"disableStorage": True, "disableStack": True}]
        )
        out = (response.get("result") or {}).get("returnValue") or ""
        data = bytes.fromhex(out[2:] if out.startswith("0x") else out)
        if data[:4] != bytes.fromhex("08c379a0"):
            return None
        from eth_abi import decode

        return str(decode(["string"], data[4:])[0])
    except Exception:  # noqa: BLE001 - a courtesy: fall back to replaying the call
        return None


def spec_deposits(users: list[User], decimals: dict[str, int]) -> list[tuple[str, str, int]]:
    """(account, symbol, token units) of every deposit the users' specs hold."""
    return [
        (u.address, symbol, _units(amount, decimals[symbol]))
        for u in users
        for symbol, amount in u.spec.deposits.items()
    ]


def deposit_all(
    send: Send,
    vault,
    tokens: dict,
    funder: str,
    deposits: list[tuple[str, str, int]],
    *,
    insurance: tuple[str, int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list:
    """Mint each mock token's total to `funder`, approve the vault for it, fund the insurance
    fund (`insurance`: settlement symbol and token units) and deposit every (account, symbol,
    token units) into its account. `tokens`: symbol -> web3 contract of a mock (mintable) token.
    Returns the transaction hashes, in order (see `confirm`)."""
    totals: dict[str, int] = {}
    for _, symbol, amount in deposits:
        totals[symbol] = totals.get(symbol, 0) + amount
    if insurance is not None:
        totals[insurance[0]] = totals.get(insurance[0], 0) + insurance[1]
    hashes = []
    for symbol, total in totals.items():
        token = tokens[symbol]
        hashes.append(send(token.functions.mint(funder, total), 200_000))
        hashes.append(send(token.functions.approve(vault.address, total), 200_000))
    if insurance is not None:
        hashes.append(send(vault.functions.fund_insurance(insurance[1]), 300_000))
    for i, (account, symbol, amount) in enumerate(deposits):
        hashes.append(send(vault.functions.deposit_for(tokens[symbol].address, amount, account), 300_000))
        if progress is not None:
            progress("deposits", i + 1, len(deposits))
    return hashes


def trade_all(
    send: Send,
    matching,
    deployment: Deployment,
    pairs: list[tuple[User, User]],
    index: dict[str, int],
    progress: Callable[[str, int, int], None] | None = None,
    min_notional: int = 0,
) -> list:
    """Open each user's spec trades against its market maker at the index price: pairs are
    (user, maker); `index`: underlying -> WAD index price. Legs are split as `_legs` does.
    `min_notional` (WAD USD, the engine's `min_position_notional`): a maker nets many users'
    legs, and a fill that would leave its position non-zero but below the minimum (the engine
    reverts it) goes to the next maker that it leaves flat or above it. Returns the
    `match_orders` transaction hashes (see `confirm`)."""
    hashes = []
    trades = [(user, maker, m, s) for user, maker in pairs for m, s in _legs(user.spec, index)]
    makers = list(dict.fromkeys(maker.address for _, maker in pairs))
    by_address = {maker.address: maker for _, maker in pairs}
    held: dict[tuple[str, str], int] = {}  # (maker, market) -> WAD size after the fills so far

    def too_small(position: int, price: int) -> bool:
        return position != 0 and abs(position) * price // WAD < min_notional

    for n, (user, maker, market_name, size_units) in enumerate(trades):
        market = deployment.markets[market_name]
        size = trade_size(size_units)
        if size == 0:
            continue
        price = index[market_name.split("-")[0]]
        if min_notional and too_small(held.get((maker.address, market_name), 0) - size, price):
            start = makers.index(maker.address)
            for k in range(1, len(makers)):
                other = makers[(start + k) % len(makers)]
                if not too_small(held.get((other, market_name), 0) - size, price):
                    maker = by_address[other]
                    break
        held[(maker.address, market_name)] = held.get((maker.address, market_name), 0) - size
        ours, our_sig = user.order(market, size, price, deployment.chain_id, deployment.matching)
        theirs, their_sig = maker.order(market, -size, price, deployment.chain_id, deployment.matching)
        hashes.append(send(matching.functions.match_orders(ours, our_sig, theirs, their_sig), SETUP_GAS))
        if progress is not None:
            progress("trades", n + 1, len(trades))
    return hashes


def _legs(spec: AccountSpec, index: dict[str, int]) -> list[tuple[str, float]]:
    """The spec's trades, split into interleaved chunks so that no intermediate state needs more
    than ~8x leverage on one leg (a 20x basis trade is opened as alternating perp/future slices,
    as a trader would with an order book)."""
    largest = max((abs(size) * index[m.split("-")[0]] / WAD for m, size in spec.trades), default=0.0)
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
        self.keepers: list[subprocess.Popen] = []
        self.keeper_logs: list = []
        self.stopped: set[int] = set()  # keepers stopped on purpose (`stop_keeper`)
        self._max_fee = 0  # see _fees
        # set-up batching (see _begin_batches): the next nonce and the transactions not yet mined
        self._nonce: int | None = None
        self._in_flight: list = []
        self._in_flight_gas = 0
        self._block_gas = 30_000_000
        self._stage = "set-up"
        self.setup_seconds: float | None = None
        self._mining: tuple[bool, int | None] | None = None  # the chain's mining mode, to restore
        # the driver's own view of every account's raw state (see _liquidatable)
        self._truth: AccountStateCache | None = None
        self._truth_logs = 0  # the driver's cache has the logs up to this block

    # ------------------------------------------------------------------ chain helpers

    def _rpc(self, method: str, params: list) -> object:
        response = self.w3.provider.make_request(method, params)
        if "error" in response:
            raise ReplayError(f"{method} failed: {response['error'].get('message', response['error'])}")
        return response.get("result")

    def _rpc_or_none(self, method: str, params: list) -> object:
        """The result, or None if the node does not know the method (not every node is Anvil)."""
        try:
            return self._rpc(method, params)
        except Exception:  # noqa: BLE001 - an unknown method, or a node that answers it badly
            return None

    def _fees(self) -> dict:
        """EIP-1559 fields of the driver's own transactions: no priority fee (the keeper's
        transactions, which pay one, go first in a block) and a max fee of twice the latest base
        fee, which covers the base fee of the next blocks (it rises at most 12.5% per block).
        On a chain with base fee 0 (the Anvil the replay starts) both are 0."""
        return {"maxFeePerGas": self._max_fee, "maxPriorityFeePerGas": 0}

    def _update_fees(self) -> None:
        self._max_fee = 2 * int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)

    def _send(self, call, gas: int = SETUP_GAS) -> bytes:
        if self._nonce is None:
            return call.transact({"from": self.admin, "gas": gas, **self._fees()})
        tx_hash = call.transact({"from": self.admin, "gas": gas, "nonce": self._nonce, **self._fees()})
        self._nonce += 1
        self._in_flight.append(tx_hash)
        self._in_flight_gas += gas
        if len(self._in_flight) >= SETUP_BATCH or self._in_flight_gas >= BATCH_BLOCKS * self._block_gas:
            self._flush(self._stage)
        return tx_hash

    # ------------------------------------------------------------------ set-up batches

    def _begin_batches(self) -> None:
        """From here to `_end_batches`: automine off, transactions sent with explicit nonces and
        mined by the driver `SETUP_BATCH` at a time (`_flush`)."""
        self._rpc("evm_setAutomine", [False])
        self._nonce = self.w3.eth.get_transaction_count(self.admin, "pending")
        self._in_flight, self._in_flight_gas = [], 0
        self._block_gas = int(self.w3.eth.get_block("latest")["gasLimit"])

    def _flush(self, what: str) -> None:
        """Mine blocks until every transaction sent in this batch is in; check their receipts."""
        batch, self._in_flight, self._in_flight_gas = self._in_flight, [], 0
        if batch:
            confirm(self.w3, batch, what, mine=self._mine_setup_block)
            self._update_fees()

    def _mine_setup_block(self) -> None:
        self._rpc("evm_mine", [])

    def _end_batches(self) -> None:
        self._flush(self._stage)
        self._nonce = None
        self._rpc("evm_setAutomine", [True])  # as before: set-up leaves the chain automining

    # ------------------------------------------------------------------ the user's mining mode

    def _save_mining(self) -> None:
        """Remember how the chain mines (automine, interval) so that `close` can put it back: a
        chain given with --rpc is the user's, and the replay mines by hand."""
        automine = self._rpc_or_none("anvil_getAutomine", [])
        interval = self._rpc_or_none("anvil_getIntervalMining", [])
        self._mining = (bool(automine), int(interval) if isinstance(interval, int) and interval > 0 else None)
        if not automine:
            self._rpc("evm_setAutomine", [True])  # setup waits for each transaction's receipt

    def _mine_by_hand(self) -> None:
        self._rpc("evm_setAutomine", [False])
        if self._mining[1]:
            self._rpc("evm_setIntervalMining", [0])  # else Anvil keeps mining on its interval

    def _restore_mining(self) -> None:
        """Put back the mining mode `_save_mining` found (also after an error)."""
        mining = getattr(self, "_mining", None)
        if mining is None or getattr(self, "w3", None) is None:
            return
        automine, interval = mining
        try:
            if interval:
                self._rpc("evm_setIntervalMining", [interval])
            else:
                self._rpc("evm_setAutomine", [automine])
        except Exception as e:  # noqa: BLE001 - never hide the error that ended the replay
            log.warning(
                "could not restore the chain's mining mode (automine %s, interval %s): %s", automine, interval, e
            )
        else:
            self._mining = None

    def _confirm(self, hashes: list, what: str) -> None:
        """Every transaction in `hashes` mined and successful. While batching: the current batch
        is mined first, then any of `hashes` sent by others (e.g. signed vol updates), mining
        blocks as needed; the nonce is then read again (others may have sent from the admin)."""
        if self._nonce is None:
            confirm(self.w3, hashes, what)
            return
        self._flush(what)
        confirm(self.w3, hashes, what, mine=self._mine_setup_block)
        self._nonce = self.w3.eth.get_transaction_count(self.admin, "pending")

    # ------------------------------------------------------------------ phases

    def _deploy(self) -> Deployment:
        self.admin = DEV_ACCOUNTS[0][0]
        first_block = self.w3.eth.block_number + 1
        # mock feeds start at the path's first prices (options list strikes around them), and
        # the caps keep the USD exposure the config states (see at_start_prices)
        start = dict(zip(self.opts.path.symbols, (float(x) for x in self.opts.path.prices[0])))
        config = self.config = at_start_prices(self.opts.config, start)
        dep = deploy_protocol(Web3Backend(self.w3, self.admin), config, self.admin, self.w3.eth.chain_id)
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
        initial = {p.symbol: p.initial_price * WAD for p in self.opts.config.price_ids}
        for symbol, feed in self.feeds.items():
            # a price id without a path (e.g. the settlement asset's USDC / USD) stays at its
            # initial price, republished so that it never goes stale
            answer = prices.get(symbol, initial.get(symbol, 0)) // 10 ** (18 - self.deployment.feed_decimals[symbol])
            hashes.append(self._send(feed.functions.set_answer(answer), 100_000))
        return hashes

    def _open_accounts(self) -> list[User]:
        opts, cfg = self.opts, self.opts.config
        specs = self._population()
        rng = np.random.Generator(np.random.PCG64(opts.seed + 1))
        users = [User(*self._keypair(rng), spec=s) for s in specs]
        self.market_makers = [User(*self._keypair(rng)) for _ in range(math.ceil(len(users) / ACCOUNTS_PER_MAKER))]

        self.keeper_keys = self._keeper_keys()
        usd = cfg.settlement_symbol
        deposits: list[tuple[str, str, int]] = [
            *((mm.address, usd, MM_DEPOSIT_USD * 10 ** self.decimals[usd]) for mm in self.market_makers),
            *((address, usd, KEEPER_DEPOSIT_USD * 10 ** self.decimals[usd]) for address, _ in self.keeper_keys),
            *spec_deposits(users, self.decimals),
        ]
        fund = self.insurance_fund_usd()
        insurance = (usd, fund * 10 ** self.decimals[usd]) if fund else None
        self._stage = "deposit"
        hashes = deposit_all(
            self._send,
            self.client.vault,
            self.tokens,
            self.admin,
            deposits,
            insurance=insurance,
            progress=self.progress,
        )
        self._confirm(hashes, "deposit")
        return users

    def insurance_fund_usd(self) -> int:
        """USD the replay funds the insurance fund with (see ReplayOptions.insurance_fund_usd)."""
        if self.opts.insurance_fund_usd is not None:
            return self.opts.insurance_fund_usd
        return self.opts.config.insurance_fund_usd or INSURANCE_USD

    def _population(self) -> list[AccountSpec]:
        opts = self.opts
        start = {s: float(opts.path.prices[0, i]) for i, s in enumerate(opts.path.symbols)}
        vols = self.vol_history.at(int(opts.path.timestamps[0])) if opts.options else None
        return make_population(
            opts.accounts, start, opts.seed, opts.config.settlement_symbol, options=opts.options, vols=vols
        )

    def _check_population(self) -> None:
        """Before the first transaction: the population fits the caps the replay will list."""
        start = dict(zip(self.opts.path.symbols, (float(x) for x in self.opts.path.prices[0])))
        makers = math.ceil(self.opts.accounts / ACCOUNTS_PER_MAKER)
        problem = population_caps_problem(at_start_prices(self.opts.config, start), self._population(), makers)
        if problem:
            raise ReplayError(problem)

    def _keeper_keys(self) -> list[tuple[str, str]]:
        """(address, 0x key) of each keeper process: Anvil's account 1, then keys derived from
        the seed, given gas by `anvil_setBalance` (local chains only, as the whole replay)."""
        from eth_account import Account
        from eth_utils import keccak

        keys = [DEV_ACCOUNTS[1]]
        for i in range(1, self.opts.keepers):
            key = "0x" + keccak(f"replay keeper {self.opts.seed} {i}".encode()).hex()
            address = Account.from_key(key).address
            self._rpc("anvil_setBalance", [address, hex(KEEPER_GAS_ETH * 10**18)])
            keys.append((address, key))
        return keys

    def _keypair(self, rng: np.random.Generator) -> tuple[str, bytes]:
        from eth_keys import keys

        key = keys.PrivateKey(rng.bytes(32))
        return key.public_key.to_checksum_address(), key.to_bytes()

    def _order(self, user: User, market: int, size: int, price: int) -> tuple[tuple, bytes]:
        return user.order(market, size, price, self.deployment.chain_id, self.deployment.matching)

    def _trade(self, users: list[User]) -> None:
        pairs = [(u, self.market_makers[i % len(self.market_makers)]) for i, u in enumerate(users)]
        self._stage = "trade"
        hashes = trade_all(
            self._send, self.client.matching, self.deployment, pairs, self.opts.path.as_wad(0), self.progress,
            min_notional=self.client.engine.functions.min_position_notional().call(),
        )  # fmt: skip
        self._confirm(hashes, "trade")

    # ------------------------------------------------------------------ options

    def _post_vols(self, step: int, now: int) -> list:
        """Sign (by the config's vol signers: Anvil dev keys) and send the vols of `step`, stamped
        `now` (the timestamp of the block they go into)."""
        from keeper.chain.volfeed import post_vols

        vols = self.vol_history.at(int(self.opts.path.timestamps[step]))
        updates = option_books.vol_updates(self.series, vols, now)
        return post_vols(self.w3, self.deployment, self.vol_keys, updates, self.admin, tx=self._fees(), wait=False)

    def _open_options(self, users: list[User]) -> None:
        """Post the first vols, open every option leg against the market makers, and set up the
        keeper's attestation service (risk signers: Anvil dev keys) and the regime tracker."""
        cfg = self.opts.config.options
        self.vol_keys = option_books.dev_keys(cfg.vol_feed.signers.signers[: cfg.vol_feed.signers.threshold])
        self.series = option_books.listed_series(self.client.options, self.deployment)
        now = self.w3.eth.get_block("latest")["timestamp"]
        self._confirm(self._post_vols(0, now), "vol update")
        start = {s: float(self.opts.path.prices[0, i]) for i, s in enumerate(self.opts.path.symbols)}
        holders = [u for u in users if u.spec.options]
        # the legs sized to the deployment's minimum position notional, at the index they trade at
        self._stage = "option trade"
        hashes = option_books.open_option_legs(
            self._send, self.client, self.series, holders, self.market_makers, start, now + 86400
        )
        self._confirm(hashes, "option trade")
        risk = cfg.attestation.signers
        keys = option_books.dev_keys(risk.signers[: risk.threshold])
        names = [f"REPLAY_RISK_KEY_{i + 1}" for i in range(len(keys))]
        self.keeper_env = {
            **{n: "0x" + k.hex() for n, k in zip(names, keys)},
            "KEEPER_ATTESTATION_ENABLED": "1",
            "KEEPER_ATTESTATION_SIGNER_KEY_ENVS": ",".join(names),
            "KEEPER_ATTESTATION_ACCOUNTS": ",".join(u.address for u in users if u.spec.attest) or "all",
        }
        from keeper.config import load_scenario_params

        self.regimes = option_books.RegimeTracker(
            self.client, [u.address for u in users], {u.address for u in holders}, load_scenario_params()
        )

    # ------------------------------------------------------------------ keeper process

    def _start_keepers(self, from_block: int) -> list[Path]:
        """Start each keeper process (shard i of `keepers` when there are several); returns the
        status file each writes after every block."""
        count = len(self.keeper_keys)
        return [self._start_keeper(from_block, i, count, key) for i, (_, key) in enumerate(self.keeper_keys)]

    def _start_keeper(self, from_block: int, shard: int, count: int, key: str) -> Path:
        name = "keeper" if count == 1 else f"keeper-{shard}"
        status = self.workdir / f"{name}-status.json"
        status.unlink(missing_ok=True)
        env = {
            **os.environ,
            "KEEPER_PRIVATE_KEY": key,
            # the replay's chain keeps its own clock (block_seconds a step, however long a step
            # takes on this machine): a head is never stale against the wall clock here
            "KEEPER_STALE_AFTER_SECONDS": str(REPLAY_STALE_AFTER_SECONDS),
            "KEEPER_LIQUIDATION_DELEVERAGE": "1" if self.opts.deleverage else "0",
            # the market makers' quotes (keeper.replay.quotes), which a keeper that took
            # positions itself closes them against
            "KEEPER_LIQUIDATION_UNWIND_QUOTES": str(self.quotes_file),
            **getattr(self, "keeper_env", {}),
        }
        cmd = [
            sys.executable, "-m", "keeper", "run",
            "--rpc", self.rpc_url,
            "--manifest", str(self.manifest),
            "--from-block", str(from_block),
            "--status-file", str(status),
            "--poll", "0.05",
            # the protocol's own backstop keeper: accounts in bad debt pay a liquidator nothing
            # but must still be closed (the insurance fund covers them)
            "--min-profit-usd", "always",
        ]  # fmt: skip
        if count > 1:
            cmd += ["--shard", f"{shard}/{count}"]
        log_file = open(self.workdir / f"{name}.log", "w")
        self.keeper_logs.append(log_file)
        self.keepers.append(subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT))
        return status

    def _stop_keeper(self, i: int) -> None:
        """Stop keeper `i` (a shard going down); the others go on."""
        log.warning("stopping keeper %d of %d (shard %d/%d)", i, len(self.keepers), i, len(self.keepers))
        self.keepers[i].terminate()
        self.keepers[i].wait(timeout=10)
        self.stopped.add(i)

    def _wait_keepers(self, statuses: list[Path], block: int) -> dict:
        """Wait until every keeper has processed `block`; their counters summed, the slowest
        one's processing time (the block is done when all are), and `keepers`."""
        deadline = time.monotonic() + self.opts.keeper_timeout
        seen: dict[int, dict] = {}
        running = len(statuses) - len(self.stopped)
        while time.monotonic() < deadline and len(seen) < running:
            for i, (process, status) in enumerate(zip(self.keepers, statuses)):
                if i in self.stopped:
                    continue
                if process.poll() is not None:
                    raise ReplayError(
                        f"the keeper process exited (code {process.returncode}); see {self.keeper_logs[i].name}"
                    )
                if i in seen:
                    continue
                try:
                    stats = json.loads(status.read_text())
                    if stats["block"] >= block:
                        seen[i] = stats
                except (FileNotFoundError, json.JSONDecodeError, KeyError):
                    pass
            time.sleep(0.01)
        if len(seen) < running:
            log.warning("a keeper did not report block %d within %.0f s", block, self.opts.keeper_timeout)
            return {}
        total = {
            k: sum(s.get(k, 0) for s in seen.values())
            for k in ("sent", "succeeded", "failed", "rpc_errors", "routed", "unwinds_sent", "unwinds_succeeded")
        }
        return {
            **total,
            "processing_ms": max(s["processing_ms"] for s in seen.values()),
            "keepers": len(statuses),
            "keepers_stopped": len(self.stopped),
            "stopped_shards": sorted(self.stopped),
            # every keeper reads and values the whole book: the largest of them
            "rescored": max(s.get("rescored", 0) for s in seen.values()),
            "accounts_read": max(s.get("accounts_read", 0) for s in seen.values()),
        }

    # ------------------------------------------------------------------ main

    def setup(self) -> list[User]:
        """Start (or connect to) the chain, deploy, publish the first prices, open the accounts."""
        if self.opts.rpc:
            self.rpc_url = self.opts.rpc
        else:
            self.anvil = Anvil(extra_args=("--base-fee", "0"), gas_limit=self.opts.block_gas_limit)
            self.rpc_url = self.anvil.start()
        self.w3 = connect(self.rpc_url)
        self._save_mining()
        self._update_fees()
        if self.opts.options:
            if self.opts.config.options is None:
                raise ReplayError(
                    "--options needs a protocol config with an `options:` section (e.g. config/options.yaml)"
                )
            self.vol_history = option_books.load_vol_history(self.opts.vol_data_dir, tuple(self.opts.path.symbols))
        self._check_population()
        started = time.monotonic()
        self.deployment = self._deploy()
        self._begin_batches()
        try:
            self._stage = "price update"
            self._confirm(self._publish(0), "price update")
            users = self._open_accounts()
            self._trade(users)
            if self.opts.options:
                self._open_options(users)
            self._end_batches()
        finally:
            self._nonce = None
        self._seed_backstop()
        self.setup_seconds = time.monotonic() - started
        log.info("set-up: %d accounts opened in %.1f s", len(users), self.setup_seconds)
        return users

    def backstop_seed_usd(self) -> int:
        """USD the replay deposits in the backstop vault (0 without one in the deployment)."""
        return self.opts.backstop_usd if self.deployment.backstop_vault else 0

    def _seed_backstop(self) -> None:
        """Deposit `backstop_usd` in the backstop vault as its depositors would: Anvil's account
        `BACKSTOP_SEEDER` mints the mock settlement token and requests the deposit; the chain's
        clock moves on by the vault's `request_delay` + 1 s (evm_increaseTime, evm_mine); the
        feeds are posted again (the path's first prices), so that nothing is stale; the seeder
        claims the deposit, which the vault credits to its margin account. Automine is on (after
        set-up's batches). A revert is one line naming the step."""
        usd = self.backstop_seed_usd()
        if not usd:
            return
        self._stage = "backstop seed"
        seeder = DEV_ACCOUNTS[BACKSTOP_SEEDER][0]
        vault = self.client.backstop
        token = self.tokens[self.opts.config.settlement_symbol]
        units = usd * 10 ** self.decimals[self.opts.config.settlement_symbol]

        def send(call, what: str, sender: str = seeder) -> None:
            tx_hash = call.transact({"from": sender, "gas": SETUP_GAS, **self._fees()})
            confirm(self.w3, [tx_hash], what)

        send(token.functions.mint(seeder, units), "backstop seed: mint", self.admin)
        send(token.functions.approve(vault.address, units), "backstop seed: approve")
        send(vault.functions.request_deposit(units), "backstop seed: request_deposit")
        delay = int(vault.functions.request_delay().call())
        self._rpc("evm_increaseTime", [delay + 1])
        self._rpc("evm_mine", [])
        self._confirm(self._publish(0), "backstop seed: price update")
        if self.opts.options:  # the signed vols too, stamped at the new head's time
            self._confirm(self._post_vols(0, self.w3.eth.get_block("latest")["timestamp"]), "backstop seed: vol update")
        send(vault.functions.claim_deposit(seeder), "backstop seed: claim_deposit")
        self._update_fees()
        log.info("backstop vault %s seeded with $%s after %d s", vault.address, f"{usd:,}", delay + 1)

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

            if self.opts.options:
                self.regimes.observe(setup_block, self.client.margin_summaries(addresses, setup_block))
            self._update_fees()
            self._post_quotes(0)
            self._mine_by_hand()
            statuses = self._start_keepers(self.deployment.deploy_block)
            self._mine()
            self._wait_keepers(statuses, self.w3.eth.block_number)
            timeline = self._start_timeline(addresses)

            liquidatable_at: list[tuple[int, set[str]]] = []
            processing: list[float] = []
            steps = self.opts.path.steps
            tail_blocks = 2  # let the keeper act on the last prices
            for step in range(1, steps + tail_blocks):
                if self.opts.stop_keeper is not None and self.opts.stop_keeper[1] == step:
                    self._stop_keeper(self.opts.stop_keeper[0])
                if step < steps:
                    self._publish(step)
                    self._post_quotes(step)
                    if self.opts.options:
                        self._post_vols(step, self.w3.eth.get_block("latest")["timestamp"] + self.opts.block_seconds)
                block = self._mine()
                stats = self._wait_keepers(statuses, block)
                if stats:
                    processing.append(stats["processing_ms"])
                liquidatable_at.append((block, self._liquidatable(addresses, block)))
                timeline.record(block, self._step_time(step), len(liquidatable_at[-1][1]))
                self.progress("replay", step, steps + tail_blocks - 1)
            end_block = self.w3.eth.block_number
            keeper_stats = self._wait_keepers(statuses, end_block)
            self._check_mirror(addresses, end_block)
            report = build_report(
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
                setup_seconds=self.setup_seconds,
                path=self.opts.path,
                workdir=self.workdir,
                options=self._options_figures(users, setup_block, end_block) if self.opts.options else None,
                timeline=timeline,
                keepers=tuple(address for address, _ in self.keeper_keys),
                insurance_fund_start=float(self.insurance_fund_usd()),
                backstop_seed=float(self.backstop_seed_usd()),
            )
            # the chain's block gas limit (None on a chain given with rpc: the user's)
            report.data["block_gas_limit"] = None if self.opts.rpc else self.opts.block_gas_limit
            return report
        finally:
            self.close()

    @property
    def quotes_file(self) -> Path:
        return self.workdir / "quotes.json"

    @functools.cached_property
    def position_caps(self) -> dict[int, int]:
        """Each market's position cap (`MarginEngine.max_position`, WAD units, 0 none), read once."""
        return {m: int(self.client.engine.functions.max_position(m).call()) for m in self.deployment.markets.values()}

    def _post_quotes(self, step: int) -> None:
        """The market makers' quotes at `step`'s prices (keeper.replay.quotes) in the markets a
        keeper holds more than dust in, as a request-for-quote venue answers (none while the
        keepers are flat: signing a ladder costs), sized on the positions once the transactions waiting
        for the next block are in, valid for `quotes.LIFETIME_STEPS` blocks from the next one."""
        dep = self.deployment
        deadline = int(self.w3.eth.get_block("latest")["timestamp"]) + quotes.LIFETIME_STEPS * self.opts.block_seconds
        index = self.opts.path.as_wad(min(step, self.opts.path.steps - 1))
        makers = [mm.address for mm in self.market_makers]
        # "pending": after the keepers' trades waiting for the next block, so that a maker's room
        # does not count what it already sold or bought, and a keeper's new inventory is quoted
        states = self.client.account_states(makers + [a for a, _ in self.keeper_keys], "pending")
        held = {(p.market, abs(p.size)) for state in states[len(makers) :] for p in state.positions if p.size}
        markets = {
            name: m
            for name, m in dep.markets.items()
            # more than the dust a keeper cannot close with whole quotes (keeper.risk.unwind)
            if any(size * index[name.split("-")[0]] // WAD > unwind.DUST_USD * WAD for k, size in held if k == m)
        }
        out = []
        for maker, state in zip(self.market_makers, states if markets else []):
            held = {p.market: p.size for p in state.positions}
            out += quotes.ladder(
                maker.address, held, self.position_caps, markets, index, deadline, maker.next_nonce,
                lambda order, key=maker.key: sign_order(order, key, dep.chain_id, dep.matching),
            )  # fmt: skip
        write_quotes(self.quotes_file, out)

    def _start_timeline(self, addresses: list[str]) -> TimelineRecorder:
        """The per-block recorder (the report's `timeline`), with the block the keepers started on
        as its first entry (the path's first prices)."""
        timeline = TimelineRecorder(self.client, self.opts.path.symbols)
        block = self.w3.eth.block_number
        below = sum(s.equity < s.maintenance_margin for s in self.client.margin_summaries(addresses, block))
        timeline.record(block, self._step_time(0), below)
        return timeline

    def _step_time(self, step: int) -> int:
        """Unix time of the path step whose prices block `step` publishes; the tail blocks after
        the last step: its time plus the chain time since."""
        ts = self.opts.path.timestamps
        last = len(ts) - 1
        return int(ts[step]) if step <= last else int(ts[last]) + (step - last) * self.opts.block_seconds

    def _liquidatable(self, addresses: list[str], block: int) -> set[str]:
        """The accounts with equity below maintenance margin at `block`: the contract's own
        `margin_summaries` with option books (options are not in the raw states), else the
        exact mirror (keeper.risk.margin) of every account, its raw states kept up to date by a
        state cache of the driver's own (keeper.chain.state_cache): at 10,000 accounts the
        contract's answer costs seconds a block, the mirror a fraction of that. The mirror
        equals the contract to the wei; `_check_mirror` checks it on every account at the end."""
        if self.opts.options:
            summaries = self.client.margin_summaries(addresses, block)
            self.regimes.observe(block, summaries)
            return {a for a, s in zip(addresses, summaries) if s.equity < s.maintenance_margin}
        if self._truth is None:
            self._truth = AccountStateCache(resync_every_blocks=10**9)
            self._truth_logs = block
        elif block > self._truth_logs:
            logs = self.client.protocol_logs(self._truth_logs + 1, block)
            self._truth.note(self._truth_logs + 1, block, {a for entry in logs for a in entry.touches})
            self._truth_logs = block
        snap = self._truth.snapshot(self.client, addresses, block)
        result = margin(snap.book, snap.markets, self.client.risk_params(block), snap.prices)
        return {a for a, flag in zip(addresses, result.liquidatable.tolist()) if flag}

    def _check_mirror(self, addresses: list[str], block: int) -> None:
        """The driver's liquidatable accounts (`_liquidatable`) against the contract's
        `margin_summaries` at `block`: a ReplayError if they differ (they never should)."""
        if self.opts.options or self._truth is None:
            return
        mine = self._liquidatable(addresses, block)
        summaries = self.client.margin_summaries(addresses, block)
        theirs = {a for a, s in zip(addresses, summaries) if s.equity < s.maintenance_margin}
        if mine != theirs:
            raise ReplayError(
                f"the replay's mirror of the engine disagrees with margin_summaries at block {block} on "
                f"{len(mine ^ theirs)} account(s), e.g. {sorted(mine ^ theirs)[0]}"
            )

    def _options_figures(self, users: list[User], start_block: int, end_block: int) -> dict:
        """The report's option figures (see report.build_report `options`)."""
        kinds = {u.address: u.spec.kind for u in users}
        t0 = int(self.opts.path.timestamps[0])
        return {
            "vol_source": self.vol_history.sources(t0),
            "vol_at_start": {k: round(v, 4) for k, v in self.vol_history.at(t0).items()},
            "regimes": self.regimes,
            "kinds": kinds,
            "option_liquidations": option_books.option_liquidations(self.client.options, start_block + 1, end_block),
        }

    def _mine(self) -> int:
        latest = self.w3.eth.get_block("latest")
        self._rpc("evm_mine", [latest["timestamp"] + self.opts.block_seconds])
        self._update_fees()
        return self.w3.eth.block_number

    def close(self) -> None:
        try:
            self._restore_mining()
        finally:
            self._stop_processes()

    def _stop_processes(self) -> None:
        for process in self.keepers:
            if process.poll() is None:
                process.terminate()
        for process in self.keepers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for log_file in self.keeper_logs:
            log_file.close()
        if self.anvil:
            self.anvil.stop()
