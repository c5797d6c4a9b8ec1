"""Chain state -> the scenario engine's book: :class:`~keeper.risk.scenarios.Instruments`, signed
positions (A, I) and a :class:`~keeper.risk.scenarios.MarketState` (pure, no I/O).

Mapping (units: the chain's WAD integers become float USD / units of the underlying):

- every live engine market (not settled) is an instrument: a perpetual (kind 0, expiry 0) or a
  future (kind 1, its expiry), on the engine underlying id;
- every live option series (not settled, expiry after ``now``) is a call (2) or put (3) with its
  strike and expiry, on the series' engine underlying id;
- spot of underlying u = index price of its oracle price id (``price_id_of[u]``); forward = spot
  (the contracts' Black-76 and the scenario engine both take F = index, rates 0);
- the vol surface has one point per (underlying, expiry) of the listed series, from the VolFeed
  entry (price id, expiry): atm_vol and skew WAD -> float. A series whose point was never
  published cannot be valued: it is left out of the book and named in ``unpriced``; a point older
  than the feed's heartbeat is used but named in ``stale`` (the attestation service refuses both).

Entry prices and funding are irrelevant here: scenario P&L is the change of value from now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from keeper.risk.scenarios import CALL, FUTURE, PERPETUAL, PUT, Instruments, MarketState, VolSurface
from keeper.units import WAD

__all__ = ["RiskBook", "SeriesInfo", "VolPoint", "build_book", "series_name"]


@dataclass(frozen=True)
class SeriesInfo:
    """One listed option series as `OptionMarket.series_states()` gives it: ``underlying`` the
    engine underlying id, ``price_id`` its oracle price id, ``strike`` WAD USD, ``expiry`` unix
    seconds, ``settlement_price`` WAD (0 while live)."""

    series_id: int
    underlying: int
    price_id: int
    strike: int
    expiry: int
    is_call: bool
    settlement_price: int = 0


@dataclass(frozen=True)
class VolPoint:
    """A VolFeed entry: ``atm_vol`` WAD annualised, ``skew`` signed WAD per unit ln(K/F),
    ``timestamp`` unix seconds (0 = never published)."""

    atm_vol: int
    skew: int
    timestamp: int


@dataclass(frozen=True, eq=False)
class RiskBook:
    """The scenario engine's view of A accounts.

    instruments: I instruments; names (I,) labels; refs (I,) ("market", market id) or ("series",
    series id); positions (A, I) float signed units; market: spot, vol surface, now, symbols;
    unpriced: series ids left out (no vol ever published) with a position in some account;
    stale: series ids valued with a vol older than the heartbeat; holds_unpriced / holds_stale
    (A,) bool: the account holds one of them."""

    accounts: tuple[str, ...]
    instruments: Instruments
    names: tuple[str, ...]
    refs: tuple[tuple[str, int], ...]
    positions: np.ndarray
    market: MarketState
    unpriced: frozenset[int]
    stale: frozenset[int]
    holds_unpriced: np.ndarray
    holds_stale: np.ndarray

    def has_options(self) -> np.ndarray:
        """(A,) bool: the account holds an option in the book."""
        held: np.ndarray = (self.positions[:, self.instruments.is_option] != 0).any(axis=1)
        return held


def series_name(symbol: str, s: SeriesInfo) -> str:
    """ "ETH-20250131-2200-C": underlying, expiry date (UTC), strike, C or P."""
    day = datetime.fromtimestamp(s.expiry, tz=timezone.utc).strftime("%Y%m%d")
    strike = s.strike / WAD
    text = f"{strike:.0f}" if strike == int(strike) else f"{strike:g}"
    return f"{symbol}-{day}-{text}-{'C' if s.is_call else 'P'}"


def build_book(
    accounts: Sequence[str],
    prices: Sequence[int],
    price_id_of: Sequence[int],
    market_underlying: Sequence[int],
    market_expiry: Sequence[int],
    market_settlement: Sequence[int],
    perp_sizes: ArrayLike,
    series: Sequence[SeriesInfo],
    option_sizes: Sequence[Mapping[int, int]],
    vols: Mapping[tuple[int, int], VolPoint],
    now: int,
    symbols: Sequence[str] = (),
    market_names: Mapping[int, str] | None = None,
    heartbeat: int | None = None,
) -> RiskBook:
    """The book of `accounts` at one block.

    Args:
        prices: the oracle's ``index_prices()`` (WAD, by price id).
        price_id_of: oracle price id of each engine underlying (U,).
        market_underlying, market_expiry, market_settlement: per engine market id (M,); expiry 0
            for a perpetual, settlement WAD (0 = live).
        perp_sizes: (A, M) WAD signed sizes (ints or an object array).
        series: every listed option series; option_sizes: per account {series id: WAD size}.
        vols: VolFeed entries by (price id, expiry); now: the block timestamp.
        symbols: label of each underlying (default U0, U1, ...); market_names: id -> name.
        heartbeat: the VolFeed's heartbeat seconds (None: nothing counts as stale).

    Raises ValueError (one line) for inconsistent shapes, a price id without a price, or an
    option size on an unknown series."""
    n_a, n_u = len(accounts), len(price_id_of)
    if len(option_sizes) != n_a:
        raise ValueError(f"option_sizes: {len(option_sizes)} rows for {n_a} accounts")
    sizes = (
        np.asarray(perp_sizes, dtype=object).reshape(n_a, -1)
        if n_a
        else np.zeros((0, len(market_underlying)), dtype=object)
    )
    if sizes.shape[1] != len(market_underlying) or not len(market_underlying) == len(market_expiry) == len(
        market_settlement
    ):
        raise ValueError(f"markets: sizes have {sizes.shape[1]} columns for {len(market_underlying)} markets")
    spot = []
    for u, pid in enumerate(price_id_of):
        if pid >= len(prices) or int(prices[pid]) <= 0:
            raise ValueError(f"underlying {u}: no valid index price for price id {pid}")
        spot.append(int(prices[pid]) / WAD)
    symbols = tuple(symbols) or tuple(f"U{u}" for u in range(n_u))
    names_of = dict(market_names or {})

    kinds, unds, strikes, expiries, names, refs = [], [], [], [], [], []
    for m, (u, expiry, settled) in enumerate(zip(market_underlying, market_expiry, market_settlement)):
        if int(settled) != 0:
            continue
        kinds.append(PERPETUAL if int(expiry) == 0 else FUTURE)
        unds.append(int(u))
        strikes.append(0.0)
        expiries.append(int(expiry))
        names.append(names_of.get(m, f"market {m}"))
        refs.append(("market", m))

    by_id = {s.series_id: s for s in series}
    held = {sid for row in option_sizes for sid, size in row.items() if size}
    unknown = held - set(by_id)
    if unknown:
        raise ValueError(f"option position in unknown series {min(unknown)}")
    points: dict[tuple[int, int], VolPoint] = {}
    unpriced, stale = set(), set()
    for s in series:
        if s.settlement_price != 0 or s.expiry <= now:
            continue  # settled or expired: its value is fixed, no scenario risk
        point = vols.get((s.price_id, s.expiry))
        if point is None or point.timestamp == 0 or point.atm_vol <= 0:
            if s.series_id in held:
                unpriced.add(s.series_id)
            continue
        if heartbeat is not None and now - point.timestamp > heartbeat:
            stale.add(s.series_id)
        points[(s.underlying, s.expiry)] = point
        kinds.append(CALL if s.is_call else PUT)
        unds.append(s.underlying)
        strikes.append(s.strike / WAD)
        expiries.append(s.expiry)
        names.append(series_name(symbols[s.underlying] if s.underlying < len(symbols) else f"U{s.underlying}", s))
        refs.append(("series", s.series_id))

    instruments = Instruments(
        underlying=np.array(unds, dtype=np.int64), kind=np.array(kinds, dtype=np.int64),
        strike=np.array(strikes, dtype=np.float64), expiry=np.array(expiries, dtype=np.int64),
    )  # fmt: skip
    keys = list(points)
    surface = VolSurface(
        underlying=np.array([k[0] for k in keys], dtype=np.int64),
        expiry=np.array([k[1] for k in keys], dtype=np.int64),
        atm_vol=np.array([points[k].atm_vol / WAD for k in keys], dtype=np.float64),
        skew=np.array([points[k].skew / WAD for k in keys], dtype=np.float64),
    )
    market = MarketState(spot=np.array(spot), vol=surface, now=int(now), symbols=symbols)

    positions = np.zeros((n_a, len(refs)))
    column = {ref: i for i, ref in enumerate(refs)}
    holds_unpriced = np.zeros(n_a, dtype=bool)
    holds_stale = np.zeros(n_a, dtype=bool)
    for a in range(n_a):
        for m in range(sizes.shape[1]):
            size = int(sizes[a, m])
            if size and ("market", m) in column:
                positions[a, column[("market", m)]] = size / WAD
        for sid, size in option_sizes[a].items():
            if not size:
                continue
            holds_unpriced[a] |= sid in unpriced
            holds_stale[a] |= sid in stale
            if ("series", sid) in column:
                positions[a, column[("series", sid)]] = int(size) / WAD
    return RiskBook(
        accounts=tuple(accounts), instruments=instruments, names=tuple(names), refs=tuple(refs), positions=positions,
        market=market, unpriced=frozenset(unpriced), stale=frozenset(stale),
        holds_unpriced=holds_unpriced, holds_stale=holds_stale,
    )  # fmt: skip
