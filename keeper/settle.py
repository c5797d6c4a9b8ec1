"""Settlement of expired dated futures and option series.

On every block the liquidator processes, `SettlementJob.step` sends `MarginEngine.settle_market`
for every dated future and `OptionMarket.settle_series` for every option series whose expiry is
at or before the block's timestamp and whose settlement price is still 0. Which ones is decided
by `due_settlements`, a pure function of the markets and series read at that block (the
liquidator's snapshot when it has one), the block's timestamp and the keys already in flight.

Each settlement is simulated with eth_call first, then sent through the keeper's transaction
manager (its journal, its key, its fee policy) with the key "settle_market:<id>" or
"settle_series:<id>": at most one transaction per market or series is in flight, across
restarts. A simulation that reverts with "price before expiry" (the oracle has not published a
price stamped at or after expiry yet) is skipped quietly and tried again next block. Every other
failure (another revert, an RPC error, a timeout) is logged and counted, and retried on a later
block; `Liquidator.process_block` runs the job after the liquidations and catches whatever it
raises, so it never stops liquidations or the loop.

Accounts' positions in a settled market or series are not realised by the keeper
(`settle_positions` / `settle_account`): the margin engine, the option market and the lens value
them at the settlement price already (no requirement changes by realising), a liquidation
realises them first, and a holder who wants the cash calls either (permissionless) function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

from web3.exceptions import ContractLogicError

from keeper.metrics import KeeperMetrics
from keeper.units import WAD

log = logging.getLogger("keeper.settle")

MARKET, SERIES = "market", "series"
PRICE_NOT_PUBLISHED = "price before expiry"  # the contracts' revert when no post-expiry price yet
WARN_REPEAT_BLOCKS = 100  # a failure repeating every block is logged at WARNING this often


@dataclass(frozen=True)
class Settlement:
    """One market (`kind` "market", a dated future) or option series (`kind` "series") to settle."""

    kind: str
    id: int
    expiry: int

    @property
    def key(self) -> str:
        """The transaction manager's idempotency key: "settle_market:<id>" / "settle_series:<id>"."""
        return f"settle_{self.kind}:{self.id}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"


def due_settlements(
    market_expiry: Sequence[int],
    market_settlement_price: Sequence[int],
    series: Sequence,
    timestamp: int,
    pending: frozenset[str] | set[str] = frozenset(),
) -> list[Settlement]:
    """What to settle at a block with time `timestamp`: every market with 0 < expiry <= timestamp
    (expiry 0 = a perpetual, never settled) and every option series with expiry <= timestamp whose
    settlement price is 0, except those whose key is in `pending` (a transaction in flight).

    `market_expiry` / `market_settlement_price` by market id (MarketTable.expiry and
    .settlement_price); `series` SeriesInfo-like objects (series_id, expiry, settlement_price).
    Oldest expiry first, markets before series at equal expiry, then by id."""
    if len(market_expiry) != len(market_settlement_price):
        raise ValueError(f"{len(market_expiry)} market expiries but {len(market_settlement_price)} settlement prices")
    out = [
        Settlement(MARKET, m, int(expiry))
        for m, (expiry, price) in enumerate(zip(market_expiry, market_settlement_price))
        if 0 < int(expiry) <= timestamp and int(price) == 0
    ]
    out += [
        Settlement(SERIES, int(s.series_id), int(s.expiry))
        for s in series
        if int(s.expiry) <= timestamp and int(s.settlement_price) == 0
    ]
    out = [s for s in out if s.key not in pending]
    return sorted(out, key=lambda s: (s.expiry, s.kind != MARKET, s.id))


def parse_key(key: str) -> tuple[str, int] | None:
    """("market" | "series", id) of a settlement key, else None."""
    kind, _, rest = key.partition(":")
    if kind not in (f"settle_{MARKET}", f"settle_{SERIES}") or not rest.isdigit():
        return None
    return kind.removeprefix("settle_"), int(rest)


