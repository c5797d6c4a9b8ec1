"""Black-Scholes-Merton / Black-76 values and Greeks against Hull's worked examples (9th ed.),
put-call parity and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keeper.risk.black_scholes import YEAR_DAYS, bs_greeks, bs_value, norm_cdf, norm_pdf


def test_norm_cdf_table_values() -> None:
    # standard normal table: N(0) = 0.5, N(1.96) = 0.97500, N(-1) = 0.15866, N(2.326348) = 0.99
    assert norm_cdf(0.0) == 0.5
    assert norm_cdf([1.96, -1.0, 2.326348]) == pytest.approx([0.9750021, 0.1586553, 0.99], abs=1e-7)
    assert norm_pdf(0.0) == pytest.approx(1 / math.sqrt(2 * math.pi))


def test_hull_example_15_6_call_and_put() -> None:
    # Hull 9th ed. Example 15.6: S0 = 42, K = 40, r = 10%, sigma = 20%, T = 0.5 -> c = 4.76, p = 0.81
    c, p = bs_value(42.0, 40.0, 0.5, 0.2, [True, False], r=0.10)
    assert round(float(c), 2) == 4.76
    assert round(float(p), 2) == 0.81


def test_hull_black_model_futures_put() -> None:
    # Hull 9th ed. §18.8 (Black's model) example: European put on a futures price, F0 = K = 20,
    # r = 9%, T = 4 months, sigma = 25% -> 1.12. Black's model = BSM with q = r.
    p = bs_value(20.0, 20.0, 4 / 12, 0.25, False, r=0.09, q=0.09)
    assert round(float(p), 2) == 1.12


def test_hull_greek_examples_chapter_19() -> None:
    # Hull 9th ed. ch. 19 running example: S0 = 49, K = 50, r = 5%, sigma = 20%, T = 20 weeks = 0.3846.
    g = bs_greeks(49.0, 50.0, 0.3846, 0.2, True, r=0.05)
    assert round(float(g.delta), 3) == 0.522  # Example 19.1
    assert round(float(g.theta), 2) == -4.31  # Example 19.2: per year
    assert round(float(g.theta_day), 4) == -0.0118  # per calendar day (365)
    assert round(float(g.gamma), 3) == 0.066  # Example 19.4
    assert round(float(g.vega), 1) == 12.1  # Example 19.6: per 1.00 of volatility
    # Table 19.1: 100,000 such calls are worth about $240,000
    assert round(float(g.value) * 100_000, -4) == 240_000


@pytest.mark.parametrize("r,q", [(0.0, 0.0), (0.05, 0.0), (0.03, 0.03), (0.01, 0.04)])
def test_put_call_parity(r: float, q: float) -> None:
    # Hull eq. 11.6 / 17.3: c - p = S e^{-qT} - K e^{-rT}
    rng = np.random.default_rng(1)
    s = rng.uniform(500, 4000, 200)
    k = s * rng.uniform(0.5, 1.6, 200)
    t = rng.uniform(1 / 365, 2.0, 200)
    v = rng.uniform(0.05, 1.5, 200)
    c = bs_value(s, k, t, v, True, r, q)
    p = bs_value(s, k, t, v, False, r, q)
    np.testing.assert_allclose(c - p, s * np.exp(-q * t) - k * np.exp(-r * t), rtol=0, atol=1e-9 * s.max())
    gc, gp = bs_greeks(s, k, t, v, True, r, q), bs_greeks(s, k, t, v, False, r, q)
    np.testing.assert_allclose(gc.delta - gp.delta, np.exp(-q * t), atol=1e-12)
    np.testing.assert_allclose(gc.gamma, gp.gamma, rtol=1e-12)
    np.testing.assert_allclose(gc.vega, gp.vega, rtol=1e-12)


@pytest.mark.parametrize("call", [True, False])
@pytest.mark.parametrize("r,q", [(0.0, 0.0), (0.04, 0.01)])
def test_greeks_match_finite_differences(call: bool, r: float, q: float) -> None:
    rng = np.random.default_rng(2)
    s = rng.uniform(1000, 3000, 50)
    k = s * rng.uniform(0.7, 1.3, 50)
    t = rng.uniform(7 / 365, 1.0, 50)
    v = rng.uniform(0.2, 1.2, 50)
    g = bs_greeks(s, k, t, v, call, r, q)
    np.testing.assert_allclose(g.value, bs_value(s, k, t, v, call, r, q), rtol=1e-13)
    hs, hv, ht = s * 1e-4, 1e-5, 1e-6
    up, dn = bs_value(s + hs, k, t, v, call, r, q), bs_value(s - hs, k, t, v, call, r, q)
    np.testing.assert_allclose(g.delta, (up - dn) / (2 * hs), atol=1e-7)
    np.testing.assert_allclose(g.gamma, (up - 2 * g.value + dn) / hs**2, rtol=1e-4, atol=1e-9)
    vega_fd = (bs_value(s, k, t, v + hv, call, r, q) - bs_value(s, k, t, v - hv, call, r, q)) / (2 * hv)
    np.testing.assert_allclose(g.vega, vega_fd, rtol=1e-6, atol=1e-6)
    # theta: value change as calendar time passes = -dV/dT
    theta_fd = -(bs_value(s, k, t + ht, v, call, r, q) - bs_value(s, k, t - ht, v, call, r, q)) / (2 * ht)
    np.testing.assert_allclose(g.theta, theta_fd, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(g.theta_day, g.theta / YEAR_DAYS)


def test_expired_and_zero_vol_options_are_intrinsic() -> None:
    g = bs_greeks([2100.0, 1900.0, 2000.0], 2000.0, 0.0, 0.6, True)
    np.testing.assert_array_equal(g.value, [100.0, 0.0, 0.0])
    np.testing.assert_array_equal(g.delta, [1.0, 0.0, 0.5])
    for greek in (g.gamma, g.vega, g.theta):
        np.testing.assert_array_equal(greek, 0.0)
    put = bs_greeks([2100.0, 1900.0], 2000.0, -1.0, 0.6, False)  # past expiry clips to 0
    np.testing.assert_array_equal(put.value, [0.0, 100.0])
    np.testing.assert_array_equal(put.delta, [0.0, -1.0])
    # no volatility, T > 0: discounted intrinsic value on the forward, Hull eq. 11.4 bound
    assert float(bs_value(42.0, 40.0, 0.5, 0.0, True, r=0.1)) == pytest.approx(42 - 40 * math.exp(-0.05))


def test_deep_out_of_the_money_is_never_negative() -> None:
    v = bs_value(2000.0, [1e-3, 1e9], 1 / 365, 0.05, [False, True])
    assert np.all(v >= 0.0)


@pytest.mark.parametrize(
    "args,match",
    [
        ((0.0, 100.0, 1.0, 0.5, True), "spot"),
        ((100.0, -1.0, 1.0, 0.5, True), "strike"),
        ((100.0, 100.0, 1.0, -0.5, True), "volatility"),
        ((100.0, 100.0, float("nan"), 0.5, True), "time to expiry"),
    ],
)
def test_bad_inputs_raise_one_line(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        bs_value(*args)
