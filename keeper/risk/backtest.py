"""Backtest of the portfolio-margin grid against real daily ETH and BTC moves.

For every day t of the daily history, reference books of one unit of the underlying are opened at
the day's index price and volatility, their portfolio MM is computed with the grid
(:mod:`keeper.risk.scenarios`), and they are revalued at t + 1 day and t + 2 days with the real
prices (and DVOL moves where both days have one), time decay included. An *exceedance* is a day
whose realised loss is larger than the MM at t: the rate of exceedances is the evidence for the
grid's ranges (a 1-day rate near 0 means the grid covers a day of real moves with margin to spare).

Books (per underlying; options European, 30 days, cash-settled, Black-76 with r = 0):
long spot, short spot (perpetuals); short ATM straddle; short 10-delta strangle; delta-hedged
short straddle (hedged with the perpetual at t); call spread (long ATM, short 110% call); and,
across underlyings, long ETH / short BTC perpetuals of equal notional (evidence for
``correlation``).

Volatility at t: Deribit DVOL (30-day ATM implied vol index) where it exists (from 2021-03-24),
else the trailing 30-day realised volatility (annualised, 365 days) as a proxy; flat smile. Where
either day lacks DVOL the option vols are held unchanged over the horizon.

Data (``shared/data`` beside the repository, see its SOURCES.md): ``eth_usd_1d_coingecko.csv``,
``btc_usd_1d_coingecko.csv`` (daily snapshots near 00:00 UTC, snapped to the day),
``eth_dvol_1d_deribit.csv``, ``btc_dvol_1d_deribit.csv``; read with
:func:`keeper.replay.prices.load_price_csv`.

    python -m keeper.risk.backtest [--data-dir DIR] [--config config/portfolio_margin.yaml]
                                   [--start 2021-01-01] [--end 2024-01-01]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist

import click
import numpy as np

from keeper.config import ConfigError
from keeper.replay.prices import PriceDataError, PriceSeries, align, load_price_csv, parse_utc
from keeper.risk.black_scholes import YEAR_DAYS
from keeper.risk.scenarios import (
    CALL,
    DEFAULT_PM_CONFIG,
    PERPETUAL,
    PUT,
    Instruments,
    MarketState,
    ScenarioParams,
    VolSurface,
    build_risk_tables,
    load_scenario_params,
    portfolio_margin,
    revalue,
)

__all__ = [
    "BOOKS",
    "DEFAULT_DATA_DIR",
    "BacktestRow",
    "DailyHistory",
    "load_daily_history",
    "run_backtest",
]

DAY = 86400
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
PRICE_FILES = {"ETH": "eth_usd_1d_coingecko.csv", "BTC": "btc_usd_1d_coingecko.csv"}
DVOL_FILES = {"ETH": "eth_dvol_1d_deribit.csv", "BTC": "btc_dvol_1d_deribit.csv"}
OPTION_DAYS = 30
REALISED_VOL_DAYS = 30
#: Book names, in report order; each is one unit of the underlying (per leg).
BOOKS = (
    "long spot",
    "short spot",
    "short ATM straddle 30d",
    "short 10-delta strangle 30d",
    "delta-hedged short straddle",
    "call spread ATM/110%",
)
HEDGE_BOOK = "long ETH / short BTC (equal notional)"
HORIZONS = (1, 2)


@dataclass(frozen=True, eq=False)
class DailyHistory:
    """Joint daily history: ``timestamps`` (T,) unix seconds at 00:00 UTC, ``prices`` (T, U)
    USD, ``dvol`` (T, U) implied vol as a decimal (0.65 = 65%), NaN where missing; ``symbols``."""

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    prices: np.ndarray
    dvol: np.ndarray


def _snap(series: PriceSeries) -> PriceSeries:
    # CoinGecko snapshots a few minutes after midnight on some days: same UTC day
    return PriceSeries(series.symbol, series.timestamps // DAY * DAY, series.close, series.source)


def load_daily_history(data_dir: str | Path = DEFAULT_DATA_DIR, symbols: tuple[str, ...] = ("ETH", "BTC")) -> DailyHistory:
    """Load and join the daily prices and DVOL of ``symbols`` (days every price file has).

    Raises PriceDataError (one line) for a missing directory or file or bad data."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PriceDataError(f"market data directory {data_dir} not found (expected shared/data beside the repository)")
    prices = {}
    for s in symbols:
        if s not in PRICE_FILES:
            raise PriceDataError(f"no daily price file known for {s}")
        prices[s] = _snap(load_price_csv(data_dir / PRICE_FILES[s], s))
    path = align(prices)
    dvol = np.full(path.prices.shape, np.nan)
    for j, s in enumerate(symbols):
        file = data_dir / DVOL_FILES[s]
        if not file.exists():
            continue  # realised-vol proxy everywhere
        series = _snap(load_price_csv(file, s))
        idx = np.searchsorted(series.timestamps, path.timestamps)
        idx_ok = np.minimum(idx, len(series) - 1)
        hit = series.timestamps[idx_ok] == path.timestamps
        dvol[hit, j] = series.close[idx_ok[hit]] / 100.0
    return DailyHistory(tuple(symbols), np.asarray(path.timestamps), np.asarray(path.prices), dvol)


