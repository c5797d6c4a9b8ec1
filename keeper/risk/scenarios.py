"""Portfolio margin: the worst loss of each account over a grid of scenarios, plus contingencies.

SPAN / Deribit / Derive (Lyra v2 PMRM) style. Pure: no I/O (the parameters are read from YAML by
:func:`keeper.config.load_scenario_params`).

Data model (the on-chain side mirrors it):

- :class:`Instruments`, arrays of length I: ``underlying`` int in [0, U), ``kind`` (0 perpetual,
  1 future, 2 call, 3 put), ``strike`` USD (0 for delta-one), ``expiry`` unix seconds (0 = perpetual).
- :class:`MarketState`: ``spot`` (U,) USD index prices (forward = spot, no rates), a
  :class:`VolSurface` (``atm_vol`` and ``skew`` per underlying and expiry; :func:`smile_vol`) and
  ``now`` unix seconds. Options are European, cash-settled, Black-76 on F = spot with r = 0.
- positions: (A, I) float64, signed units of the underlying.

The grid (:func:`build_grid`), per underlying (CME SPAN risk array; Derive PMRM v1 default grid):

- spot moves ``linspace(-spot_range, +spot_range, spot_steps)`` (defaults -15%..+15% in 5% steps)
  crossed with volatility up / unchanged / down;
- two extreme moves ``+-extreme_multiple x spot_range`` at unchanged volatility whose P&L counts
  ``extreme_cover`` of itself (SPAN scenarios 15-16: 2x the scan range covered at 35%);
- volatility shocks multiply each option's vol (sticky strike, Derive ``PMRMLib._addVolShocks``):
  ``mult = (vol_reference_days / max(T, dte_floor_days)) ** (short_term_power if T <= 30 d else
  long_term_power)``, up ``1 + vol_range_up * mult``, down ``max(0, 1 - vol_range_down * mult)``.

Across underlyings (2 or more), each grid point becomes 1 + U joint scenarios: a *common* move
(every underlying moves the same and its volatility shocks the same way), and one per *driver*
underlying d (d moves by the point and its vol shocks; every other underlying moves
``correlation x`` the point with unchanged vol). Same-direction books thus get no diversification
credit (the common move), while a hedge across underlyings (long ETH / short BTC) is charged
``(1 - correlation)`` of the move: a SPAN inter-commodity spread credit set by one named parameter.

Requirements per account (USD, rounded up to the cent: rounding favours the protocol):

- grid loss = max(0, -min over scenarios of weight_s x P&L_s);
- delta-one contingency = delta_one_contingency x spot x |net perpetual + future size| per
  underlying (Derive PMRM static contingency, perpPercent 3%);
- basis contingency = basis_contingency x spot x (sum_b |n_b| - |sum_b n_b|) / 2 per underlying,
  n_b the net delta of expiry bucket b (perpetuals are one bucket): the delta hedged across
  expiries, which the grid (forward = spot) sees as riskless (Deribit PM: 1% of offsetting futures;
  CME SPAN intra-commodity spread charge);
- naked short option contingency = naked_option_contingency x spot x max(0, -net size) per
  (underlying, expiry, call/put) (Derive PMRM optionPercent 2% of naked short options);
- MM = grid loss + contingencies; IM = MM x im_factor (Derive PMRM v1 ``imFactor`` 1.25, bounds
  [1, 4]; one grid keeps IM and MM consistent, and IM >= MM by construction).

Every account is valued at once: each instrument is revalued under each scenario once
(:func:`build_risk_tables`, an I x S table) and the accounts' P&L is ``positions @ table``.
:func:`portfolio_margin_loop` is the naive per-account, per-position, per-scenario loop (benchmark
baseline and an independent scalar implementation for tests).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_utils.crypto import keccak
from numpy.typing import ArrayLike, DTypeLike

from keeper.errors import ConfigError
from keeper.risk.black_scholes import YEAR_SECONDS, bs_greeks, bs_value

__all__ = [
    "CALL",
    "FUTURE",
    "MIN_VOL",
    "PERPETUAL",
    "PUT",
    "Instruments",
    "MarketState",
    "PortfolioMargin",
    "RiskTables",
    "ScenarioGrid",
    "ScenarioParams",
    "VolSurface",
    "as_positions",
    "build_grid",
    "build_risk_tables",
    "instrument_vols",
    "portfolio_margin",
    "portfolio_margin_loop",
    "revalue",
    "scenario_params_canonical",
    "scenario_params_hash",
    "smile_vol",
    "vol_shock_factors",
]

PERPETUAL, FUTURE, CALL, PUT = 0, 1, 2, 3
#: Floor of the smile, annualised (a 1% vol): keeps far wings from going to zero or negative.
MIN_VOL = 0.01
DAY = 86400.0
# Accounts per block of the positions @ table product: bounds the (block x scenarios) P&L buffer.
_BLOCK = 32768


def _vector(x: ArrayLike, name: str, dtype: DTypeLike) -> np.ndarray:
    a = np.array(x, dtype=dtype, copy=True)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------- market data


def smile_vol(atm_vol: ArrayLike, skew: ArrayLike, strike: ArrayLike, forward: ArrayLike) -> np.ndarray:
    """Volatility at a strike: ``max(atm_vol + skew * ln(K / F), MIN_VOL)``, annualised, float64.

    The one place the smile is defined (a linear-in-log-moneyness skew; negative skew = puts
    richer, as crypto surfaces usually are). Arguments broadcast; K and F in USD, > 0."""
    k = np.asarray(strike, dtype=np.float64)
    f = np.asarray(forward, dtype=np.float64)
    return np.maximum(
        np.asarray(atm_vol, dtype=np.float64) + np.asarray(skew, dtype=np.float64) * np.log(k / f), MIN_VOL
    )


@dataclass(frozen=True, eq=False)
class Instruments:
    """The instruments table, arrays of length I (see the module docstring). Raises ValueError,
    one line, for unequal lengths, an unknown kind, a strike on a delta-one instrument or a
    missing strike on an option, an expiry on a perpetual or none on a dated instrument."""

    underlying: np.ndarray
    kind: np.ndarray
    strike: np.ndarray
    expiry: np.ndarray

    def __post_init__(self) -> None:
        u = _vector(self.underlying, "underlying", np.int64)
        k = _vector(self.kind, "kind", np.int64)
        s = _vector(self.strike, "strike", np.float64)
        e = _vector(self.expiry, "expiry", np.int64)
        if not len(u) == len(k) == len(s) == len(e):
            raise ValueError(f"instruments: unequal lengths {len(u)}, {len(k)}, {len(s)}, {len(e)}")
        for name, bad in (
            ("underlying must be >= 0", u < 0),
            ("kind must be 0 perpetual, 1 future, 2 call or 3 put", (k < 0) | (k > 3)),
            ("an option needs a finite strike > 0", (k >= CALL) & ~(np.isfinite(s) & (s > 0))),
            ("a perpetual or future has strike 0", (k < CALL) & (s != 0)),
            ("a perpetual has expiry 0", (k == PERPETUAL) & (e != 0)),
            ("a future or option needs an expiry > 0", (k != PERPETUAL) & (e <= 0)),
        ):
            if bad.any():
                raise ValueError(f"instrument {int(np.argmax(bad))}: {name}")
        for name, a in (("underlying", u), ("kind", k), ("strike", s), ("expiry", e)):
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return int(self.kind.size)

    @property
    def is_option(self) -> np.ndarray:
        return self.kind >= CALL


@dataclass(frozen=True, eq=False)
class VolSurface:
    """ATM volatility and skew per (underlying, expiry) point, arrays of length E.

    ``atm_vol`` annualised decimal (0.6 = 60%), ``skew`` per unit of ln(K / F) (:func:`smile_vol`).
    Raises ValueError for unequal lengths, a duplicate point or a vol that is not finite and > 0."""

    underlying: np.ndarray
    expiry: np.ndarray
    atm_vol: np.ndarray
    skew: np.ndarray

    def __post_init__(self) -> None:
        u = _vector(self.underlying, "vol underlying", np.int64)
        e = _vector(self.expiry, "vol expiry", np.int64)
        a = _vector(self.atm_vol, "atm_vol", np.float64)
        s = _vector(self.skew, "skew", np.float64)
        if not len(u) == len(e) == len(a) == len(s):
            raise ValueError(f"vol surface: unequal lengths {len(u)}, {len(e)}, {len(a)}, {len(s)}")
        if not (np.all(np.isfinite(a)) and np.all(a > 0) and np.all(np.isfinite(s))):
            raise ValueError("vol surface: atm_vol must be finite and > 0 and skew finite")
        if len(set(zip(u.tolist(), e.tolist()))) != len(u):
            raise ValueError("vol surface: duplicate (underlying, expiry) point")
        for name, v in (("underlying", u), ("expiry", e), ("atm_vol", a), ("skew", s)):
            object.__setattr__(self, name, v)

    def lookup(self, underlying: np.ndarray, expiry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(atm_vol, skew) for each (underlying, expiry) pair; ValueError names a missing one."""
        index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(self.underlying, self.expiry))}
        found = []
        for a, b in zip(np.asarray(underlying).tolist(), np.asarray(expiry).tolist()):
            if (a, b) not in index:
                raise ValueError(f"vol surface: no point for underlying {a} expiry {b}")
            found.append(index[(a, b)])
        rows = np.array(found, dtype=np.int64)
        return self.atm_vol[rows], self.skew[rows]


