"""Risk engine throughput: accounts valued per second by the exact vectorized `margin`, the float64
screening path `margin_float`, `isolated_initial_margin`, and the naive per-account loop
`margin_loop`, on seeded synthetic books (4 markets: ETH/BTC perpetual and future; 2 collateral
assets: WETH 18 decimals, WBTC 8 decimals; the local config's rates and haircuts).

    python -m benchmarks.risk_engine [--accounts 10000 100000] [--loop-accounts 10000] [--seed 7] [--json]

The loop runs on the first `--loop-accounts` accounts only; its figure for larger books is
extrapolated linearly and labelled so. Checks that the vectorized result equals the loop's on that
subset (exits 1 otherwise). Prints figures; asserts nothing about speed. With --json, also writes
them to reports/risk-engine.json (the docs' table is rendered from there by bin/figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from keeper.config import load_config
from keeper.risk.margin import (
    AccountBook,
    MarketTable,
    RiskParams,
    isolated_initial_margin,
    margin,
    margin_float,
    margin_loop,
)
from keeper.units import WAD

INDEX_USD = (2_000, 30_000)  # ETH, BTC
REPORT = Path(__file__).resolve().parents[1] / "reports" / "risk-engine.json"
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# the report's name of each timed method, in the order of the printed table
METHODS = (
    "margin_first_call",
    "margin",
    "margin_float_first_call",
    "margin_float",
    "isolated_initial_margin",
    "margin_loop",
)


def synthetic(n: int, seed: int) -> tuple[AccountBook, MarketTable, np.ndarray]:
    """A random book of `n` accounts (about half the market slots held, long or short, entries
    within 10% of the index, funding accrued on the perpetuals), its market table and prices."""
    rng = np.random.default_rng(seed)
    index = np.array([usd * WAD + int(rng.integers(0, 10**15)) for usd in INDEX_USD], dtype=object)
    underlying = np.array([0, 0, 1, 1])
    markets = MarketTable(
        underlying=underlying,
        settlement_price=[0, 0, 0, 0],
        funding_index=[int(rng.integers(-(10**18), 10**18)) * 7, 0, int(rng.integers(-(10**18), 10**18)) * 90, 0],
    )

    def wei(shape, whole_units: np.ndarray) -> np.ndarray:
        # micro-units from floats, then random low digits: full 18-decimal integers
        micro = np.round(whole_units * 1e6).astype(np.int64).astype(object)
        return micro * 10**12 + rng.integers(0, 10**12, size=shape).astype(object)

    usd_index = np.array(INDEX_USD, dtype=float)[underlying]
    held = rng.random((n, 4)) < 0.5
    notional = rng.lognormal(np.log(20_000), 1.5, size=(n, 4))
    size = np.where(held, wei((n, 4), notional / usd_index) * np.where(rng.random((n, 4)) < 0.5, 1, -1), 0)
    entry = np.where(held, wei((n, 4), usd_index * rng.uniform(0.9, 1.1, size=(n, 4))), 0)
    funding = np.where(held, wei((n, 4), rng.normal(0, 5, size=(n, 4))), 0)
    collateral = np.stack(
        [
            np.where(rng.random(n) < 0.4, wei(n, rng.lognormal(np.log(5), 1.0, size=n)), 0),  # WETH, 18 dec
            np.where(rng.random(n) < 0.3, rng.integers(10**5, 10**9, size=n), 0).astype(object),  # WBTC, 8 dec
        ],
        axis=1,
    )
    book = AccountBook(
        # some accounts borrow cash against their collateral
        cash=wei(n, rng.lognormal(np.log(10_000), 1.2, size=n)) * np.where(rng.random(n) < 0.15, -1, 1),
        collateral=collateral,
        size=size,
        entry_price=entry,
        funding_index=funding,
    )
    return book, markets, index


def subset(book: AccountBook, k: int) -> AccountBook:
    return AccountBook(book.cash[:k], book.collateral[:k], book.size[:k], book.entry_price[:k], book.funding_index[:k])


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[10_000, 100_000], help="book sizes")
    ap.add_argument("--loop-accounts", type=int, default=10_000, help="accounts the naive loop runs on")
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--json", action="store_true", help=f"also write the figures to {REPORT.relative_to(REPORT.parents[1])}"
    )
    args = ap.parse_args(argv)
    if min(args.accounts) < 1 or args.loop_accounts < 1 or args.repeat < 1:
        ap.error("--accounts, --loop-accounts and --repeat must be positive")

    console = Console()
    params = RiskParams.from_config(load_config())
    table = Table(title="Risk engine throughput (4 markets, 2 collateral assets)")
    for column in ("accounts", "method", "seconds", "accounts / s", "vs loop", "note"):
        table.add_column(column, justify="right" if column not in ("method", "note") else "left")

    ok = True
    report_rows = []
    for n in args.accounts:
        book, markets, prices = synthetic(n, args.seed)
        run = lambda fn, b=book: fn(b, markets, params, prices)  # noqa: E731
        run(margin)  # warm the shared book's cached views
        run(margin_float)

        k = min(n, args.loop_accounts)
        small = subset(book, k)
        loop_seconds = best_of(lambda: margin_loop(small, markets, params, prices), args.repeat)
        looped = margin_loop(small, markets, params, prices)
        vector = margin(small, markets, params, prices)
        same = all(
            getattr(vector, f).tolist() == getattr(looped, f).tolist()
            for f in ("equity", "initial_margin", "maintenance_margin", "health_factor", "liquidatable")
        )
        ok &= same
        loop_full = loop_seconds * n / k

        # a book's first call builds what later calls reuse (the exact path's per-market view of
        # held positions, the float path's float64 copy): time both
        fresh_exact, fresh_float = subset(book, n), subset(book, n)
        exact_cold = best_of(lambda: run(margin, fresh_exact), 1)
        float_cold = best_of(lambda: run(margin_float, fresh_float), 1)
        rows = [
            ("margin (exact, first call)", exact_cold, "includes building the per-market view"),
            ("margin (exact)", best_of(lambda: run(margin), args.repeat), f"equals margin_loop on {k:,}: {same}"),
            ("margin_float (first call)", float_cold, "includes int -> float64 copy"),
            ("margin_float", best_of(lambda: run(margin_float), args.repeat), "not exact: screening"),
            ("isolated_initial_margin", best_of(lambda: run(isolated_initial_margin), args.repeat), "exact"),
        ]
        if k == n:
            rows.append(("margin_loop (per account)", loop_seconds, "measured"))
        else:
            rows.append(("margin_loop (per account)", loop_full, f"EXTRAPOLATED x{n / k:g} from {k:,} accounts"))
        for method, seconds, note in rows:
            speed = f"{loop_full / seconds:,.1f}x"
            table.add_row(f"{n:,}", method, f"{seconds:.4f}", f"{n / seconds:,.0f}", speed, note)
        report_rows.append(
            {
                "accounts": n,
                "seconds": {name: seconds for name, (_, seconds, _) in zip(METHODS, rows)},
                "loop_accounts": k,
                "loop_extrapolated": k != n,
                "exact_equals_loop": same,
            }
        )
        table.add_section()
        result = margin(book, markets, params, prices)
        cross = sum(result.initial_margin.tolist())
        isolated = sum(isolated_initial_margin(book, markets, params, prices).tolist())
        console.print(
            f"{n:,} accounts: {int(result.liquidatable.sum()):,} liquidatable; initial margin cross "
            f"${cross / 1e18:,.0f} vs isolated ${isolated / 1e18:,.0f} ({1 - cross / isolated:.1%} saved)"
        )
    console.print(table)
    if args.json:
        report = {
            "markets": 4,
            "collateral_assets": 2,
            "seed": args.seed,
            "repeat": args.repeat,
            "threads": {name: os.environ.get(name) for name in THREAD_ENV},
            "rows": report_rows,
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
    if not ok:
        console.print("[red]vectorized margin differs from margin_loop[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
