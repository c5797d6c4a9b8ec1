"""Portfolio margin throughput: accounts per second with the scenario table (every instrument
revalued under every scenario once, then ``positions @ table``) against the naive per-account loop
(`portfolio_margin_loop`: every position revalued under every scenario, account by account), in
the same run, on seeded synthetic books over 40 instruments (per underlying ETH and BTC: a
perpetual, a future, and calls and puts at 3 strikes x 3 expiries) and the default grid of
`config/portfolio_margin.yaml` (67 joint scenarios for two underlyings).

    python -m benchmarks.portfolio_risk [--accounts 1000 10000 100000] [--loop-accounts 1000] [--seed 7] [--json]

The loop runs on the first `--loop-accounts` accounts only; its figure for larger books is
extrapolated linearly and labelled so. Checks that both give the same MM on that subset (exits 1
otherwise). The table figure is the best of 3 runs, the loop's a single run. Prints figures;
asserts nothing about speed. With --json, also writes them to reports/portfolio-risk.json (the
docs' table is rendered from there by bin/figures). Run it with the BLAS threads at 1
(`OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`, as bin/figures --run does): the figures are then
one core's, whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from keeper.config import load_scenario_params
from keeper.risk.scenarios import (
    CALL,
    FUTURE,
    PERPETUAL,
    PUT,
    Instruments,
    MarketState,
    VolSurface,
    build_risk_tables,
    portfolio_margin,
    portfolio_margin_loop,
)

NOW = 1_700_000_000
SPOT = (2_000.0, 30_000.0)
EXPIRY_DAYS = (7, 30, 90)
STRIKES = (0.9, 1.0, 1.1)  # x spot
REPORT = Path(__file__).resolve().parents[1] / "reports" / "portfolio-risk.json"
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def instruments_and_market() -> tuple[Instruments, MarketState]:
    """The 40 instruments and a market state (ATM vol 60% / 50%, skew -0.1)."""
    und, kind, strike, expiry = [], [], [], []
    for u, s in enumerate(SPOT):
        und += [u, u]
        kind += [PERPETUAL, FUTURE]
        strike += [0.0, 0.0]
        expiry += [0, NOW + 90 * 86400]
        for d in EXPIRY_DAYS:
            for k in STRIKES:
                for kd in (CALL, PUT):
                    und.append(u)
                    kind.append(kd)
                    strike.append(k * s)
                    expiry.append(NOW + d * 86400)
    vol_u = [u for u in range(2) for _ in EXPIRY_DAYS]
    vol_e = [NOW + d * 86400 for _ in range(2) for d in EXPIRY_DAYS]
    surface = VolSurface(vol_u, vol_e, [0.6, 0.6, 0.6, 0.5, 0.5, 0.5], [-0.1] * 6)
    return Instruments(und, kind, strike, expiry), MarketState(SPOT, surface, NOW, ("ETH", "BTC"))


def synthetic_positions(n: int, n_instruments: int, seed: int) -> np.ndarray:
    """(n, I) positions: each account holds about 5 of the instruments, long or short, notional
    lognormal around $20k."""
    rng = np.random.default_rng(seed)
    held = rng.random((n, n_instruments)) < 5.0 / n_instruments
    sizes = rng.lognormal(np.log(2.0), 1.0, size=(n, n_instruments)) * np.where(
        rng.random((n, n_instruments)) < 0.5, 1, -1
    )
    # BTC instruments (the second half) in BTC units: same notional scale
    sizes[:, n_instruments // 2 :] *= SPOT[0] / SPOT[1]
    return np.where(held, sizes, 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--loop-accounts", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--json", action="store_true", help=f"also write the figures to {REPORT.relative_to(REPORT.parents[1])}"
    )
    args = ap.parse_args(argv)
    if min(args.accounts) < 1 or args.loop_accounts < 1:
        print("error: --accounts and --loop-accounts must be >= 1", file=sys.stderr)
        return 2
    params = load_scenario_params()
    inst, market = instruments_and_market()
    console = Console()
    t0 = time.perf_counter()
    tables = build_risk_tables(inst, market, params)
    build_s = time.perf_counter() - t0
    console.print(
        f"{len(inst)} instruments x {len(tables.grid)} scenarios: table built in {build_s * 1e3:.1f} ms "
        f"(once per market state, included in the table figures below)"
    )
    table = Table(title="Portfolio margin throughput (accounts/s)")
    for col in ("accounts", "table: s", "table: accounts/s", "loop: s", "loop: accounts/s", "speed-up"):
        table.add_column(col, justify="right")
    rows = []
    for n in args.accounts:
        positions = synthetic_positions(n, len(inst), args.seed)
        t_table = float("inf")
        for _ in range(3):  # best of 3: the machine may be shared
            t0 = time.perf_counter()
            pm = portfolio_margin(build_risk_tables(inst, market, params), positions)
            t_table = min(t_table, time.perf_counter() - t0)
        m = min(n, args.loop_accounts)
        t0 = time.perf_counter()
        loop = portfolio_margin_loop(inst, market, params, positions[:m])
        t_loop = (time.perf_counter() - t0) * n / m
        if not np.allclose(pm.mm[:m], loop.mm, rtol=1e-9, atol=0.011):
            worst = int(np.argmax(np.abs(pm.mm[:m] - loop.mm)))
            print(
                f"error: table and loop disagree on account {worst}: {pm.mm[worst]} vs {loop.mm[worst]}",
                file=sys.stderr,
            )
            return 1
        rows.append(
            {"accounts": n, "table_s": t_table, "loop_accounts": m, "loop_s": t_loop, "loop_extrapolated": m != n}
        )
        label = "" if m == n else f" (extrapolated from {m})"
        table.add_row(
            f"{n:,}",
            f"{t_table:.3f}",
            f"{n / t_table:,.0f}",
            f"{t_loop:.2f}{label}",
            f"{n / t_loop:,.0f}",
            f"{t_loop / t_table:,.0f}x",
        )
    console.print(table)
    if args.json:
        report = {
            "instruments": len(inst),
            "scenarios": len(tables.grid),
            "table_build_ms": build_s * 1e3,
            "seed": args.seed,
            "threads": {name: os.environ.get(name) for name in THREAD_ENV},
            "rows": rows,
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
