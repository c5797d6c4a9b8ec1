"""The keeper's time per block against the number of accounts: reading and valuing every account
(`keeper run` with `scoring.cache_states: false` and `scoring.event_driven: false`) against the
event-driven keeper (the account-state cache re-reads the accounts the block's logs name,
`keeper.scoring` values the accounts the block can have changed), at a block where one
underlying (BTC) moved and a few accounts traded, in the same run.

    python -m benchmarks.keeper [--accounts 1000 10000 100000] [--read-accounts 1000] [--changed 20]
                                [--move 0.01] [--seed 7] [--repeat 3] [--no-chain] [--json]

Books: seeded synthetic books of 1,000 / 10,000 / 100,000 accounts (benchmarks.risk_engine's
shape: 4 markets, ETH/BTC perpetual and future, WETH and WBTC collateral; each account's cash set
for a health factor around 3). Each way runs the keeper's own code on the block's raw states:

- full: the book built from every account's state (`AccountBook.from_states`, as
  `ProtocolClient.snapshot` builds it) and every account valued with the exact mirror (`margin`);
- event-driven: `keeper.chain.state_cache.AccountStateCache.snapshot` (the `--changed` accounts
  re-read, the rest kept), `RescoreIndex.plan` with the changed rows, `score_rows` (float screen,
  exact confirmation) and `record`, after a resync block and `--quiet-blocks` blocks with funding
  accruing, as a running keeper's index is.

Chain reads are measured on a local Anvil in the same run: `--read-accounts` accounts are opened
as the replay opens them, and the time to read N accounts' raw states through the lens
(`MarginLens.account_states`, 200 a call, pinned to one block) is measured by reading N states
(the opened accounts in turn, as many times as N needs), plus what both ways read every block
whatever the book (index prices, markets, block time, asset count, risk parameters, the block's
logs). The full way reads N accounts, the event-driven way the `--changed` ones. `--no-chain`
leaves the reads out (CPU only).

Both ways must find the same liquidatable accounts (exits 1 otherwise). Prints a table, then,
with --json, one JSON object (the largest book's `accounts`, `full_rescore_ms`,
`event_rescore_ms`, `read_accounts_per_s`, and every size in `rows`) and writes it to
reports/keeper.json, from which bin/figures renders the docs' table. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.risk_engine import synthetic
from keeper.chain.client import BlockInputs
from keeper.chain.state_cache import AccountStateCache
from keeper.chain.types import AccountState, PositionState
from keeper.config import load_config
from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin
from keeper.scoring import RescoreIndex, score_rows

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "keeper.json"
CONFIG = ROOT / "config" / "replay-large.yaml"
BTC = 1  # price id of BTC in the synthetic book


def keeper_book(n: int, seed: int, params: RiskParams) -> tuple[AccountBook, MarketTable, np.ndarray]:
    """benchmarks.risk_engine's book with each account's cash set so that its health factor is
    lognormal around 3 (about 1% of accounts below 1.25, a handful liquidatable): a keeper's book
    is mostly healthy (the risk engine's own book is not, to exercise every path)."""
    book, markets, prices = synthetic(n, seed)
    rng = np.random.default_rng(seed + 1)
    exact = margin(book, markets, params, prices)
    target = np.exp(rng.normal(np.log(3.0), 0.45, n))
    mm = exact.maintenance_margin
    # accounts without positions (no MM) keep $1,000 to $100,000 of equity
    floor = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n)) * 1e18
    want = np.array([int(float(m) * t) or int(f) for m, t, f in zip(mm.tolist(), target, floor)], dtype=object)
    cash = book.cash + (want - exact.equity)
    return AccountBook(cash, book.collateral, book.size, book.entry_price, book.funding_index), markets, prices


def at_block(markets: MarketTable, block: int) -> MarketTable:
    """The market table with the perpetuals' funding accrued for `block` blocks."""
    funding = markets.funding_index.copy()
    funding[0] += block * 10**13
    funding[2] += block * 10**14
    return MarketTable(markets.underlying, markets.settlement_price, funding, markets.expiry, markets.timestamp)


def states_of(book: AccountBook) -> list[AccountState]:
    """What `MarginLens.account_states` answers for the book's accounts (decoded)."""
    out = []
    for i in range(book.n_accounts):
        positions = tuple(
            PositionState(m, int(book.size[i, m]), int(book.entry_price[i, m]), int(book.funding_index[i, m]))
            for m in np.flatnonzero(np.asarray(book.size[i] != 0, dtype=bool)).tolist()
        )
        out.append(AccountState(int(book.cash[i]), tuple(int(x) for x in book.collateral[i]), positions))
    return out


