"""The keeper's mirror of auto-deleveraging (`MarginEngine.nominate` and
`MarginEngine.deleverage`, rule in `contracts/lib/engine_core.vy`), to the wei, and the ranking it
nominates counterparties by.

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
- the counterparties are a round's nominees (`nominate`), taken highest score first (the first
  nominated on a tie, `turn_order`): a round opens with the first nomination of a bankrupt
  account's market, may be deleveraged from ADL_NOTICE seconds after and lapses ADL_ROUND_TIME
  seconds later; a full round admits a nominee only in place of a lower-ranked one
  (`admit`)
- while the account's rounds may still pay (`holds_liquidation`), nobody liquidates it into bad
  debt first
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np

if TYPE_CHECKING:
    from keeper.risk.margin import AccountBook, MarketTable

WAD = 10**18
T = TypeVar("T")  # a nominee: an account's address or its row


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


# contracts/lib/constants.vy (tests/keeper/test_adl_plan.py reads them from there)
MAX_COUNTERPARTIES = 8  # MAX_ADL_COUNTERPARTIES
NOTICE = 24  # ADL_NOTICE, seconds
ROUND_TIME = 600  # ADL_ROUND_TIME, seconds


def round_state(opened_at: int, now: int) -> str:
    """A round's state at block time `now`: "none" (never opened, deleveraged, or lapsed: the
    next nomination opens a new one), "notice" (nominations only) or "ready" (`deleverage` may
    run)."""
    if opened_at == 0 or now > opened_at + NOTICE + ROUND_TIME:
        return "none"
    return "ready" if now >= opened_at + NOTICE else "notice"


def holds_liquidation(now: int, deleveraged_at: int, rounds: list[tuple[int, list[int]]]) -> bool:
    """Whether an account's auto-deleveraging may still pay its deficit, so that `liquidate`
    refuses it ("engine: deleverage first") while the collateral sale, the insurance fund and
    the backstop vault cannot (`uncovered` > 0): the contract's `_adl_pending`. `rounds`: for
    each market it holds a position in (empty: flat, never held), the round's opening time and
    its nominees' `eligible_score` now. Held up to NOTICE seconds after its last deleveraging
    (`MarginEngine.deleveraged_at`; a next round may open) and while a round that has not
    lapsed has a nominee still eligible."""
    if not rounds:
        return False
    if now <= deleveraged_at + NOTICE:
        return True
    return any(round_state(opened_at, now) != "none" and any(s > 0 for s in scores) for opened_at, scores in rounds)


def eligible_score(size: int, entry_price: int, price: int, equity: int, account_size: int) -> int:
    """`score` of a position against a bankrupt one of `account_size`, 0 when it is on the
    same side (or flat): the contract's `_adl_score`."""
    if size == 0 or (size > 0) == (account_size > 0):
        return 0
    return score(size, entry_price, price, equity)


def turn_order(scores: list[int]) -> list[int]:
    """The order (indices into a round's nominees) `deleverage` takes the nominees with these
    current scores in: highest first, the first nominated on a tie, 0 (not eligible) never."""
    return sorted((k for k, s in enumerate(scores) if s > 0), key=lambda k: (-scores[k], k))


def admit(nominees: list[T], scores_now: list[int], candidate: T, candidate_score: int) -> list[T]:
    """The nominees after `nominate` adds `candidate` (scoring `candidate_score` > 0 now) to a
    round holding `nominees` (their scores now: `scores_now`): appended while the round has
    room; when full, in place of the lowest-ranked one (the first of equals) if it ranks
    above it; unchanged when already nominated or not above."""
    if candidate in nominees:
        return list(nominees)
    if len(nominees) < MAX_COUNTERPARTIES:
        return [*nominees, candidate]
    slot = min(range(len(scores_now)), key=lambda k: (scores_now[k], k))
    if candidate_score <= scores_now[slot]:
        return list(nominees)
    return [*nominees[:slot], candidate, *nominees[slot + 1 :]]


def rank_counterparties(
    account: int, sizes: list[int], entry_prices: list[int], equity: list[int], price: int
) -> list[int]:
    """The accounts (indices) the keeper nominates for a `deleverage` of account `account` in
    one market: every eligible opposite position by score, highest first (ties by index), at
    most MAX_COUNTERPARTIES. `sizes`, `entry_prices`, `equity` are per account in that market
    (WAD)."""
    size = sizes[account]
    scored = [
        (eligible_score(s, entry_prices[j], price, equity[j], size), j) for j, s in enumerate(sizes) if j != account
    ]
    ranked = sorted(((sc, j) for sc, j in scored if sc > 0), key=lambda t: (-t[0], t[1]))
    return [j for _, j in ranked[:MAX_COUNTERPARTIES]]


