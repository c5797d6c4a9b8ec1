"""Value at Risk and Expected Shortfall of every account, historical and parametric (pure, no I/O).

Losses are positive USD numbers (loss = -P&L) over a horizon of ``horizon_days``.

Historical (full revaluation): each historical day d gives a joint move of every underlying,
``r_d`` (simple return) and a volatility ratio ``v_d`` (DVOL_d / DVOL_{d-1} where both exist, else
1). Every instrument is revalued once under every day (:func:`~keeper.risk.scenarios.revalue`,
an I x N table; each option's smile vol is multiplied by v_d) and the accounts' P&L is
``positions @ table``. Moves are instantaneous (no time decay), like the margin grid. For a
horizon of h days the daily log moves are scaled by sqrt(h) (square-root-of-time rule).

- VaR_a = the smallest loss l with empirical F(l) >= a: the ceil(n a)-th smallest of the n
  losses (McNeil, Frey & Embrechts, *Quantitative Risk Management*, Def. 2.10).
- ES_a  = (sum of the floor(k) largest losses + (k - floor(k)) x the next one) / k with
  k = n (1 - a) (Acerbi & Tasche 2002, "On the coherence of expected shortfall", Prop. 4.1),
  the mean loss in the worst 1 - a of days.

Parametric, on daily simple returns r ~ N(0, Sigma) with Sigma the sample covariance of the same
history (per underlying; vega is not a parametric factor):

- delta-normal: P&L = d' r with d = delta_u x S_u (USD); VaR = z_a sigma, ES = sigma n(z_a') / (1 - a')
  (Jorion, *Value at Risk*, 3rd ed., §7.2; normal ES: McNeil-Frey-Embrechts Example 2.14).
- delta-gamma-normal: P&L = d' r + r' G r / 2 with G = diag(gamma_u S_u**2); mean
  mu = tr(G Sigma) / 2, variance d' Sigma d + tr((G Sigma)^2) / 2 (Britten-Jones & Schaefer 1999),
  then VaR = -mu + z sigma, ES = -mu + sigma n(z) / (1 - a) (normal approximation).

Defaults: VaR at 99%, ES at 97.5% (Basel FRTB's ES level), 1 day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from keeper.risk.black_scholes import norm_pdf
from keeper.risk.scenarios import Instruments, MarketState, RiskTables, as_positions, revalue

__all__ = [
    "HistoricalMoves",
    "VarResult",
    "empirical_es",
    "empirical_var",
    "historical_var",
    "parametric_var",
]

_BLOCK = 4096  # accounts per block: bounds the (block x days) P&L buffer


@dataclass(frozen=True, eq=False)
class HistoricalMoves:
    """N historical joint daily moves of U underlyings: ``timestamps`` (N,) unix seconds of the
    day the move ends, ``returns`` (N, U) simple returns (> -1), ``vol_ratio`` (N, U) > 0
    (1 where no vol history). Raises ValueError on shape or value problems."""

    timestamps: np.ndarray
    returns: np.ndarray
    vol_ratio: np.ndarray

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.int64)
        r = np.asarray(self.returns, dtype=np.float64)
        v = np.asarray(self.vol_ratio, dtype=np.float64)
        if r.ndim != 2 or ts.shape != (r.shape[0],) or v.shape != r.shape:
            raise ValueError(
                f"historical moves: shapes {ts.shape}, {r.shape}, {v.shape} do not match (N,), (N, U), (N, U)"
            )
        if r.shape[0] < 2:
            raise ValueError(f"historical moves: need at least 2 days, got {r.shape[0]}")
        if not (np.all(np.isfinite(r)) and np.all(r > -1.0) and np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError("historical moves: returns must be finite and > -1, vol ratios finite and > 0")
        for name, a in (("timestamps", ts), ("returns", r), ("vol_ratio", v)):
            a = a.copy()
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @classmethod
    def from_daily(
        cls, timestamps: ArrayLike, prices: ArrayLike, vol: ArrayLike | None = None, horizon_days: int = 1
    ) -> "HistoricalMoves":
        """Moves over ``horizon_days`` from daily closes (overlapping windows).

        Args: timestamps (T,) unix seconds at day boundaries, strictly increasing; prices (T, U)
        USD > 0; vol (T, U) implied vol levels (e.g. DVOL) with NaN where missing, or None.
        Only pairs exactly ``horizon_days`` calendar days apart are used (gaps are skipped)."""
        ts = np.asarray(timestamps, dtype=np.int64)
        px = np.asarray(prices, dtype=np.float64)
        if isinstance(horizon_days, bool) or not isinstance(horizon_days, int) or horizon_days < 1:
            raise ValueError(f"horizon_days must be an integer >= 1, got {horizon_days!r}")
        if px.ndim != 2 or ts.shape != (px.shape[0],):
            raise ValueError(f"daily history: timestamps {ts.shape} and prices {px.shape} do not match")
        h = horizon_days * 86400
        end = np.searchsorted(ts, ts + h)
        ok = end < ts.size
        ok[ok] = ts[end[ok]] == ts[ok] + h
        start, end = np.flatnonzero(ok), end[ok]
        returns = px[end] / px[start] - 1.0
        ratio = np.ones_like(returns)
        if vol is not None:
            v = np.asarray(vol, dtype=np.float64)
            if v.shape != px.shape:
                raise ValueError(f"daily history: vol shape {v.shape} is not the prices' {px.shape}")
            with np.errstate(invalid="ignore", divide="ignore"):
                raw = v[end] / v[start]
            ratio = np.where(np.isfinite(raw) & (raw > 0), raw, 1.0)
        return cls(ts[end], returns, ratio)


@dataclass(frozen=True, eq=False)
class VarResult:
    """VaR and ES of A accounts, (A,) USD losses (positive = loss), with the settings used.
    ``equity`` (A,) is the caller's equity (None if not given); ``var_to_equity`` = var / equity
    (inf where equity <= 0)."""

    var: np.ndarray
    es: np.ndarray
    confidence: float
    es_confidence: float
    horizon_days: float
    method: str
    n_days: int
    equity: np.ndarray | None = None

    @property
    def var_to_equity(self) -> np.ndarray | None:
        if self.equity is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.equity > 0, self.var / self.equity, np.inf)


def _level(x: float, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.5 <= x < 1.0:
        raise ValueError(f"{name} must be a number in [0.5, 1), got {x!r}")
    return float(x)


def _horizon(h: object) -> float:
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
        raise ValueError(f"horizon_days must be a number > 0, got {h!r}")
    return float(h)


def _equity(equity: ArrayLike | None, n_a: int) -> np.ndarray | None:
    if equity is None:
        return None
    e = np.asarray(equity, dtype=np.float64).reshape(-1)
    if e.shape != (n_a,) or not np.all(np.isfinite(e)):
        raise ValueError(f"equity: expected {n_a} finite values, got shape {np.shape(equity)}")
    return e


def empirical_var(losses: ArrayLike, confidence: float = 0.99) -> np.ndarray:
    """Empirical VaR of each row of ``losses`` (..., n): the ceil(n a)-th smallest loss."""
    a = _level(confidence, "confidence")
    x = np.asarray(losses, dtype=np.float64)
    n = x.shape[-1]
    k = min(max(math.ceil(n * a - 1e-9), 1), n) - 1  # 1e-9: n a = 990.0000000001 is 990
    out: np.ndarray = np.partition(x, k, axis=-1)[..., k]
    return out


def empirical_es(losses: ArrayLike, confidence: float = 0.975) -> np.ndarray:
    """Empirical ES of each row of ``losses`` (..., n): mean of the worst n (1 - a) losses, the
    boundary loss weighted by the fractional part (Acerbi & Tasche 2002)."""
    a = _level(confidence, "es_confidence")
    x = np.asarray(losses, dtype=np.float64)
    n = x.shape[-1]
    k = n * (1.0 - a)
    whole = min(int(math.floor(k + 1e-9)), n)
    frac = k - whole if whole < n else 0.0
    top = -np.sort(-x, axis=-1)[..., : whole + (1 if frac > 1e-12 else 0)]
    total = top[..., :whole].sum(axis=-1)
    if frac > 1e-12:
        total = total + frac * top[..., whole]
    out: np.ndarray = total / k
    return out


def historical_var(
    instruments: Instruments,
    market: MarketState,
    positions: ArrayLike,
    moves: HistoricalMoves,
    confidence: float = 0.99,
    es_confidence: float = 0.975,
    horizon_days: float = 1.0,
    equity: ArrayLike | None = None,
) -> VarResult:
    """Historical VaR / ES by full revaluation of every instrument under every historical move.

    ``positions`` (A, I) signed units; ``moves`` with U columns matching ``market.spot``;
    ``equity`` (A,) USD for the report. Raises ValueError on shapes or levels."""
    p = as_positions(positions, len(instruments))
    if moves.returns.shape[1] != market.n_underlyings:
        raise ValueError(
            f"historical moves have {moves.returns.shape[1]} underlyings, the market {market.n_underlyings}"
        )
    h = _horizon(horizon_days)
    scale = math.sqrt(h)
    spot_move = np.expm1(scale * np.log1p(moves.returns))
    vol_ratio = np.exp(scale * np.log(moves.vol_ratio))
    table = revalue(instruments, market, spot_move, vol_ratio[:, instruments.underlying])  # (I, N)
    var, es = np.empty(p.shape[0]), np.empty(p.shape[0])
    for lo in range(0, p.shape[0], _BLOCK):
        losses = -(p[lo : lo + _BLOCK] @ table)
        var[lo : lo + _BLOCK] = empirical_var(losses, confidence)
        es[lo : lo + _BLOCK] = empirical_es(losses, es_confidence)
    return VarResult(
        var, es, confidence, es_confidence, h, "historical", int(table.shape[1]), _equity(equity, p.shape[0])
    )


def parametric_var(
    tables: RiskTables,
    positions: ArrayLike,
    moves: HistoricalMoves,
    confidence: float = 0.99,
    es_confidence: float = 0.975,
    horizon_days: float = 1.0,
    gamma: bool = True,
    equity: ArrayLike | None = None,
) -> VarResult:
    """Delta-gamma-normal (``gamma=True``) or delta-normal VaR / ES (module docstring).

    Sigma is the sample covariance (ddof 1) of ``moves.returns``, times ``horizon_days``.
    Greeks come from ``tables`` (:func:`~keeper.risk.scenarios.build_risk_tables`)."""
    p = as_positions(positions, len(tables.instruments))
    a, a_es = _level(confidence, "confidence"), _level(es_confidence, "es_confidence")
    h = _horizon(horizon_days)
    spot = tables.market.spot
    if moves.returns.shape[1] != spot.size:
        raise ValueError(f"historical moves have {moves.returns.shape[1]} underlyings, the market {spot.size}")
    sigma = np.atleast_2d(np.cov(moves.returns, rowvar=False, ddof=1)) * h
    d = (p @ (tables.delta[:, None] * tables.underlying_onehot)) * spot  # (A, U) USD per unit return
    var_lin = np.einsum("au,uv,av->a", d, sigma, d)
    mu = np.zeros(p.shape[0])
    var_q = np.zeros(p.shape[0])
    if gamma:
        g = (p @ (tables.gamma[:, None] * tables.underlying_onehot)) * spot * spot  # (A, U), diag of G
        mu = 0.5 * g @ np.diag(sigma)
        var_q = 0.5 * np.einsum("au,uv,av->a", g, sigma * sigma, g)
    sd = np.sqrt(np.maximum(var_lin + var_q, 0.0))
    z, z_es = NormalDist().inv_cdf(a), NormalDist().inv_cdf(a_es)
    var = -mu + z * sd
    es = -mu + sd * float(norm_pdf(z_es)) / (1.0 - a_es)
    method = "delta-gamma-normal" if gamma else "delta-normal"
    return VarResult(var, es, a, a_es, h, method, int(moves.returns.shape[0]), _equity(equity, p.shape[0]))
