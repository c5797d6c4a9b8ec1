"""Black-76 and its exp / ln / normal CDF (contracts/lib/black76.vy) against independent references.

References: float64 (`math.exp`, `math.log`, `0.5 * math.erfc(-x / sqrt2)`, Black-76 in float64)
for the relative-error claims, and 60+ digit `decimal` arithmetic for the claims in wei (float64
cannot resolve a wei of a WAD). Textbook values: Hull and Haug worked examples of Black's model.

Sample sizes are small by default so CI stays fast; set BLACK76_SAMPLES (e.g. 20000) for a full
run, and run with `-s` to see the measured maxima.
"""

from __future__ import annotations

import math
import os
import random
from decimal import Decimal, localcontext
from pathlib import Path

import boa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

WAD = 10**18
YEAR = 365 * 86400
SAMPLES = int(os.environ.get("BLACK76_SAMPLES", "600"))
SOURCE = Path(__file__).resolve().parents[2] / "contracts" / "lib" / "black76.vy"

# Supported range (module docstring): prices in USD, sigma annualised, tau in seconds.
PRICE_MIN, PRICE_MAX = 1e-6, 1e12
MAX_LOG_MONEYNESS = 8.0
SIGMA_MIN, SIGMA_MAX = 0.01, 5.0
TAU_MIN, TAU_MAX = 60, 4 * YEAR
MAX_TOTAL_VOL = 10.0
REL_TOL = 1e-8
FLOOR_REL_TO_FORWARD = 1e-12
FLOOR_WEI = 10**8


@pytest.fixture(scope="module")
def b76():
    return boa.load(str(SOURCE))


# ---------------------------------------------------------------- high-precision references


def _pi() -> Decimal:
    """pi to the context precision (the `decimal` module documentation's recipe)."""
    with localcontext() as ctx:
        ctx.prec += 2
        lasts, t, s, n, na, d, da = 0, Decimal(3), 3, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


with localcontext() as _ctx:
    _ctx.prec = 120
    PI = _pi()
    SQRT2 = Decimal(2).sqrt()


def erfc_dec(y: Decimal) -> Decimal:
    """erfc(y), y >= 0, from the Maclaurin series of erf with enough digits to absorb its
    cancellation (about 0.87 y^2 digits) plus 50."""
    with localcontext() as ctx:
        ctx.prec = 55 + int(float(y) ** 2 * 0.87)
        y2 = y * y
        term = s = +y
        n = 0
        while True:
            n += 1
            term = -term * y2 / n
            add = term / (2 * n + 1)
            s += add
            if n > 2 and abs(add) < abs(s) * Decimal(10) ** -ctx.prec:
                break
        return +(1 - 2 / PI.sqrt() * s)