@dataclass(frozen=True, eq=False)
class MarketState:
    """Index prices ``spot`` (U,) USD > 0, the vol surface, ``now`` unix seconds and the
    underlyings' ``symbols`` (labels only; default U0, U1, ...)."""

    spot: np.ndarray
    vol: VolSurface
    now: int
    symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        spot = _vector(self.spot, "spot", np.float64)
        if spot.size == 0 or not (np.all(np.isfinite(spot)) and np.all(spot > 0)):
            raise ValueError("spot: need at least one underlying, each price finite and > 0")
        symbols = tuple(self.symbols) or tuple(f"U{u}" for u in range(spot.size))
        if len(symbols) != spot.size:
            raise ValueError(f"symbols: {len(symbols)} names for {spot.size} underlyings")
        object.__setattr__(self, "spot", spot)
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "now", int(self.now))

    @property
    def n_underlyings(self) -> int:
        return int(self.spot.size)


def _check(instruments: Instruments, market: MarketState) -> None:
    if len(instruments) and int(instruments.underlying.max()) >= market.n_underlyings:
        raise ValueError(
            f"instrument underlying {int(instruments.underlying.max())} has no spot "
            f"(market has {market.n_underlyings} underlyings)"
        )


def instrument_vols(instruments: Instruments, market: MarketState) -> np.ndarray:
    """Each option's current vol from the smile at its strike (I,), annualised; 0 for delta-one."""
    _check(instruments, market)
    vols = np.zeros(len(instruments))
    opt = instruments.is_option
    if opt.any():
        u = instruments.underlying[opt]
        atm, skew = market.vol.lookup(u, instruments.expiry[opt])
        vols[opt] = smile_vol(atm, skew, instruments.strike[opt], market.spot[u])
    return vols