def _realised_vol(prices: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Trailing 30-day realised vol of daily log returns, annualised with 365 days; NaN for the
    first 30 days or when the window has a gap."""
    logret = np.diff(np.log(prices), axis=0)
    gap = np.diff(timestamps) != DAY
    out = np.full(prices.shape, np.nan)
    n = REALISED_VOL_DAYS
    for t in range(n, prices.shape[0]):
        if not gap[t - n : t].any():
            out[t] = logret[t - n : t].std(axis=0, ddof=1) * np.sqrt(YEAR_DAYS)
    return out


@dataclass(frozen=True)
class BacktestRow:
    """One book: ``days`` / ``exceedances`` per horizon (1 and 2 days), ``worst_ratio`` the largest
    realised loss / MM over all 1-day windows, ``mean_mm`` the mean MM as a fraction of notional."""

    book: str
    underlying: str
    days: dict[int, int]
    exceedances: dict[int, int]
    worst_ratio: float
    mean_mm: float

    def rate(self, horizon: int) -> float:
        return self.exceedances[horizon] / self.days[horizon] if self.days[horizon] else float("nan")


def _single_books(spot: float, sigma: float, now: int) -> tuple[Instruments, MarketState, np.ndarray]:
    """Instruments (perp, ATM call, ATM put, 10d call, 10d put, 110% call) and the books' positions."""
    t = OPTION_DAYS / YEAR_DAYS
    expiry = now + OPTION_DAYS * DAY
    z = NormalDist().inv_cdf(0.90)
    sd = sigma * np.sqrt(t)
    k_call10 = spot * np.exp(z * sd + 0.5 * sd * sd)  # N(d1) = 0.10 (Black-76, r = 0)
    k_put10 = spot * np.exp(-z * sd + 0.5 * sd * sd)  # N(d1) = 0.90: put delta -0.10
    inst = Instruments(
        underlying=[0] * 6,
        kind=[PERPETUAL, CALL, PUT, CALL, PUT, CALL],
        strike=[0.0, spot, spot, k_call10, k_put10, 1.1 * spot],
        expiry=[0] + [expiry] * 5,
    )
    market = MarketState([spot], VolSurface([0], [expiry], [sigma], [0.0]), now)
    # delta of the ATM straddle (per unit): 2 N(sd / 2) - 1 (Black-76, r = 0)
    straddle_delta = 2.0 * NormalDist().cdf(0.5 * sd) - 1.0
    books = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [-1, 0, 0, 0, 0, 0],
            [0, -1, -1, 0, 0, 0],
            [0, 0, 0, -1, -1, 0],
            [straddle_delta, -1, -1, 0, 0, 0],
            [0, 1, 0, 0, 0, -1],
        ],
        dtype=np.float64,
    )
    return inst, market, books


def _window(history: DailyHistory, start: datetime | None, end: datetime | None) -> np.ndarray:
    mask = np.ones(history.timestamps.shape, dtype=bool)
    if start is not None:
        mask &= history.timestamps >= start.timestamp()
    if end is not None:
        mask &= history.timestamps < end.timestamp()
    return np.flatnonzero(mask)


