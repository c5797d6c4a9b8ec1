"""The liquidator bot: follow blocks -> read state pinned to the block -> value every account
with the risk engine -> simulate each liquidation with eth_call -> send -> judge by receipt.

Errors never stop the loop: a reverted liquidation (another liquidator was first, the price
moved) is logged and the account is reconsidered on the next block; an RPC error is logged and
retried with backoff.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception

from keeper.chain.client import ProtocolClient
from keeper.risk.margin import margin
from keeper.txmanager import FeeCapExceeded, TxManager

log = logging.getLogger("keeper.bot")

RPC_ERRORS = (requests.RequestException, Web3Exception, OSError, ValueError)
# a transaction not mined after this many blocks is considered dropped
DROP_AFTER_BLOCKS = 25


@dataclass
class Pending:
    account: str
    tx_hash: str
    sent_block: int


@dataclass
class BotStats:
    block: int = 0
    accounts: int = 0
    liquidatable: int = 0
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    rpc_errors: int = 0
    processing_ms: float = 0.0
    max_processing_ms: float = 0.0
    pending: int = 0


@dataclass
class Liquidator:
    client: ProtocolClient
    tx: TxManager
    start_block: int = 0
    status_file: Path | None = None
    accounts: set[str] = field(default_factory=set)
    pending: dict[str, Pending] = field(default_factory=dict)
    stats: BotStats = field(default_factory=BotStats)
    _scanned_to: int = -1
    _params = None

    def process_block(self, block: int) -> None:
        """One pass over `block`: receipts, discovery, valuation, liquidations."""
        started = time.perf_counter()
        self._check_receipts(block)
        if block > self._scanned_to:
            self.accounts |= self.client.discover_accounts(max(self.start_block, self._scanned_to + 1), block)
            self.accounts.discard(self.tx.address)
            self._scanned_to = block
        if self._params is None:
            self._params = self.client.risk_params(block)
        accounts = sorted(self.accounts)
        self.stats.accounts = len(accounts)
        if accounts:
            snap = self.client.snapshot(accounts, block)
            result = margin(snap.book, snap.markets, self._params, snap.prices)
            # worst health first: those are the accounts closest to bad debt
            order = sorted((i for i in range(len(accounts)) if result.liquidatable[i]), key=lambda i: result.health_factor[i])
            self.stats.liquidatable = len(order)
            for i in order:
                if accounts[i] not in self.pending:
                    self._liquidate(accounts[i], block)
        self.stats.block = block
        self.stats.pending = len(self.pending)
        self.stats.processing_ms = (time.perf_counter() - started) * 1000
        self.stats.max_processing_ms = max(self.stats.max_processing_ms, self.stats.processing_ms)
        self._write_status()

    def _liquidate(self, account: str, block: int) -> None:
        call = self.client.engine.functions.liquidate(account)
        try:
            notional = call.call({"from": self.tx.address}, block_identifier="latest")
            gas = call.estimate_gas({"from": self.tx.address}, block_identifier="latest")
        except ContractLogicError as e:
            self.stats.skipped += 1
            log.info("skip %s: simulation reverted (%s)", account, e.message or e)
            return
        try:
            tx_hash = self.tx.send(call, gas)
        except FeeCapExceeded as e:
            self.stats.skipped += 1
            log.warning("skip %s: %s", account, e)
            return
        self.pending[account] = Pending(account, tx_hash, block)
        self.stats.sent += 1
        log.info("liquidate %s: sent %s (notional %.2f USD, gas %d)", account, tx_hash, notional / 1e18, gas)

    def _check_receipts(self, block: int) -> None:
        w3 = self.client.w3
        for account, p in list(self.pending.items()):
            try:
                receipt = w3.eth.get_transaction_receipt(p.tx_hash)
            except TransactionNotFound:
                if block - p.sent_block > DROP_AFTER_BLOCKS:
                    log.warning("liquidation of %s (%s) not mined after %d blocks: dropped", account, p.tx_hash, DROP_AFTER_BLOCKS)
                    del self.pending[account]
                    self.tx.resync_nonce()
                continue
            del self.pending[account]
            events = self.client.engine.events.Liquidation().process_receipt(receipt, errors=_DISCARD)
            if receipt["status"] == 1 and any(ev["args"]["account"] == account for ev in events):
                self.stats.succeeded += 1
                log.info("liquidated %s in block %d", account, receipt["blockNumber"])
            else:
                self.stats.failed += 1
                log.warning("liquidation of %s reverted in block %d (another liquidator first, or price moved)", account, receipt["blockNumber"])

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.stats)))
        os.replace(tmp, self.status_file)

    def run(self, poll_interval: float = 0.5, max_blocks: int | None = None) -> None:
        """Follow new blocks until interrupted (or `max_blocks` processed)."""
        last = -1
        processed = 0
        backoff = poll_interval
        while max_blocks is None or processed < max_blocks:
            try:
                head = self.client.w3.eth.block_number
                if head != last:
                    self.process_block(head)
                    last = head
                    processed += 1
                backoff = poll_interval
            except RPC_ERRORS as e:
                self.stats.rpc_errors += 1
                backoff = min(backoff * 2, 30.0)
                log.warning("RPC error (%s: %s); retrying in %.1f s", e.__class__.__name__, str(e)[:120], backoff)
            time.sleep(backoff)


try:  # web3 7 names the log-processing error policy in web3.logs
    from web3.logs import DISCARD as _DISCARD
except ImportError:  # pragma: no cover
    _DISCARD = "discard"
