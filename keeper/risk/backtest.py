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

Pure: a :class:`DailyHistory` and :class:`~keeper.risk.scenarios.ScenarioParams` in, counts out.
The history is loaded by :func:`keeper.marketdata.daily.load_daily_history` (the market-data
folder, ``$KEEPER_DATA_DIR``; see the data's SOURCES.md); the report is printed by :mod:`keeper.backtest_cli`:

    python -m keeper.backtest_cli [--data-dir DIR] [--config config/portfolio_margin.yaml]
                                  [--start 2021-01-01] [--end 2024-01-01]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist

import numpy as np

from keeper.risk.black_scholes import YEAR_DAYS
from keeper.risk.scenarios import (
    CALL,
    PERPETUAL,
    PUT,
    Instruments,
    MarketState,
    ScenarioParams,
    VolSurface,
    build_risk_tables,
    portfolio_margin,
    revalue,
)
from keeper.risk.var import HistoricalMoves, historical_var, parametric_var

__all__ = [
    "BOOKS",
    "HEDGE_BOOK",
    "BacktestRow",
    "DailyHistory",
    "VarRow",
    "backtest_days",
    "realised_vol",
    "run_backtest",
    "var_rows",
]

DAY = 86400
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


def realised_vol(prices: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
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
        underlying=np.zeros(6, dtype=np.int64),
        kind=np.array([PERPETUAL, CALL, PUT, CALL, PUT, CALL]),
        strike=np.array([0.0, spot, spot, k_call10, k_put10, 1.1 * spot]),
        expiry=np.array([0] + [expiry] * 5),
    )
    surface = VolSurface(np.array([0]), np.array([expiry]), np.array([sigma]), np.array([0.0]))
    market = MarketState(np.array([spot]), surface, now)
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


def backtest_days(history: DailyHistory, start: datetime | None, end: datetime | None) -> np.ndarray:
    """Indices of the history's days t with ``start <= t < end`` (None = no bound)."""
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
    realised = realised_vol(px, ts)
    vol = np.where(np.isfinite(dvol), dvol, realised)
    days = backtest_days(history, start, end)
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
                    book=name,
                    underlying=sym,
                    days={h: int(counts[h][b]) for h in HORIZONS},
                    exceedances={h: int(exceed[h][b]) for h in HORIZONS},
                    worst_ratio=float(worst[b]),
                    mean_mm=float(mm_sum[b] / mm_n) if mm_n else float("nan"),
                )
            )
    if {"ETH", "BTC"} <= set(history.symbols):
        rows.append(_hedge_backtest(history, params, days))
    return rows


def _hedge_backtest(history: DailyHistory, params: ScenarioParams, days: np.ndarray) -> BacktestRow:
    """Long 1 ETH perpetual / short ETH-notional of BTC perpetual, margined on the joint grid."""
    e, b = history.symbols.index("ETH"), history.symbols.index("BTC")
    ts, px = history.timestamps, history.prices
    inst = Instruments(np.array([0, 1]), np.array([PERPETUAL, PERPETUAL]), np.zeros(2), np.zeros(2, dtype=np.int64))
    none = np.array([])
    empty = VolSurface(none, none, none, none)
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
    return BacktestRow(
        HEDGE_BOOK, "ETH+BTC", counts, exceed, float(worst), mm_sum / len(days) if len(days) else float("nan")
    )


@dataclass(frozen=True)
class VarRow:
    """One book opened on the window's last day: its MM against 1-day historical VaR 99% / ES 97.5%
    and delta-gamma-normal VaR 99%, each a fraction of notional, over ``n_days`` daily moves."""

    book: str
    underlying: str
    mm: float
    hist_var: float
    hist_es: float
    delta_gamma_var: float
    n_days: int


def var_rows(history: DailyHistory, params: ScenarioParams, days: np.ndarray) -> list[VarRow]:
    """The reference books opened on the last of ``days``, their MM against 1-day historical VaR 99% /
    ES 97.5% (full revaluation over the window's daily moves, DVOL ratios where known) and
    delta-gamma-normal VaR 99%, as fractions of notional. An underlying with no volatility on that
    day, or fewer than 2 daily moves in the window, has no row."""
    t = int(days[-1])
    vol = np.where(np.isfinite(history.dvol), history.dvol, realised_vol(history.prices, history.timestamps))
    rows: list[VarRow] = []
    for j, sym in enumerate(history.symbols):
        if not np.isfinite(vol[t, j]):
            continue
        lo, hi = int(days[0]), t + 1
        try:
            moves = HistoricalMoves.from_daily(
                history.timestamps[lo:hi], history.prices[lo:hi, j : j + 1], history.dvol[lo:hi, j : j + 1]
            )
        except ValueError:
            continue  # fewer than 2 daily moves in the window
        spot = float(history.prices[t, j])
        inst, market, books = _single_books(spot, float(vol[t, j]), int(history.timestamps[t]))
        tables = build_risk_tables(inst, market, params)
        mm = portfolio_margin(tables, books).mm
        hist = historical_var(inst, market, books, moves)
        dg = parametric_var(tables, books, moves)
        for b, name in enumerate(BOOKS):
            rows.append(
                VarRow(
                    name,
                    sym,
                    float(mm[b] / spot),
                    float(hist.var[b] / spot),
                    float(hist.es[b] / spot),
                    float(dg.var[b] / spot),
                    int(hist.n_days),
                )
            )
    return rows
