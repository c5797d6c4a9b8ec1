"""The worst price moves in the market data, which `max_gap` and the open-interest caps are sized
against (docs/threat-model.md "Measured gaps"):

    python -m tools.price_gaps [--data DIR] [--json]

For each file of ten-minute bars: the worst close-to-close move over one hour (six bars) and over
one bar. For each file of hourly bars: the worst close-to-close move between two hours and the
worst open-to-low move within one. `--json` writes reports/price-gaps.json, from which
`bin/figures` renders the table; the data folder is `--data`, else the keeper's market-data
setting (`KEEPER_DATA_DIR`, else ../shared/data).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "price-gaps.json"

# file -> (what the table calls it, bar length in minutes)
FILES = {
    "eth_usd_10m_coinapi_2021-05-19.csv": ("ETH 10-minute (CoinAPI), 2021-05-19", 10),
    "eth_usdt_1h_binance_2018-01_2021-08.csv": ("ETH hourly (Binance 2018-01 .. 2021-08)", 60),
    "btc_usdt_1h_binance_2018-01_2021-08.csv": ("BTC hourly (Binance 2018-01 .. 2021-08)", 60),
    "eth_usd_10m_coinapi_2020-03-12.csv": ("ETH 10-minute (CoinAPI), 2020-03-12 (Black Thursday)", 10),
}


def worst_move(start: np.ndarray, end: np.ndarray) -> tuple[float, int]:
    """(min over i of end[i] / start[i] - 1, that i): the worst relative move, a fraction."""
    moves = end / start - 1.0
    i = int(np.argmin(moves))
    return float(moves[i]), i


def _bars(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    columns = {name: np.array([float(r[name]) for r in rows]) for name in ("open", "low", "close")}
    return [r["timestamp"] for r in rows], columns


def gaps(path: Path, minutes: int) -> list[dict]:
    """The moves of one file: [{"kind", "move", "start", "end"}], timestamps as in the file."""
    t, bars = _bars(path)
    close = bars["close"]
    if minutes == 10:
        hour, i = worst_move(close[:-6], close[6:])
        step, j = worst_move(close[:-1], close[1:])
        return [
            {"kind": "one hour", "move": hour, "start": t[i], "end": t[i + 6]},
            {"kind": "one 10-minute step", "move": step, "start": t[j], "end": t[j + 1]},
        ]
    if minutes == 60:
        hour, i = worst_move(close[:-1], close[1:])
        within, k = worst_move(bars["open"], bars["low"])
        return [
            {"kind": "close to close", "move": hour, "start": t[i], "end": t[i + 1]},
            {"kind": "open to low within an hour", "move": within, "start": t[k], "end": t[k]},
        ]
    raise ValueError(f"{path}: bars of {minutes} minutes: expected 10 or 60")


def report(data: Path) -> dict:
    """Every file's moves (a file that is absent is left out)."""
    rows = [
        {"file": name, "data": label, "moves": gaps(data / name, minutes)}
        for name, (label, minutes) in FILES.items()
        if (data / name).is_file()
    ]
    return {"data": [r["file"] for r in rows], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    from keeper.marketdata.daily import data_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="market-data folder")
    ap.add_argument("--json", action="store_true", help=f"write {REPORT.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    data = args.data or data_dir()
    out = report(data)
    if not out["rows"]:
        print(f"price_gaps: none of the market-data files in {data}")
        return 1
    for row in out["rows"]:
        moves = "; ".join(f"{m['move']:+.1%} {m['kind']} ({m['start']} .. {m['end']})" for m in row["moves"])
        print(f"{row['data']}: {moves}")
    if args.json:
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