def _years(instruments: Instruments, now: float) -> np.ndarray:
    return np.maximum(instruments.expiry - now, 0) / YEAR_SECONDS


# ---------------------------------------------------------------- parameters


def _param(default: float, lo: float, hi: float, source: str) -> Any:  # a dataclass field
    return field(default=default, metadata={"bounds": (lo, hi), "source": source})


@dataclass(frozen=True)
class ScenarioParams:
    """Portfolio margin parameters. Set by governance in ``config/portfolio_margin.yaml``; each
    field's ``metadata`` holds its bounds and source (``ScenarioParams.describe()``).

    Raises ConfigError (one line) for a value outside its bounds or of the wrong type."""

    spot_range: float = _param(
        0.15,
        0.15,
        0.9,
        "Derive PMRM v1 default grid +-15% (scripts/config-mainnet.sol getDefaultScenarios); CME SPAN price scan range",
    )
    spot_steps: int = _param(7, 7, 41, "Derive PMRM v1: 7 spot points (0.85..1.15); odd so that 0 is a point")
    vol_range_up: float = _param(0.6, 0.0, 2.0, "Derive PMRM v1 getPMRMParams volRangeUp 0.6 (setter <= 2)")
    vol_range_down: float = _param(0.3, 0.0, 1.0, "Derive PMRM v1 getPMRMParams volRangeDown 0.3")
    short_term_power: float = _param(0.3, 0.0, 1.0, "Derive PMRM shortTermPower 0.3; Deribit PM (30/DTE)^0.30")
    long_term_power: float = _param(
        0.13, 0.0, 1.0, "Derive PMRM longTermPower 0.13; Deribit PME long_term_vega_power 0.13"
    )
    vol_reference_days: float = _param(
        30.0, 1.0, 365.0, "the 30 d of (30 d / T)^p (Derive PMRMLib._addVolShocks, Deribit PM)"
    )
    dte_floor_days: float = _param(1.0, 0.01, 100.0, "Derive PMRM dteFloor 1 day (setter bounds 864 s .. 100 d)")
    extreme_multiple: float = _param(2.0, 1.0, 5.0, "CME SPAN scenarios 15-16: 2x the price scan range")
    extreme_cover: float = _param(0.35, 0.0, 1.0, "CME SPAN scenarios 15-16: 35% of the extreme-move loss")
    correlation: float = _param(
        0.5,
        0.0,
        1.0,
        "cross-underlying co-move (SPAN inter-commodity credit); set from the ETH/BTC backtest (keeper.risk.backtest)",
    )
    delta_one_contingency: float = _param(0.03, 0.0, 0.5, "Derive PMRM static contingency perpPercent 3%")
    naked_option_contingency: float = _param(0.02, 0.0, 0.5, "Derive PMRM optionPercent 2% of naked short options")
    basis_contingency: float = _param(
        0.01, 0.0, 0.5, "Deribit PM 1% of underlying for offsetting futures; CME SPAN intra-commodity spread charge"
    )
    im_factor: float = _param(1.25, 1.0, 4.0, "Derive PMRM v1 imFactor 1.25 (setter bounds 1..4)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lo, hi = f.metadata["bounds"]
            if f.type in (int, "int"):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, np.integer))
                    or not lo <= value <= hi
                    or value % 2 == 0
                ):
                    raise ConfigError(
                        f"portfolio_margin: {f.name}: must be an odd integer in [{lo}, {hi}], got {value!r}"
                    )
                object.__setattr__(self, f.name, int(value))
            else:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float, np.integer, np.floating))
                    or not math.isfinite(value)
                    or not lo <= value <= hi
                ):
                    raise ConfigError(f"portfolio_margin: {f.name}: must be a number in [{lo}, {hi}], got {value!r}")
                object.__setattr__(self, f.name, float(value))

    @classmethod
    def describe(cls) -> list[tuple[str, object, tuple[float, float], str]]:
        """(name, default, (lo, hi), source) of every parameter."""
        return [(f.name, f.default, f.metadata["bounds"], f.metadata["source"]) for f in dataclasses.fields(cls)]


