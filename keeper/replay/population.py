"""A seeded population of realistic accounts for the replay.

Kinds (DESIGN.md): leveraged longs and shorts on perpetuals, directional futures, basis trades
(long perpetual / short future on one underlying), cross-asset hedges (long ETH / short BTC),
and accounts whose collateral is the asset they are long (WETH collateral, long ETH). Equity is
log-normal around 10k USD; leverage is drawn per kind within what initial margin allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def make_population(n: int, prices: dict[str, float], seed: int = 0, settlement: str = "USDC") -> list[AccountSpec]:
    """`n` account specs sized at `prices` (USD per whole unit of ETH and BTC).

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
