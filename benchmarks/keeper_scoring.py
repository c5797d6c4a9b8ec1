"""Keeper time per block valuing a book: the full re-score (every account with the exact mirror,
as `keeper run` with `scoring.event_driven: false`) against event-driven re-scoring
(`keeper.scoring`: plan, float screen, exact confirmation, record) at a block where one
underlying's price moved, on seeded synthetic books (benchmarks.risk_engine's: 4 markets, ETH/BTC
perpetual and future, WETH and WBTC collateral) of 1,000 / 10,000 / 100,000 accounts. No chain:
the block's book is built before the clock starts, as the keeper builds it from its
`account_states` reads.

    python -m benchmarks.keeper_scoring [--accounts 1000 10000 100000] [--move 0.01] [--seed 7] [--json]

The event-driven index is first warmed as a running keeper's is (a resync block, then
`--quiet-blocks` blocks with funding accruing and no price move), then BTC moves by `--move`.
Both ways must find the same liquidatable accounts at that block (exits 1 otherwise). With
--json, also writes the figures to reports/keeper-scoring.json (bin/figures renders the docs'
table from there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.risk_engine import synthetic
from keeper.config import load_config
from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin
from keeper.scoring import RescoreIndex, score_rows

REPORT = Path(__file__).resolve().parents[1] / "reports" / "keeper-scoring.json"


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


def fresh(book: AccountBook) -> AccountBook:
    """A new book with the same rows: each block's snapshot is a new book (no cached views)."""
    return AccountBook(book.cash, book.collateral, book.size, book.entry_price, book.funding_index)


def at_block(markets: MarketTable, block: int) -> MarketTable:
    """The market table with the perpetuals' funding accrued for `block` blocks."""
    funding = markets.funding_index.copy()
    funding[0] += block * 10**13
    funding[2] += block * 10**14
    return MarketTable(markets.underlying, markets.settlement_price, funding, markets.expiry, markets.timestamp)


def measure(n: int, seed: int, move: float, quiet_blocks: int, params: RiskParams, repeat: int) -> dict:
    book, markets, prices = keeper_book(n, seed, params)
    accounts = [f"0x{i:040x}" for i in range(n)]
    moved = prices.copy()
    moved[1] = int(prices[1]) * int(round((1 - move) * 10**6)) // 10**6  # BTC
    block_m = at_block(markets, quiet_blocks + 1)

    full_times = []
    for _ in range(repeat):
        b = fresh(book)
        start = time.perf_counter()
        full = margin(b, block_m, params, moved)
        full_times.append(time.perf_counter() - start)
    expected = set(np.flatnonzero(full.liquidatable).tolist())

    event_times, valued, confirmed, got = [], 0, 0, set()
    for _ in range(repeat):
        index = RescoreIndex()
        for block in range(quiet_blocks + 1):  # a resync, then quiet blocks: a running keeper's state
            b, m = fresh(book), at_block(markets, block)
            index.record(
                block,
                b,
                m,
                params,
                prices,
                score_rows(b, m, params, prices, index.plan(block, accounts, b, m, params, prices).rows),
            )
        b = fresh(book)
        start = time.perf_counter()
        plan = index.plan(quiet_blocks + 1, accounts, b, block_m, params, moved)
        result = score_rows(b, block_m, params, moved, plan.rows)
        index.record(quiet_blocks + 1, b, block_m, params, moved, result)
        event_times.append(time.perf_counter() - start)
        valued, confirmed = len(plan.rows), result.confirmed
        got = set(result.rows[result.liquidatable].tolist())
    exposed = len(index.exposed(1))
    return {
        "accounts": n,
        "full_ms": min(full_times) * 1000,
        "event_ms": min(event_times) * 1000,
        "valued": valued,
        "exact_confirmed": confirmed,
        "exposed_to_btc": exposed,
        "liquidatable": len(expected),
        "same_liquidations": got == expected,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="book sizes")
    ap.add_argument("--move", type=float, default=0.01, help="BTC's relative price fall at the measured block")
    ap.add_argument("--quiet-blocks", type=int, default=3, help="blocks without a price move before it")
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="also write the figures to reports/keeper-scoring.json")
    args = ap.parse_args(argv)
    if min(args.accounts) < 1 or args.repeat < 1 or not 0 < args.move < 1:
        ap.error("--accounts and --repeat must be positive, --move in (0, 1)")
    params = RiskParams.from_config(load_config())
    console = Console()
    table = Table(title=f"Keeper time per block valuing the book, BTC {-args.move:+.1%} (4 markets, 2 assets)")
    for column in ("accounts", "full re-score ms", "event-driven ms", "speed-up", "valued", "exact", "same"):
        table.add_column(column, justify="right")
    rows = []
    for n in args.accounts:
        row = measure(n, args.seed, args.move, args.quiet_blocks, params, args.repeat)
        rows.append(row)
        table.add_row(
            f"{n:,}", f"{row['full_ms']:,.1f}", f"{row['event_ms']:,.1f}", f"{row['full_ms'] / row['event_ms']:,.1f}x",
            f"{row['valued']:,} of {n:,}", f"{row['exact_confirmed']:,}", "yes" if row["same_liquidations"] else "NO",
        )  # fmt: skip
    console.print(table)
    console.print(
        "valued: accounts the event-driven plan valued at the block (state changed, exposed to BTC and near"
        " enough to maintenance margin, the high-risk tier, the schedule); exact: confirmed with the exact mirror"
    )
    if args.json:
        report = {
            "markets": 4,
            "collateral_assets": 2,
            "seed": args.seed,
            "move": args.move,
            "quiet_blocks": args.quiet_blocks,
            "repeat": args.repeat,
            "rows": rows,
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
    if not all(r["same_liquidations"] for r in rows):
        console.print("[red]event-driven re-scoring found other liquidatable accounts than the full re-score[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