def run_backtest(
    history: DailyHistory,
    params: ScenarioParams,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[BacktestRow]:
    """Exceedance counts of every reference book (module docstring) over days t with
    ``start <= t < end`` (UTC, None = no bound). Deterministic; no I/O."""
    ts, px, dvol = history.timestamps, history.prices, history.dvol
    realised = _realised_vol(px, ts)
    vol = np.where(np.isfinite(dvol), dvol, realised)
    days = _window(history, start, end)
    rows: list[BacktestRow] = []
    for j, sym in enumerate(history.symbols):
        n_b = len(BOOKS)
        counts = {h: np.zeros(n_b, dtype=np.int64) for h in HORIZONS}
        exceed = {h: np.zeros(n_b, dtype=np.int64) for h in HORIZONS}
        worst = np.full(n_b, -np.inf)
        mm_sum, mm_n = np.zeros(n_b), 0
        for t in days:
            if not np.isfinite(vol[t, j]):
                continue
            spot = float(px[t, j])
            inst, market, books = _single_books(spot, float(vol[t, j]), int(ts[t]))
            mm = portfolio_margin(build_risk_tables(inst, market, params), books).mm
            mm_sum += mm / spot
            mm_n += 1
            for h in HORIZONS:
                if t + h >= ts.size or ts[t + h] != ts[t] + h * DAY:
                    continue
                ratio = dvol[t + h, j] / dvol[t, j]
                ratio = ratio if np.isfinite(ratio) else 1.0
                move = np.array([[px[t + h, j] / spot - 1.0]])
                pnl = revalue(inst, market, move, np.full((1, len(inst)), ratio), elapsed=h * DAY)[:, 0]
                loss = -(books @ pnl)
                counts[h] += 1
                exceed[h] += loss > mm
                if h == 1:
                    worst = np.maximum(worst, loss / mm)
        for b, name in enumerate(BOOKS):
            rows.append(
                BacktestRow(
                    book=name, underlying=sym,
                    days={h: int(counts[h][b]) for h in HORIZONS},
                    exceedances={h: int(exceed[h][b]) for h in HORIZONS},
                    worst_ratio=float(worst[b]), mean_mm=float(mm_sum[b] / mm_n) if mm_n else float("nan"),
                )
            )
    if {"ETH", "BTC"} <= set(history.symbols):
        rows.append(_hedge_backtest(history, params, days))
    return rows


def _hedge_backtest(history: DailyHistory, params: ScenarioParams, days: np.ndarray) -> BacktestRow:
    """Long 1 ETH perpetual / short ETH-notional of BTC perpetual, margined on the joint grid."""
    e, b = history.symbols.index("ETH"), history.symbols.index("BTC")
    ts, px = history.timestamps, history.prices
    inst = Instruments([0, 1], [PERPETUAL, PERPETUAL], [0.0, 0.0], [0, 0])
    empty = VolSurface([], [], [], [])
    counts = {h: 0 for h in HORIZONS}
    exceed = {h: 0 for h in HORIZONS}
    worst, mm_sum = -np.inf, 0.0
    for t in days:
        spot = np.array([px[t, e], px[t, b]])
        market = MarketState(spot, empty, int(ts[t]), ("ETH", "BTC"))
        book = np.array([[1.0, -spot[0] / spot[1]]])
        mm = float(portfolio_margin(build_risk_tables(inst, market, params), book).mm[0])
        mm_sum += mm / spot[0]
        for h in HORIZONS:
            if t + h >= ts.size or ts[t + h] != ts[t] + h * DAY:
                continue
            move = np.array([[px[t + h, e] / spot[0] - 1.0, px[t + h, b] / spot[1] - 1.0]])
            loss = -float((book @ revalue(inst, market, move))[0, 0])
            counts[h] += 1
            exceed[h] += loss > mm
            if h == 1:
                worst = max(worst, loss / mm)
    return BacktestRow(HEDGE_BOOK, "ETH+BTC", counts, exceed, float(worst), mm_sum / len(days) if len(days) else float("nan"))


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default="shared/data beside the repository")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_PM_CONFIG, show_default="config/portfolio_margin.yaml")
@click.option("--start", default=None, help="first day, UTC (e.g. 2021-01-01)")
@click.option("--end", default=None, help="end day, exclusive, UTC")
def main(data_dir: Path, config_path: Path, start: str | None, end: str | None) -> None:
    """Count the days real ETH and BTC moves exceeded the grid's maintenance margin."""
    from rich.console import Console
    from rich.table import Table

    try:
        params = load_scenario_params(config_path)
        lo = parse_utc(start) if start else None
        hi = parse_utc(end) if end else None
        history = load_daily_history(data_dir)
    except (ConfigError, PriceDataError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    days = _window(history, lo, hi)
    if days.size == 0:
        click.echo("error: no day of the daily history is inside --start .. --end", err=True)
        sys.exit(2)
    rows = run_backtest(history, params, lo, hi)
    first, last = (datetime.fromtimestamp(int(history.timestamps[i]), timezone.utc).date() for i in (days[0], days[-1]))
    table = Table(title=f"Portfolio MM vs realised losses, daily ETH and BTC {first} .. {last} "
                        f"(spot +-{params.spot_range:.0%}, correlation {params.correlation:g})")
    for col in ("book", "underlying", "mean MM / notional", "1-day days", "1-day exceed", "rate", "2-day days", "2-day exceed", "rate", "max 1-day loss / MM"):
        table.add_column(col, justify="left" if col in ("book", "underlying") else "right")
    for r in rows:
        table.add_row(
            r.book, r.underlying, f"{r.mean_mm:.1%}",
            str(r.days[1]), str(r.exceedances[1]), f"{r.rate(1):.2%}",
            str(r.days[2]), str(r.exceedances[2]), f"{r.rate(2):.2%}", f"{r.worst_ratio:.2f}",
        )
    console = Console(width=None if sys.stdout.isatty() else 170)  # a file or pipe gets the whole table
    console.print(table)
    t = days[days + 1 < history.timestamps.size]
    for j, s in enumerate(history.symbols):
        r = history.prices[t + 1, j] / history.prices[t, j] - 1.0
        ok = history.timestamps[t + 1] - history.timestamps[t] == DAY
        if not ok.any():
            continue
        beyond = int((np.abs(r[ok]) > params.spot_range).sum())
        console.print(f"{s}: {ok.sum()} daily moves, largest fall {r[ok].min():.1%}, rise {r[ok].max():.1%}, "
                      f"{beyond} beyond +-{params.spot_range:.0%}")
    console.print(var_table(history, params, days))


def var_table(history: DailyHistory, params: ScenarioParams, days: np.ndarray):
    """A rich table: the reference books opened on the window's last day, their MM against
    1-day historical VaR 99% / ES 97.5% (full revaluation over the window's daily moves, DVOL
    ratios where known) and delta-gamma-normal VaR 99%, as fractions of notional."""
    from rich.table import Table

    from keeper.risk.var import HistoricalMoves, historical_var, parametric_var

    t = int(days[-1])
    vol = np.where(np.isfinite(history.dvol), history.dvol, _realised_vol(history.prices, history.timestamps))
    table = Table(title=f"Books opened {datetime.fromtimestamp(int(history.timestamps[t]), timezone.utc).date()}: "
                        "MM vs 1-day VaR / ES (fractions of notional)")
    for col in ("book", "underlying", "MM", "hist. VaR 99%", "hist. ES 97.5%", "delta-gamma VaR 99%", "days"):
        table.add_column(col, justify="left" if col in ("book", "underlying") else "right")
    for j, sym in enumerate(history.symbols):
        if not np.isfinite(vol[t, j]):
            continue
        lo, hi = int(days[0]), t + 1
        try:
            moves = HistoricalMoves.from_daily(history.timestamps[lo:hi], history.prices[lo:hi, j : j + 1], history.dvol[lo:hi, j : j + 1])
        except ValueError:
            continue  # fewer than 2 daily moves in the window
        spot = float(history.prices[t, j])
        inst, market, books = _single_books(spot, float(vol[t, j]), int(history.timestamps[t]))
        tables = build_risk_tables(inst, market, params)
        mm = portfolio_margin(tables, books).mm
        hist = historical_var(inst, market, books, moves)
        dg = parametric_var(tables, books, moves)
        for b, name in enumerate(BOOKS):
            table.add_row(name, sym, f"{mm[b] / spot:.1%}", f"{hist.var[b] / spot:.1%}", f"{hist.es[b] / spot:.1%}",
                          f"{dg.var[b] / spot:.1%}", str(hist.n_days))
    return table


if __name__ == "__main__":
    main()