def ncdf_dec(x: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        if x < -40:
            return Decimal(0)
        if x > 40:
            return Decimal(1)
        if x < 0:
            return erfc_dec(-x / SQRT2) / 2
        return 1 - erfc_dec(x / SQRT2) / 2


def black76_f64(f: float, k: float, sigma: float, t: float) -> tuple[float, float]:
    """Black-76 in float64: the out-of-the-money option from the formula, the other by parity."""
    v = sigma * math.sqrt(t)
    d1 = (math.log(f / k) + v * v / 2) / v
    d2 = d1 - v

    def n(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    if f < k:
        c = f * n(d1) - k * n(d2)
        return c, c + k - f
    p = k * n(-d2) - f * n(-d1)
    return p + f - k, p


def black76_dec(fw: int, kw: int, sw: int, tau: int) -> tuple[Decimal, Decimal]:
    """Black-76 with 60-digit decimals; inputs and outputs in wei."""
    with localcontext() as ctx:
        ctx.prec = 60
        f, k = Decimal(fw), Decimal(kw)
        v = Decimal(sw) / WAD * (Decimal(tau) / YEAR).sqrt()
        d1 = ((f / k).ln() + v * v / 2) / v
        d2 = d1 - v
        if f < k:
            c = f * ncdf_dec(d1) - k * ncdf_dec(d2)
            return c, c + k - f
        p = k * ncdf_dec(-d2) - f * ncdf_dec(-d1)
        return p + f - k, p


def _report(name: str, **figures) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v:.3g}" for k, v in figures.items()))


# ---------------------------------------------------------------- exp


def test_exp_known_values(b76):
    assert b76.exp_wad(0) == WAD
    assert b76.exp_wad(WAD) == 2718281828459045235  # e
    assert b76.exp_wad(-WAD) == 367879441171442322  # 1/e
    assert b76.exp_wad(-42_200_000_000_000_000_001) == 0
    assert b76.exp_wad(-42 * WAD) == 1  # e^-42 = 5.7e-19
    top = b76.exp_wad(135_305_999_368_893_231_588)
    assert 2**255 - 2**255 // 10**17 < top < 2**255
    with boa.reverts("black76: exp argument above 135.305999368893231588"):
        b76.exp_wad(135_305_999_368_893_231_589)


def test_exp_random_vs_references(b76):
    rng = random.Random(1)
    worst_wei = worst_rel = worst_f64 = 0.0
    for i in range(SAMPLES):
        x = rng.randint(-42 * WAD, 135 * WAD) if i % 2 else int(rng.gauss(0, 4) * WAD)
        got = b76.exp_wad(x)
        with localcontext() as ctx:
            ctx.prec = 100
            ref = (Decimal(x) / WAD).exp() * WAD
        err = abs(Decimal(got) - ref)
        # |err| <= 1 wei + 1e-21 * result
        assert err <= 1 + ref * Decimal("1e-21"), (x, got, ref)
        if ref < 10**21:
            worst_wei = max(worst_wei, float(err))
        else:
            worst_rel = max(worst_rel, float(err / ref))
        if -40 * WAD < x < 40 * WAD:
            f64 = math.exp(x / WAD) * WAD
            rel = abs(got - f64) / f64
            # float64 rounds x itself by up to 1.1e-16 |x|, which e^x magnifies
            assert rel < 2.3e-16 * (2 + abs(x) / WAD) or abs(got - f64) < 2
            if f64 > 1e12:
                worst_f64 = max(worst_f64, rel)
    _report("exp_wad", samples=SAMPLES, max_abs_wei_small=worst_wei, max_rel_large=worst_rel, max_rel_vs_f64=worst_f64)


# ---------------------------------------------------------------- ln


def test_ln_known_values(b76):
    assert b76.ln_wad(WAD) == 0
    assert b76.ln_wad(2718281828459045235) == WAD  # ln of e rounded to the wei is 1e18 - 0.13 wei
    assert b76.ln_wad(1) == -41446531673892822312  # ln(1e-18)
    assert b76.ln_wad(2 * WAD) == 693147180559945309
    assert b76.ln_wad(2**256 - 1) == 135999146549453176898  # 256 ln2 - 18 ln10
    with boa.reverts("black76: ln of zero"):
        b76.ln_wad(0)


def test_ln_random_vs_references(b76):
    rng = random.Random(2)
    worst = worst_f64 = 0.0
    for i in range(SAMPLES):
        x = rng.randint(1, 2 ** rng.randint(1, 256) - 1) if i % 2 else int(WAD * math.exp(rng.gauss(0, 3)))
        got = b76.ln_wad(x)
        with localcontext() as ctx:
            ctx.prec = 100
            ref = (Decimal(x) / WAD).ln() * WAD
        err = abs(Decimal(got) - ref)
        assert err <= 1, (x, got, ref)
        worst = max(worst, float(err))
        worst_f64 = max(worst_f64, abs(got - math.log(x / WAD) * WAD) / WAD)
    _report("ln_wad", samples=SAMPLES, max_abs_wei=worst, max_abs_vs_f64_in_units=worst_f64)


# ---------------------------------------------------------------- normal CDF


def test_norm_cdf_known_values(b76):
    assert b76.norm_cdf(0) == WAD // 2
    assert abs(b76.norm_cdf(1_959_963_984_540_054_246) - 975 * 10**15) <= 1  # 97.5% quantile
    assert b76.norm_cdf(-WAD) == 158655253931457051  # N(-1)
    assert b76.norm_cdf(12 * WAD) == WAD and b76.norm_cdf(-12 * WAD) == 0
    assert b76.norm_cdf(2**255 - 1) == WAD and b76.norm_cdf(-(2**255)) == 0


def test_norm_cdf_random_vs_references(b76):
    rng = random.Random(3)
    worst = worst_f64 = 0.0
    xs = []
    for i in range(SAMPLES):
        x = rng.randint(-13 * WAD, 13 * WAD) if i % 2 else int(rng.gauss(0, 2) * WAD)
        xs.append(x)
        got = b76.norm_cdf(x)
        ref = ncdf_dec(Decimal(x) / WAD) * WAD
        err = abs(Decimal(got) - ref)
        assert err <= 1, (x, got, ref)
        worst = max(worst, float(err))
        f64 = 0.5 * math.erfc(-x / WAD / math.sqrt(2))
        # float64 resolves about 1.1e-16 of 1 near N = 1
        assert abs(got / WAD - f64) <= 2.3e-16 + 1e-15 * f64
        worst_f64 = max(worst_f64, abs(got / WAD - f64))
        # symmetry: exact by construction
        assert got + b76.norm_cdf(-x) == WAD
    _report("norm_cdf", samples=SAMPLES, max_abs_wei=worst, max_abs_vs_f64=worst_f64)


def test_norm_cdf_non_decreasing(b76):
    rng = random.Random(4)
    xs = sorted(rng.randint(-13 * WAD, 13 * WAD) for _ in range(400))
    # around the approximation's region boundaries (|x| = 0.46875 sqrt2 and 4 sqrt2), wei by wei
    for edge in (0.46875 * math.sqrt(2), 4 * math.sqrt(2)):
        for sign in (1, -1):
            centre = int(sign * edge * WAD)
            xs += list(range(centre - 30, centre + 30))
            xs += [centre + j * 10**9 for j in range(-30, 30)]
    xs = sorted(set(xs))
    values = [b76.norm_cdf(x) for x in xs]
    assert all(a <= b for a, b in zip(values, values[1:]))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**255), max_value=2**255 - 1))
