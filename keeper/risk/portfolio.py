"""Greeks per underlying and per account, and the margin report of each account (pure, no I/O).

Aggregation is a matrix product: with positions P (A, I) signed units and the per-unit Greeks of
:class:`~keeper.risk.scenarios.RiskTables` (Hull 9th ed. Table 19.6, Black-76 with r = 0; delta-one
instruments have delta 1 and no other Greek), the net Greek g of account a in underlying u is
``sum_i P[a, i] g_i 1{underlying_i = u}`` = ``P @ (g[:, None] * onehot)``.

Account totals across underlyings are in USD: ``delta_usd = sum_u delta_u x S_u`` (P&L of a 1.00 =
100% move, to first order), ``gamma_usd = sum_u gamma_u x S_u**2 / 100`` (change of delta_usd for
a 1% move), ``vega`` USD per 1.00 of vol on every underlying, ``theta_day`` USD per calendar day.

The report's ``isolated_im`` and ``standard_im`` come from the caller (the standard cross-margin of
:mod:`keeper.risk.margin` and each position margined alone work on the contracts' WAD book, which
this float model does not hold): pass arrays (A,) or functions ``positions (A, I) -> (A,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
from numpy.typing import ArrayLike

from keeper.risk.black_scholes import YEAR_DAYS
from keeper.risk.scenarios import PortfolioMargin, RiskTables, as_positions, portfolio_margin

__all__ = ["AccountGreeks", "AccountReport", "account_greeks", "account_reports"]

Requirement = Union[np.ndarray, Callable[[np.ndarray], np.ndarray], None]


@dataclass(frozen=True, eq=False)
class AccountGreeks:
    """Net Greeks of A accounts over U underlyings: ``delta`` (A, U) units of the underlying,
    ``gamma`` (A, U) per unit, ``vega`` (A, U) USD per 1.00 vol, ``theta_day`` (A, U) USD per
    day; account totals ``delta_usd``, ``gamma_usd`` (per 1% move), ``vega_total``,
    ``theta_day_total`` (A,) USD; ``value`` (A,) market value of the options held."""

    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta_day: np.ndarray
    delta_usd: np.ndarray
    gamma_usd: np.ndarray
    vega_total: np.ndarray
    theta_day_total: np.ndarray
    value: np.ndarray


def account_greeks(tables: RiskTables, positions: ArrayLike) -> AccountGreeks:
    """Net Greeks per underlying and per account; ``positions`` (A, I) or (I,). Raises
    ValueError for a wrong shape or non-finite size."""
    p = as_positions(positions, len(tables.instruments))
    onehot = tables.underlying_onehot
    spot = tables.market.spot
    delta = p @ (tables.delta[:, None] * onehot)
    gamma = p @ (tables.gamma[:, None] * onehot)
    vega = p @ (tables.vega[:, None] * onehot)
    theta_day = p @ (tables.theta[:, None] * onehot) / YEAR_DAYS
    return AccountGreeks(
        delta=delta,
        gamma=gamma,
        vega=vega,
        theta_day=theta_day,
        delta_usd=delta @ spot,
        gamma_usd=gamma @ (spot * spot) / 100.0,
        vega_total=vega.sum(axis=1),
        theta_day_total=theta_day.sum(axis=1),
        value=p @ tables.value,
    )


@dataclass(frozen=True)
class AccountReport:
    """Margin report of one account (USD unless stated).

    positions: {instrument index: signed units}, held positions only;
    delta / gamma / vega / theta_day: {underlying symbol: net Greek} (units as in AccountGreeks);
    delta_usd, gamma_usd, vega_total, theta_day_total: account totals;
    worst_scenario: label of the grid scenario with the largest loss, worst_pnl its (weighted) P&L;
    grid_loss, delta_one_contingency, basis_contingency, naked_option_contingency: MM components;
    portfolio_mm, portfolio_im: portfolio margin (rounded up to the cent);
    isolated_im, standard_im: filled by the caller (None when not given)."""

    account: int
    positions: dict[int, float]
    delta: dict[str, float]
    gamma: dict[str, float]
    vega: dict[str, float]
    theta_day: dict[str, float]
    delta_usd: float
    gamma_usd: float
    vega_total: float
    theta_day_total: float
    worst_scenario: str
    worst_pnl: float
    grid_loss: float
    delta_one_contingency: float
    basis_contingency: float
    naked_option_contingency: float
    portfolio_mm: float
    portfolio_im: float
    isolated_im: float | None = None
    standard_im: float | None = None


def _requirement(req: Requirement, p: np.ndarray, name: str) -> np.ndarray | None:
    if req is None:
        return None
    values = np.asarray(req(p) if callable(req) else req, dtype=np.float64)
    if values.shape != (p.shape[0],):
        raise ValueError(f"{name}: expected {p.shape[0]} values, got shape {values.shape}")
    return values


def account_reports(
    tables: RiskTables,
    positions: ArrayLike,
    isolated_im: Requirement = None,
    standard_im: Requirement = None,
    margin: PortfolioMargin | None = None,
) -> list[AccountReport]:
    """One :class:`AccountReport` per row of ``positions`` (A, I).

    Args:
        tables: from :func:`~keeper.risk.scenarios.build_risk_tables`.
        positions: (A, I) signed units (or (I,) for one account).
        isolated_im, standard_im: (A,) USD, or a function of the positions returning (A,).
        margin: a precomputed :func:`~keeper.risk.scenarios.portfolio_margin` result for these
            positions (computed when None).

    Raises ValueError for a wrong shape of positions or of a requirement."""
    p = as_positions(positions, len(tables.instruments))
    pm = portfolio_margin(tables, p) if margin is None else margin
    g = account_greeks(tables, p)
    iso, std = _requirement(isolated_im, p, "isolated_im"), _requirement(standard_im, p, "standard_im")
    symbols = tables.market.symbols

    def per_u(a: np.ndarray, row: int) -> dict[str, float]:
        return {s: float(a[row, u]) for u, s in enumerate(symbols)}

    reports = []
    for a in range(p.shape[0]):
        held = np.flatnonzero(p[a])
        reports.append(
            AccountReport(
                account=a,
                positions={int(i): float(p[a, i]) for i in held},
                delta=per_u(g.delta, a),
                gamma=per_u(g.gamma, a),
                vega=per_u(g.vega, a),
                theta_day=per_u(g.theta_day, a),
                delta_usd=float(g.delta_usd[a]),
                gamma_usd=float(g.gamma_usd[a]),
                vega_total=float(g.vega_total[a]),
                theta_day_total=float(g.theta_day_total[a]),
                worst_scenario=pm.labels[int(pm.worst_scenario[a])],
                worst_pnl=float(pm.worst_pnl[a]),
                grid_loss=float(pm.grid_loss[a]),
                delta_one_contingency=float(pm.delta_one_contingency[a]),
                basis_contingency=float(pm.basis_contingency[a]),
                naked_option_contingency=float(pm.naked_option_contingency[a]),
                portfolio_mm=float(pm.mm[a]),
                portfolio_im=float(pm.im[a]),
                isolated_im=None if iso is None else float(iso[a]),
                standard_im=None if std is None else float(std[a]),
            )
        )
    return reports
