"""Standard cross-margin of every account at once: the keeper's mirror of `MarginEngine.margin_summary`.

Formulas (the `MarginEngine` contract notice, `_margin`, `_position_value`, `_charge`, `_health`,
and `CollateralVault._collateral_value`), all amounts WAD (1e18) USD unless stated:

- collateral value = sum over assets a of floor(balance_a * price_a * haircut_a / (10**decimals_a * 1e18))
- cash value       = the depeg rule (`CollateralVault._cash_value`; Derive v2 StandardManager depeg
  parameters), with p the settlement asset's index price when its price id is set and valid:
      cash >= 0: floor(cash * max(0, min(p, 1e18) * 1e18 - factor * max(threshold - p, 0)) / 1e36)
      cash < 0:  floor(cash * max(p, 1e18) / 1e18)   (debt at par or worse, rounded up in size)
  and cash itself (1:1) when no settlement price id is set or p == 0
- position value   = floor(size * (mark - entry) / 1e18) - ceil(size * (F - F_entry) / 1e18), with
  mark = the settlement price of a settled future, else the index price of its underlying, and F the
  market's funding index accrued to now (as `MarginEngine.market_states()` returns it)
- equity           = cash value + collateral value + sum of position values (may be negative)
- per underlying u, over its live (unsettled) positions: L = sum of long sizes, S = sum of short sizes,
  A = the part of futures in their last 7 days that no longer nets (size - trunc(size * time to
  expiry / 7 days); the whole future once expired; CME SPAN spot-month charge),
      IM_u = ceil(|L - S| * P * im_rate / 1e36) + ceil(min(L, S) * P * spread_im_rate / 1e36)
             + ceil(A * P * im_rate / 1e36)
      MM_u = the same with mm_rate and spread_mm_rate
  (net notional at the underlying's rate: Derive / Lyra v2 standard manager per-market rates; offset
  notional at a spread rate: CME SPAN inter-month spread charge). IM and MM sum over underlyings.
- health factor    = floor(equity * 1e18 / MM); 0 when equity <= 0; max uint256 when MM == 0 and
  equity >= 0 (nothing to maintain). Liquidatable when equity < MM.

Rounding favours the protocol (requirements up, equity down), exactly as on chain, so `margin`
equals the contract to the wei. It works on numpy object arrays of Python ints (arbitrary precision,
no overflow) and is vectorized over accounts: its Python loops run over blocks of accounts, assets,
markets and underlyings, never over single accounts. `margin_float` is the same in float64 for fast
screening (not exact); `margin_loop` is the naive per-account, per-position loop (benchmark baseline
and a second implementation for tests); `isolated_initial_margin` margins every position alone
(cross vs isolated capital efficiency).

An `AccountBook` holds positions as a dense (accounts x markets) matrix, 0 = no position (on chain
an account holds at most 8 of at most 16 markets). The exact path works from a per-market view of the
held positions, built once per book, so its cost follows the positions held. Pure: no I/O.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from keeper.units import MAX_UINT256, WAD, mul_div_up

WAD2 = WAD * WAD
# `MarginEngine.EXPIRY_RAMP`: a future's netting credit fades over its last 7 days
EXPIRY_RAMP = 7 * 86400

__all__ = [
    "AccountBook",
    "FloatMarginResult",
    "MarginResult",
    "MarketTable",
    "RiskParams",
    "Valuation",
    "as_prices",
    "cash_value",
    "isolated_initial_margin",
    "margin",
    "margin_float",
    "margin_loop",
    "valuation",
]


# ---------------------------------------------------------------- coercion


def _exact(x: Any, name: str, ndim: int) -> np.ndarray:
    """A read-only object array of Python ints with `ndim` dimensions.

    Raises TypeError for non-integer elements (floats would silently lose wei) and ValueError for a
    wrong number of dimensions. numpy integers become Python ints: an int64 times a WAD overflows.
    """
    arr = np.array(x, dtype=object)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {arr.shape}")
    types = set(map(type, arr.flat))
    if types - {int}:
        if not all(issubclass(t, (int, np.integer)) and t is not bool for t in types):
            bad = sorted(t.__name__ for t in types if not issubclass(t, (int, np.integer)) or t is bool)
            raise TypeError(f"{name}: elements must be integers, got {', '.join(bad)}")
        arr = np.frompyfunc(int, 1, 1)(arr).astype(object).reshape(arr.shape)
    arr.flags.writeable = False
    return arr


def _index(x: Any, name: str) -> np.ndarray:
    """A read-only int64 (K,) array of ids.

    The elements are checked before numpy converts them: `np.asarray([True, 1])` is already an int
    array. Raises TypeError for non-integers (bools included) and ValueError for a wrong number of
    dimensions, a negative id or one beyond int64.
    """
    items = np.array(x, dtype=object)
    if items.size == 0:
        items = items.reshape(-1)
    if items.ndim != 1:
        raise ValueError(f"{name}: expected 1 dimension, got shape {items.shape}")
    values = items.tolist()
    bad = sorted({type(v).__name__ for v in values if not isinstance(v, (int, np.integer)) or isinstance(v, bool)})
    if bad:
        raise TypeError(f"{name}: elements must be integers, got {', '.join(bad)}")
    values = [int(v) for v in values]
    if any(v < 0 for v in values):
        raise ValueError(f"{name}: negative id")
    if any(v > np.iinfo(np.int64).max for v in values):
        raise ValueError(f"{name}: id above 2**63 - 1")
    arr = np.array(values, dtype=np.int64).reshape(-1)
    arr.flags.writeable = False
    return arr


def _check_nonnegative(arr: np.ndarray, name: str) -> None:
    """A uint256 on chain: 0 <= value <= 2**256 - 1."""
    if arr.size and (arr < 0).any():
        raise ValueError(f"{name}: negative value (a uint256 on chain)")
    if arr.size and (arr > MAX_UINT256).any():
        raise ValueError(f"{name}: value above max uint256 (2**256 - 1)")


def _objects(values: Iterable[Any]) -> np.ndarray:
    """A 1-D object array of `values` as given (the dataclasses check and convert them)."""
    return np.array(list(values), dtype=object)


def as_prices(prices: Any) -> np.ndarray:
    """Index prices as a read-only object (P,) array of Python ints (WAD USD per whole unit), by
    price id, as `OracleRouter.index_prices()` returns them. Raises TypeError / ValueError."""
    arr = _exact(prices, "prices", 1)
    _check_nonnegative(arr, "prices")
    return arr


# ---------------------------------------------------------------- data model


class _UnderlyingLike(Protocol):
    @property
    def price_id(self) -> int: ...
    @property
    def im_rate(self) -> int: ...
    @property
    def mm_rate(self) -> int: ...
    @property
    def spread_im_rate(self) -> int: ...
    @property
    def spread_mm_rate(self) -> int: ...


class _AssetLike(Protocol):
    @property
    def price_id(self) -> int: ...
    @property
    def decimals(self) -> int: ...
    @property
    def haircut(self) -> int: ...


class _DepegLike(Protocol):
    @property
    def price_id(self) -> int: ...
    @property
    def threshold(self) -> int: ...
    @property
    def factor(self) -> int: ...


class ListingLike(Protocol):
    """What :meth:`RiskParams.from_config` reads of a protocol listing: the fields of
    `keeper.config.ProtocolConfig` it uses (WAD integers), without this module importing the config
    loader. Any object with these attributes fits."""

    @property
    def underlyings(self) -> Sequence[_UnderlyingLike]: ...
    @property
    def assets(self) -> Sequence[_AssetLike]: ...
    @property
    def depeg(self) -> _DepegLike | None: ...


@dataclass(frozen=True, eq=False)
class RiskParams:
    """Margin parameters of U underlyings and A collateral assets (the engine's `underlyings(u)` and
    the vault's `assets(a)`).

    Per underlying (shape (U,)): `price_id` int64, the oracle price id of its index; `im_rate`,
    `mm_rate` (rates on net notional), `spread_im_rate`, `spread_mm_rate` (rates on offset notional)
    object arrays of Python ints, WAD fractions.
    Per asset (shape (A,), asset id order): `asset_price_id` int64, `asset_decimals` int64 (token
    decimals, 0..18), `asset_haircut` object, WAD fraction of value counted as margin.
    Settlement asset (the vault's depeg rule): `settlement_price_id` its oracle price id, -1 when
    unset (cash counts 1:1); `depeg_threshold`, `depeg_factor` WAD ints.

    Arrays are copied and made read-only. Raises TypeError (non-integers) or ValueError (shapes,
    negative values, decimals outside 0..18).
    """

    price_id: np.ndarray
    im_rate: np.ndarray
    mm_rate: np.ndarray
    spread_im_rate: np.ndarray
    spread_mm_rate: np.ndarray
    asset_price_id: np.ndarray
    asset_decimals: np.ndarray
    asset_haircut: np.ndarray
    settlement_price_id: int = -1
    depeg_threshold: int = 0
    depeg_factor: int = 0

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        for name in ("settlement_price_id", "depeg_threshold", "depeg_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"{name}: must be an integer, got {type(value).__name__}")
            set_(name, int(value))
        if self.settlement_price_id < -1:
            raise ValueError("settlement_price_id: -1 (unset) or a price id")
        if self.depeg_threshold < 0 or self.depeg_factor < 0:
            raise ValueError("depeg_threshold / depeg_factor: negative value (a uint256 on chain)")
        set_("price_id", _index(self.price_id, "price_id"))
        for name in ("im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate", "asset_haircut"):
            arr = _exact(getattr(self, name), name, 1)
            _check_nonnegative(arr, name)
            set_(name, arr)
        set_("asset_price_id", _index(self.asset_price_id, "asset_price_id"))
        set_("asset_decimals", _index(self.asset_decimals, "asset_decimals"))
        u, a = self.price_id.shape, self.asset_price_id.shape
        for name in ("im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate"):
            if getattr(self, name).shape != u:
                raise ValueError(f"{name}: shape {getattr(self, name).shape}, expected {u} like price_id")
        for name in ("asset_decimals", "asset_haircut"):
            if getattr(self, name).shape != a:
                raise ValueError(f"{name}: shape {getattr(self, name).shape}, expected {a} like asset_price_id")
        if (self.asset_decimals > 18).any():
            raise ValueError("asset_decimals: above 18 (the vault lists 0..18)")

    @property
    def n_underlyings(self) -> int:
        return len(self.price_id)

    @property
    def n_assets(self) -> int:
        return len(self.asset_price_id)

    @classmethod
    def from_config(cls, config: ListingLike) -> "RiskParams":
        """The parameters a deployment of `config` (a `keeper.config.ProtocolConfig`, or anything
        with the same fields: :class:`ListingLike`) lists (`keeper.chain.deploy.deploy_protocol`
        lists underlyings and assets in config order, so ids are config indices)."""
        us, assets = config.underlyings, config.assets
        depeg = config.depeg
        return cls(
            price_id=_objects([u.price_id for u in us]),
            im_rate=_objects([u.im_rate for u in us]),
            mm_rate=_objects([u.mm_rate for u in us]),
            spread_im_rate=_objects([u.spread_im_rate for u in us]),
            spread_mm_rate=_objects([u.spread_mm_rate for u in us]),
            asset_price_id=_objects([a.price_id for a in assets]),
            asset_decimals=_objects([a.decimals for a in assets]),
            asset_haircut=_objects([a.haircut for a in assets]),
            settlement_price_id=-1 if depeg is None else depeg.price_id,
            depeg_threshold=0 if depeg is None else depeg.threshold,
            depeg_factor=0 if depeg is None else depeg.factor,
        )


@dataclass(frozen=True, eq=False)
class MarketTable:
    """M markets by market id (shape (M,)).

    `underlying` int64: the market's underlying id. `settlement_price` object: WAD settlement price
    of a settled future, 0 while the market is live. `funding_index` object: the cumulative funding
    index accrued to NOW (WAD USD per unit of size), as `MarginEngine.market_states()` returns it; 0
    for futures. `expiry` int (M,): unix expiry of a future, 0 for a perpetual (None: no futures
    near expiry). `timestamp`: the block time the state was read at (unix seconds), which sets how
    much of a future in its last 7 days still nets. Arrays are copied and made read-only; raises
    TypeError / ValueError.
    """

    underlying: np.ndarray
    settlement_price: np.ndarray
    funding_index: np.ndarray
    expiry: Any = None
    timestamp: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "underlying", _index(self.underlying, "underlying"))
        object.__setattr__(self, "settlement_price", _exact(self.settlement_price, "settlement_price", 1))
        object.__setattr__(self, "funding_index", _exact(self.funding_index, "funding_index", 1))
        expiry = np.zeros(len(self.underlying), dtype=object) if self.expiry is None else self.expiry
        object.__setattr__(self, "expiry", _exact(expiry, "expiry", 1))
        if not isinstance(self.timestamp, (int, np.integer)) or self.timestamp < 0:
            raise ValueError(f"timestamp must be a non-negative integer, got {self.timestamp!r}")
        _check_nonnegative(self.settlement_price, "settlement_price")
        _check_nonnegative(self.expiry, "expiry")
        m = self.underlying.shape
        if self.settlement_price.shape != m or self.funding_index.shape != m or self.expiry.shape != m:
            raise ValueError(f"markets: shapes {m}, {self.settlement_price.shape}, {self.funding_index.shape} differ")

    @property
    def n_markets(self) -> int:
        return len(self.underlying)

    @property
    def live(self) -> np.ndarray:
        """bool (M,): not settled (its positions count towards margin requirements)."""
        live: np.ndarray = self.settlement_price == 0
        return live

    @property
    def netting_left(self) -> list[int]:
        """Per market, seconds of netting credit left out of EXPIRY_RAMP: EXPIRY_RAMP for a
        perpetual or a future more than 7 days from expiry, 0 once expired."""
        out = []
        for e in self.expiry.tolist():
            left = EXPIRY_RAMP if e == 0 else max(0, min(EXPIRY_RAMP, e - int(self.timestamp)))
            out.append(left)
        return out

    @classmethod
    def from_states(cls, states: Sequence[Sequence[Any]], timestamp: int) -> "MarketTable":
        """From `MarginEngine.market_states()`: a sequence of (underlying, is_perpetual, expiry,
        settlement_price, funding_rate, funding_index), read by position so titanoboa structs and
        web3 tuples both work, at block time `timestamp`."""
        return cls(
            underlying=_objects(s[0] for s in states),
            settlement_price=_objects(s[3] for s in states),
            funding_index=_objects(s[5] for s in states),
            expiry=_objects(0 if s[1] else s[2] for s in states),
            timestamp=int(timestamp),
        )


@dataclass(frozen=True, eq=False)
class _Column:
    """The K accounts holding a position in one market: rows int64 (K,), and object (K,) arrays
    size, entry_price, funding_index, longs (= max(size, 0))."""

    rows: np.ndarray
    size: np.ndarray
    entry_price: np.ndarray
    funding_index: np.ndarray
    longs: np.ndarray


@dataclass(frozen=True, eq=False)
class AccountBook:
    """N accounts' margin inputs.

    `cash` object (N,): WAD USD, signed (negative = debt). `collateral` object (N, A): balances in
    token units (each asset's own decimals), asset id order. `size` object (N, M): signed WAD units of
    the underlying per market, 0 = no position. `entry_price` object (N, M): WAD. `funding_index`
    object (N, M): the funding index at which each position last settled funding.

    Arrays are copied and made read-only: the exact path's per-market view of held positions and
    the float path's float64 copy are built on first use and cached. Raises TypeError / ValueError
    for non-integers, inconsistent shapes, or negative balances / entry prices.
    """

    cash: np.ndarray
    collateral: np.ndarray
    size: np.ndarray
    entry_price: np.ndarray
    funding_index: np.ndarray

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("cash", _exact(self.cash, "cash", 1))
        for name in ("collateral", "size", "entry_price", "funding_index"):
            set_(name, _exact(getattr(self, name), name, 2))
        n = len(self.cash)
        if self.collateral.shape[0] != n:
            raise ValueError(f"collateral: {self.collateral.shape[0]} rows for {n} accounts")
        for name in ("size", "entry_price", "funding_index"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name}: {getattr(self, name).shape[0]} rows for {n} accounts")
        if self.entry_price.shape != self.size.shape or self.funding_index.shape != self.size.shape:
            raise ValueError("size, entry_price and funding_index must have the same (N, M) shape")
        _check_nonnegative(self.collateral, "collateral")
        _check_nonnegative(self.entry_price, "entry_price")

    @property
    def n_accounts(self) -> int:
        return len(self.cash)

    @functools.cached_property
    def _columns(self) -> tuple[_Column, ...]:
        # the held positions of each market, built once per book: the exact path's cost then
        # scales with positions held, not accounts x markets (an account holds at most 8 of 16)
        # (`* 1` makes fresh int objects, allocated side by side: big-int arithmetic over a large
        # book is bound by memory latency, and locality makes it about twice as fast)
        held = np.asarray(self.size != 0, dtype=bool)
        out = []
        for m in range(self.size.shape[1]):
            rows = np.flatnonzero(held[:, m])
            size = self.size[rows, m] * 1
            longs = np.where(size > 0, size, 0)
            out.append(_Column(rows, size, self.entry_price[rows, m] * 1, self.funding_index[rows, m] * 1, longs))
        return tuple(out)

    @functools.cached_property
    def _floats(self) -> tuple[np.ndarray, ...]:
        # converted once per book: screening re-prices the same book every block
        return tuple(
            getattr(self, n).astype(np.float64) for n in ("cash", "collateral", "size", "entry_price", "funding_index")
        )

    @classmethod
    def from_states(cls, states: Iterable[Sequence[Any]], n_assets: int, n_markets: int) -> "AccountBook":
        """From `MarginEngine.account_states(accounts)`: per account (cash, collateral balances,
        positions), each position (market, size, entry_price, funding_index). Read by position so
        titanoboa structs and web3 tuples both work.

        Raises ValueError if an account has other than `n_assets` balances, a market id outside
        [0, n_markets), or the same market twice.
        """
        cash: list[int] = []
        collateral: list[Sequence[int]] = []
        rows: list[int] = []
        cols: list[int] = []
        sizes: list[int] = []
        entries: list[int] = []
        indices: list[int] = []
        for i, state in enumerate(states):
            cash.append(state[0])
            balances = list(state[1])
            if len(balances) != n_assets:
                raise ValueError(f"account {i}: {len(balances)} collateral balances, expected {n_assets}")
            collateral.append(balances)
            seen: set[int] = set()
            for position in state[2]:
                market = position[0]
                if not 0 <= market < n_markets:
                    raise ValueError(f"account {i}: market id {market} outside [0, {n_markets})")
                if market in seen:
                    raise ValueError(f"account {i}: market {market} listed twice")
                seen.add(market)
                rows.append(i)
                cols.append(market)
                sizes.append(position[1])
                entries.append(position[2])
                indices.append(position[3])
        n = len(cash)

        def matrix(values: list[int]) -> np.ndarray:
            out = np.zeros((n, n_markets), dtype=object)
            if values:
                column = np.empty(len(values), dtype=object)
                column[:] = values
                out[rows, cols] = column
            return out

        coll = np.zeros((n, n_assets), dtype=object)
        if n and n_assets:
            coll[:] = collateral
        return cls(
            cash=np.array(cash, dtype=object).reshape(n),
            collateral=coll,
            size=matrix(sizes),
            entry_price=matrix(entries),
            funding_index=matrix(indices),
        )


@dataclass(frozen=True, eq=False)
class MarginResult:
    """Exact margin of N accounts, each field as `MarginEngine.margin_summary` returns it.

    `equity` object (N,): WAD USD, signed, rounded down. `initial_margin`, `maintenance_margin`
    object (N,): WAD USD, rounded up. `health_factor` object (N,): WAD (max uint256 with nothing to
    maintain). `liquidatable` bool (N,): equity < maintenance margin (`is_liquidatable`), and
    False where `priced` is False. `priced` bool (N,): every price the account needs is
    available; where a live position's underlying or a held collateral asset has no valid price
    (index 0) the contract reverts "no valid price" and the other fields are meaningless.
    """

    equity: np.ndarray
    initial_margin: np.ndarray
    maintenance_margin: np.ndarray
    health_factor: np.ndarray
    liquidatable: np.ndarray
    priced: np.ndarray

    @property
    def meets_initial_margin(self) -> np.ndarray:
        """bool (N,): equity >= initial margin (`meets_initial_margin`, the withdrawal check)."""
        return np.asarray(self.equity >= self.initial_margin, dtype=bool)


@dataclass(frozen=True, eq=False)
class FloatMarginResult:
    """`MarginResult` in float64, same fields and units (WAD-scaled floats); `health_factor` is inf
    where the contract returns max uint256. Relative error ~1e-15 of the account's gross amounts;
    near the liquidation boundary confirm with `margin`."""

    equity: np.ndarray
    initial_margin: np.ndarray
    maintenance_margin: np.ndarray
    health_factor: np.ndarray
    liquidatable: np.ndarray


# ---------------------------------------------------------------- cash (depeg rule)


def settlement_price(params: RiskParams, prices: Any) -> int:
    """The settlement asset's WAD USD price in `prices`, 0 when its price id is unset, absent or
    has no valid price (`CollateralVault._settlement_price`)."""
    pid = params.settlement_price_id
    if pid < 0 or pid >= len(prices):
        return 0
    return int(prices[pid])


def _cash_units(params: RiskParams, prices: Any) -> tuple[int, int] | None:
    """(WAD^2 value of a unit of positive cash, WAD value of a unit of debt), or None for 1:1."""
    p = settlement_price(params, prices)
    if p == 0:
        return None
    unit = min(p, WAD) * WAD
    if p < params.depeg_threshold:
        unit -= min(unit, params.depeg_factor * (params.depeg_threshold - p))
    return unit, max(p, WAD)


def cash_value(cash: Any, params: RiskParams, prices: Any) -> np.ndarray:
    """object (N,): cash valued by the depeg rule (module docstring; `CollateralVault._cash_value`),
    WAD USD, to the wei. `cash` (N,) WAD ints, signed."""
    amounts = _exact(cash, "cash", 1)
    units = _cash_units(params, as_prices(prices))
    if units is None:
        return amounts.copy()
    unit, debt = units
    # floor of a negative product = minus the ceiling of the debt's value
    out = np.where(np.asarray(amounts >= 0, dtype=bool), (amounts * unit) // WAD2, (amounts * debt) // WAD)
    return np.asarray(out, dtype=object).reshape(len(amounts))


# ---------------------------------------------------------------- exact, vectorized


def _check_inputs(book: AccountBook, markets: MarketTable, params: RiskParams, prices: np.ndarray) -> None:
    expected = (("book", book, AccountBook), ("markets", markets, MarketTable), ("params", params, RiskParams))
    for arg, value, cls in expected:
        if not isinstance(value, cls):
            article = "an" if cls.__name__[0] in "AEIOU" else "a"
            raise TypeError(f"{arg}: expected {article} {cls.__name__}, got {type(value).__name__}")
    if book.collateral.shape[1] != params.n_assets:
        raise ValueError(f"book has {book.collateral.shape[1]} collateral assets, params {params.n_assets}")
    if book.size.shape[1] != markets.n_markets:
        raise ValueError(f"book has {book.size.shape[1]} markets, market table {markets.n_markets}")
    if markets.n_markets and markets.underlying.max() >= params.n_underlyings:
        raise ValueError(f"market underlying id {markets.underlying.max()} >= {params.n_underlyings} underlyings")
    used = np.concatenate([params.price_id, params.asset_price_id])
    if used.size and used.max() >= len(prices):
        raise ValueError(f"price id {used.max()} but only {len(prices)} prices")


def _market_index_prices(markets: MarketTable, params: RiskParams, prices: np.ndarray) -> np.ndarray:
    """object (M,): index price of each market's underlying."""
    index: np.ndarray = prices[params.price_id[markets.underlying]]
    return index


def _marks(markets: MarketTable, params: RiskParams, prices: np.ndarray) -> np.ndarray:
    """object (M,): settlement price of a settled future, else the index price."""
    return np.where(markets.live, _market_index_prices(markets, params, prices), markets.settlement_price)


def _reduced(numerator: int, denominator: int) -> tuple[int, int]:
    """numerator / denominator in lowest terms: the same floor and ceiling of x * n / d for every
    x, with smaller integers to multiply and divide (a 10% rate shares 1e17 with 1e36)."""
    g = math.gcd(numerator, denominator) or 1
    return numerator // g, denominator // g


def _add_charges(neg: np.ndarray, rows: np.ndarray, amount: np.ndarray, factor: tuple[int, int]) -> None:
    """neg[rows] -= ceil(amount * factor): charges accumulate as floors of negatives."""
    num, den = factor
    if num:
        neg[rows] += (amount * -num) // den


# Accounts per block of the exact path. Each step allocates one Python int per account; blocks
# keep those temporaries cache-resident (2-3x faster than whole-book steps at 100k accounts).
BLOCK = 2048


def margin(book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any) -> MarginResult:
    """Exact equity, IM, MM, health factor and liquidatable flag of every account in `book`: equal,
    to the wei, to `MarginLens.margin_summaries` (and `is_liquidatable`) read at the same block as
    `markets` (from `market_states()`) and `prices` (`OracleRouter.index_prices()`).

    Formulas: see the module docstring (contract notice; CME SPAN spread charge; Derive SRM rates).
    Shapes: book N accounts, A assets, M markets; params U underlyings; prices (P,) WAD by price id.
    Raises ValueError when the shapes or ids of the inputs disagree, TypeError for non-integers.

    Vectorized over accounts: Python loops run over blocks of `BLOCK` accounts, assets, markets and
    underlyings, each step an array operation on the accounts concerned (the book's per-market view
    of held positions, built once per book).
    """
    prices = as_prices(prices)
    _check_inputs(book, markets, params, prices)
    n = book.n_accounts
    index = prices[params.price_id]
    live = markets.live.tolist()
    underlying = markets.underlying.tolist()
    # per-call scalars: collateral factors, marks, and each underlying's live markets and rates
    assets = [
        _reduced(prices[params.asset_price_id[a]] * params.asset_haircut[a], 10 ** int(params.asset_decimals[a]) * WAD)
        for a in range(params.n_assets)
    ]
    marks = [index[underlying[m]] if live[m] else markets.settlement_price[m] for m in range(markets.n_markets)]
    funding = markets.funding_index.tolist()
    left = markets.netting_left
    groups = [
        (
            [m for m in range(markets.n_markets) if live[m] and underlying[m] == u],
            [
                _reduced(index[u] * rate[u], WAD2)
                for rate in (params.im_rate, params.mm_rate, params.spread_im_rate, params.spread_mm_rate)
            ],
        )
        for u in range(params.n_underlyings)
    ]
    columns = book._columns
    cash_units = _cash_units(params, prices)
    equity = np.empty(n, dtype=object)
    im = np.empty(n, dtype=object)
    mm = np.empty(n, dtype=object)
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        cuts = [(int(c.rows.searchsorted(lo)), int(c.rows.searchsorted(hi))) for c in columns]
        # column slices of this block's held positions, rows relative to the block
        block = [
            None if a == b else (c.rows[a:b] - lo, c.size[a:b], c.entry_price[a:b], c.funding_index[a:b], c.longs[a:b])
            for c, (a, b) in zip(columns, cuts)
        ]
        equity[lo:hi], im[lo:hi], mm[lo:hi] = _margin_block(
            book, lo, hi, block, assets, marks, funding, groups, left, cash_units
        )
    priced = _priced(book, markets, params, prices)
    return MarginResult(
        equity, im, mm, _health(equity, mm), np.asarray(equity < mm, dtype=bool).reshape(n) & priced, priced
    )


def _priced(book: AccountBook, markets: MarketTable, params: RiskParams, prices: np.ndarray) -> np.ndarray:
    """bool (N,): no live position on an unpriced underlying and no unpriced collateral held."""
    unpriced_assets = [a for a in range(params.n_assets) if prices[params.asset_price_id[a]] == 0]
    index = prices[params.price_id]
    unpriced_markets = [m for m in range(markets.n_markets) if markets.live[m] and index[markets.underlying[m]] == 0]
    missing = np.zeros(book.n_accounts, dtype=bool)
    if unpriced_assets:
        missing |= (book.collateral[:, unpriced_assets] != 0).any(axis=1)
    if unpriced_markets:
        missing |= (book.size[:, unpriced_markets] != 0).any(axis=1)
    return ~missing


def _margin_block(
    book: AccountBook,
    lo: int,
    hi: int,
    block: Sequence[tuple[np.ndarray, ...] | None],
    assets: Sequence[tuple[int, int]],
    marks: Sequence[Any],
    funding: Sequence[Any],
    groups: Any,
    left: list[int],
    cash_units: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(equity, IM, MM) of accounts lo..hi-1; see `margin`."""
    k = hi - lo
    # cash by the depeg rule (1:1 without a settlement price), then collateral:
    # floor(balance * price * haircut / (10**decimals * 1e18)) per asset, as the vault
    cash = book.cash[lo:hi]
    if cash_units is None:
        equity = cash.copy()
    else:
        unit, debt = cash_units
        equity = np.asarray(
            np.where(np.asarray(cash >= 0, dtype=bool), (cash * unit) // WAD2, (cash * debt) // WAD), dtype=object
        ).reshape(k)
    for a, (num, den) in enumerate(assets):
        equity += (book.collateral[lo:hi, a] * num) // den
    # positions: floor(size*(mark-entry)/1e18) + floor(size*(F_entry-F)/1e18); the second floor is
    # minus the ceiling of funding owed (one negation fewer per position)
    for m, col in enumerate(block):
        if col is not None:
            rows, size, entry, entry_funding, _ = col
            equity[rows] += (size * (marks[m] - entry)) // WAD + (size * (entry_funding - funding[m])) // WAD
    # requirements on net and offset size per underlying (live markets), for the accounts holding it;
    # ceilings accumulate as floors of negatives
    neg_im = np.zeros(k, dtype=object)
    neg_mm = np.zeros(k, dtype=object)
    for markets_u, (f_im, f_mm, f_sim, f_smm) in groups:
        held = []
        alone = None
        for m in markets_u:
            col = block[m]
            if col is None:
                continue
            if left[m] < EXPIRY_RAMP:  # a future in its last week: only part of it nets
                rows_m, size, entry, entry_funding, _ = col
                amount = abs(size)
                netted = amount * left[m] // EXPIRY_RAMP
                if alone is None:
                    alone = np.zeros(k, dtype=object)
                alone[rows_m] += amount - netted
                positive = np.asarray(size > 0, dtype=bool)
                col = (rows_m, np.where(positive, netted, -netted), entry, entry_funding, np.where(positive, netted, 0))
            held.append(col)
        if alone is not None:
            hit = np.flatnonzero(np.asarray(alone != 0, dtype=bool))
            if hit.size:
                _add_charges(neg_im, hit, alone[hit], f_im)
                _add_charges(neg_mm, hit, alone[hit], f_mm)
        if not held:
            continue
        offset = None
        if len(held) == 1:  # one market: nothing offsets
            rows, net = held[0][0], abs(held[0][1])
        else:
            signed = np.zeros(k, dtype=object)
            longs = np.zeros(k, dtype=object)
            touched = np.zeros(k, dtype=bool)
            for rows, size, _, _, long_part in held:
                signed[rows] += size
                longs[rows] += long_part
                touched[rows] = True
            rows = np.flatnonzero(touched)
            signed, longs = signed[rows], longs[rows]
            net = abs(signed)
            offset = np.minimum(longs, longs - signed)
        _add_charges(neg_im, rows, net, f_im)
        _add_charges(neg_mm, rows, net, f_mm)
        if offset is not None:
            hit = np.flatnonzero(np.asarray(offset != 0, dtype=bool))  # only spread holders
            if hit.size:
                _add_charges(neg_im, rows[hit], offset[hit], f_sim)
                _add_charges(neg_mm, rows[hit], offset[hit], f_smm)
    return equity, -neg_im, -neg_mm


def _health(equity: np.ndarray, mm: np.ndarray) -> np.ndarray:
    """object (N,): `MarginEngine._health` elementwise."""
    positive = np.asarray(equity > 0, dtype=bool)
    no_mm = np.asarray(mm == 0, dtype=bool)
    top = np.full(len(equity), MAX_UINT256, dtype=object)  # object: a C long cannot hold it
    ratio = (np.where(positive, equity, 0) * WAD) // np.where(no_mm, 1, mm)  # divisor 1 where unused
    at_zero = np.where(no_mm & np.asarray(equity == 0, dtype=bool), top, 0)
    out = np.where(positive, np.where(no_mm, top, ratio), at_zero)
    return np.asarray(out, dtype=object).reshape(len(equity))


def isolated_initial_margin(book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any) -> np.ndarray:
    """object (N,): initial margin if every live position were margined alone, WAD USD:
    sum over positions of ceil(|size| * index price * im_rate / 1e36), with no netting and no
    spread credit. Compared with `margin(...).initial_margin` it measures what cross margin saves.
    Raises as `margin`.
    """
    prices = as_prices(prices)
    _check_inputs(book, markets, params, prices)
    neg = np.zeros(book.n_accounts, dtype=object)
    index = prices[params.price_id]
    for m, col in enumerate(book._columns):
        u = markets.underlying[m]
        if markets.live[m] and col.rows.size:
            _add_charges(neg, col.rows, abs(col.size), _reduced(index[u] * params.im_rate[u], WAD2))
    return -neg


@dataclass(frozen=True, eq=False)
class Valuation:
    """The parts of the engine's equity, per account, WAD USD (object arrays of Python ints):
    `cash_value` (N,) by the depeg rule; `collateral_value` (N, A) per asset, haircut applied;
    `mark` (M,) of each market; `price_pnl` (N, M) floor(size * (mark - entry) / 1e18);
    `funding` (N, M) ceil(size * (F - F_entry) / 1e18), the funding the position owes (negative
    when it is owed funding). equity = cash_value + collateral + sum of unrealized P&L, exactly
    `margin(...).equity` (and `MarginEngine.margin_summary`'s equity without options)."""

    cash_value: np.ndarray
    collateral_value: np.ndarray
    mark: np.ndarray
    price_pnl: np.ndarray
    funding: np.ndarray

    @property
    def unrealized_pnl(self) -> np.ndarray:
        """object (N, M): `MarginEngine._position_value` of each position: price P&L minus the
        funding it owes, 0 where there is no position."""
        out: np.ndarray = self.price_pnl - self.funding
        return out

    @property
    def equity(self) -> np.ndarray:
        """object (N,): cash value + collateral value + unrealized P&L (funding included)."""
        out: np.ndarray = self.cash_value + self.collateral_value.sum(axis=1) + self.unrealized_pnl.sum(axis=1)
        return out


def valuation(book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any) -> Valuation:
    """Each account's equity split into cash, collateral by asset and P&L by position (funding
    accrued to the markets' funding index included), by the formulas of the module docstring
    (`CollateralVault._collateral_value`, `MarginEngine._position_value`). Per-account,
    per-position detail for reports; `margin` is the fast path for the totals. Raises as `margin`."""
    prices = as_prices(prices)
    _check_inputs(book, markets, params, prices)
    n = book.n_accounts
    collateral = np.zeros((n, params.n_assets), dtype=object)
    for a in range(params.n_assets):
        num = prices[params.asset_price_id[a]] * params.asset_haircut[a]
        collateral[:, a] = (book.collateral[:, a] * num) // (10 ** int(params.asset_decimals[a]) * WAD)
    mark = np.asarray(_marks(markets, params, prices), dtype=object).reshape(markets.n_markets)
    price_pnl = np.zeros(book.size.shape, dtype=object)
    funding = np.zeros(book.size.shape, dtype=object)
    for m, col in enumerate(book._columns):
        if col.rows.size:
            price_pnl[col.rows, m] = (col.size * (mark[m] - col.entry_price)) // WAD
            # ceil(x / WAD) = -floor(-x / WAD)
            funding[col.rows, m] = -((col.size * (col.funding_index - markets.funding_index[m])) // WAD)
    return Valuation(cash_value(book.cash, params, prices), collateral, mark, price_pnl, funding)


# ---------------------------------------------------------------- float64 screening


def margin_float(book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any) -> FloatMarginResult:
    """`margin` in float64, no rounding rules: for screening many accounts fast (e.g. every block),
    then confirming the ones near or below maintenance with `margin`. Same inputs, shapes and
    errors as `margin`; amounts stay WAD-scaled floats; health_factor is inf where the contract
    returns max uint256. Not exact: relative error ~1e-15 of an account's gross amounts.
    """
    prices = as_prices(prices)
    _check_inputs(book, markets, params, prices)
    cash, coll, size, entry, fidx = book._floats
    n = book.n_accounts
    pf = prices.astype(np.float64)
    asset_factor = (
        pf[params.asset_price_id]
        * params.asset_haircut.astype(np.float64)
        / (10.0 ** params.asset_decimals.astype(np.float64) * 1e18)
    )
    mark = _marks(markets, params, prices).astype(np.float64)
    # pnl - funding owed = size * ((mark - entry) - (F - F_entry)) / 1e18
    unit_value = (mark - markets.funding_index.astype(np.float64)) - entry + fidx
    units = _cash_units(params, prices)
    if units is not None:
        cash = np.where(cash >= 0, cash * (units[0] / 1e36), cash * (units[1] / 1e18))
    equity = cash + coll @ asset_factor + (size * unit_value).sum(axis=1) / 1e18

    live = markets.live
    onehot = np.zeros((markets.n_markets, params.n_underlyings))
    onehot[np.flatnonzero(live), markets.underlying[live]] = 1.0
    netting = np.array(markets.netting_left, dtype=np.float64) / EXPIRY_RAMP
    netted = size * netting
    alone = (np.abs(size) * (1.0 - netting)) @ onehot
    signed = netted @ onehot
    longs = np.maximum(netted, 0.0) @ onehot
    net = np.abs(signed)
    offset = np.minimum(longs, longs - signed)
    p = pf[params.price_id] / 1e36
    im_r, mm_r = params.im_rate.astype(np.float64), params.mm_rate.astype(np.float64)
    im = (net + alone) @ (p * im_r) + offset @ (p * params.spread_im_rate.astype(np.float64))
    mm = (net + alone) @ (p * mm_r) + offset @ (p * params.spread_mm_rate.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = equity * 1e18 / mm
    health = np.where(equity > 0, np.where(mm == 0, np.inf, ratio), np.where((mm == 0) & (equity == 0), np.inf, 0.0))
    return FloatMarginResult(
        equity.reshape(n), im.reshape(n), mm.reshape(n), health.reshape(n), (equity < mm).reshape(n)
    )


# ---------------------------------------------------------------- naive baseline


def margin_loop(book: AccountBook, markets: MarketTable, params: RiskParams, prices: Any) -> MarginResult:
    """`margin` as a plain per-account, per-position loop over Python ints, transcribed from
    `MarginEngine._margin` / `_health` and `CollateralVault._collateral_value`. The baseline the
    vectorized path must beat, and an independent implementation to cross-check it. Same inputs,
    result and errors as `margin`.
    """
    prices = as_prices(prices)
    _check_inputs(book, markets, params, prices)
    p = prices.tolist()
    u_price = [p[i] for i in params.price_id.tolist()]
    im_rate, mm_rate = params.im_rate.tolist(), params.mm_rate.tolist()
    sim_rate, smm_rate = params.spread_im_rate.tolist(), params.spread_mm_rate.tolist()
    assets = [
        (p[pid], int(dec), hc)
        for pid, dec, hc in zip(params.asset_price_id.tolist(), params.asset_decimals.tolist(), params.asset_haircut)
    ]
    # the settlement asset's price, as `CollateralVault._settlement_price` (0 = cash at par)
    sid = params.settlement_price_id
    s_price = p[sid] if 0 <= sid < len(p) else 0
    m_under = markets.underlying.tolist()
    m_settle, m_fidx = markets.settlement_price.tolist(), markets.funding_index.tolist()
    m_left = markets.netting_left
    n_u = params.n_underlyings

    out_eq, out_im, out_mm, out_hf, out_liq, out_priced = [], [], [], [], [], []
    for cash, balances, sizes, entries, indices in zip(
        book.cash.tolist(),
        book.collateral.tolist(),
        book.size.tolist(),
        book.entry_price.tolist(),
        book.funding_index.tolist(),
    ):
        if s_price == 0 or cash == 0:
            equity = cash
        elif cash < 0:
            equity = -((-cash * max(s_price, WAD) + WAD - 1) // WAD)
        else:
            unit = min(s_price, WAD) * WAD
            if s_price < params.depeg_threshold:
                unit = max(0, unit - params.depeg_factor * (params.depeg_threshold - s_price))
            equity = cash * unit // WAD2
        priced = True
        for amount, (price, decimals, haircut) in zip(balances, assets):
            if amount:
                priced = priced and price != 0
                equity += amount * price * haircut // (10**decimals * WAD)
        longs = [0] * n_u
        shorts = [0] * n_u
        alone = [0] * n_u
        for m, size in enumerate(sizes):
            if size == 0:
                continue
            u = m_under[m]
            mark = m_settle[m]
            if mark == 0:
                mark = u_price[u]
                priced = priced and mark != 0
                amount = abs(size)
                if m_left[m] < EXPIRY_RAMP:
                    netted = amount * m_left[m] // EXPIRY_RAMP
                    alone[u] += amount - netted
                    amount = netted
                if size > 0:
                    longs[u] += amount
                else:
                    shorts[u] += amount
            pnl = size * (mark - entries[m]) // WAD
            owed = -(-(size * (m_fidx[m] - indices[m])) // WAD)
            equity += pnl - owed
        im = mm = 0
        for u in range(n_u):
            if longs[u] == 0 and shorts[u] == 0 and alone[u] == 0:
                continue
            net = abs(longs[u] - shorts[u])
            offset = min(longs[u], shorts[u])
            price = u_price[u]
            im += mul_div_up(net * price, im_rate[u], WAD2) + mul_div_up(offset * price, sim_rate[u], WAD2)
            mm += mul_div_up(net * price, mm_rate[u], WAD2) + mul_div_up(offset * price, smm_rate[u], WAD2)
            im += mul_div_up(alone[u] * price, im_rate[u], WAD2)
            mm += mul_div_up(alone[u] * price, mm_rate[u], WAD2)
        if equity <= 0:
            health = MAX_UINT256 if mm == 0 and equity == 0 else 0
        elif mm == 0:
            health = MAX_UINT256
        else:
            health = equity * WAD // mm
        out_eq.append(equity)
        out_im.append(im)
        out_mm.append(mm)
        out_hf.append(health)
        out_liq.append(equity < mm and priced)
        out_priced.append(priced)

    def col(values: list[int]) -> np.ndarray:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr

    return MarginResult(
        col(out_eq),
        col(out_im),
        col(out_mm),
        col(out_hf),
        np.array(out_liq, dtype=bool),
        np.array(out_priced, dtype=bool),
    )
