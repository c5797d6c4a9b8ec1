"""Portfolio margin on hand-computed books.

What is checked, with the expected numbers worked out in the test (an independent math.erf
Black-76, never the module's pricer):
- the grid: 23 scenarios per underlying (7 moves x 3 vols + 2 extremes at 35%), 67 for two; the
  vol shock multipliers at 1, 7, 30 and 90 days (Derive's published derived figures);
- a single short ATM call: its worst scenario (spot +15%, vol up) and loss, by brute force over
  the 23 scenarios, plus the 2% naked-short contingency and IM = 1.25 MM;
- a perpetual against an opposite perpetual: zero grid loss and zero MM; a perpetual against a
  future: zero grid loss and a basis contingency of 1% x spot;
- risk-defined books (short straddle + long strangle, call spread) need at most a third of a naked
  short straddle's MM, and a call spread's grid loss is at most the premium paid;
- cross-underlying: a long ETH / short BTC hedge is charged (1 - correlation) x 15%, a long/long
  book gets no diversification credit;
- the table equals the per-account loop on random books; the parameter file's validation.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from keeper.config import DEFAULT_PM_CONFIG, ConfigError, load_scenario_params
from keeper.risk.portfolio import account_greeks, account_reports
from keeper.risk.scenarios import (
    CALL,
    FUTURE,
    PERPETUAL,
    PUT,
    Instruments,
    MarketState,
    ScenarioParams,
    VolSurface,
    build_grid,
    build_risk_tables,
    portfolio_margin,
    portfolio_margin_loop,
    smile_vol,
    vol_shock_factors,
)

NOW = 1_700_000_000
E30 = NOW + 30 * 86400
T30 = 30 / 365
P = ScenarioParams()


def black76(f: float, k: float, t: float, sigma: float, call: bool) -> float:
    sd = sigma * math.sqrt(t)
    d1 = (math.log(f / k) + sd * sd / 2) / sd
    n = lambda x: (1 + math.erf(x / math.sqrt(2))) / 2  # noqa: E731
    return f * n(d1) - k * n(d1 - sd) if call else k * n(sd - d1) - f * n(-d1)


def eth_market(atm: float = 0.6, skew: float = 0.0) -> MarketState:
    return MarketState([2000.0], VolSurface([0], [E30], [atm], [skew]), NOW, ("ETH",))


# ---------------------------------------------------------------- the grid


def test_grid_has_spans_points_and_extremes() -> None:
    g = build_grid(P, ("ETH",))
    assert len(g) == 23
    moves = sorted({round(float(m), 10) for m, w in zip(g.spot_move[:, 0], g.weight) if w == 1.0})
    assert moves == [-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15]
    assert sorted(g.spot_move[g.weight != 1.0, 0].tolist()) == [-0.3, 0.3]
    assert set(g.weight.tolist()) == {1.0, 0.35}
    assert np.all(g.vol_dir[g.weight != 1.0] == 0)
    assert "ETH +15.0% vol up" in g.labels and "ETH -30.0% vol flat (x0.35)" in g.labels
    # two underlyings: 23 common moves + 2 x 23 driver moves, minus the 2 duplicates at 0% vol flat
    two = build_grid(P, ("ETH", "BTC"))
    assert len(two) == 67
    assert "ETH -15.0% vol up, BTC -7.5% vol flat" in two.labels


def test_vol_shock_multipliers_match_derive_figures() -> None:
    # protocols.md §1.2 (derived): 30 DTE x1.6 / x0.7; 7 DTE x1.93 / x0.54; 1 DTE x2.66 / x0.17; 90 DTE x1.52 / x0.74
    up, down = vol_shock_factors(P, np.array([30, 7, 1, 90]) / 365)
    np.testing.assert_allclose(up, [1.6, 1.93, 2.66, 1.52], atol=0.006)
    np.testing.assert_allclose(down, [0.7, 0.54, 0.17, 0.74], atol=0.006)
    # below the 1-day floor the shock stops growing; by hand (30/1)^0.3 = 2.7741
    up0, _ = vol_shock_factors(P, np.array([0.1 / 365]))
    assert float(up0[0]) == pytest.approx(1 + 0.6 * 30**0.3)


def test_smile_vol_formula_and_floor() -> None:
    assert float(smile_vol(0.6, -0.2, 2000 * math.e, 2000)) == pytest.approx(0.4)
    assert float(smile_vol(0.6, -1.0, 2000 * math.e, 2000)) == 0.01


# ---------------------------------------------------------------- hand-computed books


def test_single_short_call_worst_scenario_by_hand() -> None:
    inst = Instruments([0], [CALL], [2000.0], [E30])
    tables = build_risk_tables(inst, eth_market(), P)
    pm = portfolio_margin(tables, [[-1.0]])
    # brute force over the 23 scenarios with the test's own pricer
    v0 = black76(2000, 2000, T30, 0.6, True)
    up, down = 1 + 0.6 * (30 / 30) ** 0.3, 1 - 0.3 * (30 / 30) ** 0.3  # 1.6 and 0.7 at 30 days
    candidates = {}
    for m in (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15):
        for name, f in (("up", up), ("flat", 1.0), ("down", down)):
            candidates[f"ETH {m:+.1%} vol {name}"] = -(black76(2000 * (1 + m), 2000, T30, 0.6 * f, True) - v0)
    for m in (0.3, -0.3):
        candidates[f"ETH {m:+.1%} vol flat (x0.35)"] = -0.35 * (black76(2000 * (1 + m), 2000, T30, 0.6, True) - v0)
    worst = min(candidates, key=candidates.get)
    assert worst == "ETH +15.0% vol up"
    assert pm.labels[int(pm.worst_scenario[0])] == worst
    assert float(pm.worst_pnl[0]) == pytest.approx(candidates[worst], rel=1e-12)
    loss = -candidates[worst]
    assert loss == pytest.approx(277.7039, abs=1e-3)  # C(2300, 96%) - C(2000, 60%), 30 days
    assert float(pm.grid_loss[0]) == pytest.approx(loss, rel=1e-12)
    assert float(pm.naked_option_contingency[0]) == pytest.approx(0.02 * 2000)
    assert float(pm.mm[0]) == math.ceil((loss + 40.0) * 100) / 100  # rounded up to the cent
    assert float(pm.im[0]) == math.ceil((loss + 40.0) * 1.25 * 100) / 100


def test_opposite_perpetuals_net_to_zero_and_perp_vs_future_pays_basis() -> None:
    inst = Instruments([0, 0, 0], [PERPETUAL, PERPETUAL, FUTURE], [0, 0, 0], [0, 0, E30])
    tables = build_risk_tables(inst, eth_market(), P)
    pm = portfolio_margin(tables, [[2.0, -2.0, 0.0], [2.0, 0.0, -2.0]])
    np.testing.assert_array_equal(pm.grid_loss, [0.0, 0.0])
    np.testing.assert_array_equal(pm.delta_one_contingency, [0.0, 0.0])
    assert pm.basis_contingency.tolist() == [0.0, pytest.approx(0.01 * 2000 * 2)]  # 1% of the 2 ETH offset
    assert pm.mm.tolist() == [0.0, 40.0]
    assert pm.im.tolist() == [0.0, 50.0]


def test_outright_perpetual_is_range_plus_contingency() -> None:
    inst = Instruments([0], [PERPETUAL], [0], [0])
    pm = portfolio_margin(build_risk_tables(inst, eth_market(), P), [[-3.0]])
    # short 3 ETH: worst is +15% (the +30% extreme counts 35% of 30% = 10.5%): 3 x 2000 x (0.15 + 0.03)
    assert float(pm.grid_loss[0]) == pytest.approx(900.0)
    assert float(pm.mm[0]) == pytest.approx(1080.0)


def test_risk_defined_books_need_a_third_of_a_naked_straddle() -> None:
    k = [2000.0, 2000.0, 1800.0, 2200.0]
    inst = Instruments([0] * 4, [CALL, PUT, PUT, CALL], k, [E30] * 4)
    tables = build_risk_tables(inst, eth_market(), P)
    naked = [-1, -1, 0, 0]
    iron_fly = [-1, -1, 1, 1]  # short straddle + long 1800/2200 strangle
    call_spread = [1, 0, 0, -1]  # long 2000 call, short 2200 call
    pm = portfolio_margin(tables, [naked, iron_fly, call_spread])
    assert pm.naked_option_contingency.tolist() == [pytest.approx(80.0), 0.0, 0.0]
    assert pm.mm[1] <= pm.mm[0] / 3
    assert pm.mm[2] <= pm.mm[0] / 3
    # a call spread can never lose more than its premium; the grid agrees
    premium = black76(2000, 2000, T30, 0.6, True) - black76(2000, 2200, T30, 0.6, True)
    assert 0 < pm.grid_loss[2] <= premium
    # and the iron fly's loss at expiry is bounded by 200 - credit
    credit = (
        2 * black76(2000, 2000, T30, 0.6, True)
        - black76(2000, 1800, T30, 0.6, False)
        - black76(2000, 2200, T30, 0.6, True)
    )
    assert pm.grid_loss[1] <= 200 - credit


def test_cross_underlying_hedge_gets_correlation_credit_only() -> None:
    inst = Instruments([0, 1], [PERPETUAL, PERPETUAL], [0, 0], [0, 0])
    market = MarketState([2000.0, 30000.0], VolSurface([], [], [], []), NOW, ("ETH", "BTC"))
    pm = portfolio_margin(build_risk_tables(inst, market, P), [[5.0, -1 / 3], [5.0, 1 / 3]])
    notional = 10_000.0
    # hedge: ETH -15% with BTC -7.5% (correlation 0.5): 10,000 x (0.15 - 0.5 x 0.15)
    assert float(pm.grid_loss[0]) == pytest.approx(notional * 0.15 * (1 - 0.5))
    assert pm.labels[int(pm.worst_scenario[0])] in (
        "ETH -15.0% vol up, BTC -7.5% vol flat",
        "ETH -15.0% vol flat, BTC -7.5% vol flat",
        "ETH -15.0% vol down, BTC -7.5% vol flat",
    )
    # long/long: the common move takes both down 15%
    assert float(pm.grid_loss[1]) == pytest.approx(2 * notional * 0.15)
    # no netting across underlyings in the contingencies: 3% of each leg
    assert pm.delta_one_contingency.tolist() == [pytest.approx(600.0), pytest.approx(600.0)]


def test_table_equals_per_account_loop_on_random_books() -> None:
    rng = np.random.default_rng(11)
    e7, e90 = NOW + 7 * 86400, NOW + 90 * 86400
    und, kind, strike, expiry = [], [], [], []
    for u, s in enumerate((2000.0, 30000.0)):
        und += [u, u]
        kind += [PERPETUAL, FUTURE]
        strike += [0.0, 0.0]
        expiry += [0, e90]
        for e in (e7, e90):
            for m in (0.8, 1.0, 1.25):
                for kd in (CALL, PUT):
                    und.append(u), kind.append(kd), strike.append(m * s), expiry.append(e)
    inst = Instruments(und, kind, strike, expiry)
    surface = VolSurface([0, 0, 1, 1], [e7, e90, e7, e90], [0.9, 0.7, 0.6, 0.5], [-0.2, -0.1, -0.15, 0.05])
    market = MarketState([2000.0, 30000.0], surface, NOW, ("ETH", "BTC"))
    params = dataclasses.replace(P, correlation=0.7, spot_steps=9, spot_range=0.2)
    positions = np.where(rng.random((60, len(inst))) < 0.2, rng.normal(0, 3, (60, len(inst))), 0.0)
    positions[0] = 0.0
    table = portfolio_margin(build_risk_tables(inst, market, params), positions)
    loop = portfolio_margin_loop(inst, market, params, positions)
    for name in ("grid_loss", "worst_pnl", "delta_one_contingency", "basis_contingency", "naked_option_contingency"):
        np.testing.assert_allclose(getattr(table, name), getattr(loop, name), rtol=1e-9, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(table.mm, loop.mm, atol=0.0100001)
    assert table.mm[0] == 0.0 and table.im[0] == 0.0
    assert np.all(table.im >= table.mm)


# ---------------------------------------------------------------- reports


def test_account_report_greeks_and_caller_requirements() -> None:
    inst = Instruments([0, 0, 1], [CALL, PERPETUAL, PUT], [2000.0, 0.0, 30000.0], [E30, 0, E30])
    market = MarketState([2000.0, 30000.0], VolSurface([0, 1], [E30, E30], [0.6, 0.5], [0.0, 0.0]), NOW, ("ETH", "BTC"))
    tables = build_risk_tables(inst, market, P)
    positions = np.array([[-2.0, 1.0, 0.5]])
    g = account_greeks(tables, positions)
    sd_e, sd_b = 0.6 * math.sqrt(T30), 0.5 * math.sqrt(T30)
    n = lambda x: (1 + math.erf(x / math.sqrt(2))) / 2  # noqa: E731
    delta_e = -2 * n(sd_e / 2) + 1.0  # short 2 ATM calls + 1 perp
    delta_b = 0.5 * (n(sd_b / 2) - 1.0)
    np.testing.assert_allclose(g.delta[0], [delta_e, delta_b], rtol=1e-12)
    vega_e = -2 * 2000 * math.exp(-((sd_e / 2) ** 2) / 2) / math.sqrt(2 * math.pi) * math.sqrt(T30)
    assert float(g.vega[0, 0]) == pytest.approx(vega_e, rel=1e-12)
    assert float(g.delta_usd[0]) == pytest.approx(delta_e * 2000 + delta_b * 30000)
    reports = account_reports(
        tables, positions, isolated_im=lambda p: np.abs(p).sum(axis=1) * 1000, standard_im=np.array([123.0])
    )
    r = reports[0]
    assert r.positions == {0: -2.0, 1: 1.0, 2: 0.5}
    assert r.delta == {"ETH": pytest.approx(delta_e), "BTC": pytest.approx(delta_b)}
    assert r.isolated_im == 3500.0 and r.standard_im == 123.0
    pm = portfolio_margin(tables, positions)
    assert r.portfolio_mm == pm.mm[0] and r.worst_scenario == pm.labels[int(pm.worst_scenario[0])]
    with pytest.raises(ValueError, match="standard_im: expected 1 values"):
        account_reports(tables, positions, standard_im=np.array([1.0, 2.0]))


# ---------------------------------------------------------------- inputs and parameters


def test_default_file_holds_the_documented_defaults() -> None:
    assert load_scenario_params(DEFAULT_PM_CONFIG) == ScenarioParams()
    for _name, default, (lo, hi), source in ScenarioParams.describe():
        assert lo <= default <= hi and source


@pytest.mark.parametrize(
    "body,match",
    [
        ("portfolio_margin: {spot_rnage: 0.2}", "unknown parameter\\(s\\) spot_rnage"),
        ("portfolio_margin: {spot_range: 0.1}", "spot_range: must be a number in \\[0.15, 0.9\\], got 0.1"),
        ("portfolio_margin: {spot_steps: 8}", "spot_steps: must be an odd integer"),
        ("portfolio_margin: {im_factor: true}", "im_factor: must be a number"),
        ("portfolio_margin: {correlation: '0.5'}", "correlation: must be a number"),
        ("portfolio_margin: [1, 2]", "must be a mapping"),
        ("other: {}", "missing section 'portfolio_margin'"),
        ("portfolio_margin: {a: [", "not valid YAML"),
    ],
)
def test_bad_parameter_file_one_line(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "pm.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=match) as e:
        load_scenario_params(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_missing_parameter_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario_params(tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "fields,match",
    [
        (([0], [4], [0], [0]), "kind must be"),
        (([0], [CALL], [0], [E30]), "option needs a finite strike"),
        (([0], [PERPETUAL], [0], [E30]), "perpetual has expiry 0"),
        (([0], [FUTURE], [5.0], [E30]), "strike 0"),
        (([0, 1], [PERPETUAL], [0], [0]), "unequal lengths"),
    ],
)
def test_bad_instruments(fields, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Instruments(*fields)


def test_missing_vol_point_and_bad_positions() -> None:
    inst = Instruments([0], [PUT], [2000.0], [E30 + 1])
    with pytest.raises(ValueError, match="no point for underlying 0 expiry"):
        build_risk_tables(inst, eth_market(), P)
    tables = build_risk_tables(Instruments([0], [PERPETUAL], [0], [0]), eth_market(), P)
    with pytest.raises(ValueError, match="positions: expected shape"):
        portfolio_margin(tables, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        portfolio_margin(tables, [[np.nan]])
