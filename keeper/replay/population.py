"""A seeded population of realistic accounts for the replay.

Kinds (DESIGN.md): leveraged longs and shorts on perpetuals, directional futures, basis trades
(long perpetual / short future on one underlying), cross-asset hedges (long ETH / short BTC),
and accounts whose collateral is the asset they are long (WETH collateral, long ETH). Equity is
log-normal around 10k USD; leverage is drawn per kind within what initial margin allows.

With `options=True` a share of the population holds option books (OPTION_KINDS): covered calls
(long perpetual + short OTM call), short straddles, delta-hedged short straddles (the perpetual
offsets the straddle's Black-76 delta), protective puts (long perpetual + long OTM put),
risk-defined books (short ATM straddle + long 90/110 strangle, an iron butterfly), and call and
put debit spreads. Option legs name a strike as a multiple of the starting index price; the
replay maps it to the listed series nearest to it, and sizes the legs to the deployment's
minimum position notional when it trades them (keeper.replay.option_books.plan_option_fills).
Option books opt into health attestations (portfolio margin), all others keep the standard margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keeper.units import WAD

# kind -> share of the population
KIND_WEIGHTS = {
    "long": 0.22,
    "short": 0.13,
    "future": 0.10,
    "basis": 0.15,
    "cross_hedge": 0.15,
    "collateral_long": 0.25,
}
COLLATERAL_OF = {"ETH": "WETH", "BTC": "WBTC"}
# option kind -> share of the population when options are on (the rest as KIND_WEIGHTS)
OPTION_KINDS = {
    "covered_call": 0.06,
    "short_straddle": 0.05,
    "delta_hedged_straddle": 0.06,
    "protective_put": 0.06,
    "risk_defined": 0.06,
    "call_spread": 0.04,
    "put_spread": 0.04,
}
OPTION_DAYS = 30  # the listed expiry the population trades (config/options.yaml)
# the replay orders sizes in millionths of a unit: WAD units of the underlying per step
TRADE_UNIT = 10**12


def trade_size(units: float) -> int:
    """A spec size (whole units of the underlying, > 0 long) as the replay orders it: WAD, rounded
    to the nearest TRADE_UNIT."""
    return int(round(units * (WAD // TRADE_UNIT))) * TRADE_UNIT


@dataclass(frozen=True)
class AccountSpec:
    """One account's starting portfolio.

    deposits: asset symbol -> whole units (USDC in dollars, WETH/WBTC in tokens).
    trades: (market name, size in whole units of the underlying; > 0 long).
    equity_usd: starting equity before haircuts, USD.
    """

    kind: str
    deposits: dict[str, float]
    trades: tuple[tuple[str, float], ...]
    equity_usd: float
    # option legs: (underlying, is_call, strike as a multiple of the starting index, size in
    # whole units of the underlying; > 0 long)
    options: tuple[tuple[str, bool, float, float], ...] = ()
    attest: bool = False  # opted into portfolio-margin attestations


def straddle_delta(vol: float, days: float = OPTION_DAYS) -> float:
    """Black-76 delta (r = 0) of one long ATM-forward straddle: 2 N(sigma sqrt(t) / 2) - 1."""
    from statistics import NormalDist

    return 2.0 * NormalDist().cdf(0.5 * vol * (days / 365.0) ** 0.5) - 1.0


def _option_spec(
    kind: str, rng: np.random.Generator, equity: float, und: str, px: float, vol: float, settlement: str
) -> AccountSpec:
    """One option book; sizes keep the standard initial margin well inside equity."""
    perp = f"{und}-PERP"
    deposits = {settlement: equity}
    if kind == "covered_call":
        units = equity * rng.uniform(1.0, 3.0) / px
        return AccountSpec(kind, deposits, ((perp, units),), equity, ((und, True, 1.1, -units),), True)
    if kind == "short_straddle":
        units = equity * rng.uniform(0.8, 2.0) / px
        return AccountSpec(kind, deposits, (), equity, ((und, True, 1.0, -units), (und, False, 1.0, -units)), True)
    if kind == "delta_hedged_straddle":
        units = equity * rng.uniform(0.8, 2.0) / px
        hedge = units * straddle_delta(vol)  # a short straddle is short this delta: buy it back
        return AccountSpec(
            kind, deposits, ((perp, hedge),), equity, ((und, True, 1.0, -units), (und, False, 1.0, -units)), True
        )
    if kind == "protective_put":
        units = equity * rng.uniform(1.0, 3.0) / px
        return AccountSpec(kind, deposits, ((perp, units),), equity, ((und, False, 0.9, units),), True)
    if kind == "risk_defined":
        units = equity * rng.uniform(0.8, 2.0) / px
        legs = ((und, True, 1.0, -units), (und, False, 1.0, -units), (und, True, 1.1, units), (und, False, 0.9, units))
        return AccountSpec(kind, deposits, (), equity, legs, True)
    if kind == "call_spread":
        units = equity * rng.uniform(1.0, 4.0) / px
        return AccountSpec(kind, deposits, (), equity, ((und, True, 1.0, units), (und, True, 1.1, -units)), True)
    if kind == "put_spread":
        units = equity * rng.uniform(1.0, 4.0) / px
        return AccountSpec(kind, deposits, (), equity, ((und, False, 1.0, units), (und, False, 0.9, -units)), True)
    raise ValueError(f"unknown option kind {kind!r}")


def make_population(
    n: int,
    prices: dict[str, float],
    seed: int = 0,
    settlement: str = "USDC",
    *,
    options: bool = False,
    vols: dict[str, float] | None = None,
) -> list[AccountSpec]:
    """`n` account specs sized at `prices` (USD per whole unit of ETH and BTC).

    `options`: a share (OPTION_KINDS) holds option books, at least one of each kind when n
    allows; `vols` (annualised, per underlying; default 0.8) sizes the delta hedges. Without
    options the population is exactly the perpetuals/futures one of the same seed.
    Raises ValueError if n < 1 or a price is missing or not positive.
    """
    if n < 1:
        raise ValueError("the population needs at least one account")
    for sym in ("ETH", "BTC"):
        if prices.get(sym, 0) <= 0:
            raise ValueError(f"need a positive starting price for {sym}")
    rng = np.random.Generator(np.random.PCG64(seed))
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    chosen = rng.choice(len(kinds), size=n, p=weights / weights.sum())
    out = []
    if options:
        option_rng = np.random.Generator(np.random.PCG64([seed, 1]))
        n_options = max(min(n, len(OPTION_KINDS)), int(round(n * sum(OPTION_KINDS.values()))))
        o_kinds = list(OPTION_KINDS)
        o_weights = np.array(list(OPTION_KINDS.values()))
        picks = o_kinds[: min(n_options, len(o_kinds))] + [
            o_kinds[int(i)]
            for i in option_rng.choice(
                len(o_kinds), size=max(0, n_options - len(o_kinds)), p=o_weights / o_weights.sum()
            )
        ]
        for kind in picks:
            equity = float(np.clip(option_rng.lognormal(np.log(20_000), 0.8), 2_000, 500_000))
            und = "ETH" if option_rng.random() < 0.6 else "BTC"
            vol = (vols or {}).get(und, 0.8)
            out.append(_option_spec(kind, option_rng, equity, und, prices[und], vol, settlement))
        chosen = chosen[: n - len(out)]
    for k in chosen:
        kind = kinds[int(k)]
        equity = float(np.clip(rng.lognormal(np.log(10_000), 1.0), 500, 2_000_000))
        und = "ETH" if rng.random() < 0.6 else "BTC"
        px = prices[und]
        perp, fut = f"{und}-PERP", f"{und}-FUT"
        if kind in ("long", "short"):
            lev = rng.uniform(1.5, 8.0)
            size = equity * lev / px * (1 if kind == "long" else -1)
            out.append(AccountSpec(kind, {settlement: equity}, ((perp, size),), equity))
        elif kind == "future":
            lev = rng.uniform(1.5, 6.0)
            size = equity * lev / px * (1 if rng.random() < 0.6 else -1)
            out.append(AccountSpec(kind, {settlement: equity}, ((fut, size),), equity))
        elif kind == "basis":
            lev = rng.uniform(3.0, 20.0)
            size = equity * lev / px
            out.append(AccountSpec(kind, {settlement: equity}, ((perp, size), (fut, -size)), equity))
        elif kind == "cross_hedge":
            lev = rng.uniform(1.0, 4.0)
            notional = equity * lev
            out.append(
                AccountSpec(
                    kind,
                    {settlement: equity},
                    (("ETH-PERP", notional / prices["ETH"]), ("BTC-PERP", -notional / prices["BTC"])),
                    equity,
                )
            )
        else:  # collateral_long: the collateral is the asset it is long
            units = equity / px
            lev = rng.uniform(0.5, 4.0)
            out.append(AccountSpec(kind, {COLLATERAL_OF[und]: units}, ((perp, units * lev),), equity))
    return out
