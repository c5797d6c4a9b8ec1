"""tools/price_gaps.py (the worst moves in the market data) against hand calculations, and the
docs table bin/figures renders from its report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tools import price_gaps

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("figures", ROOT / "tools" / "figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)


def write_bars(path: Path, start_hour: int, minutes: int, bars: list[tuple[float, float, float]]) -> Path:
    """(open, low, close) bars from 2020-03-12 start_hour:00, `minutes` apart."""
    lines = ["timestamp,open,high,low,close,volume"]
    for n, (o, lo, c) in enumerate(bars):
        t = start_hour * 60 + n * minutes
        lines.append(f"2020-03-12T{t // 60:02d}:{t % 60:02d}:00Z,{o},{max(o, c)},{lo},{c},1")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ten_minute_bars(tmp_path):
    # closes 100, 100, 90, 80, 80, 80, 70, 75: one hour (6 bars) worst is 100 -> 70 from bar 0,
    # -30%; one step worst is 80 -> 70, -12.5% (100 -> 90 is -10%)
    closes = [100, 100, 90, 80, 80, 80, 70, 75]
    path = write_bars(tmp_path / "x.csv", 9, 10, [(c, c, c) for c in closes])
    hour, step = price_gaps.gaps(path, 10)
    assert hour == {
        "kind": "one hour",
        "move": pytest.approx(-0.3),
        "start": "2020-03-12T09:00:00Z",
        "end": "2020-03-12T10:00:00Z",
    }
    assert step["move"] == pytest.approx(-0.125)
    assert (step["start"], step["end"]) == ("2020-03-12T09:50:00Z", "2020-03-12T10:00:00Z")


def test_hourly_bars(tmp_path):
    # close to close: 200 -> 150 is -25% (hour 2), open to low: 160 -> 120 in hour 3 is -25%... and
    # 150 -> 105 in hour 4 is -30%
    bars = [(200, 190, 200), (200, 195, 200), (200, 150, 150), (160, 120, 150), (150, 105, 140)]
    path = write_bars(tmp_path / "y.csv", 0, 60, bars)
    c2c, within = price_gaps.gaps(path, 60)
    assert c2c["move"] == pytest.approx(-0.25) and c2c["end"] == "2020-03-12T02:00:00Z"
    assert within["move"] == pytest.approx(-0.3) and within["start"] == "2020-03-12T04:00:00Z"


def test_report_leaves_out_absent_files(tmp_path):
    name = next(iter(price_gaps.FILES))
    write_bars(tmp_path / name, 0, 10, [(1, 1, c) for c in (10, 10, 10, 10, 10, 10, 9)])
    out = price_gaps.report(tmp_path)
    assert out["data"] == [name] and out["rows"][0]["data"] == price_gaps.FILES[name][0]


def test_table():
    report = {
        "rows": [
            {
                "data": "ETH hourly",
                "moves": [
                    {
                        "kind": "close to close",
                        "move": -0.2087,
                        "start": "2020-03-12T09:00:00Z",
                        "end": "2020-03-12T10:00:00Z",
                    },
                    {
                        "kind": "open to low within an hour",
                        "move": -0.2797,
                        "start": "2021-05-19T12:00:00Z",
                        "end": "2021-05-19T12:00:00Z",
                    },
                ],
            }
        ]
    }
    table = figures.render_price_gaps(report)
    assert table.splitlines()[2] == (
        "| ETH hourly | −20.9% close to close (2020-03-12 10:00 UTC); "
        "−28.0% open to low within an hour (2021-05-19 12:00 UTC) |"
    )
    bad = {"rows": [{"data": "x", "moves": [{"kind": "a week", "move": -0.1, "start": "", "end": ""}]}]}
    with pytest.raises(figures.ReportError, match="unknown kind"):
        figures.render_price_gaps(bad)


def test_the_documented_data_gives_the_documented_table():
    """The threat model's table is what the market data gives (skips without ../shared/data)."""
    from keeper.marketdata.daily import data_dir

    data = data_dir()
    if not all((data / name).is_file() for name in price_gaps.FILES):
        pytest.skip(f"market data not found in {data} (set KEEPER_DATA_DIR)")
    table = figures.render_price_gaps(price_gaps.report(data))
    assert table in (ROOT / "docs" / "threat-model.md").read_text()
