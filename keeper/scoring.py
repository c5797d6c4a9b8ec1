"""Event-driven re-scoring: which accounts the keeper must value again at a block, and their
valuation (a float screen, then the exact mirror for those it cannot clear).

The full re-score values every account every block (`keeper.risk.margin.margin`). Most accounts
are far from maintenance margin and nothing that moves their margin changed, so `RescoreIndex`
keeps, per account, what it is exposed to and how far those inputs may move before it could
become liquidatable, and re-scores at each block only:

- accounts whose raw state changed (a trade, a deposit or withdrawal, a liquidation: rows of the
  block's book that differ from the last one), and new accounts;
- accounts exposed to an input that moved far enough. The inputs are the oracle's index prices
  (by price id: the underlyings of the markets an account holds, the price ids of the collateral
  it holds, the settlement asset's price id when it has cash) and the funding index of each
  market it holds. At its last score each account gets a budget, `headroom_fraction` x (equity -
  MM), and a sensitivity to each input (|d(equity - MM)/d input|: equity and MM are linear in
  prices and funding indices, so the bound is exact up to float rounding). The account is due as
  soon as sum(sensitivity x |input now - input at its last score|) reaches its budget: before
  that, equity - MM cannot have crossed zero, so the full re-score would not liquidate it either;
- the high-risk tier (health below `high_risk_health` at the last score, and every account that
  was liquidatable or unpriced): on every block in which any of its inputs changed at all, and on
  every block while it is liquidatable;
- everyone else on a schedule, at least every `rescore_every_blocks` blocks (after a resync the
  accounts are spread over those blocks, about N / K a block); and everyone at a
  full resync every `resync_every_blocks` blocks, when the risk parameters or the market table's
  settlement prices or expiries change, and after `reset()` (a reorg).

Accounts holding a future in its last 7 days (its netting credit fades with time, not price) are
due every block.

`score_rows` values the due rows: `margin_float` first; rows whose float headroom (equity - MM)
is not clearly positive (within a relative slack of the account's gross amounts, far above float
error) are confirmed with the exact `margin`, whose flags and numbers are the ones the keeper
acts on. A row cleared by the float screen is not liquidatable under the exact mirror either.

Pure: numpy arrays and dataclasses in and out, no I/O; `keeper.bot` drives it from the block's
snapshot and `benchmarks/keeper.py` from a synthetic book.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from keeper.risk.margin import EXPIRY_RAMP, AccountBook, MarketTable, RiskParams, as_prices, margin, margin_float

# float screen: a row is confirmed exactly unless its float headroom exceeds this fraction of its
# gross amounts (float64 errors are ~1e-15 of them) plus an absolute floor in WAD USD
SCREEN_SLACK = 1e-9
SCREEN_FLOOR = 1e6

__all__ = ["Rescore", "RescoreIndex", "ScoreResult", "score_rows", "sensitivities", "sub_book"]


def sub_book(book: AccountBook, rows: np.ndarray) -> AccountBook:
    """The accounts `rows` of `book` as a book of their own."""
    return AccountBook(
        cash=book.cash[rows],
        collateral=book.collateral[rows],
        size=book.size[rows],
        entry_price=book.entry_price[rows],
        funding_index=book.funding_index[rows],
    )


@dataclass(frozen=True)
class ScoreResult:
    """The valuation of rows `rows` of a book. `liquidatable` bool, `health` float64 (inf = no
    MM), `headroom` and `gross` float64 WAD USD, per row; `exact_rows` (indices into `rows`) were
    confirmed with the exact mirror, whose equity and health are in `equity` / `exact_health`
    (dicts keyed by the book row)."""

    rows: np.ndarray
    liquidatable: np.ndarray
    health: np.ndarray
    headroom: np.ndarray
    priced: np.ndarray
    equity: dict[int, int]
    exact_health: dict[int, int]
    confirmed: int
    # `sensitivities` of the rows at the prices they were valued at (W, gross, held), which
    # `RescoreIndex.record` stores: computed once per valuation
    sensitivity: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def sensitivities(
    book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, gross, held): W float64 (N, P + M), an upper bound of |d(equity - MM)/d input| per
    account for each input (P index prices by price id, then M markets' funding indices), WAD
    USD per WAD unit of input; gross float64 (N,), the account's gross amounts (cash, collateral
    value, position notional, MM) in WAD USD; held bool (N, P + M), the inputs the account is
    exposed to (it holds the market or asset, or cash on a priced settlement asset)."""
    prices = as_prices(prices)
    cash, coll, size, _, _ = book._floats
    n, n_p, n_m = book.n_accounts, len(prices), markets.n_markets
    pf = prices.astype(np.float64)
    w = np.zeros((n, n_p + n_m))
    held = np.zeros((n, n_p + n_m), dtype=bool)
    # collateral: d value / d price = balance x haircut / (10**decimals x 1e18)
    for a in range(params.n_assets):
        k = int(params.asset_price_id[a])
        factor = float(params.asset_haircut[a]) / (10.0 ** int(params.asset_decimals[a]) * 1e18)
        w[:, k] += coll[:, a] * factor
        held[:, k] |= coll[:, a] != 0
    # cash on a priced settlement asset (the depeg rule): at most |cash| x (1 + factor) / 1e18
    sid = params.settlement_price_id
    if 0 <= sid < n_p:
        w[:, sid] += np.abs(cash) * (1.0 + params.depeg_factor / 1e18) / 1e18
        held[:, sid] |= cash != 0
    live = markets.live
    left = np.array(markets.netting_left, dtype=np.float64) / EXPIRY_RAMP
    mm_notional = np.zeros(n)
    for u in range(params.n_underlyings):
        k = int(params.price_id[u])
        ms = [m for m in range(n_m) if live[m] and int(markets.underlying[m]) == u]
        if not ms:
            continue
        sub = size[:, ms]
        netted = sub * left[ms]
        signed = netted.sum(axis=1)
        longs = np.maximum(netted, 0.0).sum(axis=1)
        offset = np.minimum(longs, longs - signed)
        alone = (np.abs(sub) * (1.0 - left[ms])).sum(axis=1)
        mm_units = (np.abs(signed) + alone) * float(params.mm_rate[u]) + offset * float(params.spread_mm_rate[u])
        # pnl: d/dp = sum of sizes (one price for every market of the underlying); MM: MM_u / p_u
        w[:, k] += np.abs(sub.sum(axis=1)) / 1e18 + mm_units / 1e36
        held[:, k] |= (sub != 0).any(axis=1)
        mm_notional += mm_units * pf[k] / 1e36
    # funding: d equity / d F_m = -size / 1e18
    w[:, n_p:] = np.abs(size) / 1e18
    held[:, n_p:] = size != 0
    gross = np.abs(cash) + (w[:, :n_p] * pf).sum(axis=1) + mm_notional
    return w, gross, held