def scenario_params_canonical(params: ScenarioParams) -> bytes:
    """The canonical encoding of ``params`` that :func:`scenario_params_hash` hashes: UTF-8 JSON
    of every field name -> its exact decimal string, keys sorted, no spaces, e.g.
    ``{"basis_contingency":"0.01",...,"spot_steps":"7",...}``.

    Integers are written in base 10; floats by ``repr``, the shortest decimal string that reads
    back to the same IEEE-754 double (Python >= 3.1, identical on every platform), so ``30`` and
    ``30.0`` in the YAML encode alike (both are the float 30.0) and no float formatting ever
    depends on the machine."""
    values = {
        f.name: str(v) if isinstance(v := getattr(params, f.name), int) else repr(float(v))
        for f in dataclasses.fields(params)
    }
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode("utf-8")


def scenario_params_hash(params: ScenarioParams) -> bytes:
    """keccak256 of :func:`scenario_params_canonical` (32 bytes): the commitment that
    ``HealthAttestor.scenario_params_hash`` holds and every attestation names, so that signers
    can only attest with the parameters governance set."""
    return keccak(scenario_params_canonical(params))


# ---------------------------------------------------------------- the grid


@dataclass(frozen=True, eq=False)
class ScenarioGrid:
    """S joint scenarios over U underlyings: ``spot_move`` (S, U) fractional moves, ``vol_dir``
    (S, U) int8 (+1 up, 0 unchanged, -1 down), ``weight`` (S,) the fraction of P&L counted
    (1, or extreme_cover for extreme moves) and ``labels`` (S,) for reports."""

    spot_move: np.ndarray
    vol_dir: np.ndarray
    weight: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.weight.size)


