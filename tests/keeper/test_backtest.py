"""The grid backtest over the daily ETH / BTC history in shared/data (beside the clone, located as
keeper/marketdata/prices.py's tests do). Tests that need the data skip, saying why, when it is absent."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from keeper.backtest_cli import main
from keeper.marketdata.daily import DATA_DIR_ENV, data_dir, load_daily_history
from keeper.risk.backtest import BOOKS, HEDGE_BOOK, run_backtest
from keeper.risk.scenarios import ScenarioParams

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DAY = 86400


@pytest.fixture(scope="module")
def history():
    if not (DATA_DIR / "eth_usd_1d_coingecko.csv").exists() or not (DATA_DIR / "btc_usd_1d_coingecko.csv").exists():
        pytest.skip(f"daily market data not found in {DATA_DIR} (expected shared/data beside the repository clone)")
    return load_daily_history(DATA_DIR)


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


def test_daily_history_is_joined_by_day(history) -> None:
    assert history.symbols == ("ETH", "BTC")
    assert np.all(history.timestamps % DAY == 0)  # CoinGecko's 00:05 snapshots snapped to the day
    assert history.timestamps[0] == utc("2015-08-07").timestamp()  # ETH's first day
    # DVOL from 2021-03-24 (SOURCES.md), as a decimal
    first_dvol = history.timestamps[np.flatnonzero(np.isfinite(history.dvol[:, 0]))[0]]
    assert first_dvol == utc("2021-03-24").timestamp()
    i = int(np.searchsorted(history.timestamps, utc("2023-01-01").timestamp()))
    assert history.dvol[i, 0] == pytest.approx(0.6164)  # ETH DVOL close 61.64 (SOURCES.md spot check)


def test_black_thursday_window_counts_match_an_independent_count(history) -> None:
    params = ScenarioParams()
    rows = run_backtest(history, params, utc("2020-03-01"), utc("2020-04-01"))
    assert [r.book for r in rows] == list(BOOKS) * 2 + [HEDGE_BOOK]
    for r in rows:
        assert r.days[1] == 31 and r.days[2] == 31  # every day of March 2020 has its next two days
        assert 0 <= r.exceedances[1] <= r.days[1] and 0 <= r.exceedances[2] <= r.days[2]
    # long / short spot: MM = ceil_cents((15% + 3%) x S_t); an exceedance is a realised loss above it
    ts, px = history.timestamps, history.prices
    lo = int(np.searchsorted(ts, utc("2020-03-01").timestamp()))
    for j, sym in enumerate(("ETH", "BTC")):
        for h in (1, 2):
            long_count = short_count = 0
            for t in range(lo, lo + 31):
                mm = math.ceil(0.18 * px[t, j] * 100) / 100
                long_count += (px[t, j] - px[t + h, j]) > mm
                short_count += (px[t + h, j] - px[t, j]) > mm
            by_book = {r.book: r for r in rows if r.underlying == sym}
            assert by_book["long spot"].exceedances[h] == long_count
            assert by_book["short spot"].exceedances[h] == short_count
    eth_long = next(r for r in rows if r.underlying == "ETH" and r.book == "long spot")
    assert eth_long.exceedances[1] >= 1  # 2020-03-12 -> 13: ETH fell more than 18%
    assert eth_long.mean_mm == pytest.approx(0.18, abs=1e-4)


def test_cli_prints_the_table(history) -> None:
    result = CliRunner().invoke(
        main, ["--data-dir", str(DATA_DIR), "--start", "2022-06-01", "--end", "2022-06-15"], terminal_width=250
    )
    assert result.exit_code == 0, result.output
    assert "short ATM straddle 30d" in result.output and "long ETH / short BTC" in result.output
    assert "beyond +-15%" in result.output


def test_cli_missing_data_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "absent")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "market data directory" in lines[0] and "not found" in lines[0]


def test_market_data_folder_is_a_setting(tmp_path: Path, monkeypatch) -> None:
    """$KEEPER_DATA_DIR names the folder; without it, ../shared/data from the working directory
    (beside a checkout run from its root), never a path relative to the installed package."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    assert data_dir() == tmp_path.parent / "shared" / "data"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "absent"))
    result = CliRunner().invoke(main, [])  # the backtest's default folder is the setting
    assert result.exit_code == 2
    absent = tmp_path / "absent"
    assert (
        result.output == f"error: market data directory {absent} not found (set KEEPER_DATA_DIR or pass the folder)\n"
    )


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "pm.yaml"
    bad.write_text("portfolio_margin: {spot_range: 2}\n")
    result = CliRunner().invoke(main, ["--config", str(bad), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "spot_range" in result.output