def score_rows(
    book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any, rows: np.ndarray
) -> ScoreResult:
    """Value rows `rows` of `book`: the float screen, then the exact mirror where the float
    headroom is not clearly positive. `liquidatable` is the exact flag wherever it can be true."""
    rows = np.asarray(rows, dtype=np.int64)
    sub = sub_book(book, rows) if len(rows) != book.n_accounts else book
    f = margin_float(sub, markets, params, prices)
    w, gross, held = sensitivities(sub, markets, params, prices)
    headroom = np.asarray(f.equity - f.maintenance_margin, dtype=np.float64)
    confirm = np.flatnonzero(~(headroom > SCREEN_SLACK * gross + SCREEN_FLOOR))
    liquidatable = np.zeros(len(rows), dtype=bool)
    priced = np.ones(len(rows), dtype=bool)
    health = np.asarray(f.health_factor, dtype=np.float64) / 1e18
    equity: dict[int, int] = {}
    exact_health: dict[int, int] = {}
    if len(confirm):
        exact = margin(sub_book(sub, confirm), markets, params, prices)
        liquidatable[confirm] = exact.liquidatable
        priced[confirm] = exact.priced
        for j, e, mm, h in zip(
            confirm.tolist(), exact.equity.tolist(), exact.maintenance_margin.tolist(), exact.health_factor.tolist()
        ):
            equity[int(rows[j])] = int(e)
            exact_health[int(rows[j])] = int(h)
            headroom[j] = float(e - mm)
    return ScoreResult(
        rows, liquidatable, health, headroom, priced, equity, exact_health, len(confirm), (w, gross, held)
    )


@dataclass
class Rescore:
    """One block's plan: `rows` to value (high-risk tier first), and why (counts)."""

    rows: np.ndarray
    full: bool
    changed: int = 0
    moved: int = 0
    high_risk: int = 0
    scheduled: int = 0


