"""The keeper's mirror of auto-deleveraging (`MarginEngine.deleverage`, rule in
`contracts/lib/engine_core.vy`), to the wei, and the ranking it proposes counterparties by.

All functions take and return Python ints: sizes in WAD units of the underlying (signed: long
> 0), prices and USD amounts in WAD.

- an account qualifies while the deficit a sale of its collateral would leave,
      U = -(equity + sale gain)
  (sale gain: what selling its collateral would raise above the haircut value) exceeds what the
  insurance fund and the backstop vault could pay (`CollateralVault.deficit_cover`); U is then
  recovered whole, which leaves them for the next bankrupt account
- the market's share of U, with N the position's notional and G the account's gross notional
  at index prices: need = ceil(U * N / G), so closing every position recovers U
- a counterparty (opposite side, in profit since its entry e, positive equity E) is ranked by
  profit times leverage (Hyperliquid's ADL queue):
      score = floor(floor(|P - e| * 1e18 / e) * floor(|size| * P / 1e18) / E)
  and, in turn, closes min(remaining, |its size|) at P + c against a bankrupt long (it is short),
  P - c against a bankrupt short, with c = min(ceil(need left * 1e18 / remaining), its profit
  per unit): what one cannot pay falls to the next, none gives back more than its profit, and
  what it still holds keeps its entry e
"""

from __future__ import annotations

from typing import NamedTuple

WAD = 10**18


def shortfall(equity: int, sale_gain: int) -> int:
    """The deficit a liquidation sale of the collateral would leave, WAD USD (<= 0: none)."""
    return -(equity + sale_gain)


def uncovered(equity: int, sale_gain: int, cover: int) -> int:
    """What `deleverage` recovers: the whole `shortfall` when the fund and the vault (`cover`)
    cannot pay it whole, else 0 (`deleverage` reverts "engine: deficit covered")."""
    need = shortfall(equity, sale_gain)
    return need if need > cover else 0


def market_need(uncovered_usd: int, notional: int, gross_notional: int) -> int:
    """The share of U one market's position recovers: ceil(U * N / G), WAD USD."""
    return -(-uncovered_usd * notional // gross_notional)


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


def fills(account_size: int, price: int, need: int, counterparties: list[tuple[int, int]]) -> list[Fill]:
    """The closes a `deleverage` makes of a position of `account_size` against `counterparties`
    ((size, entry price) each, in order) recovering `need`: each takes min(remaining, |its size|)
    at P +- min(ceil(need left * 1e18 / remaining), its profit per unit)."""
    out, remaining = [], abs(account_size)
    for size, entry in counterparties:
        if remaining == 0:
            break
        amount = min(remaining, abs(size))
        concession = min(-(-need * WAD // remaining), profit_per_unit(size, entry, price))
        need -= min(need, concession * amount // WAD)
        out.append(Fill(amount, price + concession) if account_size > 0 else Fill(-amount, price - concession))
        remaining -= amount
    return out


MAX_COUNTERPARTIES = 8  # constants.MAX_ADL_COUNTERPARTIES


def rank_counterparties(
    account: int, sizes: list[int], entry_prices: list[int], equity: list[int], price: int
) -> list[int]:
    """The accounts (indices) a `deleverage` of account `account` in one market proposes: every
    eligible opposite position by score, highest first (ties by index, the contract accepts
    either order), as many as close the account's position, at most MAX_COUNTERPARTIES.
    `sizes`, `entry_prices`, `equity` are per account in that market (WAD)."""
    size = sizes[account]
    scored = [
        (score(s, entry_prices[j], price, equity[j]), j)
        for j, s in enumerate(sizes)
        if j != account and s != 0 and (s > 0) != (size > 0)
    ]
    ranked = sorted(((sc, j) for sc, j in scored if sc > 0), key=lambda t: (-t[0], t[1]))
    chosen: list[int] = []
    covered = 0
    for _, j in ranked:
        if covered >= abs(size) or len(chosen) == MAX_COUNTERPARTIES:
            break
        chosen.append(j)
        covered += abs(sizes[j])
    return chosen


def apply_fills(
    account: int, sizes: list[int], entry_prices: list[int], equity: list[int], price: int, need: int, chosen: list[int]
) -> None:
    """Change `sizes` and `equity` (one market, per account) as a `deleverage` of account
    `account` against `chosen` would: each counterparty's position shrinks at its entry price
    and its equity falls by the concession it made; the account's position shrinks and its
    equity rises by as much. The keeper plans a block's later calls on the result (funding and
    wei rounding of the contract's valuation aside)."""
    done = fills(sizes[account], price, need, [(sizes[j], entry_prices[j]) for j in chosen])
    for j, f in zip(chosen, done):
        concession = abs(f.price - price) * abs(f.size) // WAD
        sizes[j] += f.size  # its entry price stays (`_reduce_keeping_entry`)
        equity[j] -= concession
        equity[account] += concession
        sizes[account] -= f.size