def in_turn(
    account: int, sizes: list[int], entry_prices: list[int], equity: list[int], price: int, nominees: list[int]
) -> list[int]:
    """A round's nominees (indices) in the order `deleverage` closes against them
    (`turn_order` of their scores now), the ineligible left out."""
    scores = [eligible_score(sizes[j], entry_prices[j], price, equity[j], sizes[account]) for j in nominees]
    return [nominees[k] for k in turn_order(scores)]


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


class BlockPlans:
    """One block's auto-deleveraging plans over a snapshot: per market the accounts' sizes and
    entry prices, and every account's equity (`equity`, set by the caller when first needed),
    changed by each plan as the contract will change them, so that the block's later plans see
    the earlier ones' fills. `book` a keeper.risk.margin.AccountBook, `markets` its MarketTable,
    `price_id` the oracle price id of each underlying, `prices` WAD index prices by price id,
    `now` the block's timestamp."""

    def __init__(self, book: "AccountBook", markets: "MarketTable", price_id: np.ndarray, prices: list[int], now: int):
        self.book, self.markets, self.price_id, self.prices, self.now = book, markets, price_id, prices, now
        self.equity: list[int] | None = None
        self._columns: dict[int, tuple[list[int], list[int]]] = {}
        self._uncovered: dict[int, int] = {}

    def _column(self, m: int) -> tuple[list[int], list[int]]:
        if m not in self._columns:
            self._columns[m] = ([int(x) for x in self.book.size[:, m]], [int(x) for x in self.book.entry_price[:, m]])
        return self._columns[m]

    def _price(self, m: int) -> int:
        return self.prices[int(self.price_id[int(self.markets.underlying[m])])]

    def holds_collateral(self, i: int) -> bool:
        """Whether account row `i` holds collateral (left for a liquidation sale once flat)."""
        return any(int(x) != 0 for x in self.book.collateral[i])

    def live_markets(self, i: int) -> dict[int, int]:
        """Account row `i`'s live positions in the block's view: market -> notional (WAD USD,
        floor(|size| x index), as the contract sums its gross notional)."""
        markets = self.markets
        live: dict[int, int] = {}
        for m in range(len(markets.underlying)):
            size = self._column(m)[0][i] if m in self._columns else int(self.book.size[i][m])
            expiry = 0 if markets.expiry is None else int(markets.expiry[m])
            if size == 0 or int(markets.settlement_price[m]) != 0 or (expiry != 0 and self.now >= expiry):
                continue
            live[m] = abs(size) * self._price(m) // WAD
        return live

    def nominees(self, i: int, market: int) -> list[int]:
        """The rows the keeper nominates for account row `i` in `market` in the block's view
        (`rank_counterparties`; empty: nobody is eligible)."""
        assert self.equity is not None, "set equity first"
        sizes, entries = self._column(market)
        return rank_counterparties(i, sizes, entries, self.equity, self._price(market))

    def scores(self, i: int, market: int, rows: list[int]) -> list[int]:
        """The `eligible_score` of each of `rows` against account row `i` in `market`, in the
        block's view."""
        assert self.equity is not None, "set equity first"
        sizes, entries = self._column(market)
        price = self._price(market)
        return [eligible_score(sizes[j], entries[j], price, self.equity[j], sizes[i]) for j in rows]

    def deleverage(self, i: int, uncovered: int, market: int, nominees: list[int]) -> list[int]:
        """The rows a `deleverage` of account row `i` in `market` closes against, in turn,
        from its round's `nominees` (`in_turn`; empty: none is eligible), and applies the
        fills. `uncovered`: what it needs recovered before this block's plans (its later plans
        use what the earlier ones leave)."""
        assert self.equity is not None, "set equity first"
        live = self.live_markets(i)
        if market not in live:
            return []
        sizes, entries = self._column(market)
        price = self._price(market)
        chosen = in_turn(i, sizes, entries, self.equity, price, nominees)
        if not chosen:
            return []
        left = self._uncovered.setdefault(i, uncovered)
        before = self.equity[i]
        apply_fills(i, sizes, entries, self.equity, price, market_need(left, live[market], sum(live.values())), chosen)
        self._uncovered[i] = left - (self.equity[i] - before)
        return chosen
