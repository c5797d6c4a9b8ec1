"""VaR / ES against independent computations: empirical quantiles by sorting, normal formulas by
hand, full revaluation of an option book by a scalar loop."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from keeper.risk.scenarios import (
    CALL,
    PERPETUAL,
    PUT,
    Instruments,
    MarketState,
    ScenarioParams,
    VolSurface,
    build_risk_tables,
)
from keeper.risk.var import HistoricalMoves, empirical_es, empirical_var, historical_var, parametric_var

NOW = 1_700_000_000
E30 = NOW + 30 * 86400
DAY = 86400


def moves(n: int, u: int = 1, seed: int = 3, vol_ratio=None) -> HistoricalMoves:
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=(n, u)) * 0.03
    return HistoricalMoves(NOW + DAY * np.arange(n), r, np.ones((n, u)) if vol_ratio is None else vol_ratio)


def perp_market(spots=(2000.0,)) -> tuple[Instruments, MarketState]:
    u = len(spots)
    inst = Instruments(list(range(u)), [PERPETUAL] * u, [0.0] * u, [0] * u)
    return inst, MarketState(list(spots), VolSurface([], [], [], []), NOW)


@pytest.mark.parametrize("n", [1000, 999, 250])
def test_historical_var_of_long_spot_is_the_empirical_quantile(n: int) -> None:
    inst, market = perp_market()
    h = moves(n)
    res = historical_var(inst, market, [[1.5]], h, equity=[10_000.0])
    losses = sorted(-1.5 * 2000.0 * h.returns[:, 0])  # ascending, computed independently
    # VaR 99%: the smallest loss l with #{L <= l} >= 0.99 n
    k = next(i for i in range(n) if (i + 1) >= 0.99 * n - 1e-9)
    assert float(res.var[0]) == pytest.approx(losses[k], rel=1e-12)
    # ES 97.5%: mean of the worst n x 2.5% losses, the boundary one weighted by the fraction
    tail = n * 0.025
    worst = losses[::-1]
    expected = (sum(worst[: int(tail)]) + (tail - int(tail)) * worst[int(tail)]) / tail
    assert float(res.es[0]) == pytest.approx(expected, rel=1e-12)
    assert res.es[0] >= res.var[0] * 0.9  # ES at 97.5% is near VaR at 99% for fat tails
    assert float(res.var_to_equity[0]) == pytest.approx(float(res.var[0]) / 10_000.0)
    assert res.n_days == n and res.method == "historical"


def test_empirical_quantiles_on_a_known_sample() -> None:
    losses = np.arange(1.0, 101.0)  # 1..100
    assert float(empirical_var(losses, 0.99)) == 99.0
    assert float(empirical_var(losses, 0.95)) == 95.0
    assert float(empirical_es(losses, 0.975)) == pytest.approx((100 + 99 + 0.5 * 98) / 2.5)
    with pytest.raises(ValueError, match="confidence must be a number in"):
        empirical_var(losses, 1.0)


def test_historical_var_of_options_matches_a_scalar_revaluation_loop() -> None:
    inst = Instruments([0, 0], [CALL, PUT], [2100.0, 1800.0], [E30, E30])
    market = MarketState([2000.0], VolSurface([0], [E30], [0.7], [-0.2]), NOW)
    rng = np.random.default_rng(5)
    ratio = np.exp(rng.normal(0, 0.05, (300, 1)))
    h = moves(300, vol_ratio=ratio)
    res = historical_var(inst, market, [[-2.0, 1.0]], h)
    t = 30 / 365

    def b76(f, k, sigma, call):
        sd = sigma * math.sqrt(t)
        d1 = (math.log(f / k) + sd * sd / 2) / sd
        n = lambda x: (1 + math.erf(x / math.sqrt(2))) / 2  # noqa: E731
        return f * n(d1) - k * n(d1 - sd) if call else k * n(sd - d1) - f * n(-d1)

    vols = [max(0.7 - 0.2 * math.log(k / 2000.0), 0.01) for k in (2100.0, 1800.0)]
    v0 = -2 * b76(2000, 2100, vols[0], True) + b76(2000, 1800, vols[1], False)
    losses = []
    for r, v in zip(h.returns[:, 0], h.vol_ratio[:, 0]):
        f = 2000 * (1 + r)
        losses.append(v0 - (-2 * b76(f, 2100, vols[0] * v, True) + b76(f, 1800, vols[1] * v, False)))
    losses.sort()
    assert float(res.var[0]) == pytest.approx(losses[math.ceil(0.99 * 300) - 1], rel=1e-10)


def test_parametric_var_of_a_linear_book_is_z_sigma_delta() -> None:
    inst, market = perp_market()
    h = moves(500)
    tables = build_risk_tables(inst, market, ScenarioParams())
    sigma = float(np.std(h.returns[:, 0], ddof=1))
    z99, z975 = NormalDist().inv_cdf(0.99), NormalDist().inv_cdf(0.975)
    for gamma in (False, True):  # no gamma in a linear book: both methods agree
        res = parametric_var(tables, [[-3.0], [2.0]], h, gamma=gamma)
        np.testing.assert_allclose(res.var, z99 * sigma * np.array([3.0, 2.0]) * 2000.0, rtol=1e-12)
        es_factor = math.exp(-(z975**2) / 2) / math.sqrt(2 * math.pi) / 0.025  # 2.3378
        np.testing.assert_allclose(res.es, es_factor * sigma * np.array([3.0, 2.0]) * 2000.0, rtol=1e-12)
    four_day = parametric_var(tables, [[1.0]], h, horizon_days=4, gamma=False)
    assert float(four_day.var[0]) == pytest.approx(2 * z99 * sigma * 2000.0)  # sqrt(4) = 2


def test_parametric_var_two_underlyings_uses_the_covariance() -> None:
    inst, market = perp_market((2000.0, 30000.0))
    h = moves(800, u=2)
    tables = build_risk_tables(inst, market, ScenarioParams())
    res = parametric_var(tables, [[1.0, -0.1]], h, gamma=False)
    d = np.array([2000.0, -3000.0])
    c = np.cov(h.returns.T, ddof=1)
    expected = NormalDist().inv_cdf(0.99) * math.sqrt(d @ c @ d)
    assert float(res.var[0]) == pytest.approx(expected, rel=1e-12)


def test_delta_gamma_normal_by_hand_for_a_short_straddle() -> None:
    inst = Instruments([0, 0], [CALL, PUT], [2000.0, 2000.0], [E30, E30])
    market = MarketState([2000.0], VolSurface([0], [E30], [0.6], [0.0]), NOW)
    tables = build_risk_tables(inst, market, ScenarioParams())
    h = moves(400)
    res = parametric_var(tables, [[-1.0, -1.0]], h)
    s2 = float(np.var(h.returns[:, 0], ddof=1))
    d = -float(tables.delta.sum()) * 2000.0
    g = -float(tables.gamma.sum()) * 2000.0**2
    mu = 0.5 * g * s2  # negative: a short-gamma book loses on average
    sd = math.sqrt(d * d * s2 + 0.5 * g * g * s2 * s2)
    assert float(res.var[0]) == pytest.approx(-mu + NormalDist().inv_cdf(0.99) * sd, rel=1e-12)
    assert mu < 0


def test_daily_moves_skip_gaps_and_read_vol_ratios() -> None:
    ts = NOW + DAY * np.array([0, 1, 2, 4, 5])  # day 3 missing
    px = np.array([[100.0], [110.0], [99.0], [120.0], [60.0]])
    vol = np.array([[0.5], [np.nan], [0.6], [0.6], [0.9]])
    one = HistoricalMoves.from_daily(ts, px, vol)
    np.testing.assert_allclose(one.returns[:, 0], [0.1, -0.1, -0.5])
    np.testing.assert_allclose(one.vol_ratio[:, 0], [1.0, 1.0, 1.5])  # NaN -> unchanged
    two = HistoricalMoves.from_daily(ts, px, horizon_days=2)
    np.testing.assert_allclose(two.returns[:, 0], [-0.01, 120 / 99 - 1])  # days 0->2 and 2->4
    with pytest.raises(ValueError, match="horizon_days"):
        HistoricalMoves.from_daily(ts, px, horizon_days=0)
    with pytest.raises(ValueError, match="returns must be finite and > -1"):
        HistoricalMoves(ts[:2], [[-1.0], [0.0]], [[1.0], [1.0]])
