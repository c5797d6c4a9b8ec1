"""The daily ETH / BTC history the grid backtest (`keeper.risk.backtest`) and the option replay
(`keeper.replay.option_books`) run on: daily index prices and Deribit DVOL, read from the CSV
files of the market-data folder (:func:`data_dir`: a setting, ``$KEEPER_DATA_DIR``; see the data's
SOURCES.md) with :func:`keeper.marketdata.prices.load_price_csv`.

Files: ``eth_usd_1d_coingecko.csv``, ``btc_usd_1d_coingecko.csv`` (daily snapshots near 00:00 UTC,
snapped to the day), ``eth_dvol_1d_deribit.csv``, ``btc_dvol_1d_deribit.csv`` (optional: without
one, the backtest uses the realised-vol proxy for that underlying).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keeper.errors import PriceDataError
from keeper.marketdata.prices import PriceSeries, align, load_price_csv
from keeper.risk.backtest import DAY, DailyHistory

__all__ = ["DATA_DIR_ENV", "DVOL_FILES", "PRICE_FILES", "data_dir", "load_daily_history"]

DATA_DIR_ENV = "KEEPER_DATA_DIR"
PRICE_FILES = {"ETH": "eth_usd_1d_coingecko.csv", "BTC": "btc_usd_1d_coingecko.csv"}
DVOL_FILES = {"ETH": "eth_dvol_1d_deribit.csv", "BTC": "btc_dvol_1d_deribit.csv"}


def _snap(series: PriceSeries) -> PriceSeries:
    # CoinGecko snapshots a few minutes after midnight on some days: same UTC day
    return PriceSeries(series.symbol, series.timestamps // DAY * DAY, series.close, series.source)


def data_dir() -> Path:
    """The market-data folder: ``$KEEPER_DATA_DIR``, else ``../shared/data`` from the working
    directory (beside a checkout when run from its root, as ``bin/demo`` and ``bin/test`` do).
    A setting, not a path relative to this package: an installed keeper finds it the same way."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def load_daily_history(folder: str | Path | None = None, symbols: tuple[str, ...] = ("ETH", "BTC")) -> DailyHistory:
    """Load and join the daily prices and DVOL of ``symbols`` (days every price file has), from
    ``folder`` (default :func:`data_dir`).

    Raises PriceDataError (one line) for a missing directory or file or bad data."""
    root = Path(folder) if folder is not None else data_dir()
    if not root.is_dir():
        raise PriceDataError(f"market data directory {root} not found (set {DATA_DIR_ENV} or pass the folder)")
    prices = {}
    for s in symbols:
        if s not in PRICE_FILES:
            raise PriceDataError(f"no daily price file known for {s}")
        prices[s] = _snap(load_price_csv(root / PRICE_FILES[s], s))
    path = align(prices)
    dvol = np.full(path.prices.shape, np.nan)
    for j, s in enumerate(symbols):
        file = root / DVOL_FILES[s]
        if not file.exists():
            continue  # realised-vol proxy everywhere
        series = _snap(load_price_csv(file, s))
        idx = np.searchsorted(series.timestamps, path.timestamps)
        idx_ok = np.minimum(idx, len(series) - 1)
        hit = series.timestamps[idx_ok] == path.timestamps
        dvol[hit, j] = series.close[idx_ok[hit]] / 100.0
    return DailyHistory(tuple(symbols), np.asarray(path.timestamps), np.asarray(path.prices), dvol)