def test_norm_cdf_symmetric_and_bounded(b76, x):
    n = b76.norm_cdf(x)
    assert 0 <= n <= WAD
    if x > -(2**255):
        assert n + b76.norm_cdf(-x) == WAD


# ---------------------------------------------------------------- Black-76


def _random_inputs(rng: random.Random) -> tuple[int, int, int, int]:
    """Log-uniform forward, moneyness, sigma and uniform tau over the supported range."""
    while True:
        f = 10 ** rng.uniform(math.log10(PRICE_MIN), math.log10(PRICE_MAX))
        k = f * math.exp(rng.uniform(-MAX_LOG_MONEYNESS, MAX_LOG_MONEYNESS))
        sigma = 10 ** rng.uniform(math.log10(SIGMA_MIN), math.log10(SIGMA_MAX))
        tau = rng.randint(TAU_MIN, TAU_MAX)
        if PRICE_MIN <= k <= PRICE_MAX and sigma * math.sqrt(tau / YEAR) <= MAX_TOTAL_VOL:
            return int(f * WAD), int(k * WAD), int(sigma * WAD), tau


def _check_price(got: int, ref: float, forward: int) -> float:
    """Relative error above the price floor, else |err| <= 1e-12 forward; returns the relative error."""
    err = abs(got - ref)
    if ref >= max(FLOOR_REL_TO_FORWARD * forward, FLOOR_WEI):
        assert err <= REL_TOL * ref, (got, ref, forward)
        return err / ref
    assert err <= FLOOR_REL_TO_FORWARD * forward, (got, ref, forward)
    return 0.0


def test_black76_random_vs_float64(b76):
    rng = random.Random(5)
    worst_rel = worst_abs = 0.0
    for _ in range(SAMPLES):
        fw, kw, sw, tau = _random_inputs(rng)
        call, put = b76.black76(fw, kw, sw, tau)
        assert call - put == fw - kw  # exact parity
        assert max(fw - kw, 0) <= call <= fw and max(kw - fw, 0) <= put <= kw
        ref_call, ref_put = black76_f64(fw / WAD, kw / WAD, sw / WAD, tau / YEAR)
        for got, ref in ((call, ref_call * WAD), (put, ref_put * WAD)):
            worst_rel = max(worst_rel, _check_price(got, ref, fw))
            worst_abs = max(worst_abs, abs(got - ref) / fw)
    _report("black76 vs float64", samples=SAMPLES, max_rel_above_floor=worst_rel, max_abs_over_forward=worst_abs)


