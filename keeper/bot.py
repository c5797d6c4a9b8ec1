"""The liquidator bot: follow the head -> index accounts from events -> bring every account's raw
state up to the head block (with the state cache, keeper.chain.state_cache, only the accounts the
block's logs name are read again; without it, every account) -> value them with the risk engine -> bound each liquidatable account's
reward from that snapshot (no RPC call) and drop those that cannot pay a liquidation's gas (dust)
-> for the rest, largest reward first: simulate `liquidate` with eth_call, estimate the profit
against the current gas price (sent only if the reward exceeds gas x (1 + gas_margin) +
min_profit_usd; default: never at a loss), send through the transaction manager, and judge by
the receipt.

With a backstop vault in the deployment and `route` "backstop" (the default; settings
`liquidation.route`), a perpetual or futures liquidation is first simulated through
`BackstopVault.liquidate`, whose return value is the keeper's fee (settlement-token units): the
reward of the profit rule; the vault takes the positions, so the keeper needs no inventory. If
that simulation reverts (the vault is full, lacks equity or cash) the keeper liquidates directly
through `MarginEngine.liquidate` and logs why once per account and episode.

Success is a receipt with status 1 **and** a Liquidation event for the account, logged by the
engine (whoever called it: the keeper, or the vault on its behalf). Nothing stops the
loop: a reverted simulation or transaction (another liquidator was first, the price moved) is
logged and counted; whatever one account's simulation, estimate or send raises (RPC error,
timeout, unexpected revert, bug) is logged, counted by reason, and that account backs off
(1, 2, 4 ... 64 blocks) while the others go on; "position opened this block" is retried next
block; an RPC error reading the book is retried on the same head with backoff; a reorg rewinds
the event index; a stale node pauses sending (the loop goes on). The transaction manager keys every
liquidation "liquidate:<account>" and never has two in flight for one key, across restarts
(its journal).

Accounts that hold options or have had a health attestation (found from OptionPositionChanged
and AttestationSubmitted logs) are valued by the lens's `margin_summaries`, the contract's own
answer with options and any live attestation applied; every other account is valued off-chain
as before. A liquidatable account holding options is first liquidated through
`OptionMarket.liquidate_options` (simulated with eth_call); once it holds none (or nothing is
left to move there) `MarginEngine.liquidate` closes its perpetuals and futures. Both use the key
"liquidate:<account>", so at most one liquidation of an account is in flight. With an
AttestationService (keeper.attest) the loop also keeps health attestations fresh.

With an InventoryJob (keeper.unwind; `keeper run` always starts one) each block also reports what
direct liquidations left on the keeper's own account and, given makers' quotes
(`liquidation.unwind_quotes`), closes it against them within a slippage bound.

With a SettlementJob (keeper.settle; `keeper run` starts one unless `settle_expired` is off)
each block, after the liquidations, also settles every expired dated future and option series
that has no settlement price yet ("settle_market:<id>" / "settle_series:<id>"), reusing the
block's market snapshot. Whatever that job raises is logged and counted and the loop goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from web3.exceptions import ContractLogicError

from keeper import sharding
from keeper.chain.client import RPC_ERRORS, LiquidationTerms, ProtocolClient
from keeper.chain.event_index import EventIndex, write_json_atomic
from keeper.chain.follower import ChainFollower, HeadUpdate
from keeper.chain.state_cache import AccountStateCache
from keeper.metrics import KeeperMetrics
from keeper.risk import adl
from keeper.risk.margin import margin
from keeper.scoring import RescoreIndex, score_rows
from keeper.sharding import Shard
from keeper.units import WAD

log = logging.getLogger("keeper.bot")

TERMS_REFRESH_BLOCKS = 50  # liquidation parameters change only by governance
LOW_BALANCE_REPEAT_BLOCKS = 100
MAX_BACKOFF_BLOCKS = 64  # an account failing every attempt is tried at least this often
# the engine (and the option market) refuse to liquidate an account in the block it grew a
# position: a transient, expected condition, retried next block without a warning
OPENED_THIS_BLOCK = "position opened this block"


def liquidation_key(account: str) -> str:
    return f"liquidate:{account}"


def deleverage_key(account: str, market: int | None, kind: str = "deleverage") -> str:
    """The transaction manager's key of an auto-deleveraging call (`kind` "deleverage" or
    "nominate") of `account` in `market` (None: the prefix every market's key of the account
    starts with)."""
    return f"{kind}:{account}:" + ("" if market is None else str(market))


def expected_reward(notional: int, equity: int, penalty_rate: int, liquidator_share: int) -> int:
    """The liquidator's share of the penalty for closing `notional` (WAD USD), WAD USD.

    MarginEngine._liquidate_positions charges, per underlying closed, penalty =
    min(ceil(closed x rate), remaining equity), and pays liquidator_share of it (rounded down)
    to the liquidator; the charges together never exceed the account's equity before the
    liquidation. So reward = floor(min(ceil(notional x rate), max(equity, 0)) x share).
    The discount on collateral sold from an account left with debt is not counted: a lower bound.
    """
    penalty = min(-(-notional * penalty_rate // WAD), max(equity, 0))
    return penalty * liquidator_share // WAD


def gas_cost_usd(gas: int, max_fee_per_gas: int, eth_price: int) -> int:
    """gas x max fee per gas (wei) x ETH price (WAD USD per ETH) -> WAD USD, rounded up (a
    cost estimate errs high)."""
    return -(-gas * max_fee_per_gas * eth_price // WAD)


# Gas added to a routed liquidation's estimate per routed liquidation this keeper sent before it
# in the same block. They all change one account, the vault: each can add a market or a
# collateral asset to its book, which every later one reads several times (its margin summary
# before and after, the waterfall's capacity, the engine's margin check), while each estimate
# is made against the block's start. Measured on the Black Thursday replay without an insurance
# fund: a routed liquidation estimated at 340,753 gas at the start of its block needed 599,174
# once the block's other routed liquidations had landed. Unused gas is refunded.
ROUTED_GAS_STEP = 40_000
# Gas of a `deleverage` sent behind the keeper's own `nominate` in the same block, per nominee
# that nomination adds: the estimate, made before either lands, does not score it (a score
# values the nominee's account; on the Black Thursday replay without fund or vault, nominating 8
# counterparties was estimated at 800,087 gas, about 100,000 each).
ADL_NOMINEE_GAS = 100_000
# Gas of the liquidation sent behind a deleveraging that leaves the account flat: it cannot be
# estimated before the deleveraging lands (the engine refuses it while the round runs, "engine:
# deleverage first"); on that replay a flat account's collateral sale and waterfall were
# estimated at 271,894 gas.
LIQUIDATION_BEHIND_DELEVERAGE_GAS = 600_000


def with_margin(cost: int, gas_margin: float) -> int:
    """cost x (1 + gas_margin), WAD USD, rounded up."""
    return cost + -(-cost * int(round(gas_margin * WAD)) // WAD)


def reward_bounds(snap, params, rows=None) -> tuple[list[int], list[int]]:
    """(closable notional, collateral market value), WAD USD, per account `rows` of `snap`
    (default: all): the inputs of an upper bound of what liquidating it can pay the liquidator
    (`screen_rewards`), from the snapshot alone (no RPC call), with the contract's own arithmetic:

    - closable notional G = sum over the account's live positions (market not settled, not past
      expiry at the snapshot's block time) of ceil(|size| x index price / 1e18): what
      `_close_underlying` adds up if the liquidation closes everything (a partial close is less);
    - penalty reward = expected_reward(G, equity, top rate, liquidator_share), the top rate being
      max(liquidation_penalty, max_liquidation_penalty) (the ramp never pays more);
    - plus, when the account holds collateral, the discount a collateral sale can give the
      liquidator: market value of the collateral x liquidation_penalty (the vault's discount
      is min(penalty, (1 - haircut) / 2)).

    An account whose bound cannot cover the gas of a liquidation cannot pay for one: it is
    skipped before any simulation. Equity is the exact mirror's (keeper.risk.margin). Cost:
    rows x (markets + assets) integer operations.
    """
    book, markets = snap.book, snap.markets
    rows = range(book.n_accounts) if rows is None else rows
    prices = snap.prices
    closable_markets = []
    for m in range(markets.n_markets):
        expiry = int(markets.expiry[m])
        if int(markets.settlement_price[m]) != 0 or (expiry != 0 and int(markets.timestamp) >= expiry):
            continue
        closable_markets.append((m, int(prices[int(params.price_id[int(markets.underlying[m])])])))
    assets = [
        (a, int(prices[int(params.asset_price_id[a])]), 10 ** int(params.asset_decimals[a]))
        for a in range(book.collateral.shape[1])
    ]
    closable, value = [], []
    for i in rows:
        sizes, balances = book.size[i], book.collateral[i]
        closable.append(sum(-(-abs(int(sizes[m])) * price // WAD) for m, price in closable_markets))
        value.append(sum(int(balances[a]) * price // unit for a, price, unit in assets))
    return closable, value


def screen_rewards(snap, params, terms: LiquidationTerms, equity: list[int], rows=None) -> list[int]:
    """`reward_bounds` combined with each account's exact equity (`equity` indexed like the
    snapshot's accounts): the upper bound of the liquidator's reward, WAD USD, per account
    `rows` of `snap` (default: all; see reward_bounds)."""
    rows = list(range(snap.book.n_accounts) if rows is None else rows)
    closable, value = reward_bounds(snap, params, rows)
    top = max(terms.penalty, terms.max_penalty)
    return [
        expected_reward(g, equity[i], top, terms.liquidator_share) + v * terms.penalty // WAD
        for i, g, v in zip(rows, closable, value)
    ]


def collateral_reward(equity: int, balances, params, prices, penalty_rate: int) -> int:
    """What the liquidator earns buying the collateral of an account left in bad debt (WAD USD):
    CollateralVault.liquidate_collateral mirrored. An account with equity < 0 has every position
    closed at mark (a partial close cannot help it), which leaves its cash at equity minus the
    haircut value of its collateral; the vault then sells each asset in id order, at the index
    price less min(penalty, (1 - haircut) / 2), until the cash is no longer negative. The gain is
    the index value of what is sold less the payment. 0 when equity >= 0 (the penalty is capped by
    equity, so nothing is sold)."""
    if equity >= 0:
        return 0
    assets = range(len(balances))
    units = [10 ** int(params.asset_decimals[a]) for a in assets]
    index = [int(prices[int(params.asset_price_id[a])]) for a in assets]
    haircut = [int(params.asset_haircut[a]) for a in assets]
    cash = equity - sum(int(balances[a]) * index[a] * haircut[a] // (units[a] * WAD) for a in assets)
    gain = 0
    for a in assets:
        balance = int(balances[a])
        if cash >= 0:
            break
        if balance == 0:
            continue
        price = index[a] * (WAD - min(penalty_rate, (WAD - haircut[a]) // 2)) // WAD
        if price == 0:
            continue
        amount = min(balance, (-cash * units[a] + price - 1) // price)
        payment = amount * price // units[a]
        gain += amount * index[a] // units[a] - payment
        cash += payment
    return gain


def rank(
    candidates: list[int], bounds: list[int | None], health: list[int], threshold: int | None
) -> tuple[list[int], list[int]]:
    """(accounts to try, in order; accounts skipped as unable to pay for their gas).

    `candidates`: indices of liquidatable accounts; `bounds[i]`: upper bound of account i's
    reward (None = unknown, e.g. an account valued by the lens, holding options); `threshold`:
    the reward a liquidation must exceed (gas of the cheapest liquidation x fee x ETH price x
    (1 + margin) + min profit), None = liquidate all. Known rewards first, largest first (ties:
    lowest health first), then unknown ones by ascending health."""
    below = [i for i in candidates if threshold is not None and bounds[i] is not None and bounds[i] <= threshold]
    skip = set(below)
    known = sorted(
        (i for i in candidates if i not in skip and bounds[i] is not None), key=lambda i: (-bounds[i], health[i], i)
    )
    unknown = sorted((i for i in candidates if bounds[i] is None), key=lambda i: (health[i], i))
    return known + unknown, below


def failure_reason(e: BaseException) -> str:
    """The label of keeper_liquidation_errors_total for an exception of the per-account path."""
    if isinstance(e, (requests.Timeout, TimeoutError)) or "timeout" in e.__class__.__name__.lower():
        return "timeout"
    if isinstance(e, ContractLogicError):
        return "revert"
    if isinstance(e, RPC_ERRORS):
        return "rpc_error"
    return "unexpected"


@dataclass
class BotStats:
    """Counters written to the status file after each block (the replay driver reads them)."""

    block: int = 0
    accounts: int = 0
    liquidatable: int = 0
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    missed: int = 0
    reorgs: int = 0
    rpc_errors: int = 0
    stale: bool = False
    processing_ms: float = 0.0
    max_processing_ms: float = 0.0
    pending: int = 0
    resumed_from: int | None = None
    settlements_sent: int = 0
    settlements_succeeded: int = 0
    settlements_failed: int = 0
    settlement_errors: int = 0
    account_errors: int = 0  # per-account failures (RPC error, timeout, unexpected revert), isolated
    below_gas: int = 0  # liquidatable accounts at the last block whose reward cannot pay the gas
    dry_run: bool = False  # `keeper run --dry-run`: liquidations simulated and logged, never sent
    would_liquidate: int = 0  # dry run: liquidations that would have been sent
    rescored: int = 0  # accounts valued at the last block (all of them without event-driven re-scoring)
    exact_confirmed: int = 0  # of those, confirmed with the exact mirror after the float screen
    accounts_read: int = 0  # accounts whose raw state was read from the chain at the last block
    full_reads: int = 0  # blocks at which every account was read (all of them without the state cache)
    routed: int = 0  # of `succeeded`, liquidations through the backstop vault (the vault took the positions)
    nominations_sent: int = 0  # auto-deleveraging nominations sent (`MarginEngine.nominate`)
    deleverages_sent: int = 0  # auto-deleveraging calls sent (`MarginEngine.deleverage`)
    deleverages_succeeded: int = 0  # of those, mined with Deleveraged events
    inventory_usd: float = 0.0  # gross notional of the keeper's own positions (keeper.unwind)
    inventory_age_blocks: int = 0  # blocks the oldest part it still holds has been held (keeper.risk.unwind.age)
    unwinds_sent: int = 0  # trades against makers' quotes closing it
    unwinds_succeeded: int = 0  # of those, mined


@dataclass
class Liquidator:
    """The bot. `tx` is a keeper.txmanager.TxManager (keyed sends, poll, reconcile, balance).

    min_profit_usd : a liquidation is sent only if its expected reward exceeds its gas cost x
        (1 + gas_margin) + min_profit_usd (USD). 0 (the default) = never at a loss; negative =
        accept a loss up to that much; None ("always" in the settings) = liquidate every
        liquidatable account whatever it earns, unscreened (a protocol's own backstop keeper).
    gas_margin : the fraction added to the gas cost estimate (fee and gas can rise before
        inclusion).
    liquidation_gas_floor : gas of the cheapest liquidation; before any RPC call an account
        whose reward upper bound (`screen_rewards`) cannot pay this much gas is skipped
        (reason below_gas) without a simulation.
    max_fee_per_gas, priority_fee, base_fee_multiplier : the gas policy, used to price a
        liquidation and to skip it (reason fee_cap) when base fee + tip exceeds the cap.
    """

    client: ProtocolClient
    tx: object
    index: EventIndex
    follower: ChainFollower
    metrics: KeeperMetrics = field(default_factory=KeeperMetrics)
    min_profit_usd: float | None = 0.0
    gas_margin: float = 0.25
    liquidation_gas_floor: int = 200_000
    max_fee_per_gas: int = 500 * 10**9
    priority_fee: int = 10**9
    base_fee_multiplier: int = 2
    low_balance_eth: float = 0.05
    missed_after_blocks: int = 3
    status_file: Path | None = None
    stats: BotStats = field(default_factory=BotStats)
    # account -> first block of the current liquidatable episode (None once counted missed)
    first_seen: dict[str, int] = field(default_factory=dict)
    missed_counted: set[str] = field(default_factory=set)
    # accounts the auto-deleveraging duty held back last block (waiting on a round): not missed
    deleveraging: set[str] = field(default_factory=set)
    # account -> block of its last liquidation counted for detection latency (no double count)
    _ended_at: dict[str, int] = field(default_factory=dict)
    _params = None
    _terms: LiquidationTerms | None = None
    _terms_block: int = -1
    _low_since: int | None = None
    _stale_logged: bool = False
    _reconciled: bool = False
    attestation: object | None = None  # keeper.attest.AttestationService
    settlement: object | None = None  # keeper.settle.SettlementJob
    inventory: object | None = None  # keeper.unwind.InventoryJob
    # accounts valued by the lens (options or attestations seen), and how far logs were scanned
    portfolio_accounts: set[str] = field(default_factory=set)
    _portfolio_scanned_to: int | None = None
    # account -> (first block it may be tried again, blocks skipped after its last failure)
    backoff: dict[str, tuple[int, int]] = field(default_factory=dict)
    _unfinished: bool = False  # the last process_block raised: process the same head again
    _below_gas_logged: int = 0
    # `keeper run --dry-run`: judge every account as usual, but log each liquidation that would
    # be sent (account, expected reward, gas estimate, simulated result) instead of sending it
    dry_run: bool = False
    # `keeper run --shard I/N` (keeper.sharding): this keeper tries the accounts it owns, and
    # another shard's once liquidatable for its takeover delay (multiples of takeover_blocks)
    shard: Shard | None = None
    takeover_blocks: int = 2
    # event-driven re-scoring (keeper.scoring); None = value every account every block
    rescore: RescoreIndex | None = None
    # raw account states kept between blocks (keeper.chain.state_cache); None = read every
    # account every block
    state_cache: AccountStateCache | None = None
    # "backstop": perpetual and futures liquidations go through the deployment's backstop vault
    # when it can take them (the keeper needs no inventory), else direct; "direct": always the
    # engine (settings `liquidation.route`)
    route: str = "backstop"
    # accounts whose fallback from the vault to a direct liquidation was logged this episode
    _fallback_logged: set[str] = field(default_factory=set)
    # (block, routed liquidations sent in it): the gas step of the next one (ROUTED_GAS_STEP)
    _routed_in_block: tuple[int, int] = (-1, 0)
    # auto-deleveraging duty (settings `liquidation.deleverage`): a bankrupt account whose
    # deficit the collateral sale, the insurance fund and the backstop vault cannot cover is
    # deleveraged against the opposite positions in profit before it is liquidated
    deleverage: bool = True

    def __post_init__(self) -> None:
        self.stats.dry_run = self.dry_run
        self.metrics.dry_run.set(1 if self.dry_run else 0)
        self.metrics.shard_index.set(self.shard.index if self.shard else 0)
        self.metrics.shard_count.set(self.shard.count if self.shard else 1)

    @property
    def address(self) -> str:
        return self.tx.address

    # ------------------------------------------------------------------ loop

    def step(self) -> HeadUpdate:
        """Read the head once; on a reorg rewind the index; process the head if it is new."""
        if not self._reconciled:
            self._handle_outcomes(self.tx.reconcile(), self.client.w3.eth.block_number)
            self.index.verify()
            self.stats.resumed_from = self.index.resumed_from
            self._reconciled = True
        update = self.follower.update()
        if update.reorg_ancestor is not None:
            self.stats.reorgs += 1
            self.metrics.reorgs.inc()
            self.index.rewind(update.reorg_ancestor)
            if self.rescore is not None:  # budgets were taken on the replaced blocks
                self.rescore.reset()
            if self.state_cache is not None:  # states were read on the replaced blocks
                self.state_cache.reset(f"reorg below block {update.reorg_ancestor + 1}")
            # our transactions in the replaced blocks may be gone: take the nonce from the chain again
            self.tx.resync_nonce()
            # episodes that started above the ancestor are re-judged on the new chain
            for account, since in list(self.first_seen.items()):
                if since > update.reorg_ancestor:
                    del self.first_seen[account]
            for account, mined in list(self._ended_at.items()):
                if mined > update.reorg_ancestor:
                    del self._ended_at[account]
        self.metrics.head_lag.set(update.lag_seconds)
        self._set_stale(update)
        if update.is_new or update.reorg_ancestor is not None or self._unfinished:
            # a pass that failed half-way (an RPC error reading the book) is redone on the same
            # head at the next step, not lost until the next block
            self._unfinished = True
            self.process_block(update)
            self._unfinished = False
        return update

    def run(self, poll_interval: float = 0.5, max_blocks: int | None = None) -> None:
        """Follow new blocks until interrupted (or `max_blocks` processed)."""
        processed = 0
        backoff = poll_interval
        while max_blocks is None or processed < max_blocks:
            try:
                if self.step().is_new:
                    processed += 1
                backoff = poll_interval
            except RPC_ERRORS as e:
                self.stats.rpc_errors += 1
                self.metrics.rpc_errors.inc()
                backoff = min(max(backoff, 0.05) * 2, 30.0)
                log.warning("RPC error (%s: %s); retrying in %.1f s", e.__class__.__name__, str(e)[:160], backoff)
                self._write_status()
            time.sleep(backoff)

    # ------------------------------------------------------------------ one block

    def process_block(self, update: HeadUpdate) -> None:
        """One pass over the head: index, receipts, valuation, liquidations, balance, status."""
        started = time.perf_counter()
        head = update.head
        block = head.number
        scan = self.index.catch_up(head)
        if self.state_cache is not None:
            self.state_cache.note(scan.from_block, scan.to_block, scan.touched)
        for entry in scan.liquidations:
            # anyone's (ours included) ends the account's episode; if still liquidatable it restarts
            self._episode_ended(entry.account, entry.block)
        try:
            outcomes = self.tx.poll(block)
        except RPC_ERRORS as e:  # receipts are looked up again next block; the journal keeps keys pending
            self.stats.rpc_errors += 1
            self.metrics.rpc_errors.inc()
            log.warning(
                "cannot poll pending transactions at block %d (%s: %s); liquidations go on, retrying next block",
                block,
                e.__class__.__name__,
                str(e)[:160],
            )
            outcomes = []
        self._handle_outcomes(outcomes, block)

        # every block: a raise of a margin rate or cut of a haircut phases in block by block
        self._params = self.client.risk_params(block)
        if self._terms is None or block - self._terms_block >= TERMS_REFRESH_BLOCKS:
            self._terms, self._terms_block = self.client.liquidation_terms(block), block
        accounts = sorted(a for a in self.index.accounts if a != self.address)
        self.stats.accounts = len(accounts)
        self.metrics.accounts_tracked.set(len(accounts))
        order: list[int] = []
        snap = None
        if accounts:
            changed_rows = None
            if self.state_cache is not None:
                snap = self.state_cache.snapshot(self.client, accounts, block)
                read = self.state_cache.last
                changed_rows = read.changed_rows
                self.stats.accounts_read = read.read
                self.stats.full_reads += read.full
            else:
                snap = self.client.snapshot(accounts, block)
                self.stats.accounts_read = len(accounts)
                self.stats.full_reads += 1
            self.metrics.accounts_read.set(self.stats.accounts_read)
            equity, health, liquidatable = self._value(accounts, snap, block, changed_rows)
            self._scan_portfolio_accounts(block)
            onchain = [i for i, a in enumerate(accounts) if a in self.portfolio_accounts]
            if onchain:  # the contract's answer, options and attestations included
                for i, s in zip(onchain, self.client.margin_summaries([accounts[i] for i in onchain], block)):
                    equity[i], health[i], liquidatable[i] = s.equity, s.health_factor, s.equity < s.maintenance_margin
            order = [i for i in range(len(accounts)) if liquidatable[i]]
            self._track_episodes([accounts[i] for i in sorted(order, key=lambda i: health[i])], block)
            if not update.is_stale:
                self._liquidate_all(accounts, order, equity, health, onchain, snap, head)
                if self.attestation is not None:  # each shard attests the accounts it owns
                    own = [
                        a
                        for a in accounts
                        if self.shard is None or sharding.owner(a, self.shard.count) == self.shard.index
                    ]
                    self.attestation.step(block, head.timestamp, own)
            elif order:
                self.stats.skipped += len(order)
                self.metrics.skipped.labels(reason="stale_node").inc(len(order))
        self.stats.liquidatable = len(order)
        self.metrics.accounts_liquidatable.set(len(order))
        if self.settlement is not None:
            self._settle_expired(head, None if snap is None else snap.markets, update.is_stale)
        if self.inventory is not None:
            self._track_inventory(head, snap, update.is_stale)
        self._check_balance(block)
        self.stats.block = block
        self.stats.pending = len(self.tx.pending_keys())
        self.metrics.head_block.set(block)
        elapsed = time.perf_counter() - started
        self.metrics.processing.observe(elapsed)
        self.stats.processing_ms = elapsed * 1000
        self.stats.max_processing_ms = max(self.stats.max_processing_ms, self.stats.processing_ms)
        self._write_status()

    def _value(
        self, accounts: list[str], snap, block: int, changed_rows=None
    ) -> tuple[list[int], list[int], list[bool]]:
        """(equity, health, liquidatable) per account. Without `rescore`: every account with the
        exact mirror. With it: only the accounts `keeper.scoring.RescoreIndex` plans (state
        changed, an input moved far enough, the high-risk tier, the schedule, a resync), float
        screen then exact confirmation; an account not valued is not liquidatable (its budget
        guarantees it), and the equity and health of accounts that are not liquidatable are not
        used. `changed_rows`: the rows whose raw state changed since the last block, when the
        state cache knows them."""
        if self.rescore is None:
            result = margin(snap.book, snap.markets, self._params, snap.prices)
            self.stats.rescored = self.stats.exact_confirmed = len(accounts)
            return (
                [int(x) for x in result.equity],
                [int(x) for x in result.health_factor],
                [bool(x) for x in result.liquidatable],
            )
        n = len(accounts)
        equity, health, liquidatable = [0] * n, [0] * n, [False] * n
        try:
            plan = self.rescore.plan(block, accounts, snap.book, snap.markets, self._params, snap.prices, changed_rows)
            scored = score_rows(snap.book, snap.markets, self._params, snap.prices, plan.rows)
            self.rescore.record(block, snap.book, snap.markets, self._params, snap.prices, scored)
        except BaseException:
            self.rescore.reset()  # half-recorded budgets are not trusted: resync next time
            raise
        if any(int(p) == 0 for p in snap.prices):
            # a price was unavailable (a stale feed: after a long gap, before its next answer):
            # budgets recorded against it are no base for re-scoring, so the next block values
            # every account again
            self.rescore.reset()
        for j in scored.rows[scored.liquidatable].tolist():
            equity[j], health[j], liquidatable[j] = scored.equity[j], scored.exact_health[j], True
        self.stats.rescored, self.stats.exact_confirmed = len(plan.rows), scored.confirmed
        return equity, health, liquidatable

    def _liquidate_all(self, accounts, order, equity, health, onchain, snap, head) -> None:
        """Screen, rank and try the liquidatable accounts `order` (indices into `accounts`);
        bankrupt accounts beyond the fund and the vault are deleveraged first (`_deleverage_bankrupt`)."""
        if order:
            deleveraging = self._deleverage_bankrupt(accounts, order, equity, set(onchain), snap, head)
            self.deleveraging = {accounts[i] for i in deleveraging}
            order = [i for i in order if i not in deleveraging]
        if not order:
            self._skip_below_gas([], [], None, head.number)
            return
        eth_price = self._eth_price(snap.prices)
        # before any RPC call: an upper bound of each reward from the snapshot; accounts
        # that cannot pay for the cheapest liquidation's gas are never simulated
        bounds: list[int | None] = [None] * len(accounts)
        for i, bound in zip(order, screen_rewards(snap, self._params, self._terms, equity, order)):
            bounds[i] = bound
        for i in onchain:  # options are not in the bound: simulate those
            bounds[i] = None
        threshold = self._threshold(self.liquidation_gas_floor, head.base_fee, eth_price)
        tried, below = rank(order, bounds, health, threshold)
        self._skip_below_gas([accounts[i] for i in below], [bounds[i] for i in below], threshold, head.number)
        pending = self.tx.pending_keys()
        onchain = set(onchain)
        for i in tried:
            account = accounts[i]
            if liquidation_key(account) in pending:
                continue
            if not sharding.mine(account, self.shard, self.first_seen.get(account), head.number, self.takeover_blocks):
                continue  # its shard's, which has not had its turn yet
            if self.shard is not None and sharding.owner(account, self.shard.count) != self.shard.index:
                self.metrics.takeovers.inc()
                log.warning(
                    "takeover: %s (shard %d's) liquidatable since block %d: trying it from shard %s",
                    account,
                    sharding.owner(account, self.shard.count),
                    self.first_seen.get(account, head.number),
                    self.shard,
                )
            extra = (
                0
                if i in onchain
                else collateral_reward(
                    equity[i], snap.book.collateral[i], self._params, snap.prices, self._terms.penalty
                )
            )
            self._attempt(account, equity[i], head, eth_price, extra)

    def _deleverage_bankrupt(self, accounts, order, equity, onchain: set[int], snap, head) -> set[int]:
        """The auto-deleveraging duty: each liquidatable account of `order` with negative equity
        whose deficit the collateral sale, the insurance fund and the backstop vault cannot
        cover (`CollateralVault.deficit_cover`, `keeper.risk.adl.uncovered`) has its positions
        closed against the opposite positions in profit, ranked by profit times leverage, in
        rounds (`_deleverage_account`). The block's later plans see the earlier ones' fills
        (`adl.apply_fills`). Returns the accounts handled this block (sent, waiting on a round's
        notice, in flight or failed): the liquidation loop leaves them alone. Accounts valued by
        the lens (options, attestations) are left to the liquidation: the engine deleverages
        only an account without options."""
        if not self.deleverage or self._terms is None:
            return set()
        bankrupt = sorted((i for i in order if equity[i] < 0 and i not in onchain), key=lambda i: equity[i])
        if not bankrupt:
            return set()
        handled: set[int] = set()
        pending = self.tx.pending_keys()
        plans = adl.BlockPlans(
            snap.book, snap.markets, self._params.price_id, [int(x) for x in snap.prices], head.timestamp
        )
        shortfalls: list[tuple[int, int, int]] = []  # (deficit after the collateral sale, row, cover)
        for i in bankrupt:
            account = accounts[i]
            if any(
                k.startswith(deleverage_key(account, None)) or k.startswith(deleverage_key(account, None, "nominate"))
                for k in pending
            ):
                handled.add(i)
                continue
            if not sharding.mine(account, self.shard, self.first_seen.get(account), head.number, self.takeover_blocks):
                continue
            try:
                cover, sale_gain = self.client.vault.functions.deficit_cover(
                    account, plans.prices, self._terms.penalty
                ).call(block_identifier=snap.block)
                shortfalls.append((adl.shortfall(equity[i], int(sale_gain)), i, int(cover)))
            except Exception as e:  # noqa: BLE001 - not knowing whether to deleverage, liquidate as before
                log.warning(
                    "cannot read what covers the deficit of %s (%s: %s); liquidating it without deleveraging",
                    account, e.__class__.__name__, str(e)[:160], extra={"account": account},
                )  # fmt: skip
        # the fund and the vault pay whole deficits, smallest first, as far as they reach this
        # block; one they could pay alone but not after the others waits a block, when it is
        # beyond what is left of them and is deleveraged
        promised = 0
        rows: dict[str, int] | None = None  # account row by lowercase address, when first needed
        for need, i, cover in sorted(shortfalls):
            account = accounts[i]
            if need <= 0:
                continue  # the collateral sale covers it
            if need <= cover - promised:
                promised += need
                continue
            if need <= cover:
                handled.add(i)
                log.info(
                    "deleverage %s next block: its deficit %.2f USD is within the insurance fund and backstop vault (%.2f USD), but what they hold is promised to smaller deficits this block",
                    account, need / WAD, cover / WAD, extra={"account": account, "deficit_usd": need / WAD},
                )  # fmt: skip
                continue
            try:
                if plans.equity is None:
                    plans.equity = self._equity_of_all(accounts, snap, onchain)
                if rows is None:
                    rows = {a.lower(): j for j, a in enumerate(accounts)}
                if self._deleverage_account(i, account, need, plans, accounts, rows, head):
                    handled.add(i)
            except Exception as e:  # noqa: BLE001 - one account must never stop the others or the loop
                handled.add(i)
                self._failed(account, head.number, failure_reason(e), e)
        return handled

    def _deleverage_account(
        self, i: int, account: str, uncovered: int, plans: adl.BlockPlans, accounts, rows: dict[str, int], head
    ) -> bool:
        """Auto-deleverage account row `i` market by market, largest notional first, in rounds
        (`MarginEngine.nominate`, `deleverage`; `adl.round_state`): where the keeper's ranking
        (`plans.nominees`) would add to the round (open one, or a new one), send `nominate`
        under "nominate:<account>:<market>"; where the round has passed its notice, simulate
        and send `deleverage` under "deleverage:<account>:<market>" (behind that nomination,
        if any), planned against the round's nominees in turn (`plans.deleverage`). Once the
        plans leave it flat, its liquidation (the collateral sale and the waterfall) goes right
        behind, so that no price step falls between the two. Returns whether the account is in
        hand (sent, waiting for a round's notice, or in the ADL_NOTICE after its last
        deleveraging, when the engine refuses its liquidation): False when nobody in any market
        is eligible, and the liquidation takes it (what is left is bad debt). `rows`: account
        row by lowercase address."""
        engine = self.client.engine
        live = plans.live_markets(i)
        in_hand = deleveraged = False
        for market in sorted(live, key=lambda m: (-live[m], m)):
            opened_at, nominees = engine.functions.adl_round(account, market).call(block_identifier="latest")
            state = adl.round_state(int(opened_at), head.timestamp)
            current = [] if state == "none" else [rows.get(str(a).lower(), -1) for a in nominees]
            # what the keeper's ranking adds, by the contract's admission rule (an account it
            # does not index counts as unbeatable)
            after = list(current)
            for j in plans.nominees(i, market):
                scores = [2**256 if r < 0 else plans.scores(i, market, [r])[0] for r in after]
                after = adl.admit(after, scores, j, plans.scores(i, market, [j])[0])
            added = [j for j in after if j not in current]
            if added:
                in_hand = True
                self._nominate(account, market, [accounts[j] for j in added], state, uncovered)
            if state == "notice" or (added and state == "none"):
                # a round whose nominees are all no longer eligible holds nothing up (an
                # account it does not index counts as eligible)
                in_hand = in_hand or any(r < 0 or plans.scores(i, market, [r])[0] > 0 for r in after)
                continue
            if state == "none":
                continue  # nobody to nominate
            # ready: the deleveraging goes behind the nomination, against what it leaves
            chosen = plans.deleverage(i, uncovered, market, [r for r in after if r >= 0])
            if not chosen:
                continue
            in_hand = True
            call = engine.functions.deleverage(account, market)
            try:
                closed = call.call({"from": self.address}, block_identifier="latest")
                gas = call.estimate_gas({"from": self.address}, block_identifier="latest")
                gas += ADL_NOMINEE_GAS * len(added)
            except ContractLogicError as e:
                self._adl_unsafe("deleverage", account, market, e)
                return True
            if self.dry_run:
                log.info(
                    "dry-run: would deleverage %s in market %d with %d eligible nominees (size %.6f, uncovered %.2f USD, gas %d); not sent",
                    account, market, len(chosen), closed / WAD, uncovered / WAD, gas, extra={"account": account, "dry_run": True},
                )  # fmt: skip
                continue
            tx_hash = self.tx.send(call, gas, deleverage_key(account, market))
            if tx_hash is None:
                return True
            deleveraged = True
            self.stats.deleverages_sent += 1
            self.metrics.deleverages.labels(outcome="sent").inc()
            log.info(
                "deleverage %s: sent %s (market %d, size %.6f, %d eligible nominees; uncovered deficit %.2f USD, gas %d)",
                account, tx_hash, market, closed / WAD, len(chosen), uncovered / WAD, gas,
                extra={"account": account, "tx": tx_hash, "market": market, "uncovered_usd": uncovered / WAD, "gas": gas},
            )  # fmt: skip
        if not in_hand and live:
            # the engine refuses its liquidation for ADL_NOTICE after a deleveraging, in case a
            # next round opens (`adl.holds_liquidation`)
            since = int(engine.functions.deleveraged_at(account).call(block_identifier="latest"))
            # its rounds hold nothing (checked above)
            if adl.holds_liquidation(head.timestamp, since, [(0, []) for _ in live]):
                log.info(
                    "liquidate %s after %d: deleveraged at %d, nobody in profit to nominate for a next round (uncovered deficit %.2f USD)",
                    account, since + adl.NOTICE, since, uncovered / WAD, extra={"account": account, "uncovered_usd": uncovered / WAD},
                )  # fmt: skip
                return True
        if not in_hand:
            log.info(
                "cannot deleverage %s: no opposite position in profit (uncovered deficit %.2f USD); liquidating it, the rest is bad debt",
                account, uncovered / WAD, extra={"account": account, "uncovered_usd": uncovered / WAD},
            )  # fmt: skip
        if deleveraged and not plans.live_markets(i) and plans.holds_collateral(i):
            # what is left (collateral, debt) goes to the sale and the waterfall now, not a step later
            call = engine.functions.liquidate(account)
            tx_hash = self.tx.send(call, LIQUIDATION_BEHIND_DELEVERAGE_GAS, liquidation_key(account))
            if tx_hash is not None:
                self.stats.sent += 1
                self.metrics.sent.inc()
                log.info(
                    "liquidate %s: sent %s behind its deleveraging (collateral sale and waterfall; gas limit %d)",
                    account, tx_hash, LIQUIDATION_BEHIND_DELEVERAGE_GAS,
                    extra={"account": account, "tx": tx_hash, "route": "direct", "gas": LIQUIDATION_BEHIND_DELEVERAGE_GAS},
                )  # fmt: skip
        return in_hand

    def _adl_unsafe(self, what: str, account: str, market: int, e: ContractLogicError) -> None:
        """Count and log an auto-deleveraging call whose simulation reverted (tried next block)."""
        self.metrics.deleverages.labels(outcome="unsafe").inc()
        log.info(
            "%s %s in market %d: simulation reverted (%s); retrying next block",
            what, account, market, str(e.message or e)[:200], extra={"account": account, "reason": "unsafe"},
        )  # fmt: skip

    def _nominate(self, account: str, market: int, nominees: list[str], state: str, uncovered: int) -> None:
        """Send `nominate(account, market, nominees)` (simulated first; logged in a dry run)."""
        call = self.client.engine.functions.nominate(account, market, nominees)
        what = "open its round" if state == "none" else "add to its round"
        try:
            gas = call.estimate_gas({"from": self.address}, block_identifier="latest")
        except ContractLogicError as e:
            self._adl_unsafe("nominate for", account, market, e)
            return
        if self.dry_run:
            log.info(
                "dry-run: would nominate %d counterparties for %s in market %d to %s (uncovered %.2f USD); not sent",
                len(nominees), account, market, what, uncovered / WAD, extra={"account": account, "dry_run": True},
            )  # fmt: skip
            return
        tx_hash = self.tx.send(call, gas, deleverage_key(account, market, "nominate"))
        if tx_hash is None:
            return
        self.stats.nominations_sent += 1
        self.metrics.deleverages.labels(outcome="nominated").inc()
        log.info(
            "nominate %d counterparties for %s: sent %s to %s in market %d (uncovered deficit %.2f USD, gas %d)",
            len(nominees), account, tx_hash, what, market, uncovered / WAD, gas,
            extra={"account": account, "tx": tx_hash, "market": market, "uncovered_usd": uncovered / WAD, "gas": gas},
        )  # fmt: skip

    def _equity_of_all(self, accounts, snap, onchain: set[int]) -> list[int]:
        """Every account's exact equity (WAD): the mirror's, the lens's for `onchain` accounts."""
        equity = [int(x) for x in margin(snap.book, snap.markets, self._params, snap.prices).equity]
        rows = sorted(onchain)
        if rows:
            for j, summary in zip(rows, self.client.margin_summaries([accounts[j] for j in rows], snap.block)):
                equity[j] = summary.equity
        return equity

    def _settle_expired(self, head, markets, stale: bool) -> None:
        """The settlement job for this block; nothing it raises (revert, RPC error, timeout)
        reaches the loop: it is logged, counted, and the job runs again next block."""
        job = self.settlement
        try:
            job.step(head, markets, stale)
        except Exception as e:  # noqa: BLE001 - settlement must never stop liquidations or the loop
            job.errors += 1
            self.metrics.settlement_errors.inc()
            log.warning(
                "settlement job failed at block %d (%s: %s); liquidations go on, retrying next block",
                head.number,
                e.__class__.__name__,
                str(e)[:200],
            )
        self.stats.settlements_sent, self.stats.settlements_succeeded = job.sent, job.succeeded
        self.stats.settlements_failed, self.stats.settlement_errors = job.failed, job.errors

    def _track_inventory(self, head, snap, stale: bool) -> None:
        """The inventory job for this block (keeper.unwind); nothing it raises reaches the loop:
        it is logged, and the job runs again next block."""
        job = self.inventory
        try:
            inputs = snap if snap is not None else self.client.block_inputs(head.number)
            job.step(head, inputs.markets, self._params, inputs.prices, stale)
        except Exception as e:  # noqa: BLE001 - unwinding must never stop liquidations or the loop
            log.warning(
                "inventory job failed at block %d (%s: %s); liquidations go on, retrying next block",
                head.number, e.__class__.__name__, str(e)[:200],
            )  # fmt: skip
        self.stats.inventory_usd, self.stats.inventory_age_blocks = job.inventory_usd, job.age_blocks
        self.stats.unwinds_sent, self.stats.unwinds_succeeded = job.sent, job.succeeded

    def _threshold(self, gas: int, base_fee: int, eth_price: int) -> int | None:
        """The reward (WAD USD) a liquidation using `gas` must exceed; None = liquidate all."""
        if self.min_profit_usd is None:
            return None
        cost = with_margin(gas_cost_usd(gas, self._max_fee(base_fee), eth_price), self.gas_margin)
        return cost + int(round(self.min_profit_usd * WAD))

    def _skip_below_gas(self, accounts: list[str], bounds: list[int], threshold: int | None, block: int) -> None:
        """Count the accounts skipped without a simulation; one INFO line when their number
        changes (DEBUG otherwise): hundreds of dust accounts must not flood the log."""
        self.stats.below_gas = len(accounts)
        if not accounts:
            self._below_gas_logged = 0
            return
        self.stats.skipped += len(accounts)
        self.metrics.skipped.labels(reason="below_gas").inc(len(accounts))
        level = logging.INFO if len(accounts) != self._below_gas_logged else logging.DEBUG
        self._below_gas_logged = len(accounts)
        log.log(
            level, "skip %d liquidatable accounts at block %d (below_gas): each can pay at most %.6f USD, a liquidation needs more than %.6f USD; not simulated",
            len(accounts), block, max(bounds) / WAD, threshold / WAD, extra={"reason": "below_gas", "accounts": len(accounts)},
        )  # fmt: skip

    def _attempt(self, account: str, equity: int, head, eth_price: int, collateral_gain: int = 0) -> None:
        """One account's liquidation, isolated: whatever it raises (an RPC error, a timeout, an
        unexpected revert, a bug) is logged and counted, the account backs off, and the other
        accounts of the block go on."""
        block = head.number
        retry = self.backoff.get(account)
        if retry is not None and block < retry[0]:
            self.stats.skipped += 1
            self.metrics.skipped.labels(reason="backoff").inc()
            log.debug("skip %s (backoff): failed before; next try at block %d", account, retry[0])
            return
        try:
            self._liquidate(account, equity, head, eth_price, collateral_gain)
        except Exception as e:  # noqa: BLE001 - one account must never stop the others or the loop
            self._failed(account, block, failure_reason(e), e)

    def _back_off(self, account: str, block: int) -> int:
        """Skip `account` for 1 block after a failure, then 2, 4, ... up to MAX_BACKOFF_BLOCKS
        while it keeps failing; returns the blocks skipped. Cleared by a send or a recovery."""
        skipped = min(self.backoff[account][1] * 2, MAX_BACKOFF_BLOCKS) if account in self.backoff else 1
        self.backoff[account] = (block + skipped + 1, skipped)
        return skipped

    def _failed(self, account: str, block: int, reason: str, e: BaseException) -> None:
        skipped = self._back_off(account, block)
        self.stats.account_errors += 1
        self.metrics.liquidation_errors.labels(reason=reason).inc()
        log.warning(
            "liquidation of %s failed (%s: %s: %s); skipping it for %d block(s), the other accounts go on",
            account, reason, e.__class__.__name__, str(e)[:200], skipped,
            exc_info=reason == "unexpected", extra={"account": account, "reason": reason},
        )  # fmt: skip

    def _eth_price(self, prices) -> int:
        price_id = self.client.deployment.price_ids.get("ETH")
        return int(prices[price_id]) if price_id is not None and price_id < len(prices) else 0

    def _track_episodes(self, liquidatable: list[str], block: int) -> None:
        now = set(liquidatable)
        for account in list(self.first_seen):
            if account not in now:  # recovered (price) or liquidated
                del self.first_seen[account]
                self._fallback_logged.discard(account)
                self.missed_counted.discard(account)
                self.backoff.pop(account, None)
        for account in liquidatable:
            since = self.first_seen.setdefault(account, block)
            if block - since > self.missed_after_blocks and account not in self.missed_counted | self.deleveraging:
                self.missed_counted.add(account)
                self.stats.missed += 1
                self.metrics.missed.inc()
                log.warning(
                    "missed liquidation: %s liquidatable since block %d, no liquidation by anyone in %d blocks",
                    account,
                    since,
                    block - since,
                )

    def _episode_ended(self, account: str, mined: int) -> None:
        """A liquidation of `account` (by anyone) mined in block `mined` ends its liquidatable
        episode: observe detection latency = mined - first block we saw it liquidatable.

        Ours is seen twice, from the Liquidation log in the event index and from the receipt, in
        either order; one liquidation is observed once (keyed by account and block). An episode
        that started after `mined` (a late receipt) is left alone."""
        if self._ended_at.get(account) == mined:
            return
        self._ended_at[account] = mined
        since = self.first_seen.get(account)
        if since is not None and since > mined:
            return
        self.first_seen.pop(account, None)
        self.missed_counted.discard(account)
        if since is not None:
            self.metrics.detection_latency.observe(mined - since)

    def _scan_portfolio_accounts(self, block: int) -> None:
        """Add accounts named by option or attestation logs up to `block` (the set only grows:
        valuing any account by the lens is always right, so a reorg needs no rewind)."""
        if getattr(self.client, "options", None) is None and getattr(self.client, "attestor", None) is None:
            return
        start = self.index.start_block if self._portfolio_scanned_to is None else self._portfolio_scanned_to + 1
        chunk = max(self.index.chunk_blocks, 1)
        while start <= block:
            end = min(start + chunk - 1, block)
            self.portfolio_accounts |= self.client.portfolio_accounts_logs(start, end)
            self._portfolio_scanned_to = end
            start = end + 1

    def _liquidation_call(self, account: str):
        """(call, simulated return value, route) of the liquidation to send, options first;
        raises ContractLogicError when none simulates. Route "options": `liquidate_options`,
        the value the amount moved; "backstop": `BackstopVault.liquidate` (with `route`
        backstop and a vault in the deployment), the value the caller's fee in settlement-token
        units; "direct": `MarginEngine.liquidate`, the value the closed notional, WAD USD."""
        options = getattr(self.client, "options", None)
        if (
            options is not None
            and account in self.portfolio_accounts
            and options.functions.has_positions(account).call(block_identifier="latest")
        ):
            call = options.functions.liquidate_options(account)
            try:
                return call, call.call({"from": self.address}, block_identifier="latest"), "options"
            except ContractLogicError as e:
                if OPENED_THIS_BLOCK in str(e.message or e):
                    raise  # transient: the whole account waits for the next block
                # worthless or settled options only: the engine's liquidation handles the rest
                log.debug("liquidate_options(%s) would revert (%s); trying the engine", account, e.message or e)
        backstop = getattr(self.client, "backstop", None) if self.route == "backstop" else None
        if backstop is not None and account != backstop.address:
            call = backstop.functions.liquidate(account)
            try:
                return call, call.call({"from": self.address}, block_identifier="latest"), "backstop"
            except ContractLogicError as e:
                reason = str(e.message or e)
                if OPENED_THIS_BLOCK in reason:
                    raise  # transient: the engine would refuse the direct call too
                self._log_fallback(account, reason)
        return self._direct_call(account)

    def _direct_call(self, account: str):
        """(`MarginEngine.liquidate(account)`, its simulated closed notional in WAD USD, "direct")."""
        call = self.client.engine.functions.liquidate(account)
        return call, call.call({"from": self.address}, block_identifier="latest"), "direct"

    def _routed_shortfall(self, fee: int, gas: int, base_fee: int, eth_price: int) -> str | None:
        """Why a routed liquidation whose simulation pays `fee` (settlement-token units) should
        go direct instead, or None to send it: a fee that does not pass the profit rule (the
        direct liquidation's reward is larger, the whole liquidator share rather than
        `caller_fee_share` of it, and is judged by the same rule). With no profit rule (every
        liquidation is sent) a routed one always goes, fee 0 included: a bankrupt account pays
        no penalty either way, and through the vault the keeper takes no positions."""
        reward = fee * 10 ** (18 - self.client.deployment.settlement_decimals)
        threshold = self._threshold(gas, base_fee, eth_price)
        if threshold is not None and reward <= threshold:
            return f"its fee {reward / WAD:.2f} USD does not exceed gas x (1 + gas_margin) + min profit = {threshold / WAD:.2f} USD"
        return None

    def _log_fallback(self, account: str, reason: str) -> None:
        """One INFO line per account and liquidatable episode: the backstop vault cannot take
        the account's liquidation (full, without equity or cash, ...), the keeper goes direct."""
        if account in self._fallback_logged:
            return
        self._fallback_logged.add(account)
        log.info(
            "backstop vault cannot take %s (%s); liquidating it directly (the keeper takes the positions)",
            account, reason[:200], extra={"account": account, "reason": reason[:200]},
        )  # fmt: skip

    def _max_fee(self, base_fee: int) -> int:
        return min(base_fee * self.base_fee_multiplier + self.priority_fee, self.max_fee_per_gas)

    def _skip(self, account: str, reason: str, why: str, level: int = logging.INFO) -> None:
        self.stats.skipped += 1
        self.metrics.skipped.labels(reason=reason).inc()
        log.log(
            level, "%sskip %s (%s): %s", "dry-run: " if self.dry_run else "", account, reason, why,
            extra={"account": account, "reason": reason},
        )  # fmt: skip

    def _would_liquidate(
        self, account: str, call, notional: int, reward: int, profit: int, gas: int, route: str = "direct"
    ) -> None:
        """Dry run: what `_liquidate` would send, logged and counted instead (WAD USD amounts;
        a routed liquidation's notional is not simulated: 0)."""
        self.stats.would_liquidate += 1
        self.metrics.dry_run_liquidations.inc()
        via = " through the backstop vault" if route == "backstop" else ""
        log.info(
            "dry-run: would liquidate %s with %s%s (simulated at the latest block from %s: notional %.2f USD; expected reward %.2f USD, expected profit %.2f USD, gas estimate %d); not sent",
            account, call.fn_name, via, self.address, notional / WAD, reward / WAD, profit / WAD, gas,
            extra={"account": account, "dry_run": True, "function": call.fn_name, "route": route, "notional_usd": notional / WAD,
                   "reward_usd": reward / WAD, "profit_usd": profit / WAD, "gas": gas},
        )  # fmt: skip

    def _liquidate(self, account: str, equity: int, head, eth_price: int, collateral_gain: int = 0) -> None:
        """Simulate, price and send one account's liquidation. The reward is the liquidator's
        share of the penalty on the simulated closed notional, plus `collateral_gain` (the
        discount on collateral bought from an account left in bad debt, `collateral_reward`)."""
        if head.base_fee + self.priority_fee > self.max_fee_per_gas:
            self._skip(
                account,
                "fee_cap",
                f"base fee {head.base_fee / 1e9:.1f} gwei + tip is above the cap {self.max_fee_per_gas / 1e9:.1f} gwei",
                logging.WARNING,
            )
            return
        try:
            call, value, route = self._liquidation_call(account)
            gas = call.estimate_gas({"from": self.address}, block_identifier="latest")
            if route == "backstop":
                why = self._routed_shortfall(int(value), gas, head.base_fee, eth_price)
                if why is not None:
                    self._log_fallback(account, why)
                    call, value, route = self._direct_call(account)
                    gas = call.estimate_gas({"from": self.address}, block_identifier="latest")
        except ContractLogicError as e:
            reason = str(e.message or e)
            if OPENED_THIS_BLOCK in reason:  # expected: the account traded this block; next block
                self._skip(
                    account, "opened_this_block", f"simulation reverted ({reason}); retrying next block", logging.DEBUG
                )
                return
            self._skip(account, "unsafe", f"simulation reverted ({reason})")
            self._back_off(account, head.number)
            return
        if route == "backstop":
            # the vault's return value is the fee it pays the caller: the whole reward
            notional, reward = 0, int(value) * 10 ** (18 - self.client.deployment.settlement_decimals)
        else:
            notional = int(value)
            terms = self._terms
            flagged = self.client.liquidatable_since(account, "latest") if terms.max_penalty > terms.penalty else 0
            reward = (
                expected_reward(notional, equity, terms.penalty_rate(flagged, head.timestamp), terms.liquidator_share)
                + collateral_gain
            )
        cost = gas_cost_usd(gas, self._max_fee(head.base_fee), eth_price)
        profit = reward - cost
        threshold = self._threshold(gas, head.base_fee, eth_price)
        if threshold is not None and reward <= threshold:
            self._skip(
                account, "unprofitable",
                f"reward {reward / WAD:.2f} USD <= gas {cost / WAD:.2f} USD x {1 + self.gas_margin:g} + min profit {self.min_profit_usd:.2f} USD = {threshold / WAD:.2f} USD",
            )  # fmt: skip
            return
        if self.dry_run:
            self._would_liquidate(account, call, notional, reward, profit, gas, route)
            return
        block, earlier = self._routed_in_block
        earlier = earlier if route == "backstop" and block == head.number else 0
        limit = gas + earlier * ROUTED_GAS_STEP
        try:
            tx_hash = self.tx.send(call, limit, liquidation_key(account))
        except Exception as e:  # the manager's own fee-cap refusal, or the node rejecting the tx
            if e.__class__.__name__ == "FeeCapExceeded":
                self._skip(account, "fee_cap", str(e), logging.WARNING)
                return
            raise
        self.backoff.pop(account, None)
        if tx_hash is None:  # already in flight for this key
            return
        if route == "backstop":
            self._routed_in_block = (head.number, earlier + 1)
        self.stats.sent += 1
        self.metrics.sent.inc()
        if route == "backstop":
            log.info(
                "liquidate %s: sent %s through the backstop vault (fee %.2f USD, expected profit %.2f USD, gas %d)",
                account, tx_hash, reward / WAD, profit / WAD, gas,
                extra={"account": account, "tx": tx_hash, "route": route, "fee_usd": reward / WAD, "profit_usd": profit / WAD, "gas": gas},
            )  # fmt: skip
            return
        log.info(
            "liquidate %s: sent %s (notional %.2f USD, expected profit %.2f USD, gas %d)", account, tx_hash, notional / WAD, profit / WAD, gas,
            extra={"account": account, "tx": tx_hash, "route": route, "notional_usd": notional / WAD, "profit_usd": profit / WAD, "gas": gas},
        )  # fmt: skip

    def _handle_outcomes(self, outcomes, block: int) -> None:
        for o in outcomes:
            kind, _, account = o.key.partition(":")
            if kind == "attest" and self.attestation is not None:
                self.attestation.handle_outcome(o)
                continue
            if kind in ("settle_market", "settle_series"):
                if self.settlement is not None:
                    self.settlement.handle_outcome(o)
                    self.stats.settlements_succeeded, self.stats.settlements_failed = (
                        self.settlement.succeeded,
                        self.settlement.failed,
                    )
                continue
            if kind == "deleverage":
                self._deleverage_outcome(o, account.partition(":")[0])
                continue
            if kind == "unwind":
                if o.receipt is not None:
                    self.metrics.gas_spent_eth.inc(
                        o.receipt.get("gasUsed", 0) * (o.receipt.get("effectiveGasPrice") or 0) / WAD
                    )
                if self.inventory is not None:
                    self.inventory.handle_outcome(o)
                    self.stats.unwinds_succeeded = self.inventory.succeeded
                continue
            if kind == "nominate" and o.receipt is not None:
                receipt = o.receipt
                self.metrics.gas_spent_eth.inc(
                    receipt.get("gasUsed", 0) * (receipt.get("effectiveGasPrice") or 0) / WAD
                )
                continue
            if kind != "liquidate":
                continue
            receipt = o.receipt
            if receipt is not None:
                price = receipt.get("effectiveGasPrice") or 0
                self.metrics.gas_spent_eth.inc(receipt.get("gasUsed", 0) * price / WAD)
            if o.status == "mined" and receipt is not None and self._liquidated(receipt, account):
                self.stats.succeeded += 1
                self.metrics.succeeded.inc()
                route = self._route_of(receipt)
                self.metrics.by_route.labels(route=route).inc()
                if route == "backstop":
                    self.stats.routed += 1
                mined = receipt["blockNumber"]
                # usually the index saw this liquidation's event first and already counted it;
                # an options liquidation (OptionsLiquidation, not indexed) is counted here
                self._episode_ended(account, mined)
                log.info(
                    "liquidated %s in block %d (tx %s)",
                    account,
                    mined,
                    o.tx_hash,
                    extra={"account": account, "tx": o.tx_hash},
                )
            else:
                self.stats.failed += 1
                self.metrics.failed.inc()
                where = f"in block {receipt['blockNumber']}" if receipt is not None else "(not mined)"
                log.warning(
                    "liquidation of %s %s %s: another liquidator first, the price moved, or the tx was dropped", account, o.status, where,
                    extra={"account": account, "tx": o.tx_hash, "status": o.status},
                )  # fmt: skip

    def _deleverage_outcome(self, o, account: str) -> None:
        receipt = o.receipt
        if receipt is not None:
            self.metrics.gas_spent_eth.inc(receipt.get("gasUsed", 0) * (receipt.get("effectiveGasPrice") or 0) / WAD)
        engine = self.client.engine
        fills = (
            [
                ev
                for ev in engine.events.Deleveraged().process_receipt(receipt, errors=_DISCARD)
                if str(ev["address"]).lower() == engine.address.lower()
            ]
            if o.status == "mined" and receipt is not None and receipt.get("status") == 1
            else []
        )
        if fills:
            self.stats.deleverages_succeeded += 1
            self.metrics.deleverages.labels(outcome="succeeded").inc()
            log.info(
                "deleveraged %s in block %d against %d counterparties (tx %s)", account, receipt["blockNumber"], len(fills), o.tx_hash,
                extra={"account": account, "tx": o.tx_hash},
            )  # fmt: skip
            return
        self.metrics.deleverages.labels(outcome="failed").inc()
        log.warning(
            "deleverage of %s %s: reverted or dropped (the account changed, or a counterparty did)", account, o.status,
            extra={"account": account, "tx": o.tx_hash, "status": o.status},
        )  # fmt: skip

    def _liquidated(self, receipt, account: str) -> bool:
        """Whether `receipt` (status 1) holds a liquidation of `account`: the engine's
        Liquidation event, logged by the engine's address whoever called it (the keeper
        directly, or the backstop vault, whose `liquidate` calls the engine with the vault as
        the liquidator), or the option market's OptionsLiquidation."""
        if receipt.get("status") != 1:
            return False
        engine = self.client.engine
        events = [
            ev
            for ev in engine.events.Liquidation().process_receipt(receipt, errors=_DISCARD)
            if str(ev["address"]).lower() == engine.address.lower()
        ]
        options = getattr(self.client, "options", None)
        if options is not None:  # liquidate_options logs OptionsLiquidation instead
            events += [
                ev
                for ev in options.events.OptionsLiquidation().process_receipt(receipt, errors=_DISCARD)
                if str(ev["address"]).lower() == options.address.lower()
            ]
        return any(ev["args"]["account"] == account for ev in events)

    def _route_of(self, receipt) -> str:
        """The route of a mined liquidation, from the contract its transaction called (so a
        transaction sent before a restart is counted right): backstop, options or direct."""
        to = str(receipt.get("to") or "").lower()
        backstop = getattr(self.client, "backstop", None)
        options = getattr(self.client, "options", None)
        if backstop is not None and to == backstop.address.lower():
            return "backstop"
        if options is not None and to == options.address.lower():
            return "options"
        return "direct"

    def _set_stale(self, update: HeadUpdate) -> None:
        self.stats.stale = update.is_stale
        self.metrics.node_stale.set(1 if update.is_stale else 0)
        if update.is_stale and not self._stale_logged:
            log.warning(
                "node is stale: head %d is %.0f s old (limit %.0f s); not sending until it moves",
                update.head.number, update.lag_seconds, self.follower.stale_after_seconds,
            )  # fmt: skip
        elif not update.is_stale and self._stale_logged:
            log.info("node caught up: head %d is %.0f s old; sending again", update.head.number, update.lag_seconds)
        self._stale_logged = update.is_stale

    def _check_balance(self, block: int) -> None:
        balance = self.tx.balance()
        eth = balance / WAD
        self.metrics.balance_eth.set(eth)
        if eth < self.low_balance_eth and not self.dry_run:  # a dry run pays no gas
            self.metrics.low_balance.set(1)
            if self._low_since is None or block - self._low_since >= LOW_BALANCE_REPEAT_BLOCKS:
                self._low_since = block
                log.warning(
                    "LOW BALANCE: keeper %s has %.6f ETH, below the %.6f ETH warning level; top it up or liquidations will stop",
                    self.address, eth, self.low_balance_eth, extra={"balance_eth": eth},
                )  # fmt: skip
        else:
            self.metrics.low_balance.set(0)
            self._low_since = None

    def _write_status(self) -> None:
        if self.status_file is not None:
            write_json_atomic(self.status_file, asdict(self.stats))


try:  # web3 7 names the log-processing error policy in web3.logs
    from web3.logs import DISCARD as _DISCARD
except ImportError:  # pragma: no cover
    _DISCARD = "discard"
