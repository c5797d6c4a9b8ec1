"""Prometheus metrics of the keeper, served on `/metrics` (prometheus_client).

Names follow Prometheus conventions (`_total` for counters, base units in the name). Each
KeeperMetrics has its own registry, so several keepers (or tests) in one process do not clash.

| metric | type | meaning |
|---|---|---|
| keeper_accounts_tracked | gauge | accounts in the event index |
| keeper_accounts_read | gauge | accounts whose raw state was read from the chain at the last block (all of them at a full read; with the state cache otherwise only those the block's logs name) |
| keeper_accounts_liquidatable | gauge | accounts with equity < maintenance margin at the head |
| keeper_liquidations_sent_total | counter | liquidation transactions sent |
| keeper_liquidations_succeeded_total | counter | mined with status 1 and a Liquidation event for the account |
| keeper_liquidations_by_route_total{route} | counter | liquidations confirmed (as keeper_liquidations_succeeded_total), by the contract the transaction called: backstop (`BackstopVault.liquidate`: the vault took the positions), direct (`MarginEngine.liquidate`: the keeper took them), options (`OptionMarket.liquidate_options`) |
| keeper_deleverages_total{outcome} | counter | auto-deleveraging calls (`MarginEngine.deleverage`) of bankrupt accounts the collateral sale, insurance fund and backstop vault cannot cover: nominated (a `MarginEngine.nominate` sent, opening or filling the account's round), sent, succeeded (mined with Deleveraged events), failed (reverted or dropped), unsafe (simulation reverted) |
| keeper_inventory_usd | gauge | gross notional of the keeper's own perpetual and futures positions (what direct liquidations left it) at the head's index prices, USD |
| keeper_inventory_age_blocks | gauge | blocks the oldest part of the keeper's inventory it has not unwound has been held at the end of (first in, first out; 1: taken in the last block; 0 when flat or dust, `keeper.risk.unwind.age`) |
| keeper_unwinds_total{outcome} | counter | `Matching.match_orders` against a maker's quote to close inventory (`liquidation.unwind_quotes`): sent, succeeded (mined, status 1), failed (reverted or dropped: the quote was taken first, or the price moved), unsafe (simulation reverted) |
| keeper_liquidations_failed_total | counter | mined but reverted or without the event, or dropped |
| keeper_liquidations_skipped_total{reason} | counter | not sent: below_gas (reward upper bound from the snapshot cannot pay a liquidation's gas: never simulated), unprofitable (simulated reward does not exceed gas x (1 + gas_margin) + min_profit_usd), unsafe (simulation reverted; the account backs off), opened_this_block (the engine refuses: position grown this block; retried next block), backoff (skipped after a failure), fee_cap, stale_node |
| keeper_liquidation_errors_total{reason} | counter | one account's liquidation attempt failed: rpc_error, timeout, revert (an unexpected revert outside the simulation), unexpected (any other exception); the account backs off 1, 2, 4 ... 64 blocks, the others go on |
| keeper_detection_latency_blocks | histogram | block of a liquidation (ours from its receipt or log, anyone's from the Liquidation log) minus the first block we saw the account liquidatable; once per liquidation |
| keeper_missed_liquidations_total | counter | accounts liquidatable for more than N blocks with no liquidation by anyone (once per episode) |
| keeper_gas_spent_eth_total | counter | gas used x effective gas price of our mined transactions, ETH |
| keeper_balance_eth | gauge | the keeper's ETH balance |
| keeper_low_balance | gauge | 1 while the balance is below the warning threshold |
| keeper_head_block | gauge | the last block processed |
| keeper_head_lag_seconds | gauge | wall clock minus the head's timestamp |
| keeper_node_stale | gauge | 1 while sending is paused because the node's head is stale |
| keeper_reorgs_total | counter | chain reorganisations detected |
| keeper_rpc_errors_total | counter | loop iterations that failed on an RPC error |
| keeper_block_processing_seconds | histogram | time to process one block |
| keeper_attestations_submitted_total | counter | health attestations sent (simulated first) |
| keeper_attestations_failed_total | counter | attestations whose simulation reverted, or mined reverted / dropped |
| keeper_attestations_skipped_total{reason} | counter | accounts not attested: not_lower (portfolio margin not below standard), stale_vol, scenario_params (blocks skipped: the attestor's governed scenario parameters hash differs from the keeper's file) |
| keeper_accounts_attested | gauge | candidate accounts whose stored attestation needed no refresh at the last block |
| keeper_settlements_due | gauge | expired dated futures and option series with no settlement price at the last block, not in flight |
| keeper_settlements_sent_total{kind} | counter | settle_market (kind market) / settle_series (kind series) transactions sent |
| keeper_settlements_succeeded_total{kind} | counter | mined with status 1 and the MarketSettled / SeriesSettled event for the id |
| keeper_settlements_failed_total{kind} | counter | mined but reverted, dropped, or mined without the event (someone else settled first) |
| keeper_settlements_skipped_total{reason} | counter | due but not sent: price_not_published (no price stamped at or after expiry yet; retried next block), reverted (simulation reverted otherwise), fee_cap, stale_node |
| keeper_dry_run | gauge | 1 when the keeper runs with `--dry-run` (nothing is sent) |
| keeper_dry_run_liquidations_total | counter | dry run: liquidations simulated and logged that would have been sent |
| keeper_shard_index, keeper_shard_count | gauge | this keeper's shard (`--shard I/N`; 0 and 1 when it is the only keeper) |
| keeper_takeovers_total | counter | liquidations tried for an account of another shard, liquidatable longer than the takeover delay (that shard looks down) |
| keeper_settlement_errors_total | counter | settlement attempts or whole settlement passes that failed on an RPC error, timeout or other exception (retried next block; liquidations go on) |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

SKIP_REASONS = ("below_gas", "unprofitable", "unsafe", "opened_this_block", "backoff", "fee_cap", "stale_node")
ERROR_REASONS = ("rpc_error", "timeout", "revert", "unexpected")
ATTESTATION_SKIP_REASONS = ("not_lower", "stale_vol", "scenario_params")
LIQUIDATION_ROUTES = ("backstop", "direct", "options")
SETTLEMENT_KINDS = ("market", "series")
DELEVERAGE_OUTCOMES = ("nominated", "sent", "succeeded", "failed", "unsafe")
UNWIND_OUTCOMES = ("sent", "succeeded", "failed", "unsafe")
SETTLEMENT_SKIP_REASONS = ("price_not_published", "reverted", "fee_cap", "stale_node")


def _labelled(registry: CollectorRegistry, name: str, doc: str, label: str, values: tuple[str, ...]) -> Counter:
    """A counter with one label, every value of which is exported from the start (at 0)."""
    counter = Counter(name, doc, [label], registry=registry)
    for value in values:
        counter.labels(**{label: value})
    return counter


class KeeperMetrics:
    """The keeper's metrics in a private registry; `serve(port)` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.accounts_tracked = Gauge("keeper_accounts_tracked", "Accounts in the event index", registry=r)
        self.accounts_read = Gauge(
            "keeper_accounts_read", "Accounts whose raw state was read from the chain at the last block", registry=r
        )
        self.accounts_liquidatable = Gauge(
            "keeper_accounts_liquidatable", "Accounts with equity below maintenance margin at the head", registry=r
        )
        self.sent = Counter("keeper_liquidations_sent", "Liquidation transactions sent", registry=r)
        self.succeeded = Counter(
            "keeper_liquidations_succeeded", "Liquidations mined with status 1 and a Liquidation event", registry=r
        )
        self.by_route = _labelled(
            r,
            "keeper_liquidations_by_route",
            "Liquidations confirmed, by route: backstop (the vault took the positions), direct, options",
            "route",
            LIQUIDATION_ROUTES,
        )
        self.deleverages = _labelled(
            r,
            "keeper_deleverages",
            "Auto-deleveraging calls of bankrupt accounts: nominated, sent, succeeded, failed, unsafe (simulation reverted)",
            "outcome",
            DELEVERAGE_OUTCOMES,
        )
        self.inventory_usd = Gauge(
            "keeper_inventory_usd", "Gross notional of the keeper's own positions at index prices, USD", registry=r
        )
        self.inventory_age = Gauge(
            "keeper_inventory_age_blocks",
            "Blocks the oldest inventory the keeper still holds has been held at the end of",
            registry=r,
        )
        self.unwinds = _labelled(
            r,
            "keeper_unwinds",
            "Trades against maker quotes closing the keeper's inventory: sent, succeeded, failed, unsafe",
            "outcome",
            UNWIND_OUTCOMES,
        )
        self.failed = Counter(
            "keeper_liquidations_failed", "Liquidations reverted, without the event, or dropped", registry=r
        )
        self.skipped = Counter("keeper_liquidations_skipped", "Liquidatable accounts not sent", ["reason"], registry=r)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason=reason)
        self.liquidation_errors = Counter(
            "keeper_liquidation_errors",
            "Per-account liquidation attempts failed (isolated, backed off)",
            ["reason"],
            registry=r,
        )
        for reason in ERROR_REASONS:
            self.liquidation_errors.labels(reason=reason)
        self.detection_latency = Histogram(
            "keeper_detection_latency_blocks",
            "Blocks from first seeing an account liquidatable to its liquidation (ours or another's)",
            buckets=(0, 1, 2, 3, 5, 10, 25, 100),
            registry=r,
        )
        self.missed = Counter(
            "keeper_missed_liquidations",
            "Accounts liquidatable for more than N blocks without any liquidation",
            registry=r,
        )
        self.gas_spent_eth = Counter(
            "keeper_gas_spent_eth", "Gas paid by the keeper's mined transactions, ETH", registry=r
        )
        self.balance_eth = Gauge("keeper_balance_eth", "The keeper's ETH balance", registry=r)
        self.low_balance = Gauge(
            "keeper_low_balance", "1 while the keeper's balance is below the warning threshold", registry=r
        )
        self.dry_run = Gauge("keeper_dry_run", "1 when the keeper runs with --dry-run: nothing is sent", registry=r)
        self.dry_run_liquidations = Counter(
            "keeper_dry_run_liquidations", "Dry run: liquidations simulated that would have been sent", registry=r
        )
        self.shard_index = Gauge("keeper_shard_index", "This keeper's shard index (--shard I/N)", registry=r)
        self.shard_count = Gauge("keeper_shard_count", "Number of keeper shards (--shard I/N)", registry=r)
        self.takeovers = Counter(
            "keeper_takeovers", "Liquidations tried for another shard's account past the takeover delay", registry=r
        )
        self.head_block = Gauge("keeper_head_block", "Last block processed", registry=r)
        self.head_lag = Gauge("keeper_head_lag_seconds", "Wall clock minus the head block's timestamp", registry=r)
        self.node_stale = Gauge("keeper_node_stale", "1 while sending is paused: the node's head is stale", registry=r)
        self.reorgs = Counter("keeper_reorgs", "Chain reorganisations detected", registry=r)
        self.rpc_errors = Counter("keeper_rpc_errors", "Loop iterations failed on an RPC error", registry=r)
        self.processing = Histogram(
            "keeper_block_processing_seconds",
            "Time to process one block",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

        self.attestations_submitted = Counter("keeper_attestations_submitted", "Health attestations sent", registry=r)
        self.attestations_failed = Counter(
            "keeper_attestations_failed",
            "Health attestations reverted in simulation or on chain, or dropped",
            registry=r,
        )
        self.attestations_skipped = Counter(
            "keeper_attestations_skipped", "Accounts not attested", ["reason"], registry=r
        )
        for reason in ATTESTATION_SKIP_REASONS:
            self.attestations_skipped.labels(reason=reason)
        self.accounts_attested = Gauge(
            "keeper_accounts_attested", "Candidate accounts with a stored attestation needing no refresh", registry=r
        )

        self.settlements_due = Gauge(
            "keeper_settlements_due", "Expired futures and series without a settlement price, not in flight", registry=r
        )
        self.settlements_sent = Counter(
            "keeper_settlements_sent", "settle_market / settle_series transactions sent", ["kind"], registry=r
        )
        self.settlements_succeeded = Counter(
            "keeper_settlements_succeeded",
            "Settlements mined with status 1 and the settled event",
            ["kind"],
            registry=r,
        )
        self.settlements_failed = Counter(
            "keeper_settlements_failed",
            "Settlements reverted, dropped, or mined without the event",
            ["kind"],
            registry=r,
        )
        for kind in SETTLEMENT_KINDS:
            for c in (self.settlements_sent, self.settlements_succeeded, self.settlements_failed):
                c.labels(kind=kind)
        self.settlements_skipped = Counter(
            "keeper_settlements_skipped", "Due settlements not sent", ["reason"], registry=r
        )
        for reason in SETTLEMENT_SKIP_REASONS:
            self.settlements_skipped.labels(reason=reason)
        self.settlement_errors = Counter(
            "keeper_settlement_errors", "Settlement attempts failed on an RPC error or other exception", registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Serve `/metrics` on addr:port in a daemon thread; returns (server, thread)."""
        return start_http_server(port, addr=addr, registry=self.registry)

    def value(self, name: str, **labels) -> float | None:
        """The current value of a sample (e.g. "keeper_liquidations_sent_total"), for tests and the status file."""
        return self.registry.get_sample_value(name, labels or None)