def test_black76_random_vs_decimal(b76):
    rng = random.Random(6)
    worst_rel = worst_abs = 0.0
    for _ in range(max(SAMPLES // 4, 100)):
        fw, kw, sw, tau = _random_inputs(rng)
        call, put = b76.black76(fw, kw, sw, tau)
        ref_call, ref_put = black76_dec(fw, kw, sw, tau)
        for got, ref in ((call, ref_call), (put, ref_put)):
            worst_rel = max(worst_rel, _check_price(got, float(ref), fw))
            # beyond the final rounding the error is tiny: |err| <= 1 wei + 1e-15 price + 1e-18 F
            assert abs(Decimal(got) - ref) <= 1 + ref * Decimal("1e-15") + Decimal(fw) * Decimal("1e-18")
            worst_abs = max(worst_abs, float(abs(Decimal(got) - ref)) / fw)
    _report("black76 vs decimal", max_rel_above_floor=worst_rel, max_abs_over_forward=worst_abs)


def test_black76_textbook_values(b76):
    # Hull, Options, Futures, and Other Derivatives, "Futures options", Black's model example:
    # crude-oil futures put, F0 = K = 20, r = 9%, T = 4 months, sigma = 25% -> p = 1.12
    # (d1 = 0.07216, N(-d1) = 0.4712, N(-d2) = 0.5288).
    call, put = b76.black76(20 * WAD, 20 * WAD, 25 * WAD // 100, YEAR // 3)
    assert call == put
    assert round(put / WAD * math.exp(-0.09 / 3), 2) == 1.12
    assert b76.norm_cdf(-72_168_783_648_703_220) == pytest.approx(0.4712e18, abs=0.00005e18)
    # Hull, "Interest rate derivatives: the standard market models", European bond option:
    # 10-month call, forward bond price 939.68, K = 1000, sigma = 9%, 10-month rate 10% -> 9.49.
    call, _ = b76.black76(939_680_000_000_000_000_000, 1000 * WAD, 9 * WAD // 100, YEAR * 10 // 12)
    assert round(call / WAD * math.exp(-0.1 * 10 / 12), 2) == 9.49
    # Haug, The Complete Guide to Option Pricing Formulas, Black-76 example:
    # F = K = 19, T = 0.75, r = 10%, sigma = 28% -> c = p = 1.7011.
    call, put = b76.black76(19 * WAD, 19 * WAD, 28 * WAD // 100, YEAR * 3 // 4)
    assert call == put
    assert round(call / WAD * math.exp(-0.075), 4) == 1.7011


def test_black76_intrinsic_and_limits(b76):
    assert b76.black76(2100 * WAD, 2000 * WAD, 0, 86400) == (100 * WAD, 0)
    assert b76.black76(2000 * WAD, 2100 * WAD, WAD, 0) == (0, 100 * WAD)
    assert b76.black76(2000 * WAD, 2000 * WAD, 0, 0) == (0, 0)
    # enormous total vol: the call tends to the forward and the put to the strike
    call, put = b76.black76(2000 * WAD, 2000 * WAD, 100 * WAD, 100 * YEAR)
    assert call == put and call > 2000 * WAD * (1 - 1e-15)
    for args, reason in (
        ((0, WAD, WAD, YEAR), "black76: zero forward"),
        ((WAD, 0, WAD, YEAR), "black76: zero strike"),
        ((10**36 + 1, WAD, WAD, YEAR), "black76: price above 1e18 USD"),
        ((WAD, 10**36 + 1, WAD, YEAR), "black76: price above 1e18 USD"),
        ((WAD, WAD, 100 * WAD + 1, YEAR), "black76: sigma above 100 (10,000%)"),
        ((WAD, WAD, WAD, 100 * YEAR + 1), "black76: tau above 100 years"),
    ):
        with boa.reverts(reason):
            b76.black76(*args)


PRICES = st.integers(min_value=1, max_value=10**36)
SIGMAS = st.integers(min_value=0, max_value=100 * WAD)
TAUS = st.integers(min_value=0, max_value=100 * YEAR)


@settings(max_examples=300, deadline=None)
@given(PRICES, PRICES, SIGMAS, TAUS)
def test_black76_parity_and_bounds_anywhere(b76, forward, strike, sigma, tau):
    # over the whole accepted input space, not only the supported range
    call, put = b76.black76(forward, strike, sigma, tau)
    assert call - put == forward - strike
    assert max(forward - strike, 0) <= call <= forward
    assert max(strike - forward, 0) <= put <= strike


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=10**12, max_value=10**30),
    st.floats(min_value=-MAX_LOG_MONEYNESS, max_value=MAX_LOG_MONEYNESS),
    st.floats(min_value=1e-4, max_value=0.5),
    st.integers(min_value=SIGMA_MIN * WAD, max_value=int(SIGMA_MAX * WAD)),
    st.integers(min_value=TAU_MIN, max_value=TAU_MAX),
)
@example(
    forward=4460194272013133735987409472,
    log_moneyness=3.1606690354631555,
    step=0.0001,
    sigma=154199956882233852,
    tau=110413851,
)
def test_black76_call_decreasing_in_strike(b76, forward, log_moneyness, step, sigma, tau):
    k1 = int(forward * math.exp(log_moneyness))
    k2 = int(k1 * (1 + step))
    c1, p1 = b76.black76(forward, k1, sigma, tau)
    c2, p2 = b76.black76(forward, k2, sigma, tau)
    # monotone up to fixed-point rounding: N(d) is computed in steps of 2**-96, so each of the two
    # terms F N(d1) and K N(d2) may be off by a few steps of F or K (deep out of the money, forward
    # 4.5e27 and a strike 24 times higher, the call came out 0 then 2 wei for a 0.01% higher strike)
    tol = 1 + 4 * (forward + k2) // 2**96
    assert c2 <= c1 + tol and p1 <= p2 + tol