@dataclass
class SettlementJob:
    """Settles expired markets and series through `tx` (a keeper.txmanager.TxManager).

    max_fee_per_gas, priority_fee : the liquidator's gas policy; a block whose base fee + tip is
        above the cap is skipped (reason fee_cap), as liquidations are.
    """

    client: object  # keeper.chain.client.ProtocolClient
    tx: object
    metrics: KeeperMetrics = field(default_factory=KeeperMetrics)
    max_fee_per_gas: int = 500 * 10**9
    priority_fee: int = 10**9
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    errors: int = 0
    # key -> block of the last WARNING logged for it (repeated failures are logged at DEBUG between)
    _warned: dict[str, int] = field(default_factory=dict)
    _waiting: set[str] = field(default_factory=set)  # keys skipped for "price before expiry" (logged once)

    @property
    def address(self) -> str:
        return self.tx.address

    def due(self, head, markets=None) -> list[Settlement]:
        """The settlements due at `head` (a BlockRef): `markets` is the MarketTable read at that
        block (the liquidator's snapshot) or None to read it here; option series are read here."""
        pending = self.tx.pending_keys()
        if markets is None:
            markets = self._read("markets", head.number, lambda: self.client.market_table(head.number))
        series = self._read("option series", head.number, lambda: self.client.option_series(head.number))
        if markets is None and series is None:
            raise RuntimeError("neither the markets nor the option series could be read")
        expiry, price = ([], []) if markets is None else (list(markets.expiry), list(markets.settlement_price))
        return due_settlements(expiry, price, series or [], head.timestamp, pending)

    def _read(self, what: str, block: int, read):
        """`read()`, or None (logged, counted) if it raises: a failure to read the option series
        must not hold back the futures, nor the other way round."""
        try:
            return read()
        except Exception as e:  # noqa: BLE001
            self.errors += 1
            self.metrics.settlement_errors.inc()
            self._warn(
                Settlement(what, -1, 0),
                block,
                "settlement: cannot read the %s at block %d (%s: %s); retrying next block",
                what,
                block,
                e.__class__.__name__,
                str(e)[:200],
            )
            return None

    def step(self, head, markets=None, stale: bool = False) -> int:
        """Send what is due at `head`; returns how many were sent. Each settlement's failure is
        contained (logged, counted); an error reading the markets or series raises."""
        due = self.due(head, markets)
        self.metrics.settlements_due.set(len(due))
        if not due:
            self._waiting.clear()
            return 0
        if stale:
            self._skip_all(due, "stale_node")
            return 0
        if head.base_fee + self.priority_fee > self.max_fee_per_gas:
            self._skip_all(
                due,
                "fee_cap",
                f"base fee {head.base_fee / 1e9:.1f} gwei + tip is above the cap {self.max_fee_per_gas / 1e9:.1f} gwei",
                head.number,
            )
            return 0
        sent = 0
        for s in due:
            try:
                sent += self._settle(s, head)
            except Exception as e:  # noqa: BLE001 - one settlement's failure must not stop the others or the loop
                self.errors += 1
                self.metrics.settlement_errors.inc()
                self._warn(
                    s,
                    head.number,
                    "settle %s: %s: %s; retrying next block",
                    s.label,
                    e.__class__.__name__,
                    str(e)[:200],
                )
        self._waiting &= {s.key for s in due}
        return sent

    def _settle(self, s: Settlement, head) -> int:
        call = self._call(s)
        if call is None:
            return 0
        try:
            call.call({"from": self.address}, block_identifier="latest")
            gas = call.estimate_gas({"from": self.address}, block_identifier="latest")
        except ContractLogicError as e:
            reason = e.message or str(e)
            if PRICE_NOT_PUBLISHED in reason:
                self.metrics.settlements_skipped.labels(reason="price_not_published").inc()
                if s.key not in self._waiting:
                    self._waiting.add(s.key)
                    log.info(
                        "settle %s: expired, waiting for a price published after expiry",
                        s.label,
                        extra={"settle": s.label},
                    )
                return 0
            self.metrics.settlements_skipped.labels(reason="reverted").inc()
            self._warn(s, head.number, "settle %s: simulation reverted (%s); retrying next block", s.label, reason)
            return 0
        try:
            tx_hash = self.tx.send(call, gas, s.key)
        except Exception as e:
            if e.__class__.__name__ == "FeeCapExceeded":
                self.metrics.settlements_skipped.labels(reason="fee_cap").inc()
                self._warn(s, head.number, "settle %s: skipped (fee_cap): %s", s.label, e)
                return 0
            raise
        if tx_hash is None:  # a transaction for it is in flight
            return 0
        self._waiting.discard(s.key)
        self._warned.pop(s.key, None)
        self.sent += 1
        self.metrics.settlements_sent.labels(kind=s.kind).inc()
        log.info(
            "settle %s (expiry %d): sent %s (gas %d)",
            s.label,
            s.expiry,
            tx_hash,
            gas,
            extra={"settle": s.label, "tx": tx_hash, "gas": gas},
        )
        return 1

    def _call(self, s: Settlement):
        if s.kind == MARKET:
            return self.client.engine.functions.settle_market(s.id)
        options = getattr(self.client, "options", None)
        return None if options is None else options.functions.settle_series(s.id)

    def _skip_all(self, due: list[Settlement], reason: str, why: str = "", block: int | None = None) -> None:
        self.metrics.settlements_skipped.labels(reason=reason).inc(len(due))
        if why:
            for s in due:
                self._warn(s, block, "settle %s: skipped (%s): %s", s.label, reason, why)

    def _warn(self, s: Settlement, block: int | None, msg: str, *args) -> None:
        """WARNING the first time and then every WARN_REPEAT_BLOCKS blocks per settlement, DEBUG between."""
        last = self._warned.get(s.key)
        if block is None or last is None or block - last >= WARN_REPEAT_BLOCKS:
            if block is not None:
                self._warned[s.key] = block
            log.warning(msg, *args, extra={"settle": s.label})
        else:
            log.debug(msg, *args)

    # ------------------------------------------------------------------ outcomes

    def handle_outcome(self, outcome) -> None:
        """A finished "settle_market:<id>" / "settle_series:<id>" transaction (txmanager.Outcome).
        Success = receipt status 1 and the MarketSettled / SeriesSettled event for the id; status 1
        without it means someone else settled first (the call was a no-op)."""
        parsed = parse_key(outcome.key)
        if parsed is None:
            return
        kind, ident = parsed
        label = f"{kind} {ident}"
        receipt = outcome.receipt
        if receipt is not None:
            price = receipt.get("effectiveGasPrice") or 0
            self.metrics.gas_spent_eth.inc(receipt.get("gasUsed", 0) * price / WAD)
        if outcome.status == "mined" and receipt is not None and receipt.get("status") == 1:
            settled = self._settled_price(kind, ident, receipt)
            if settled is not None:
                self.succeeded += 1
                self.metrics.settlements_succeeded.labels(kind=kind).inc()
                log.info(
                    "settled %s at %.6f USD in block %d (tx %s)", label, settled / WAD, receipt["blockNumber"], outcome.tx_hash,
                    extra={"settle": label, "tx": outcome.tx_hash, "settlement_price": settled / WAD},
                )  # fmt: skip
                return
            self.failed += 1
            self.metrics.settlements_failed.labels(kind=kind).inc()
            log.info("settle %s mined in block %d without settling: already settled by someone else (tx %s)", label, receipt["blockNumber"], outcome.tx_hash,
                     extra={"settle": label, "tx": outcome.tx_hash})  # fmt: skip
            return
        self.failed += 1
        self.metrics.settlements_failed.labels(kind=kind).inc()
        where = f"in block {receipt['blockNumber']}" if receipt is not None else "(not mined)"
        log.warning("settle %s %s %s (tx %s); retrying next block if still unsettled", label, outcome.status, where, outcome.tx_hash,
                    extra={"settle": label, "tx": outcome.tx_hash, "status": outcome.status})  # fmt: skip

    def _settled_price(self, kind: str, ident: int, receipt) -> int | None:
        """The settlement price from the receipt's MarketSettled / SeriesSettled event for `ident`."""
        from web3.logs import DISCARD

        if kind == MARKET:
            events, arg = self.client.engine.events.MarketSettled().process_receipt(receipt, errors=DISCARD), "market"
        else:
            options = getattr(self.client, "options", None)
            if options is None:
                return None
            events, arg = options.events.SeriesSettled().process_receipt(receipt, errors=DISCARD), "series"
        for ev in events:
            if int(ev["args"][arg]) == ident:
                return int(ev["args"]["settlement_price"])
        return None
