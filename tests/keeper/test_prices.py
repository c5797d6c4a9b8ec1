"""Tests for keeper.marketdata.prices (pure data handling, no chain)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from keeper.marketdata.prices import (
    PriceDataError,
    PricePath,
    PriceSeries,
    align,
    load_price_csv,
    parse_price_arg,
    parse_utc,
    synthetic_path,
)

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UTC = timezone.utc
T0 = 1_583_971_200  # 2020-03-12T00:00:00Z

HEADER = "timestamp,open,high,low,close,volume\n"


def write_csv(tmp_path: Path, body: str, name: str = "eth_test.csv", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + body)
    return p


def bar(ts: str, close: str) -> str:
    return f"{ts},1,1,1,{close},0\n"


def series(symbol: str, ts: list[int], close: list[float]) -> PriceSeries:
    return PriceSeries(symbol, np.array(ts, dtype=np.int64), np.array(close), "test")


# ---------------------------------------------------------------- load_price_csv


def test_load_ok_with_extra_columns(tmp_path: Path) -> None:
    p = write_csv(
        tmp_path,
        "2020-03-12T00:00:00Z,1,2,0.5,194.52,69.6,27\n"
        "2020-03-12T00:10:00+00:00,1,2,0.5,193.93,127.2,14\n"
        "\n",  # trailing blank line is skipped
        header="timestamp,open,high,low,close,volume,trades\n",
    )
    s = load_price_csv(p)
    assert s.symbol == "ETH"
    assert s.source == str(p)
    assert s.timestamps.dtype == np.int64 and s.close.dtype == np.float64
    np.testing.assert_array_equal(s.timestamps, [T0, T0 + 600])
    np.testing.assert_array_equal(s.close, [194.52, 193.93])
    assert not s.close.flags.writeable


def test_load_price_column_when_no_close(tmp_path: Path) -> None:
    p = write_csv(
        tmp_path,
        "2020-03-12T00:00:00Z,194.5,,10\n2020-03-13T00:00:00Z,110.25,0,20\n",
        name="btc_usd_1d_coingecko.csv",
        header="timestamp,price,market_cap,total_volume\n",
    )
    s = load_price_csv(p, symbol="XBT")
    assert s.symbol == "XBT"
    np.testing.assert_array_equal(s.close, [194.5, 110.25])
    np.testing.assert_array_equal(s.timestamps, [T0, T0 + 86_400])


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PriceDataError, match="nope.csv.*not found"):
        load_price_csv(tmp_path / "nope.csv")


def test_load_empty_file(tmp_path: Path) -> None:
    p = write_csv(tmp_path, "", header="")
    with pytest.raises(PriceDataError, match="eth_test.csv.*empty"):
        load_price_csv(p)


def test_load_header_only(tmp_path: Path) -> None:
    p = write_csv(tmp_path, "")
    with pytest.raises(PriceDataError, match="eth_test.csv.*no data rows"):
        load_price_csv(p)


@pytest.mark.parametrize(
    ("header", "missing"),
    [("time,open,close\n", "timestamp"), ("timestamp,open,volume\n", "close")],
)
def test_load_missing_columns(tmp_path: Path, header: str, missing: str) -> None:
    p = write_csv(tmp_path, "2020-03-12T00:00:00Z,1,2\n", header=header)
    with pytest.raises(PriceDataError) as exc:
        load_price_csv(p)
    msg = str(exc.value)
    assert "eth_test.csv" in msg and "line 1" in msg and f"missing required column(s) {missing}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("bad_row", "fragment"),
    [
        (bar("12/03/2020 01:00", "5"), "unparsable timestamp"),
        (bar("2020-03-12T01:00:00", "5"), "not UTC"),
        (bar("2020-03-12T01:00:00+01:00", "5"), "not UTC"),
        (bar("2020-03-12T01:00:00.5Z", "5"), "fractional seconds"),
        (bar("", "5"), "empty timestamp"),
        (bar("2020-03-12T01:00:00Z", "abc"), "not a number"),
        (bar("2020-03-12T01:00:00Z", ""), "empty close"),
        (bar("2020-03-12T01:00:00Z", "nan"), "must be finite"),
        (bar("2020-03-12T01:00:00Z", "NaN"), "must be finite"),
        (bar("2020-03-12T01:00:00Z", "inf"), "must be finite"),
        (bar("2020-03-12T01:00:00Z", "-inf"), "must be finite"),
        (bar("2020-03-12T01:00:00Z", "0"), "must be > 0"),
        (bar("2020-03-12T01:00:00Z", "-3.5"), "must be > 0"),
        (bar("2020-03-12T00:00:00Z", "5"), "duplicate timestamp"),
        (bar("2020-03-11T23:00:00Z", "5"), "out-of-order timestamp"),
        ("2020-03-12T01:00:00Z,1,1,5\n", "4 fields, header has 6"),
    ],
)
def test_load_bad_row_names_file_and_line(tmp_path: Path, bad_row: str, fragment: str) -> None:
    # Header is line 1, the good row line 2, the bad row line 3.
    p = write_csv(tmp_path, bar("2020-03-12T00:00:00Z", "10") + bad_row + bar("2020-03-12T05:00:00Z", "7"))
    with pytest.raises(PriceDataError) as exc:
        load_price_csv(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "line 3" in msg
    assert fragment in msg
    assert "\n" not in msg


def test_load_duplicate_reports_previous_line(tmp_path: Path) -> None:
    p = write_csv(tmp_path, bar("2020-03-12T00:00:00Z", "10") + bar("2020-03-12T00:00:00Z", "11"))
    with pytest.raises(PriceDataError, match=r"line 3: duplicate timestamp .*\(line 2 has 2020-03-12T00:00:00Z\)"):
        load_price_csv(p)


def test_price_data_error_is_value_error() -> None:
    assert issubclass(PriceDataError, ValueError)


# ---------------------------------------------------------------- align


def test_align_intersection_exact() -> None:
    eth = series("ETH", [0, 60, 120, 180, 240], [10.0, 11.0, 12.0, 13.0, 14.0])
    btc = series("BTC", [60, 120, 240, 300], [100.0, 101.0, 102.0, 103.0])
    path = align({"ETH": eth, "BTC": btc}, None, None)
    assert path.symbols == ("ETH", "BTC")
    assert path.steps == 3
    np.testing.assert_array_equal(path.timestamps, np.array([60, 120, 240], dtype=np.int64))
    np.testing.assert_array_equal(path.prices, [[11.0, 100.0], [12.0, 101.0], [14.0, 102.0]])
    assert path.timestamps.dtype == np.int64 and path.prices.dtype == np.float64
    assert path.prices.shape == (3, 2)
    # 0, 180 and 300 were in one series only.
    assert path.dropped_steps == 3


def test_align_window_start_inclusive_end_exclusive() -> None:
    ts = [T0 + 3600 * i for i in range(6)]
    eth = series("ETH", ts, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    btc = series("BTC", ts[1:], [20.0, 30.0, 40.0, 50.0, 60.0])
    start = datetime(2020, 3, 12, 1, tzinfo=UTC)
    end = datetime(2020, 3, 12, 4, tzinfo=UTC)
    path = align({"BTC": btc, "ETH": eth}, start, end)
    assert path.symbols == ("BTC", "ETH")
    np.testing.assert_array_equal(path.timestamps, ts[1:4])
    np.testing.assert_array_equal(path.prices, [[20.0, 2.0], [30.0, 3.0], [40.0, 4.0]])
    # ts[0] is outside the window, so it does not count as dropped.
    assert path.dropped_steps == 0


def test_align_single_bound() -> None:
    eth = series("ETH", [0, 60, 120], [1.0, 2.0, 3.0])
    path = align({"ETH": eth}, start=datetime.fromtimestamp(60, UTC))
    np.testing.assert_array_equal(path.timestamps, [60, 120])
    path = align({"ETH": eth}, end=datetime.fromtimestamp(120, UTC))
    np.testing.assert_array_equal(path.timestamps, [0, 60])


def test_align_errors() -> None:
    eth = series("ETH", [0, 60, 120], [1.0, 2.0, 3.0])
    btc = series("BTC", [60, 180], [1.0, 2.0])
    t = datetime.fromtimestamp(60, UTC)
    with pytest.raises(PriceDataError, match="only 1 common timestamp"):
        align({"ETH": eth, "BTC": btc})
    with pytest.raises(PriceDataError, match="start .* is not before end"):
        align({"ETH": eth}, t, t)
    with pytest.raises(PriceDataError, match="only 0 common"):
        align({"ETH": eth}, datetime(2030, 1, 1, tzinfo=UTC), None)
    with pytest.raises(PriceDataError, match="no timezone"):
        align({"ETH": eth}, datetime(1970, 1, 1), None)
    with pytest.raises(PriceDataError, match="no price series"):
        align({})


# ---------------------------------------------------------------- PricePath helpers


def test_as_wad_exact() -> None:
    path = PricePath(
        ("ETH", "BTC", "DAI"), np.array([0, 60]), np.array([[86.0, 3782.13, 1.013371], [0.1, 5000.5, 1.0]])
    )
    assert path.as_wad(0) == {"ETH": 86 * 10**18, "BTC": 378213 * 10**16, "DAI": 1013371 * 10**12}
    assert path.as_wad(1) == {"ETH": 10**17, "BTC": 50005 * 10**17, "DAI": 10**18}
    assert path.as_wad(-1) == path.as_wad(1)
    # Sub-8-decimal noise is rounded away, like a Chainlink USD feed.
    p2 = PricePath(("X",), np.array([0, 1]), np.array([[0.1 + 0.2], [1.234567894]]))
    assert p2.as_wad(0) == {"X": 3 * 10**17}
    assert p2.as_wad(1) == {"X": 123456789 * 10**10}
    assert all(type(v) is int for v in path.as_wad(0).values())
    with pytest.raises(IndexError):
        path.as_wad(2)


def test_max_drawdown_hand_example() -> None:
    prices = np.array([[100.0, 10.0], [120.0, 9.0], [60.0, 11.0], [90.0, 12.0], [30.0, 13.0]])
    path = PricePath(("A", "B"), np.arange(5) * 60, prices)
    dd = path.max_drawdown()
    assert dd["A"] == pytest.approx(0.75)  # 120 -> 30
    assert dd["B"] == pytest.approx(0.1)  # 10 -> 9
    np.testing.assert_array_equal(path.column("B"), prices[:, 1])


def test_price_path_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        PricePath(("A",), np.array([0]), np.array([[1.0]]))  # 1 step
    with pytest.raises(ValueError):
        PricePath(("A", "B"), np.array([0, 60]), np.array([[1.0], [2.0]]))
    with pytest.raises(ValueError):
        PricePath(("A",), np.array([60, 0]), np.array([[1.0], [2.0]]))
    with pytest.raises(ValueError):
        PricePath(("A",), np.array([0, 60]), np.array([[1.0], [0.0]]))


# ---------------------------------------------------------------- synthetic_path


def test_synthetic_shape_and_timestamps() -> None:
    path = synthetic_path()
    assert path.symbols == ("ETH", "BTC")
    assert path.prices.shape == (300, 2) and path.prices.dtype == np.float64
    assert path.timestamps.dtype == np.int64
    assert path.timestamps[0] == int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
    assert np.all(np.diff(path.timestamps) == 60)
    np.testing.assert_array_equal(path.prices[0], [2000.0, 30000.0])
    assert path.dropped_steps == 0


def test_synthetic_deterministic() -> None:
    a, b, c = synthetic_path(seed=7), synthetic_path(seed=7), synthetic_path(seed=8)
    np.testing.assert_array_equal(a.prices, b.prices)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.prices, c.prices)


@pytest.mark.parametrize("seed", range(5))
def test_synthetic_crash_depth(seed: int) -> None:
    path = synthetic_path(seed=seed)
    dd = path.max_drawdown()
    assert 0.35 < dd["ETH"] < 0.6
    assert 0.3 < dd["BTC"] < 0.6
    # The trough is inside the crash window (steps 120..150), and prices recover afterwards.
    eth = path.column("ETH")
    trough = int(np.argmin(eth))
    assert 120 <= trough <= 155
    assert eth[180] > eth[trough] * 1.1


def test_synthetic_no_noise_is_exact() -> None:
    path = synthetic_path(steps=100, vol_per_step=0.0, crash_depth=0.5)
    btc, eth = path.column("BTC"), path.column("ETH")
    # Without noise, BTC falls exactly crash_depth and ETH by 1.1x the log-drop.
    assert btc.min() / 30000.0 == pytest.approx(0.5)
    assert eth.min() / 2000.0 == pytest.approx(0.5**1.1)
    # A third of the log-drop comes back.
    assert btc[-1] / 30000.0 == pytest.approx(0.5 ** (2 / 3))


def test_synthetic_custom_symbols() -> None:
    path = synthetic_path(symbols=("ETH", "BTC", "LINK"), start_prices={"ETH": 1.0, "BTC": 2.0, "LINK": 3.0}, steps=10)
    assert path.prices.shape == (10, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 1},
        {"steps": 2.5},
        {"crash_depth": 0.0},
        {"crash_depth": 1.0},
        {"correlation": 1.0},
        {"correlation": -1.0},
        {"start_prices": {"ETH": 0.0, "BTC": 1.0}},
        {"start_prices": {"ETH": 1.0}},
        {"symbols": ()},
        {"symbols": ("ETH", "ETH")},
        {"crash_at": 0.95, "crash_len": 0.1},
        {"vol_per_step": -0.1},
        {"symbols": ("ETH", "BTC", "X"), "start_prices": {"ETH": 1.0, "BTC": 1.0, "X": 1.0}, "correlation": -0.9},
    ],
)
def test_synthetic_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        synthetic_path(**kwargs)


# ---------------------------------------------------------------- CLI parsing


def test_parse_price_arg() -> None:
    assert parse_price_arg("ETH=eth.csv") == ("ETH", Path("eth.csv"))
    assert parse_price_arg("btc=/data/a=b.csv") == ("BTC", Path("/data/a=b.csv"))
    for bad in ("eth.csv", "=eth.csv", "ETH=", "1ETH=x.csv", "E TH=x.csv"):
        with pytest.raises(PriceDataError, match="SYMBOL=file.csv|symbol|empty file path"):
            parse_price_arg(bad)


def test_parse_utc() -> None:
    want = datetime(2020, 3, 11, tzinfo=UTC)
    assert parse_utc("2020-03-11T00:00:00Z") == want
    assert parse_utc("2020-03-11T00:00:00+00:00") == want
    assert parse_utc("2020-03-11") == want
    assert parse_utc("2020-03-11T05:06:07Z").utcoffset() == timedelta(0)
    for bad in (
        "2020-03-11T00:00:00",
        "2020-03-11T00:00:00+01:00",
        "2020-13-01",
        "2020-03-11 00:00:00Z",
        "yesterday",
        "",
    ):
        with pytest.raises(PriceDataError):
            parse_utc(bad)


# ---------------------------------------------------------------- real data


def test_real_binance_march_2020() -> None:
    eth_file = DATA_DIR / "eth_usdt_1h_binance_2018-01_2021-08.csv"
    btc_file = DATA_DIR / "btc_usdt_1h_binance_2018-01_2021-08.csv"
    if not (eth_file.is_file() and btc_file.is_file()):
        pytest.skip(f"market data not found in {DATA_DIR} (expected shared/data beside the repository clone)")
    eth, btc = load_price_csv(eth_file), load_price_csv(btc_file)
    assert (eth.symbol, btc.symbol) == ("ETH", "BTC")
    assert len(eth) == len(btc) == 31_620
    path = align({"ETH": eth, "BTC": btc}, parse_utc("2020-03-11T00:00:00Z"), parse_utc("2020-03-14T00:00:00Z"))
    assert path.steps == 72
    assert path.dropped_steps == 0
    assert path.timestamps[0] == int(datetime(2020, 3, 11, tzinfo=UTC).timestamp())
    assert np.all(np.diff(path.timestamps) == 3600)
    # Black Thursday lows: 2020-03-13T01:00Z hourly close.
    assert path.column("ETH").min() == 96.62
    assert path.column("BTC").min() == 4130.64
    assert path.timestamps[np.argmin(path.column("ETH"))] == int(datetime(2020, 3, 13, 1, tzinfo=UTC).timestamp())
    assert path.as_wad(0) == {"ETH": 2022 * 10**17, "BTC": 794048 * 10**16}


def _hourly(hours: list[int]) -> "PriceSeries":
    from keeper.marketdata.prices import PriceSeries

    t0 = int(datetime(2020, 3, 12, tzinfo=timezone.utc).timestamp())
    return PriceSeries(
        "ETH", np.array([t0 + 3600 * h for h in hours], dtype=np.int64), np.full(len(hours), 100.0), "test"
    )


def test_align_warns_about_a_25_hour_hole(caplog) -> None:
    """A day missing from hourly data is named (start, end, length) instead of stepped over silently."""
    from keeper.marketdata.prices import find_gaps

    s = _hourly([0, 1, 2, 27, 28, 29])  # 02:00 -> next day 03:00: 25 h, 24 rows missing
    assert find_gaps(s.timestamps) == [(int(s.timestamps[2]), int(s.timestamps[3]), 24)]
    with caplog.at_level("WARNING", logger="keeper.replay"):
        path = align({"ETH": s, "BTC": s})
    assert path.steps == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "2020-03-12T02:00:00Z" in warnings[0] and "2020-03-13T03:00:00Z" in warnings[0], warnings[0]
    assert "25 h" in warnings[0] and "24 missing steps" in warnings[0]


def test_align_regular_data_gives_no_warning(caplog) -> None:
    with caplog.at_level("WARNING", logger="keeper.replay"):
        align({"ETH": _hourly(list(range(48))), "BTC": _hourly(list(range(48)))})
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_replay_cli_prints_the_gap_on_stderr(tmp_path) -> None:
    import subprocess
    import sys

    rows = "".join(f"2020-03-{12 + h // 24:02d}T{h % 24:02d}:00:00Z,1,1,1,{100 + h},1\n" for h in [0, 1, 2, 27, 28, 29])
    csv = write_csv(tmp_path, rows)
    # an unreachable RPC: the replay stops with one line right after aligning the prices
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "keeper",
            "replay",
            "--prices",
            f"ETH={csv}",
            "--prices",
            f"BTC={csv}",
            "--rpc",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "price data gap" in out.stderr and "25 h" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
