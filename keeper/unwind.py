"""The keeper's inventory: what direct liquidations left on its own account, reported every
block and unwound against makers' signed quotes.

A keeper that takes positions itself (`liquidation.route: direct`, or when the backstop vault
cannot take a liquidation) holds them at its own risk. On every block `InventoryJob.step`
reads the keeper's perpetual and futures positions, reports their gross notional at index
prices (`keeper_inventory_usd`) and the age of the oldest part it still holds, first in first
out, in blocks held at the end of (`keeper_inventory_age_blocks`, `keeper.risk.unwind.age`),
and logs a WARNING once an inventory is older than `unwind_blocks`.

With a quotes file (`liquidation.unwind_quotes`: a JSON list of makers' signed orders, which a
market maker or an aggregator keeps current), it closes each position against the quotes
`keeper.risk.unwind.plan` picks: on the other side, within `unwind_slippage_bps` of the index,
whole, best price first, never overshooting or leaving dust. Each is simulated, then sent
through the transaction manager as `Matching.match_orders(quote, its signature, the keeper's
opposite order, empty signature: the keeper sends it)` under the key
"unwind:<market>:<maker>:<nonce>", so that a quote is never sent twice. The file is read again
every block; a file that is missing or malformed is logged and the job tries again next block.
Whatever the job raises is caught by `Liquidator.process_block`: it never stops liquidations.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from web3.exceptions import ContractLogicError

from keeper.chain.orders import Order, Quote, load_quotes
from keeper.metrics import KeeperMetrics
from keeper.risk import unwind
from keeper.units import WAD

log = logging.getLogger("keeper.unwind")

UNWIND = "unwind"
# an order of the keeper's stays valid this long: it is sent with the call, so only the
# block it lands in matters
ORDER_LIFETIME_SECONDS = 3600


def unwind_key(market: int, quote: Quote) -> str:
    """The transaction manager's key of a trade against `quote`: "unwind:<market>:<maker>:<nonce>"."""
    return f"{UNWIND}:{market}:{quote.account.lower()}:{quote.nonce}"