class BookSource:
    """The cache's `StateSource` over in-memory states: what the chain would answer, at no cost
    (the chain's time is measured on Anvil separately). Counts the accounts read."""

    def __init__(self, accounts: Sequence[str], states: list[AccountState], n_assets: int):
        self.states = dict(zip(accounts, states))
        self.n_assets = n_assets
        self.inputs: tuple[np.ndarray, MarketTable] | None = None
        self.read = 0

    def block_inputs(self, block: int) -> BlockInputs:
        assert self.inputs is not None
        prices, markets = self.inputs
        return BlockInputs(block, prices, markets, self.n_assets)

    def account_states(self, accounts: Sequence[str], block: int | str = "latest") -> list[AccountState]:
        self.read += len(accounts)
        return [self.states[a] for a in accounts]


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """(best seconds of `repeat` runs, the last result)."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def measure(n: int, args: argparse.Namespace, params: RiskParams) -> dict:
    """CPU time per block of both ways on an n-account book (chain reads not included)."""
    book, markets, prices = keeper_book(n, args.seed, params)
    accounts = tuple(f"0x{i:040x}" for i in range(n))
    states = states_of(book)
    n_assets, n_markets = book.collateral.shape[1], book.size.shape[1]
    quiet = args.quiet_blocks
    moved = prices.copy()
    moved[BTC] = int(prices[BTC]) * int(round((1 - args.move) * 10**6)) // 10**6
    rng = np.random.default_rng(args.seed + 2)
    changed = sorted(rng.choice(n, min(args.changed, n), replace=False).tolist())
    # the measured block's states: the changed accounts deposited $1,000 (cash up)
    after = list(states)
    for i in changed:
        after[i] = after[i]._replace(cash=after[i].cash + 1000 * 10**18)
    block_m = at_block(markets, quiet + 1)

    def full() -> np.ndarray:
        b = AccountBook.from_states(after, n_assets, n_markets)
        return np.flatnonzero(margin(b, block_m, params, moved).liquidatable)

    full_s, full_liq = best(full, args.repeat)

    def warm() -> tuple[BookSource, AccountStateCache, RescoreIndex]:
        source = BookSource(accounts, states, n_assets)
        cache, index = AccountStateCache(resync_every_blocks=200), RescoreIndex()
        for block in range(quiet + 1):  # a resync, then quiet blocks: a running keeper's state
            m = at_block(markets, block)
            source.inputs = (prices, m)
            cache.note(block, block, ())
            snap = cache.snapshot(source, accounts, block)
            plan = index.plan(block, accounts, snap.book, m, params, prices, cache.last.changed_rows)
            index.record(block, snap.book, m, params, prices, score_rows(snap.book, m, params, prices, plan.rows))
        source.states.update((accounts[i], after[i]) for i in changed)
        source.inputs, source.read = (moved, block_m), 0
        return source, cache, index

    event_times: list[float] = []
    for _ in range(args.repeat):
        source, cache, index = warm()
        block = quiet + 1
        start = time.perf_counter()
        cache.note(block, block, [accounts[i] for i in changed])
        snap = cache.snapshot(source, accounts, block)
        plan = index.plan(block, accounts, snap.book, block_m, params, moved, cache.last.changed_rows)
        result = score_rows(snap.book, block_m, params, moved, plan.rows)
        index.record(block, snap.book, block_m, params, moved, result)
        event_times.append(time.perf_counter() - start)
    got = np.sort(result.rows[result.liquidatable])
    return {
        "accounts": n,
        "full_cpu_ms": full_s * 1000,
        "event_cpu_ms": min(event_times) * 1000,
        "event_read_accounts": source.read,
        "changed": len(changed),
        "valued": len(plan.rows),
        "valued_moved": plan.moved,
        "valued_high_risk": plan.high_risk,
        "valued_scheduled": plan.scheduled,
        "exact_confirmed": result.confirmed,
        "exposed_to_btc": len(index.exposed(BTC)),
        "liquidatable": len(full_liq),
        "same_liquidations": got.tolist() == full_liq.tolist(),
    }


class ChainReads:
    """Reads from a local Anvil through the lens, on `n` accounts opened as the replay opens them."""

    def __init__(self, n: int, console: Console):
        from keeper.marketdata.prices import synthetic_path
        from keeper.replay.driver import Replay, ReplayOptions

        self.replay = Replay(
            ReplayOptions(path=synthetic_path(steps=10), accounts=n, seed=5, config=load_config(CONFIG))
        )
        console.print(f"opening {n:,} accounts on Anvil to measure reads ...")
        users = self.replay.setup()
        self.client = self.replay.client
        self.addresses = [u.address for u in users]
        self.block = self.replay.w3.eth.block_number

    def per_block_ms(self, repeat: int) -> float:
        """What every block reads whatever the book: index prices, markets, block time, asset
        count (`block_inputs`), risk parameters, the block's vault and engine logs."""

        def read() -> None:
            self.client.block_inputs(self.block)
            self.client.risk_params(self.block)
            self.client.protocol_logs(self.block, self.block)

        return best(read, repeat)[0] * 1000

    def accounts_ms(self, k: int, repeat: int) -> float:
        """Milliseconds to read k accounts' raw states (the opened accounts in turn)."""
        if k == 0:
            return 0.0
        cycle = (self.addresses * (k // len(self.addresses) + 1))[:k]
        return best(lambda: self.client.account_states(cycle, self.block), repeat)[0] * 1000

    def close(self) -> None:
        self.replay.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="book sizes")
    ap.add_argument("--read-accounts", type=int, default=1000, help="accounts opened on Anvil to measure reads")
    ap.add_argument("--changed", type=int, default=20, help="accounts whose state changed at the measured block")
    ap.add_argument("--move", type=float, default=0.01, help="BTC's relative price fall at the measured block")
    ap.add_argument("--quiet-blocks", type=int, default=3, help="blocks without a price move before it")
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-chain", action="store_true", help="leave the chain reads out (no Anvil)")
    ap.add_argument("--json", action="store_true", help="print one JSON object and write reports/keeper.json")
    args = ap.parse_args(argv)
    if min(args.accounts) < 1 or args.repeat < 1 or not 0 < args.move < 1 or args.changed < 0:
        ap.error("--accounts and --repeat must be positive, --changed not negative, --move in (0, 1)")
    if args.read_accounts < 1:
        ap.error("--read-accounts must be positive")
    params = RiskParams.from_config(load_config())
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows = [measure(n, args, params) for n in args.accounts]
    chain: dict[str, Any] | None = None
    if not args.no_chain:
        reads = ChainReads(args.read_accounts, console)
        try:
            per_block = reads.per_block_ms(args.repeat)
            rate_ms = reads.accounts_ms(len(reads.addresses), args.repeat)
            chain = {"read_accounts": len(reads.addresses), "per_block_ms": per_block}
            chain["read_accounts_per_s"] = len(reads.addresses) / (rate_ms / 1000)
            for row in rows:
                row["full_read_ms"] = per_block + reads.accounts_ms(
                    row["accounts"], 1 if row["accounts"] > 20_000 else args.repeat
                )
                row["event_read_ms"] = per_block + reads.accounts_ms(row["event_read_accounts"], args.repeat)
        finally:
            reads.close()
    for row in rows:
        row["full_ms"] = row["full_cpu_ms"] + row.get("full_read_ms", 0.0)
        row["event_ms"] = row["event_cpu_ms"] + row.get("event_read_ms", 0.0)
    table = Table(title=f"Keeper time per block, BTC {-args.move:+.1%} and {args.changed} accounts changed")
    for column in (
        "accounts", "full: reads ms", "full: valuation ms", "event: reads ms", "event: cache + valuation ms",
        "full ms", "event-driven ms", "speed-up", "valued", "same",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['accounts']:,}", f"{r.get('full_read_ms', 0):,.1f}", f"{r['full_cpu_ms']:,.1f}",
            f"{r.get('event_read_ms', 0):,.1f}", f"{r['event_cpu_ms']:,.1f}", f"{r['full_ms']:,.1f}",
            f"{r['event_ms']:,.1f}", f"{r['full_ms'] / r['event_ms']:,.1f}x", f"{r['valued']:,} of {r['accounts']:,}",
            "yes" if r["same_liquidations"] else "NO",
        )  # fmt: skip
    console.print(table)
    if chain is not None:
        console.print(
            f"reads on Anvil: {chain['read_accounts_per_s']:,.0f} accounts/s through the lens "
            f"({chain['read_accounts']:,} accounts opened), {chain['per_block_ms']:.1f} ms per block whatever the book"
        )
    largest = max(rows, key=lambda r: r["accounts"])
    report = {
        "accounts": largest["accounts"],
        "full_rescore_ms": largest["full_ms"],
        "event_rescore_ms": largest["event_ms"],
        "speedup": largest["full_ms"] / largest["event_ms"],
        "read_accounts_per_s": None if chain is None else chain["read_accounts_per_s"],
        "chain": chain,
        "markets": 4,
        "collateral_assets": 2,
        "seed": args.seed,
        "move": args.move,
        "changed": args.changed,
        "quiet_blocks": args.quiet_blocks,
        "repeat": args.repeat,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report))
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
    if not all(r["same_liquidations"] for r in rows):
        console.print("[red]the event-driven keeper found other liquidatable accounts than the full one[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