@dataclass
class RescoreIndex:
    """Per-account exposure, sensitivities and budgets; plans which rows to value each block.

    Call `plan(block, accounts, book, markets, params, prices)` with the block's snapshot, value
    the planned rows (`score_rows`), then `record(...)` with the result. The index keeps the
    accounts in the order given (`accounts`, e.g. sorted); a change of the list is handled by
    aligning rows by account."""

    high_risk_health: float = 1.25
    rescore_every_blocks: int = 20
    resync_every_blocks: int = 200
    headroom_fraction: float = 0.5
    accounts: tuple[str, ...] = ()
    _book: AccountBook | None = None
    _inputs_ref: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, P+M) at last score
    _w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    _held: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    _budget: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _high: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    _last: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _prev_inputs: np.ndarray | None = None
    _market_key: tuple[Any, ...] | None = None
    _params_key: tuple[Any, ...] | None = None
    _resynced_at: int | None = None
    _stagger: bool = False  # the last plan was a full resync: spread the next schedule over K blocks

    def reset(self) -> None:
        """Forget everything: the next plan is a full resync (a reorg, a failed pass)."""
        self.accounts, self._book, self._prev_inputs, self._resynced_at = (), None, None, None

    def exposed(self, price_id: int) -> list[str]:
        """The accounts exposed to `price_id` (by their state at their last score)."""
        if not len(self._held) or price_id >= self._held.shape[1]:
            return []
        return [self.accounts[i] for i in np.flatnonzero(self._held[:, price_id])]

    @staticmethod
    def _inputs(markets: MarketTable, prices: Any) -> np.ndarray:
        p = as_prices(prices).astype(np.float64)
        return np.concatenate([p, markets.funding_index.astype(np.float64)])

    def _align(self, accounts: tuple[str, ...], book: AccountBook) -> np.ndarray:
        """Carry the per-account state over to the new account list; returns bool (N,): rows
        that are new or whose raw state differs from the last block's."""
        n = len(accounts)
        old = self._book
        if old is not None and accounts == self.accounts:
            changed = np.asarray(book.cash != old.cash, dtype=bool).reshape(n)
            for name in ("collateral", "size", "entry_price", "funding_index"):
                new_m, old_m = getattr(book, name), getattr(old, name)
                if new_m.shape != old_m.shape:
                    return np.ones(n, dtype=bool)
                if new_m.shape[1]:
                    changed |= np.asarray(new_m != old_m, dtype=bool).any(axis=1)
            return changed
        changed = np.ones(n, dtype=bool)
        width = self._w.shape[1] if self._w.ndim == 2 else 0
        inputs_ref = np.zeros((n, width))
        w, held = np.zeros((n, width)), np.zeros((n, width), dtype=bool)
        budget, high, last = np.zeros(n), np.ones(n, dtype=bool), np.full(n, -1, dtype=np.int64)
        if old is not None:
            where = {a: i for i, a in enumerate(self.accounts)}
            pairs = [(j, where[a]) for j, a in enumerate(accounts) if a in where]
            if pairs:
                new_rows = np.array([p[0] for p in pairs])
                old_rows = np.array([p[1] for p in pairs])
                inputs_ref[new_rows], w[new_rows], held[new_rows] = (
                    self._inputs_ref[old_rows],
                    self._w[old_rows],
                    self._held[old_rows],
                )
                budget[new_rows], high[new_rows], last[new_rows] = (
                    self._budget[old_rows],
                    self._high[old_rows],
                    self._last[old_rows],
                )
                same = np.asarray(book.cash[new_rows] != old.cash[old_rows], dtype=bool)
                for name in ("collateral", "size", "entry_price", "funding_index"):
                    a_m, b_m = getattr(book, name)[new_rows], getattr(old, name)[old_rows]
                    if a_m.shape[1]:
                        same |= np.asarray(a_m != b_m, dtype=bool).any(axis=1)
                changed[new_rows] = same
        self._inputs_ref, self._w, self._held = inputs_ref, w, held
        self._budget, self._high, self._last = budget, high, last
        return changed

    def plan(
        self,
        block: int,
        accounts: Sequence[str],
        book: AccountBook,
        markets: MarketTable,
        params: RiskParams,
        prices: Any,
        changed_rows: np.ndarray | None = None,
    ) -> Rescore:
        """The rows of `book` (accounts in `accounts` order) to value at `block`.

        `changed_rows` int (K,): the rows whose raw state differs from the last plan's book, when
        the caller knows them (`keeper.chain.state_cache` does, from the block's logs); None =
        compare the two books row by row (O(N x columns) comparisons of Python ints). Used only
        when the account list is the last plan's."""
        accounts = tuple(accounts)
        n = len(accounts)
        inputs = self._inputs(markets, prices)
        market_key = (tuple(markets.settlement_price.tolist()), tuple(markets.expiry.tolist()))
        params_key = tuple(
            tuple(np.asarray(getattr(params, f)).tolist())
            for f in (
                "price_id", "im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate",
                "asset_price_id", "asset_decimals", "asset_haircut",
            )
        ) + (params.settlement_price_id, params.depeg_threshold, params.depeg_factor)  # fmt: skip
        full = (
            self._book is None
            or self._resynced_at is None
            or block - self._resynced_at >= self.resync_every_blocks
            or block < self._resynced_at
            or market_key != self._market_key
            or params_key != self._params_key
            or self._w.shape[1] != len(inputs)
        )
        self._market_key, self._params_key = market_key, params_key
        if full:
            self._resynced_at = block
            self.accounts, self._book = accounts, book
            self._prev_inputs = inputs
            width = len(inputs)
            self._inputs_ref, self._w = np.zeros((n, width)), np.zeros((n, width))
            self._held = np.zeros((n, width), dtype=bool)
            self._budget, self._high = np.zeros(n), np.ones(n, dtype=bool)
            self._last = np.full(n, -1, dtype=np.int64)
            self._stagger = True
            return Rescore(np.arange(n, dtype=np.int64), True, changed=n)
        if changed_rows is not None and accounts == self.accounts and self._book is not None:
            changed = np.zeros(n, dtype=bool)
            changed[np.asarray(changed_rows, dtype=np.int64)] = True
        else:
            changed = self._align(accounts, book)
        self.accounts, self._book = accounts, book
        prev = self._prev_inputs if self._prev_inputs is not None else inputs
        self._prev_inputs = inputs
        # moved: worst-case change of equity - MM since each account's last score
        drift = (self._w * np.abs(inputs[None, :] - self._inputs_ref)).sum(axis=1)
        moved = ~(drift < self._budget)
        ticked = np.flatnonzero(inputs != prev)
        high = self._high & (self._held[:, ticked].any(axis=1) if len(ticked) else False)
        # a future in its last week: its netting credit fades with time, not price
        fading = [m for m, left in enumerate(markets.netting_left) if left < EXPIRY_RAMP and markets.live[m]]
        if fading:
            moved |= np.asarray(book.size[:, fading] != 0, dtype=bool).any(axis=1)
        scheduled = (block - self._last) >= self.rescore_every_blocks
        due = changed | moved | high | scheduled
        rows = np.flatnonzero(due)
        # the high-risk tier first (the accounts nearest maintenance margin), then the rest
        rows = rows[np.argsort(~self._high[rows], kind="stable")]
        return Rescore(
            rows, False, int(changed.sum()), int((moved & ~changed).sum()), int(high.sum()), int(scheduled.sum())
        )

    def record(
        self,
        block: int,
        book: AccountBook,
        markets: MarketTable,
        params: RiskParams,
        prices: Any,
        result: ScoreResult,
    ) -> None:
        """Store the budgets and sensitivities of the rows just valued."""
        rows = result.rows
        if not len(rows):
            return
        if result.sensitivity is not None:
            w, gross, held = result.sensitivity
        else:
            sub = sub_book(book, rows) if len(rows) != book.n_accounts else book
            w, gross, held = sensitivities(sub, markets, params, prices)
        budget = self.headroom_fraction * result.headroom - SCREEN_SLACK * gross - SCREEN_FLOOR
        unsafe = result.liquidatable | ~result.priced | ~(budget > 0)
        self._w[rows], self._held[rows] = w, held
        self._inputs_ref[rows] = self._inputs(markets, prices)[None, :]
        self._budget[rows] = np.where(unsafe, 0.0, budget)
        self._high[rows] = unsafe | (result.health < self.high_risk_health)
        if self._stagger:  # after a resync, not everyone at once K blocks later: rows spread over K
            self._last[rows] = block - rows % self.rescore_every_blocks
            self._stagger = False
        else:
            self._last[rows] = block