def build_grid(params: ScenarioParams, symbols: tuple[str, ...]) -> ScenarioGrid:
    """The scenario grid for underlyings ``symbols`` (module docstring). With the defaults:
    23 points per underlying (21 + 2 extreme); 23 scenarios for one underlying, 69 for two."""
    n_u = len(symbols)
    if n_u == 0:
        raise ValueError("build_grid: need at least one underlying")
    r = params.spot_range
    points = [(float(m), v, 1.0) for m in np.linspace(-r, r, params.spot_steps) for v in (1, 0, -1)]
    points += [(sign * params.extreme_multiple * r, 0, params.extreme_cover) for sign in (1.0, -1.0)]
    rho = params.correlation
    rows: dict[tuple[tuple[float, ...], tuple[int, ...]], float] = {}
    for move, vdir, point_weight in points:
        rows.setdefault((tuple([move] * n_u), tuple([vdir] * n_u)), point_weight)
        if n_u > 1:
            for d in range(n_u):
                moves = tuple(move if u == d else rho * move for u in range(n_u))
                dirs = tuple(vdir if u == d else 0 for u in range(n_u))
                rows.setdefault((moves, dirs), point_weight)
    spot_move = np.array([k[0] for k in rows], dtype=np.float64).reshape(-1, n_u)
    vol_dir = np.array([k[1] for k in rows], dtype=np.int8).reshape(-1, n_u)
    weight = np.array(list(rows.values()), dtype=np.float64)
    names = {1: "up", 0: "flat", -1: "down"}
    labels = tuple(
        ", ".join(f"{symbols[u]} {m[u]:+.1%} vol {names[int(d[u])]}" for u in range(n_u))
        + ("" if w == 1.0 else f" (x{w:g})")
        for m, d, w in zip(spot_move, vol_dir, weight)
    )
    for a in (spot_move, vol_dir, weight):
        a.setflags(write=False)
    return ScenarioGrid(spot_move, vol_dir, weight, labels)


def vol_shock_factors(params: ScenarioParams, t_years: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(up, down) multipliers of an option's vol for time to expiry ``t_years`` (Derive
    ``PMRMLib._addVolShocks``): mult = (ref / max(T, floor)) ** (short power if T <= ref else long
    power), all in days; up = 1 + vol_range_up * mult, down = max(0, 1 - vol_range_down * mult)."""
    days = np.asarray(t_years, dtype=np.float64) * (YEAR_SECONDS / DAY)
    ref = params.vol_reference_days
    power = np.where(days <= ref, params.short_term_power, params.long_term_power)
    mult = (ref / np.maximum(days, params.dte_floor_days)) ** power
    return 1.0 + params.vol_range_up * mult, np.maximum(0.0, 1.0 - params.vol_range_down * mult)


def revalue(
    instruments: Instruments,
    market: MarketState,
    spot_move: np.ndarray,
    vol_mult: np.ndarray | None = None,
    elapsed: float = 0.0,
) -> np.ndarray:
    """P&L per unit of each instrument under each of S market moves, (I, S) float64 USD.

    ``spot_move`` (S, U): fractional spot moves; ``vol_mult`` (S, I): each option's vol is
    multiplied by it (None = unchanged); ``elapsed`` seconds of time decay. Delta-one: spot x move.
    Options: full Black-76 revaluation (r = 0, F = spot) minus today's value."""
    _check(instruments, market)
    spot_move = np.asarray(spot_move, dtype=np.float64)
    if spot_move.ndim != 2 or spot_move.shape[1] != market.n_underlyings:
        raise ValueError(f"spot_move: expected shape (S, {market.n_underlyings}), got {spot_move.shape}")
    if not (np.all(np.isfinite(spot_move)) and np.all(spot_move > -1.0)):
        raise ValueError("spot_move: moves must be finite and > -100%")
    u = instruments.underlying
    s0 = market.spot[u]  # (I,)
    pnl: np.ndarray = (s0[:, None] * spot_move[:, u].T).copy()  # delta-one rows are final
    opt = np.flatnonzero(instruments.is_option)
    if opt.size:
        sigma0 = instrument_vols(instruments, market)[opt]
        t0 = _years(instruments, market.now)[opt]
        t1 = _years(instruments, market.now + elapsed)[opt]
        k = instruments.strike[opt]
        call = instruments.kind[opt] == CALL
        mult = 1.0 if vol_mult is None else np.asarray(vol_mult, dtype=np.float64)[:, opt].T
        v0 = bs_value(s0[opt], k, t0, sigma0, call)
        v1 = bs_value(
            (s0[opt, None] * (1.0 + spot_move[:, u[opt]].T)),
            k[:, None],
            t1[:, None],
            sigma0[:, None] * mult,
            call[:, None],
        )
        pnl[opt] = v1 - v0[:, None]
    return pnl