@dataclass
class InventoryJob:
    """Reports and unwinds the keeper's inventory through `tx` (a keeper.txmanager.TxManager).

    quotes_file : makers' signed orders to close inventory against; None = report only.
    slippage_bps : the worst price taken, in basis points of the index.
    max_blocks : an inventory held longer than this many blocks is logged at WARNING.
    """

    client: object  # keeper.chain.client.ProtocolClient
    tx: object
    metrics: KeeperMetrics = field(default_factory=KeeperMetrics)
    quotes_file: Path | None = None
    slippage_bps: int = 50
    max_blocks: int = 10
    dry_run: bool = False
    inventory_usd: float = 0.0
    age_blocks: int = 0
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    lots: dict[int, list[unwind.Lot]] = field(default_factory=dict)  # market -> FIFO lots
    _overdue_logged: bool = False
    _sizes: dict[int, int] = field(default_factory=dict)  # the last block's positions (logged when they change)
    _quotes_problem: str | None = None

    @property
    def address(self) -> str:
        return self.tx.address

    def step(self, head, markets, params, prices, stale: bool = False) -> int:
        """Report the inventory at `head` and send what unwinds it (nothing while the node is
        `stale`); returns the trades sent. `markets` a MarketTable, `params` RiskParams and
        `prices` WAD index prices by price id, all read at `head`."""
        (state,) = self.client.account_states([self.address], head.number)
        # a settled market's position carries no price risk left
        sizes = {p.market: p.size for p in state.positions if p.size and int(markets.settlement_price[p.market]) == 0}
        index = {m: int(prices[int(params.price_id[int(markets.underlying[m])])]) for m in sizes}
        for m in set(self.lots) | set(sizes):
            self.lots[m] = unwind.update_lots(self.lots.get(m, []), sizes.get(m, 0), head.number)
            if not self.lots[m]:
                del self.lots[m]
        self.inventory_usd = sum(abs(s) * index[m] // WAD for m, s in sizes.items()) / WAD
        self.age_blocks = max((unwind.age(self.lots[m], head.number, index[m]) for m in sizes), default=0)
        if sizes != self._sizes:
            log.info(
                "inventory: %s (%.2f USD gross at the index)",
                ", ".join(f"market {m} {s / WAD:+.6f}" for m, s in sorted(sizes.items())) or "flat", self.inventory_usd,
                extra={"inventory_usd": self.inventory_usd},
            )  # fmt: skip
            self._sizes = sizes
        self.metrics.inventory_usd.set(self.inventory_usd)
        self.metrics.inventory_age.set(self.age_blocks)
        if self.age_blocks > self.max_blocks and not self._overdue_logged:
            log.warning(
                "inventory of %.2f USD held for %d blocks (unwind_blocks %d): %s",
                self.inventory_usd, self.age_blocks, self.max_blocks,
                "no quote within the slippage bound" if self.quotes_file else "no quotes file (liquidation.unwind_quotes)",
                extra={"inventory_usd": self.inventory_usd, "age_blocks": self.age_blocks},
            )  # fmt: skip
            self._overdue_logged = True
        elif self.age_blocks <= self.max_blocks:
            self._overdue_logged = False
        if not sizes or self.quotes_file is None or self.client.matching is None or stale:
            return 0
        quotes = self._quotes()
        if not quotes:
            return 0
        minimum = int(self.client.engine.functions.min_position_notional().call(block_identifier=head.number))
        pending = self.tx.pending_keys()
        sent = 0
        for m, size in sorted(sizes.items()):
            # a trade in flight changes the size: plan on what it leaves next block
            if any(k.startswith(f"{UNWIND}:{m}:") for k in pending):
                continue
            live = [q for q in quotes if q.market == m]
            for quote in unwind.plan(size, m, index[m], live, self.slippage_bps, minimum, head.timestamp):
                sent += self._take(quote, m, index[m], head)
        return sent

    def _quotes(self) -> list[Quote]:
        """The quotes file now; [] (logged when the problem changes) when it cannot be read."""
        assert self.quotes_file is not None
        try:
            quotes = load_quotes(self.quotes_file)
        except ValueError as e:
            if str(e) != self._quotes_problem:
                log.warning("cannot unwind inventory: %s; trying again next block", e)
                self._quotes_problem = str(e)
            return []
        self._quotes_problem = None
        return quotes

    def _take(self, quote: Quote, market: int, index_price: int, head) -> int:
        """Simulate and send the keeper's order against `quote`; 1 if sent."""
        mine = Order(
            self.address,
            market,
            -quote.size,
            quote.limit_price,
            secrets.randbits(128),
            head.timestamp + ORDER_LIFETIME_SECONDS,
        )
        call = self.client.matching.functions.match_orders(quote.as_tuple(), quote.signature, mine.as_tuple(), b"")
        what = f"{'sell' if quote.size > 0 else 'buy'} {abs(quote.size) / WAD:.6f} of market {market} at {quote.limit_price / WAD:.2f} (index {index_price / WAD:.2f})"
        try:
            gas = call.estimate_gas({"from": self.address}, block_identifier="latest")
        except ContractLogicError as e:
            self.metrics.unwinds.labels(outcome="unsafe").inc()
            log.info(
                "unwind: %s against %s's quote: simulation reverted (%s)",
                what,
                quote.account,
                str(e.message or e)[:160],
            )
            return 0
        if self.dry_run:
            log.info("dry-run: would unwind: %s against %s's quote (gas %d); not sent", what, quote.account, gas)
            return 0
        tx_hash = self.tx.send(call, gas, unwind_key(market, quote))
        if tx_hash is None:
            return 0
        self.sent += 1
        self.metrics.unwinds.labels(outcome="sent").inc()
        log.info("unwind: %s against %s's quote: sent %s (gas %d)", what, quote.account, tx_hash, gas)
        return 1

    def handle_outcome(self, o) -> None:
        """Count a trade's outcome (a keeper.txmanager.Outcome keyed "unwind:...")."""
        if o.status == "mined":
            self.succeeded += 1
            self.metrics.unwinds.labels(outcome="succeeded").inc()
        else:
            self.failed += 1
            self.metrics.unwinds.labels(outcome="failed").inc()
            log.info("unwind %s: %s (the quote was taken first, or the price moved)", o.key, o.status)
