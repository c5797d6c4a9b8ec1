"""European option values and Greeks, vectorized over numpy arrays (pure, no I/O).

Model: Black-Scholes-Merton for an asset with continuous yield ``q`` (Hull, *Options, Futures and
Other Derivatives*, 9th ed., eqs. 15.20-15.21 for q = 0 and §17.4 for a yield q). With ``q = r`` and
the futures price in place of ``S`` it is Black's model for options on futures (Hull §18.8,
eqs. 18.9-18.10). The protocol prices its options with ``S = F = index price`` and ``r = q = 0``
(Black-76, undiscounted), so the defaults are ``r = q = 0``.

    d1 = (ln(S / K) + (r - q + sigma**2 / 2) T) / (sigma sqrt(T)),   d2 = d1 - sigma sqrt(T)
    call = S e^{-qT} N(d1) - K e^{-rT} N(d2),    put = K e^{-rT} N(-d2) - S e^{-qT} N(-d1)

Greeks (Hull 9th ed. Table 19.6, "Greek letters for European options on an asset providing a yield
at rate q"; the q = 0 forms are §19.4 delta, §19.5 theta, §19.6 gamma, §19.8 vega):

    delta  call e^{-qT} N(d1),  put e^{-qT} (N(d1) - 1)             per unit of S
    gamma  e^{-qT} n(d1) / (S sigma sqrt(T))                         per unit of S, per unit of S
    vega   S e^{-qT} n(d1) sqrt(T)                                   per 1.00 of volatility (0.01 = one vol point)
    theta  call -S n(d1) sigma e^{-qT} / (2 sqrt(T)) + q S N(d1) e^{-qT} - r K e^{-rT} N(d2)
           put  -S n(d1) sigma e^{-qT} / (2 sqrt(T)) - q S N(-d1) e^{-qT} + r K e^{-rT} N(-d2)
           per year (calendar, YEAR_DAYS = 365 days); ``theta_day`` = theta / 365 (Hull Example 19.2)

Units: S, K, values in USD; T in years of 365 days; sigma, r, q annualised decimals.
At expiry (T <= 0) or with no volatility (sigma sqrt(T) == 0) an option is worth its discounted
intrinsic value on the forward, delta is the step e^{-qT} 1{S > K} (1/2 at the money), and gamma,
vega and theta are 0.

N is computed from ``math.erfc`` (C library, full double precision) element by element: numpy has
no erf and scipy is not a dependency; the arrays here are instruments x scenarios, small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["YEAR_DAYS", "YEAR_SECONDS", "Greeks", "bs_greeks", "bs_value", "norm_cdf", "norm_pdf"]

#: Days in the year used for T and theta (calendar days, as Deribit and Derive quote).
YEAR_DAYS = 365.0
YEAR_SECONDS = YEAR_DAYS * 86400.0
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def norm_cdf(x: ArrayLike) -> np.ndarray:
    """Standard normal CDF N(x) = erfc(-x / sqrt 2) / 2, float64, the shape of ``x``."""
    a = np.asarray(x, dtype=np.float64)
    return 0.5 * np.asarray(_erfc(-a / _SQRT2), dtype=np.float64)


def norm_pdf(x: ArrayLike) -> np.ndarray:
    """Standard normal density n(x) = exp(-x**2 / 2) / sqrt(2 pi), float64."""
    a = np.asarray(x, dtype=np.float64)
    out: np.ndarray = _INV_SQRT_2PI * np.exp(-0.5 * a * a)
    return out


@dataclass(frozen=True)
class Greeks:
    """Value and Greeks of one unit of each option (arrays of the broadcast shape).

    value USD; delta per unit of S; gamma per unit of S squared; vega USD per 1.00 of volatility;
    theta USD per year and theta_day USD per calendar day (both negative for a long option when
    r = q = 0)."""

    value: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray

    @property
    def theta_day(self) -> np.ndarray:
        return self.theta / YEAR_DAYS


_Inputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _inputs(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, sigma: ArrayLike, is_call: ArrayLike, r: ArrayLike, q: ArrayLike
) -> _Inputs:
    arrays = np.broadcast_arrays(
        np.asarray(spot, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(sigma, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
        np.asarray(r, dtype=np.float64),
        np.asarray(q, dtype=np.float64),
    )
    s, k, tt, v, c, rr, qq = arrays
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("spot/forward must be finite and > 0")
    if not (np.all(np.isfinite(k)) and np.all(k > 0)):
        raise ValueError("strike must be finite and > 0")
    if not (np.all(np.isfinite(tt)) and np.all(np.isfinite(v)) and np.all(v >= 0)):
        raise ValueError("time to expiry must be finite and volatility finite and >= 0")
    if not (np.all(np.isfinite(rr)) and np.all(np.isfinite(qq))):
        raise ValueError("rates must be finite")
    return s, k, np.maximum(tt, 0.0), v, c, rr, qq


def _d1_d2(
    s: np.ndarray, k: np.ndarray, t: np.ndarray, v: np.ndarray, r: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sd = v * np.sqrt(t)
    live = sd > 0.0
    safe = np.where(live, sd, 1.0)
    d1 = (np.log(s / k) + (r - q) * t + 0.5 * sd * sd) / safe
    return live, safe, d1, d1 - safe


def bs_value(
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    r: ArrayLike = 0.0,
    q: ArrayLike = 0.0,
) -> np.ndarray:
    """Value of one European option (Hull 9th ed. eqs. 15.20-15.21 with a yield q, §17.4).

    Args (broadcast together): spot USD > 0 (the forward for Black-76), strike USD > 0, t years
    (clipped at 0), sigma annualised >= 0, is_call bool, r and q continuous annual rates.
    Returns float64 USD per unit of the underlying. Raises ValueError on non-finite or
    out-of-domain input."""
    s, k, t, v, c, r, q = _inputs(spot, strike, t, sigma, is_call, r, q)
    live, _, d1, d2 = _d1_d2(s, k, t, v, r, q)
    ds, dk = s * np.exp(-q * t), k * np.exp(-r * t)
    sign = np.where(c, 1.0, -1.0)
    value = sign * (ds * norm_cdf(sign * d1) - dk * norm_cdf(sign * d2))
    intrinsic = np.maximum(sign * (ds - dk), 0.0)
    out: np.ndarray = np.where(live, np.maximum(value, 0.0), intrinsic)  # max: float noise deep out of the money
    return out


def bs_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    r: ArrayLike = 0.0,
    q: ArrayLike = 0.0,
) -> Greeks:
    """Value, delta, gamma, vega (per 1.00 vol) and theta (per year) of one European option.

    Formulas: Hull 9th ed. Table 19.6 (see the module docstring). Same arguments and errors as
    :func:`bs_value`."""
    s, k, t, v, c, r, q = _inputs(spot, strike, t, sigma, is_call, r, q)
    live, sd, d1, d2 = _d1_d2(s, k, t, v, r, q)
    eq, er = np.exp(-q * t), np.exp(-r * t)
    sign = np.where(c, 1.0, -1.0)
    nd1, nd2 = norm_cdf(sign * d1), norm_cdf(sign * d2)
    pdf = norm_pdf(d1)
    sqrt_t = np.where(live, np.sqrt(t), 1.0)
    value = sign * (s * eq * nd1 - k * er * nd2)
    delta = sign * eq * nd1
    gamma = eq * pdf / (s * sd)
    vega = s * eq * pdf * sqrt_t
    theta = -s * pdf * v * eq / (2.0 * sqrt_t) + sign * (q * s * nd1 * eq - r * k * er * nd2)
    # dead options: intrinsic on the forward, step delta (1/2 exactly at the money)
    fwd_gap = s * eq - k * er
    intrinsic = np.maximum(sign * fwd_gap, 0.0)
    step = np.where(fwd_gap > 0, 1.0, np.where(fwd_gap < 0, 0.0, 0.5))
    dead_delta = eq * np.where(c, step, step - 1.0)
    zero = np.zeros_like(value)
    return Greeks(
        value=np.where(live, np.maximum(value, 0.0), intrinsic),
        delta=np.where(live, delta, dead_delta),
        gamma=np.where(live, gamma, zero),
        vega=np.where(live, vega, zero),
        theta=np.where(live, theta, zero),
    )