# ---------------------------------------------------------------- tables and margin


@dataclass(frozen=True, eq=False)
class RiskTables:
    """Everything margin needs, computed once per market state (I instruments, S scenarios).

    pnl (I, S) weighted scenario P&L per unit; value, delta, gamma, vega (per 1.00 vol), theta
    (per year) (I,) per unit (delta-one: value 0, delta 1); underlying_onehot (I, U);
    delta_one (I, U) 1 where a perpetual/future of u; expiry_bucket_delta (I, B) delta in the
    instrument's (underlying, expiry) bucket, bucket_underlying (B,); option_bucket (I, K) 1 for an
    option in its (underlying, expiry, call/put) bucket, option_bucket_underlying (K,)."""

    instruments: Instruments
    market: MarketState
    params: ScenarioParams
    grid: ScenarioGrid
    pnl: np.ndarray
    value: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    underlying_onehot: np.ndarray
    delta_one: np.ndarray
    expiry_bucket_delta: np.ndarray
    bucket_underlying: np.ndarray
    option_bucket: np.ndarray
    option_bucket_underlying: np.ndarray


def _buckets(keys: list[tuple[int, ...]]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    order: dict[tuple[int, ...], int] = {}
    idx = np.array([order.setdefault(k, len(order)) for k in keys], dtype=np.int64)
    return idx, list(order)


def build_risk_tables(instruments: Instruments, market: MarketState, params: ScenarioParams) -> RiskTables:
    """Value every instrument under every scenario of the grid once, with Greeks and the
    contingency bucket matrices. Cost O(I x S), independent of the number of accounts."""
    _check(instruments, market)
    n_i, n_u = len(instruments), market.n_underlyings
    grid = build_grid(params, market.symbols)
    u = instruments.underlying
    opt = instruments.is_option
    t = _years(instruments, market.now)
    up, down = vol_shock_factors(params, t)  # (I,)
    dirs = grid.vol_dir[:, u]  # (S, I)
    vol_mult = np.where(dirs > 0, up, np.where(dirs < 0, down, 1.0))
    pnl = revalue(instruments, market, grid.spot_move, vol_mult) * grid.weight[None, :]

    value, delta = np.zeros(n_i), np.ones(n_i)
    gamma, vega, theta = np.zeros(n_i), np.zeros(n_i), np.zeros(n_i)
    if opt.any():
        g = bs_greeks(
            market.spot[u[opt]],
            instruments.strike[opt],
            t[opt],
            instrument_vols(instruments, market)[opt],
            instruments.kind[opt] == CALL,
        )
        value[opt], delta[opt], gamma[opt], vega[opt], theta[opt] = g.value, g.delta, g.gamma, g.vega, g.theta

    onehot = np.zeros((n_i, n_u))
    onehot[np.arange(n_i), u] = 1.0
    delta_one = onehot * (~opt)[:, None]
    b_idx, b_keys = _buckets(list(zip(u.tolist(), instruments.expiry.tolist())))
    bucket_delta = np.zeros((n_i, len(b_keys)))
    bucket_delta[np.arange(n_i), b_idx] = delta
    o_pos = np.flatnonzero(opt)
    k_idx, k_keys = _buckets([(int(u[i]), int(instruments.expiry[i]), int(instruments.kind[i])) for i in o_pos])
    option_bucket = np.zeros((n_i, len(k_keys)))
    option_bucket[o_pos, k_idx] = 1.0
    arrays = dict(
        pnl=pnl,
        value=value,
        delta=delta,
        gamma=gamma,
        vega=vega,
        theta=theta,
        underlying_onehot=onehot,
        delta_one=delta_one,
        expiry_bucket_delta=bucket_delta,
        bucket_underlying=np.array([k[0] for k in b_keys], dtype=np.int64),
        option_bucket=option_bucket,
        option_bucket_underlying=np.array([k[0] for k in k_keys], dtype=np.int64),
    )
    for a in arrays.values():
        a.setflags(write=False)
    return RiskTables(instruments=instruments, market=market, params=params, grid=grid, **arrays)


@dataclass(frozen=True, eq=False)
class PortfolioMargin:
    """Portfolio margin of A accounts, arrays (A,) USD: ``grid_loss`` (>= 0), ``worst_scenario``
    (index into the grid; its label is ``labels[i]``), ``worst_pnl`` (weighted P&L there), the three
    contingencies, ``mm`` and ``im`` rounded up to the cent."""

    grid_loss: np.ndarray
    worst_scenario: np.ndarray
    worst_pnl: np.ndarray
    delta_one_contingency: np.ndarray
    basis_contingency: np.ndarray
    naked_option_contingency: np.ndarray
    mm: np.ndarray
    im: np.ndarray
    labels: tuple[str, ...]


def _ceil_cents(x: np.ndarray) -> np.ndarray:
    return np.ceil(x * 100.0) / 100.0


def as_positions(positions: ArrayLike, n_i: int) -> np.ndarray:
    """Positions as a float64 (A, I) matrix ((I,) becomes one row); ValueError on a wrong shape
    or a non-finite size."""
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != n_i:
        raise ValueError(f"positions: expected shape (A, {n_i}), got {np.shape(positions)}")
    if not np.all(np.isfinite(p)):
        raise ValueError("positions: sizes must be finite")
    return p


def portfolio_margin(tables: RiskTables, positions: ArrayLike) -> PortfolioMargin:
    """Portfolio MM and IM of every account: ``positions`` (A, I) float (or (I,) for one account),
    signed units. Grid P&L is ``positions @ tables.pnl`` in blocks of accounts."""
    p = as_positions(positions, len(tables.instruments))
    n_a = p.shape[0]
    worst_pnl, worst = np.empty(n_a), np.empty(n_a, dtype=np.int64)
    for lo in range(0, n_a, _BLOCK):
        block = p[lo : lo + _BLOCK] @ tables.pnl  # (block, S)
        worst[lo : lo + _BLOCK] = np.argmin(block, axis=1)
        worst_pnl[lo : lo + _BLOCK] = block[np.arange(block.shape[0]), worst[lo : lo + _BLOCK]]
    grid_loss = np.maximum(0.0, -worst_pnl) + 0.0  # + 0.0: no -0.0
    spot = tables.market.spot
    p_d1 = np.abs(p @ tables.delta_one) @ spot * tables.params.delta_one_contingency
    n_b = p @ tables.expiry_bucket_delta  # (A, B)
    onehot_b = np.zeros((len(tables.bucket_underlying), spot.size))
    onehot_b[np.arange(len(tables.bucket_underlying)), tables.bucket_underlying] = 1.0
    offset = (np.abs(n_b) @ onehot_b - np.abs(n_b @ onehot_b)) / 2.0  # (A, U)
    p_basis = np.maximum(offset, 0.0) @ spot * tables.params.basis_contingency
    naked = np.maximum(0.0, -(p @ tables.option_bucket))  # (A, K)
    p_naked = naked @ spot[tables.option_bucket_underlying] * tables.params.naked_option_contingency
    total = grid_loss + p_d1 + p_basis + p_naked
    return PortfolioMargin(
        grid_loss=grid_loss,
        worst_scenario=worst,
        worst_pnl=worst_pnl,
        delta_one_contingency=p_d1,
        basis_contingency=p_basis,
        naked_option_contingency=p_naked,
        mm=_ceil_cents(total),
        im=_ceil_cents(total * tables.params.im_factor),
        labels=tables.grid.labels,
    )


# ---------------------------------------------------------------- the naive loop


def _scalar_black76(f: float, k: float, t: float, sigma: float, call: bool) -> float:
    """Black-76, r = 0, one option, from math.erf: the loop's own pricer (independent of numpy)."""
    sd = sigma * math.sqrt(t) if t > 0 else 0.0
    if sd <= 0.0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd

    def n(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    return f * n(d1) - k * n(d2) if call else k * n(-d2) - f * n(-d1)


def portfolio_margin_loop(
    instruments: Instruments, market: MarketState, params: ScenarioParams, positions: ArrayLike
) -> PortfolioMargin:
    """The same portfolio margin as :func:`portfolio_margin`, one account, one position and one
    scenario at a time with scalar maths (math.erf Black-76). The baseline the table beats, and a
    second implementation for tests; only :func:`build_grid` is shared."""
    _check(instruments, market)
    p = as_positions(positions, len(instruments))
    grid = build_grid(params, market.symbols)
    n_s = len(grid)
    year_days = YEAR_SECONDS / DAY
    results: dict[str, list[float]] = {k: [] for k in ("grid_loss", "worst", "worst_pnl", "d1", "basis", "naked")}
    for row in p:
        scen = [0.0] * n_s
        net_d1: dict[int, float] = {}
        buckets: dict[tuple[int, int], float] = {}
        opt_net: dict[tuple[int, int, int], float] = {}
        for i in np.flatnonzero(row):
            size = float(row[i])
            ui, kind = int(instruments.underlying[i]), int(instruments.kind[i])
            s0 = float(market.spot[ui])
            expiry = int(instruments.expiry[i])
            if kind < CALL:
                for s in range(n_s):
                    scen[s] += size * s0 * float(grid.spot_move[s, ui]) * float(grid.weight[s])
                net_d1[ui] = net_d1.get(ui, 0.0) + size
                buckets[(ui, expiry)] = buckets.get((ui, expiry), 0.0) + size
                continue
            k = float(instruments.strike[i])
            call = kind == CALL
            row_v = np.flatnonzero((market.vol.underlying == ui) & (market.vol.expiry == expiry))
            if row_v.size != 1:
                raise ValueError(f"vol surface: no point for underlying {ui} expiry {expiry}")
            atm, skew = float(market.vol.atm_vol[row_v[0]]), float(market.vol.skew[row_v[0]])
            sigma = max(atm + skew * math.log(k / s0), MIN_VOL)
            t = max(expiry - market.now, 0) / YEAR_SECONDS
            days = t * year_days
            power = params.short_term_power if days <= params.vol_reference_days else params.long_term_power
            mult = (params.vol_reference_days / max(days, params.dte_floor_days)) ** power
            factor = {1: 1.0 + params.vol_range_up * mult, 0: 1.0, -1: max(0.0, 1.0 - params.vol_range_down * mult)}
            v0 = _scalar_black76(s0, k, t, sigma, call)
            for s in range(n_s):
                f1 = s0 * (1.0 + float(grid.spot_move[s, ui]))
                v1 = _scalar_black76(f1, k, t, sigma * factor[int(grid.vol_dir[s, ui])], call)
                scen[s] += size * (v1 - v0) * float(grid.weight[s])
            sd = sigma * math.sqrt(t)
            if sd > 0:
                d1 = (math.log(s0 / k) + 0.5 * sd * sd) / sd
                delta = 0.5 * (1.0 + math.erf(d1 / math.sqrt(2.0))) - (0.0 if call else 1.0)
            else:
                step = 1.0 if s0 > k else (0.0 if s0 < k else 0.5)
                delta = step if call else step - 1.0
            buckets[(ui, expiry)] = buckets.get((ui, expiry), 0.0) + size * delta
            opt_net[(ui, expiry, kind)] = opt_net.get((ui, expiry, kind), 0.0) + size
        worst = min(range(n_s), key=lambda s: scen[s])
        results["worst"].append(worst)
        results["worst_pnl"].append(scen[worst])
        results["grid_loss"].append(max(0.0, -scen[worst]))
        results["d1"].append(sum(abs(n) * market.spot[ui] for ui, n in net_d1.items()) * params.delta_one_contingency)
        basis = 0.0
        for ui in range(market.n_underlyings):
            ns = [n for (bu, _), n in buckets.items() if bu == ui]
            basis += max(0.0, (sum(abs(n) for n in ns) - abs(sum(ns))) / 2.0) * market.spot[ui]
        results["basis"].append(basis * params.basis_contingency)
        results["naked"].append(
            sum(max(0.0, -n) * market.spot[ui] for (ui, _, _), n in opt_net.items()) * params.naked_option_contingency
        )
    arr = {k: np.array(v, dtype=np.int64 if k == "worst" else np.float64) for k, v in results.items()}
    total = arr["grid_loss"] + arr["d1"] + arr["basis"] + arr["naked"]
    return PortfolioMargin(
        grid_loss=arr["grid_loss"],
        worst_scenario=arr["worst"],
        worst_pnl=arr["worst_pnl"],
        delta_one_contingency=arr["d1"],
        basis_contingency=arr["basis"],
        naked_option_contingency=arr["naked"],
        mm=_ceil_cents(total),
        im=_ceil_cents(total * params.im_factor),
        labels=grid.labels,
    )
