"""The keeper's mirror of auto-deleveraging (`MarginEngine.deleverage`, rule in
`contracts/lib/engine_core.vy`), to the wei, and the ranking it proposes counterparties by.

All functions take and return Python ints: sizes in WAD units of the underlying (signed: long
> 0), prices and USD amounts in WAD.

- an account qualifies while its uncovered deficit is positive:
      U = -(equity + sale gain + cover)
  (sale gain: what selling its collateral would raise above the haircut value; cover: what the
  insurance fund and the backstop vault could pay, `CollateralVault.deficit_cover`)
- the bankruptcy discount per unit, with G the account's gross notional at index prices:
      d = ceil(P * U / G)
  so closing every position at P +- d recovers U
- a counterparty (opposite side, in profit since its entry e, positive equity E) is ranked by
  profit times leverage (Hyperliquid's ADL queue):
      score = floor(floor(|P - e| * 1e18 / e) * floor(|size| * P / 1e18) / E)
  and closes min(remaining, |its size|) at P + min(d, e - P) against a bankrupt long (it is
  short), P - min(d, P - e) against a bankrupt short: it never gives back more than its profit
"""

from __future__ import annotations

from typing import NamedTuple

WAD = 10**18


def uncovered(equity: int, sale_gain: int, cover: int) -> int:
    """The deficit neither the collateral sale nor the fund and the vault cover (WAD USD; > 0
    means `deleverage` may run)."""
    return -(equity + sale_gain + cover)


def bankruptcy_discount(price: int, uncovered_usd: int, gross_notional: int) -> int:
    """d = ceil(P * U / G), WAD USD per unit."""
    return -(-price * uncovered_usd // gross_notional)


def profit_per_unit(size: int, entry_price: int, price: int) -> int:
    """A position's price gain per unit since its entry (0 when it has none)."""
    return max(price - entry_price, 0) if size > 0 else max(entry_price - price, 0)


def score(size: int, entry_price: int, price: int, equity: int) -> int:
    """The ADL rank of an opposite position (WAD); 0 when it is not eligible (no profit since
    entry or equity not positive), which the contract refuses."""
    profit = profit_per_unit(size, entry_price, price)
    if profit == 0 or equity <= 0:
        return 0
    return profit * WAD // entry_price * (abs(size) * price // WAD) // equity


class Fill(NamedTuple):
    size: int  # signed, in the bankrupt account's direction (what it gives up)
    price: int  # WAD USD per unit


def fill(
    account_size: int, remaining: int, counterparty_size: int, entry_price: int, price: int, discount: int
) -> Fill:
    """The close one counterparty takes: min(remaining, |its size|) at the bankruptcy price,
    capped at its entry."""
    amount = min(remaining, abs(counterparty_size))
    concession = min(discount, profit_per_unit(counterparty_size, entry_price, price))
    if account_size > 0:
        return Fill(amount, price + concession)
    return Fill(-amount, price - concession)
