"""Price data: historical price CSV files, and price paths for replaying a crash on a local chain,
one price step per block.

Pure data handling, no chain I/O:

- :func:`load_price_csv` reads one asset's historical bars into a :class:`PriceSeries`.
- :func:`align` inner-joins several series on timestamp into a :class:`PricePath`.
- :func:`synthetic_path` builds a seeded, reproducible crash scenario.
- :func:`parse_price_arg` and :func:`parse_utc` parse the CLI forms ``ETH=eth.csv`` and
  ``2020-03-11T00:00:00Z``.

Units: prices are float64 USD per whole unit of the asset; timestamps are int64 unix seconds (UTC).
Every data problem is reported as :class:`PriceDataError` with one human-readable line.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import numpy as np

from keeper.errors import PriceDataError

# the logger keeps the name it had when this module was keeper.marketdata.prices: the gap warnings
# `keeper replay` prints (and operators may filter on) are unchanged
log = logging.getLogger("keeper.replay")

__all__ = [
    "DEFAULT_START_PRICES",
    "MAX_PRICE",
    "MIN_PRICE",
    "PriceDataError",
    "PricePath",
    "PriceSeries",
    "align",
    "load_price_csv",
    "parse_price_arg",
    "parse_utc",
    "synthetic_path",
]

#: Start prices used by :func:`synthetic_path` when none are given (USD per unit).
DEFAULT_START_PRICES: Mapping[str, float] = MappingProxyType({"ETH": 2000.0, "BTC": 30000.0})

#: 2020-01-01T00:00:00Z, the first timestamp of a synthetic path.
SYNTHETIC_START_TS = 1_577_836_800
SYNTHETIC_STEP_SECONDS = 60

# 8 decimals like a Chainlink USD feed, then scaled to 18 (WAD).
_FEED_DECIMALS = 8
_WAD_DECIMALS = 18
#: The prices a replay can publish as 8-decimal feed answers, USD per unit: below 1e-8 rounds to
#: an answer of 0 (invalid to the oracle); above 1e15 is no real market and soon overflows.
MIN_PRICE = 1e-8
MAX_PRICE = 1e15

# ETH fell harder than BTC in March 2020; the synthetic crash keeps that ordering.
_CRASH_LOG_DROP_MULTIPLIER: Mapping[str, float] = MappingProxyType({"ETH": 1.1})
_RECOVERY_FRACTION = 1.0 / 3.0

_SYMBOL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|\+00:00)")


def _fmt_ts(ts: int | np.integer) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class PriceSeries:
    """One asset's price history.

    Attributes:
        symbol: asset symbol, e.g. ``"ETH"``.
        timestamps: int64 array, shape (N,), unix seconds UTC, strictly increasing.
        close: float64 array, shape (N,), USD per whole unit, finite and > 0.
        source: where the data came from (the CSV path for loaded files).

    The arrays are copied and made read-only. ``eq=False`` because element-wise array
    comparison has no single truth value; compare fields with ``numpy.array_equal``.

    Raises:
        ValueError: on shape mismatch, an empty series, non-increasing timestamps or a
            non-finite / non-positive price (the CSV loader reports these per row first).
    """

    symbol: str
    timestamps: np.ndarray
    close: np.ndarray
    source: str

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.int64)
        close = np.asarray(self.close, dtype=np.float64)
        if ts.ndim != 1 or close.shape != ts.shape:
            raise ValueError(
                f"{self.symbol}: timestamps {ts.shape} and close {close.shape} must be equal-length 1-D arrays"
            )
        if ts.size == 0:
            raise ValueError(f"{self.symbol}: price series is empty")
        if ts.size > 1 and not np.all(np.diff(ts) > 0):
            raise ValueError(f"{self.symbol}: timestamps must be strictly increasing")
        if not (np.all(np.isfinite(close)) and np.all(close > 0)):
            raise ValueError(f"{self.symbol}: prices must be finite and > 0")
        object.__setattr__(self, "timestamps", _readonly(ts))
        object.__setattr__(self, "close", _readonly(close))

    def __len__(self) -> int:
        return int(self.timestamps.size)


@dataclass(frozen=True, eq=False)
class PricePath:
    """Aligned prices of several assets, one row per replay step (block).

    Attributes:
        symbols: asset symbols, the column order of ``prices``.
        timestamps: int64 array, shape (T,), unix seconds UTC, strictly increasing.
        prices: float64 array, shape (T, n_assets), USD per whole unit, finite and > 0.
        dropped_steps: timestamps inside the window that some but not all series had, so
            the intersection dropped them (0 for synthetic paths). Worth a warning when > 0.

    Arrays are copied and made read-only; ``eq=False`` as for :class:`PriceSeries`.

    Raises:
        ValueError: on inconsistent shapes, fewer than 2 steps, duplicate symbols,
            non-increasing timestamps or non-finite / non-positive prices.
    """

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    prices: np.ndarray
    dropped_steps: int = 0

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        ts = np.asarray(self.timestamps, dtype=np.int64)
        prices = np.asarray(self.prices, dtype=np.float64)
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be non-empty and unique, got {symbols}")
        if ts.ndim != 1 or prices.shape != (ts.size, len(symbols)):
            raise ValueError(f"prices shape {prices.shape} does not match (T, n_assets) = ({ts.size}, {len(symbols)})")
        if ts.size < 2:
            raise ValueError(f"a price path needs at least 2 steps, got {ts.size}")
        if not np.all(np.diff(ts) > 0):
            raise ValueError("timestamps must be strictly increasing")
        if not (np.all(np.isfinite(prices)) and np.all(prices > 0)):
            raise ValueError("prices must be finite and > 0")
        if self.dropped_steps < 0:
            raise ValueError(f"dropped_steps must be >= 0, got {self.dropped_steps}")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "timestamps", _readonly(ts))
        object.__setattr__(self, "prices", _readonly(prices))
        object.__setattr__(self, "dropped_steps", int(self.dropped_steps))

    @property
    def steps(self) -> int:
        """Number of steps T."""
        return int(self.timestamps.size)

    def as_wad(self, step: int) -> dict[str, int]:
        """Prices at ``step`` as 18-decimal integers, ``{symbol: USD per unit * 10**18}``.

        The float is first rounded (exactly, half to even) to 8 decimals (Chainlink USD feed
        precision) so that e.g. 3782.13 gives exactly ``378213 * 10**16`` instead of float noise
        in the low digits.

        Args:
            step: 0 <= step < T; negative values index from the end like a list.

        Raises:
            IndexError: if ``step`` is out of range.
            PriceDataError: if a price is outside [MIN_PRICE, MAX_PRICE] USD, which an
                8-decimal feed answer cannot represent (CSV files are checked when loaded).
        """
        t = self.steps
        if not -t <= step < t:
            raise IndexError(f"step {step} out of range for a path of {t} steps")
        scale = 10**_FEED_DECIMALS
        up = 10 ** (_WAD_DECIMALS - _FEED_DECIMALS)
        row = self.prices[step]
        for s, p in zip(self.symbols, row):
            if not MIN_PRICE <= p <= MAX_PRICE:
                raise PriceDataError(
                    f"step {step}: {s} price {float(p):g} USD is outside [{MIN_PRICE:g}, {MAX_PRICE:g}]; "
                    f"it cannot be published as a {_FEED_DECIMALS}-decimal feed answer"
                )
        # exact: above ~9e7 USD, float(p) * 1e8 is beyond 2**53 and would add float noise
        return {s: round(Fraction(float(p)) * scale) * up for s, p in zip(self.symbols, row)}

    def max_drawdown(self) -> dict[str, float]:
        """Largest peak-to-trough fall per asset, as a fraction in [0, 1).

        ``max_t (1 - p_t / max_{s<=t} p_s)``; 0.0 for a path that never falls.
        """
        running_peak = np.maximum.accumulate(self.prices, axis=0)
        dd = 1.0 - self.prices / running_peak
        return {s: float(v) for s, v in zip(self.symbols, dd.max(axis=0))}

    def column(self, symbol: str) -> np.ndarray:
        """Prices of one asset, float64 shape (T,). Raises KeyError for an unknown symbol."""
        try:
            i = self.symbols.index(symbol)
        except ValueError:
            raise KeyError(f"{symbol!r} not in price path symbols {self.symbols}") from None
        return self.prices[:, i]


def _symbol_from_filename(path: Path) -> str:
    # "eth_usdt_1h_binance_....csv" -> "ETH"
    head = path.name.split("_", 1)[0].split(".", 1)[0]
    return head.upper()


def _parse_row_timestamp(raw: str, where: str) -> int:
    s = raw.strip()
    if not s:
        raise PriceDataError(f"{where}: empty timestamp")
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise PriceDataError(
            f"{where}: unparsable timestamp {raw!r} (expected ISO-8601 UTC like 2020-03-12T00:00:00Z)"
        ) from None
    # Only explicit UTC: a naive or offset time would silently shift the whole series.
    if dt.tzinfo is None or not (s.endswith("Z") or s.endswith("+00:00")):
        raise PriceDataError(f"{where}: timestamp {raw!r} is not UTC (it must end in Z or +00:00)")
    if dt.microsecond:
        raise PriceDataError(f"{where}: timestamp {raw!r} has fractional seconds; whole seconds expected")
    return int(dt.timestamp())


def _parse_row_price(raw: str, column: str, where: str) -> float:
    s = raw.strip()
    if not s:
        raise PriceDataError(f"{where}: empty {column}")
    try:
        value = float(s)
    except ValueError:
        raise PriceDataError(f"{where}: {column} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise PriceDataError(f"{where}: {column} is {raw!r}; prices must be finite")
    if value <= 0:
        raise PriceDataError(f"{where}: {column} is {raw!r}; prices must be > 0")
    if not MIN_PRICE <= value <= MAX_PRICE:
        raise PriceDataError(
            f"{where}: {column} is {raw!r}; prices must be between {MIN_PRICE:g} and {MAX_PRICE:g} USD "
            f"(the replay publishes {_FEED_DECIMALS}-decimal feed answers)"
        )
    return value


def load_price_csv(path: str | Path, symbol: str | None = None) -> PriceSeries:
    """Read one asset's prices from a CSV file.

    The header must contain ``timestamp`` and either ``close`` (OHLC bars) or, when there is
    no ``close``, ``price`` (CoinGecko / Chainlink snapshots). Other columns are ignored and
    may be empty. Timestamps are ISO-8601 UTC ending in ``Z`` or ``+00:00``, whole seconds,
    strictly increasing. Blank lines are skipped.

    Args:
        path: the CSV file.
        symbol: asset symbol; by default the file name up to the first ``_``, upper-cased
            (``eth_usdt_1h_binance.csv`` -> ``"ETH"``).

    Returns:
        PriceSeries with N >= 1 rows: int64 unix seconds and float64 USD-per-unit closes;
        ``source`` is ``str(path)``.

    Raises:
        PriceDataError: one line naming the file (and the 1-based file line, the header
            being line 1) for: missing/unreadable/empty file, no data rows, missing required
            columns, wrong field count, unparsable or non-UTC timestamp, non-numeric, NaN,
            infinite, zero or negative price, a price outside [MIN_PRICE, MAX_PRICE] USD, and
            duplicate or out-of-order timestamps.
    """
    p = Path(path)
    name = str(path)
    try:
        # utf-8-sig: tolerate a BOM from spreadsheet exports.
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise PriceDataError(f"{name}: file is empty (expected a header line with timestamp,close)")
            cols = [c.strip().lower() for c in header]
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                raise PriceDataError(f"{name}: line 1: duplicate column(s) {', '.join(dupes)}")
            price_col = "close" if "close" in cols else "price"
            missing = [c for c in ("timestamp", price_col) if c not in cols]
            # Name the usual column when neither close nor price exists.
            missing = ["close (or price)" if c == "price" else c for c in missing]
            if missing:
                raise PriceDataError(
                    f"{name}: line 1: missing required column(s) {', '.join(missing)}; header is {','.join(header)}"
                )
            i_ts, i_px, n_cols = cols.index("timestamp"), cols.index(price_col), len(cols)

            timestamps: list[int] = []
            closes: list[float] = []
            prev_line = 0
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                line = reader.line_num
                where = f"{name}: line {line}"
                if len(fields) != n_cols:
                    raise PriceDataError(f"{where}: {len(fields)} fields, header has {n_cols}")
                ts = _parse_row_timestamp(fields[i_ts], where)
                if timestamps and ts <= timestamps[-1]:
                    kind = "duplicate" if ts == timestamps[-1] else "out-of-order"
                    raise PriceDataError(
                        f"{where}: {kind} timestamp {fields[i_ts].strip()} (line {prev_line} has "
                        f"{_fmt_ts(timestamps[-1])}); timestamps must be strictly increasing"
                    )
                closes.append(_parse_row_price(fields[i_px], price_col, where))
                timestamps.append(ts)
                prev_line = line
    except FileNotFoundError:
        raise PriceDataError(f"{name}: price file not found") from None
    except UnicodeDecodeError as e:
        raise PriceDataError(f"{name}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise PriceDataError(f"{name}: malformed CSV: {e}") from None
    except OSError as e:
        raise PriceDataError(f"{name}: cannot read price file: {e.strerror or e}") from None

    if not timestamps:
        raise PriceDataError(f"{name}: no data rows after the header")
    return PriceSeries(
        symbol=symbol if symbol is not None else _symbol_from_filename(p),
        timestamps=np.array(timestamps, dtype=np.int64),
        close=np.array(closes, dtype=np.float64),
        source=name,
    )


def _to_unix(dt: datetime, label: str) -> int:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise PriceDataError(f"{label} {dt.isoformat()} has no timezone; use a UTC datetime")
    return math.ceil(dt.timestamp())


def align(
    series: Mapping[str, PriceSeries],
    start: datetime | None = None,
    end: datetime | None = None,
) -> PricePath:
    """Inner-join several assets on timestamp, optionally restricted to ``start <= t < end``.

    Only timestamps present in every series are kept; no price is filled in or interpolated.

    Args:
        series: ``{symbol: PriceSeries}``; the key is the symbol and its order is the
            column order of the result.
        start: inclusive lower bound, timezone-aware (UTC), or None for no bound.
        end: exclusive upper bound, timezone-aware (UTC), or None for no bound.

    Returns:
        PricePath with ``prices`` of shape (T, len(series)) and ``dropped_steps`` = number of
        timestamps in the window that at least one but not every series had.

    Raises:
        PriceDataError: no series, a naive datetime, ``start >= end``, or fewer than 2
            common timestamps in the window.
    """
    if not series:
        raise PriceDataError("no price series to align")
    lo = _to_unix(start, "start") if start is not None else None
    hi = _to_unix(end, "end") if end is not None else None
    if lo is not None and hi is not None and lo >= hi:
        raise PriceDataError(f"empty window: start {_fmt_ts(lo)} is not before end {_fmt_ts(hi)}")

    def in_window(ts: np.ndarray) -> np.ndarray:
        mask = np.ones(ts.shape, dtype=bool)
        if lo is not None:
            mask &= ts >= lo
        if hi is not None:
            mask &= ts < hi
        return ts[mask]

    windowed = [in_window(s.timestamps) for s in series.values()]
    common = windowed[0]
    union = windowed[0]
    for ts in windowed[1:]:
        # Series timestamps are strictly increasing, hence unique: assume_unique is safe.
        common = np.intersect1d(common, ts, assume_unique=True)
        union = np.union1d(union, ts)

    if common.size < 2:
        window = f"[{_fmt_ts(lo) if lo is not None else '-inf'}, {_fmt_ts(hi) if hi is not None else '+inf'})"
        ranges = "; ".join(
            f"{sym} {_fmt_ts(s.timestamps[0])} to {_fmt_ts(s.timestamps[-1])} ({len(s)} rows)"
            for sym, s in series.items()
        )
        raise PriceDataError(
            f"only {common.size} common timestamp(s) in window {window}, need at least 2; data: {ranges}"
        )

    for start_ts, end_ts, missing in find_gaps(common):
        log.warning(
            "price data gap: no common price between %s and %s (%s, %d missing steps); the replay steps over it in one block",
            _fmt_ts(start_ts),
            _fmt_ts(end_ts),
            _fmt_span(end_ts - start_ts),
            missing,
        )
    cols = []
    for s in series.values():
        idx = np.searchsorted(s.timestamps, common)
        cols.append(s.close[idx])
    return PricePath(
        symbols=tuple(series.keys()),
        timestamps=common,
        prices=np.column_stack(cols),
        dropped_steps=int(union.size - common.size),
    )


def find_gaps(timestamps: np.ndarray) -> list[tuple[int, int, int]]:
    """Holes in a regular series: (last timestamp before, first after, missing steps) for every
    interval longer than 1.5 x the usual step (the median interval), e.g. one day without
    hourly rows -> (t, t + 25 h, 24)."""
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size < 3:
        return []
    diffs = np.diff(ts)
    step = int(np.median(diffs))
    if step <= 0:
        return []
    return [(int(ts[i]), int(ts[i + 1]), int(round(diffs[i] / step)) - 1) for i in np.flatnonzero(diffs * 2 > step * 3)]


def _fmt_span(seconds: int) -> str:
    """3600 -> "1 h", 90000 -> "25 h", 600 -> "10 min", 5400 -> "1.5 h"."""
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def synthetic_path(
    symbols: tuple[str, ...] = ("ETH", "BTC"),
    steps: int = 300,
    seed: int = 0,
    start_prices: Mapping[str, float] = DEFAULT_START_PRICES,
    crash_at: float = 0.4,
    crash_depth: float = 0.45,
    crash_len: float = 0.1,
    vol_per_step: float = 0.004,
    correlation: float = 0.8,
) -> PricePath:
    """A reproducible correlated random-walk price path with a deterministic crash.

    Model (log prices, one increment per step t = 1..steps-1)::

        log p[t] = log p[t-1] - vol**2 / 2 + vol * (L @ z[t])[i] + d[t, i]

    - ``z[t]`` ~ iid N(0, I) from ``numpy.random.Generator(PCG64(seed))``; ``L`` is the
      Cholesky factor of the constant-correlation matrix (1 on the diagonal, ``correlation``
      elsewhere), so this is a driftless geometric Brownian motion per asset.
    - Crash: for the ``n = max(1, round(crash_len * steps))`` increments starting at
      ``round(crash_at * steps)``, ``d = -D_i / n`` where ``D = -log(1 - crash_depth)`` for
      every asset except ETH, which gets ``1.1 * D`` (as in March 2020, ETH fell harder than
      BTC). Defaults: BTC falls ~45%, ETH ~48%, plus noise.
    - Recovery: over the next ``n`` increments (cut short by the end of the path),
      ``d = +D_i / (3 n)``, i.e. a third of the log drop comes back.

    Timestamps start at 2020-01-01T00:00:00Z, 60 seconds apart. Same arguments -> bitwise
    identical path.

    Args:
        symbols: asset symbols, non-empty and unique; each needs a start price.
        steps: number of steps T >= 2.
        seed: PCG64 seed.
        start_prices: ``{symbol: USD per unit}`` at step 0, each > 0.
        crash_at: crash start as a fraction of ``steps``, 0 <= crash_at < 1.
        crash_depth: target total fall of a non-ETH asset, 0 < crash_depth < 1.
        crash_len: crash length as a fraction of ``steps``, > 0, with crash_at + crash_len <= 1.
        vol_per_step: log-return standard deviation per step, >= 0.
        correlation: pairwise correlation of the shocks, |correlation| < 1 (and
            > -1/(n_assets-1) so the matrix is positive definite).

    Returns:
        PricePath with ``prices`` of shape (steps, len(symbols)), ``dropped_steps`` 0.

    Raises:
        ValueError: for any invalid argument above.
    """
    symbols = tuple(symbols)
    if not symbols or len(set(symbols)) != len(symbols):
        raise ValueError(f"symbols must be non-empty and unique, got {symbols}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    steps = int(steps)
    missing = [s for s in symbols if s not in start_prices]
    if missing:
        raise ValueError(f"no start price for {', '.join(missing)}")
    p0 = np.array([float(start_prices[s]) for s in symbols], dtype=np.float64)
    if not (np.all(np.isfinite(p0)) and np.all(p0 > 0)):
        raise ValueError(f"start prices must be finite and > 0, got {dict(zip(symbols, p0.tolist()))}")
    if not 0.0 < crash_depth < 1.0:
        raise ValueError(f"crash_depth must be in (0, 1), got {crash_depth}")
    if not 0.0 <= crash_at < 1.0:
        raise ValueError(f"crash_at must be in [0, 1), got {crash_at}")
    if not (crash_len > 0.0 and crash_at + crash_len <= 1.0 + 1e-12):
        raise ValueError(f"crash_len must be > 0 with crash_at + crash_len <= 1, got {crash_len}")
    if not (math.isfinite(vol_per_step) and vol_per_step >= 0.0):
        raise ValueError(f"vol_per_step must be finite and >= 0, got {vol_per_step}")
    if not abs(correlation) < 1.0:
        raise ValueError(f"|correlation| must be < 1, got {correlation}")

    n_assets = len(symbols)
    corr = np.full((n_assets, n_assets), float(correlation))
    np.fill_diagonal(corr, 1.0)
    try:
        chol = np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"correlation {correlation} is not valid for {n_assets} assets (matrix not positive definite)"
        ) from None

    n_inc = steps - 1
    rng = np.random.Generator(np.random.PCG64(seed))
    shocks = rng.standard_normal((n_inc, n_assets)) @ chol.T
    log_inc = vol_per_step * shocks - 0.5 * vol_per_step**2

    base_drop = -math.log1p(-crash_depth)
    drops = np.array([base_drop * _CRASH_LOG_DROP_MULTIPLIER.get(s, 1.0) for s in symbols])
    n_crash = max(1, round(crash_len * steps))
    # Increment k moves the price from step k to k+1; keep the crash inside the path.
    c0 = min(round(crash_at * steps), n_inc - 1)
    c1 = min(c0 + n_crash, n_inc)
    log_inc[c0:c1] -= drops / (c1 - c0)
    r1 = min(c1 + n_crash, n_inc)
    log_inc[c1:r1] += _RECOVERY_FRACTION * drops / n_crash

    # Relative to p0 so that step 0 is exactly the start price.
    rel = np.exp(np.vstack([np.zeros((1, n_assets)), np.cumsum(log_inc, axis=0)]))
    timestamps = SYNTHETIC_START_TS + SYNTHETIC_STEP_SECONDS * np.arange(steps, dtype=np.int64)
    return PricePath(symbols=symbols, timestamps=timestamps, prices=p0 * rel, dropped_steps=0)


def parse_price_arg(arg: str) -> tuple[str, Path]:
    """Parse the CLI form ``SYMBOL=path/to/file.csv``.

    Returns:
        ``(symbol upper-cased, Path)``, e.g. ``"eth=eth.csv"`` -> ``("ETH", Path("eth.csv"))``.
        Only the first ``=`` splits, so the path may contain ``=``.

    Raises:
        PriceDataError: no ``=``, an empty or non-alphanumeric symbol (must start with a
            letter; letters, digits and ``_``), or an empty path.
    """
    sym, sep, path = arg.partition("=")
    sym, path = sym.strip(), path.strip()
    if not sep:
        raise PriceDataError(f"price argument {arg!r} must look like SYMBOL=file.csv, e.g. ETH=eth.csv")
    if not _SYMBOL_RE.fullmatch(sym):
        raise PriceDataError(
            f"price argument {arg!r}: symbol {sym!r} must start with a letter and contain only letters, digits or _"
        )
    if not path:
        raise PriceDataError(f"price argument {arg!r}: empty file path after '='")
    return sym.upper(), Path(path)


def parse_utc(s: str) -> datetime:
    """Parse a UTC instant given as ``2020-03-11T00:00:00Z``, ``2020-03-11T00:00:00+00:00``
    or ``2020-03-11`` (midnight UTC).

    Returns:
        a timezone-aware datetime with ``tzinfo=timezone.utc``.

    Raises:
        PriceDataError: any other form (other offsets, no timezone, fractional seconds,
            a space instead of ``T``), or an impossible date/time such as month 13.
    """
    text = s.strip()
    try:
        if _DATE_RE.fullmatch(text):
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        if _DATETIME_RE.fullmatch(text):
            return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        raise PriceDataError(f"invalid date/time {s!r}") from None
    raise PriceDataError(
        f"cannot parse {s!r} as UTC; use 2020-03-11T00:00:00Z, 2020-03-11T00:00:00+00:00 or 2020-03-11"
    )
