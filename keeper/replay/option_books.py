"""Option books in the replay: implied vols per step, the option legs of the population, and the
margin of every account under three regimes, step by step.

Regimes (all WAD USD on chain, float USD here):
- isolated: every position margined alone, no netting: perpetuals/futures at
  |size| x index x (IM or MM rate) each (keeper.risk.margin.isolated_initial_margin, and the same
  with the MM rate), options at the option market's standard per-position charges;
- standard: the engine's cross margin for perpetuals/futures (keeper.risk.margin.margin, the
  exact mirror) plus the option market's standard margin (OptionMarket.margin_contribution):
  what the lens' margin_summaries return without an attestation;
- portfolio: the scenario grid (keeper.risk.scenarios.portfolio_margin over
  keeper.chain.client.risk_book) for every account, whether or not it opted into attestations;
  on chain an attestation is further bounded to [margin_floor x standard, standard].
Counterfactual liquidations: the accounts whose equity (the contract's, which no regime changes)
fell below each regime's maintenance margin at the end of any block.

Implied vols: Deribit DVOL (daily close, the last day at or before the step) where the data has
it (from 2021-03-24), else the trailing 30-day realised vol of daily closes (the backtest's proxy,
keeper.risk.backtest.realised_vol, over the history keeper.marketdata.daily loads). The smile's skew is a constant SKEW.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, NamedTuple, Sequence

import numpy as np

from keeper.chain.attestations import VolUpdate
from keeper.chain.orders import OptionOrder, sign_option_order
from keeper.chain.types import MarginSummary, SeriesState
from keeper.errors import KeeperError
from keeper.marketdata.daily import load_daily_history
from keeper.replay.population import TRADE_UNIT, AccountSpec, trade_size
from keeper.risk.backtest import realised_vol
from keeper.units import WAD, ceil_div, mul_div_up

SKEW = -0.1  # vol points per unit of ln(K / F): puts dearer, as crypto smiles usually are
VOL_VALID_SECONDS = 3600
OPTION_GAS = 1_500_000
DEV_MNEMONIC = "test test test test test test test test test test test junk"  # Anvil's default


class OptionReplayError(KeeperError, RuntimeError):
    """Vol data missing, a signer that is not a local dev account, or a leg with no series."""


@dataclass(frozen=True)
class VolHistory:
    """Daily implied-vol proxy per symbol: ``timestamps`` (T,) 00:00 UTC, ``vol`` (T, U) decimal
    (NaN where neither DVOL nor 30 days of prices exist), ``source`` (T, U) "dvol" | "realised"."""

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    vol: np.ndarray
    source: np.ndarray

    def at(self, t: int) -> dict[str, float]:
        """Vol per symbol at unix time `t` (the last day at or before it); OptionReplayError if
        there is none."""
        i = int(np.searchsorted(self.timestamps, t, side="right")) - 1
        if i < 0:
            raise OptionReplayError(f"no implied-vol data at or before {t}")
        out = {}
        for j, s in enumerate(self.symbols):
            v = float(self.vol[i, j])
            if not np.isfinite(v) or v <= 0:
                raise OptionReplayError(f"no implied or realised vol for {s} at {t}")
            out[s] = v
        return out

    def sources(self, t: int) -> dict[str, str]:
        i = max(0, int(np.searchsorted(self.timestamps, t, side="right")) - 1)
        return {s: str(self.source[i, j]) for j, s in enumerate(self.symbols)}


def load_vol_history(data_dir: str | Path | None = None, symbols: tuple[str, ...] = ("ETH", "BTC")) -> VolHistory:
    """DVOL where present, else the 30-day realised vol (see the module docstring), from the
    market-data folder `data_dir` (default `keeper.marketdata.daily.data_dir()`)."""
    try:
        h = load_daily_history(data_dir, symbols)
    except Exception as e:  # PriceDataError: one line naming the file
        raise OptionReplayError(f"implied-vol data: {e}") from None
    realised = realised_vol(h.prices, h.timestamps)
    use_dvol = np.isfinite(h.dvol)
    vol = np.where(use_dvol, h.dvol, realised)
    source = np.where(use_dvol, "dvol", "realised")
    return VolHistory(tuple(symbols), np.asarray(h.timestamps), vol, source)


def dev_keys(addresses: Sequence[str], count: int = 20) -> list[bytes]:
    """Private keys of `addresses` among the first `count` accounts of Anvil's default mnemonic
    (local chains only); OptionReplayError naming the first one that is not."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    known = {}
    for i in range(count):
        acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        known[acct.address.lower()] = bytes(acct.key)
    out = []
    for a in addresses:
        if a.lower() not in known:
            raise OptionReplayError(f"signer {a} is not one of Anvil's dev accounts: the replay cannot sign for it")
        out.append(known[a.lower()])
    return out


@dataclass(frozen=True)
class ListedSeries:
    series_id: int
    underlying: str
    price_id: int
    strike: int  # WAD
    expiry: int
    is_call: bool


def listed_series(options_contract, deployment) -> list[ListedSeries]:
    """Every listed series with its underlying symbol (from the deployment's names)."""
    names = {v: k for k, v in deployment.underlyings.items()}
    return [
        ListedSeries(i, names[s.underlying], s.price_id, s.strike, s.expiry, s.is_call)
        for i, s in enumerate(SeriesState.decode(raw) for raw in options_contract.functions.series_states().call())
    ]


def resolve_leg(
    series: Sequence[ListedSeries], underlying: str, is_call: bool, multiple: float, start_price: float
) -> ListedSeries:
    """The listed series of `underlying` and type nearest to strike multiple x start_price (the
    nearest expiry among equals)."""
    candidates = [s for s in series if s.underlying == underlying and s.is_call == is_call]
    if not candidates:
        raise OptionReplayError(f"no {'call' if is_call else 'put'} on {underlying} is listed")
    target = multiple * start_price
    return min(candidates, key=lambda s: (abs(s.strike / WAD - target), s.expiry))


def vol_updates(series: Sequence[ListedSeries], vols: dict[str, float], now: int) -> list[VolUpdate]:
    """One VolUpdate per (price id, expiry) of the listed series, stamped `now`."""
    points = sorted({(s.price_id, s.expiry, s.underlying) for s in series})
    return [
        VolUpdate(pid, expiry, int(round(vols[und] * WAD)), int(round(SKEW * WAD)), now, now + VOL_VALID_SECONDS)
        for pid, expiry, und in points
    ]


def min_position_units(min_notional: int, index: int) -> int:
    """The least non-zero option position (WAD units of the underlying) a trade may leave, as
    OptionMarket.trade judges it: ceil(min_notional x 1e18 / index), `min_notional` the engine's
    `min_position_notional` (WAD USD) and `index` the underlying's index price (WAD)."""
    return mul_div_up(min_notional, WAD, index)


class OptionFill(NamedTuple):
    """One option trade of the replay's set-up: `holder` (index into the population) trades
    `size` (WAD units of the underlying, > 0 buys) of its leg `leg` against market maker `maker`
    (index into the makers), who takes the opposite side."""

    holder: int
    maker: int
    leg: tuple[str, bool, float, float]
    size: int


def _sign(x: int) -> int:
    return 1 if x > 0 else -1


def plan_option_fills(
    specs: Sequence[AccountSpec],
    makers: int,
    index: dict[str, int],
    min_notional: int,
    series_key: Callable[[str, bool, float], Hashable] | None = None,
) -> tuple[list[AccountSpec], list[OptionFill]]:
    """Size and order the option legs of `specs` so that every trade leaves both sides flat or
    at least the minimum notional (`min_position_units` of `min_notional` at `index`, WAD USD per
    underlying, rounded up to the order grid TRADE_UNIT), as OptionMarket.trade requires.

    Order: holders in population order, the j-th against maker j % `makers`, long legs first (the
    shorts' margin is met with the wings in place). A leg below the minimum is raised to it. A
    fill that would leave its maker a position below the minimum (the makers net many users'
    legs) goes to the next maker it leaves flat or above it; with none, the leg is resized to
    leave its own maker flat or at the minimum, whichever is nearer (it changes by less than
    the minimum). `series_key` maps a leg (underlying, is_call, strike multiple) to the series
    it trades (default: the leg itself). Returns the population with the legs as traded (specs
    whose legs did not change are the same objects) and the fills in trading order."""
    key_of = series_key or (lambda und, is_call, multiple: (und, is_call, multiple))
    least = {u: ceil_div(min_position_units(min_notional, p), TRADE_UNIT) * TRADE_UNIT for u, p in index.items()}
    held: dict[tuple[int, Hashable], int] = {}  # (holder, series) -> WAD
    book: dict[tuple[int, Hashable], int] = {}  # (maker, series) -> WAD
    out = list(specs)
    fills = []

    def fits(position: int, lo: int) -> bool:
        return position == 0 or abs(position) >= lo

    holders = [i for i, spec in enumerate(specs) if spec.options]
    for j, i in enumerate(holders):
        legs = list(specs[i].options)
        for k in sorted(range(len(legs)), key=lambda k: legs[k][3] < 0):
            und, is_call, multiple, units = legs[k]
            size = trade_size(units)
            if size == 0:
                continue
            key, lo = key_of(und, is_call, multiple), least[und]
            mine = held.get((i, key), 0)
            if not fits(mine + size, lo):
                size = _sign(mine + size) * lo - mine
            preferred = j % makers
            order = [(preferred + d) % makers for d in range(makers)]
            maker = next((m for m in order if fits(book.get((m, key), 0) - size, lo)), None)
            if maker is None:
                # the size nearest the leg's that leaves the maker flat or at the minimum
                maker, position = preferred, book.get((preferred, key), 0)
                nearest = sorted((position + d for d in (0, lo, -lo)), key=lambda c: abs(c - size))
                size = next((c for c in nearest if c != 0 and fits(mine + c, lo)), 0)
                if size == 0:
                    raise OptionReplayError(
                        f"cannot size the {und} {'call' if is_call else 'put'} x{multiple} leg of account {i} "
                        "to the minimum position notional against any market maker"
                    )
            held[(i, key)] = mine + size
            book[(maker, key)] = book.get((maker, key), 0) - size
            fills.append(OptionFill(i, maker, legs[k], size))
            if size != trade_size(units):
                legs[k] = (und, is_call, multiple, size / WAD)
        if tuple(legs) != specs[i].options:
            out[i] = dataclasses.replace(specs[i], options=tuple(legs))
    return out, fills


def option_trades(
    send: Callable[[Any, int], bytes],
    market,
    matching,
    chain_id: int,
    fills: Sequence[tuple[Any, Any, ListedSeries, int]],
    deadline: int,
) -> list:
    """Open each fill (user, maker, series, size: WAD units, > 0 the user buys) at the current
    on-chain mark (within the trade price band by construction); `plan_option_fills` sizes and
    orders them. Users and makers are driver.User. Returns the transaction hashes."""
    marks = [SeriesState.decode(s).mark for s in market.functions.series_states().call()]
    hashes = []
    for user, maker, s, size in fills:
        price = marks[s.series_id]
        signed = []
        for account, amount in ((user, size), (maker, -size)):
            account.nonce += 1
            order = OptionOrder(account.address, s.series_id, amount, price, account.nonce, deadline)
            signed += [order.as_tuple(), sign_option_order(order, account.key, chain_id, matching.address)]
        hashes.append(send(matching.functions.match_option_orders(*signed), OPTION_GAS))
    return hashes


def open_option_legs(
    send: Callable[[Any, int], bytes],
    client,
    series: Sequence[ListedSeries],
    holders: Sequence[Any],
    makers: Sequence[Any],
    start: dict[str, float],
    deadline: int,
) -> list:
    """Size the option legs of `holders` (driver.User with specs) with `plan_option_fills` at
    the deployment's minimum position notional and the current index, map each leg to the listed
    series nearest its strike multiple x `start` (USD per unit, by underlying: `resolve_leg`),
    and send them against `makers` (`option_trades`, at the marks: post fresh vols first).
    `client` is a keeper.chain.client.ProtocolClient. Each holder's spec becomes the legs as
    traded. Returns the transaction hashes."""
    prices = client.oracle.functions.index_prices().call()
    index = {s.underlying: int(prices[s.price_id]) for s in series}
    min_notional = client.engine.functions.min_position_notional().call()

    def series_of(und: str, is_call: bool, multiple: float) -> ListedSeries:
        return resolve_leg(series, und, is_call, multiple, start[und])

    specs, fills = plan_option_fills([u.spec for u in holders], len(makers), index, min_notional, series_of)
    for u, spec in zip(holders, specs):
        u.spec = spec
    return option_trades(
        send,
        client.options,
        client.matching,
        client.deployment.chain_id,
        [(holders[f.holder], makers[f.maker], series_of(*f.leg[:3]), f.size) for f in fills],
        deadline,
    )


def _isolated_mm(book, markets, params, prices) -> np.ndarray:
    """object (N,): sum over live positions of ceil(|size| x index x mm_rate / 1e36), WAD."""
    out = np.zeros(book.n_accounts, dtype=object)
    sizes = book.size
    for m in range(sizes.shape[1]):
        if markets.settlement_price[m]:
            continue
        u = int(markets.underlying[m])
        rate = int(params.mm_rate[u]) * int(prices[int(params.price_id[u])])
        for a in range(sizes.shape[0]):
            if sizes[a, m]:
                out[a] += -((-abs(int(sizes[a, m])) * rate) // WAD**2)
    return out


@dataclass
class RegimeTracker:
    """Per-step totals and counterfactual liquidations under the isolated, standard and portfolio
    regimes for `accounts` (see the module docstring)."""

    client: Any
    accounts: list[str]
    option_accounts: set[str]
    scenario_params: Any
    steps: list[dict] = field(default_factory=list)
    below: dict[str, set[str]] = field(
        default_factory=lambda: {"isolated": set(), "standard": set(), "portfolio": set(), "on_chain": set()}
    )
    first: dict | None = None  # per-account figures at the first step

    def observe(self, block: int, summaries: list[MarginSummary]) -> dict:
        """Record block `block`: `summaries` the lens' (equity, IM, MM, health) of `accounts`.
        Returns the step's totals (USD)."""
        from keeper.risk.margin import isolated_initial_margin, margin
        from keeper.risk.scenarios import build_risk_tables, portfolio_margin

        c = self.client
        params = c.risk_params(block)
        snap = c.snapshot(self.accounts, block)
        perps = margin(snap.book, snap.markets, params, snap.prices)
        iso_im = isolated_initial_margin(snap.book, snap.markets, params, snap.prices)
        iso_mm = _isolated_mm(snap.book, snap.markets, params, snap.prices)
        prices = [int(p) for p in snap.prices]
        opt_im = np.zeros(len(self.accounts), dtype=object)
        opt_mm = np.zeros(len(self.accounts), dtype=object)
        for i, a in enumerate(self.accounts):
            if a in self.option_accounts:
                contribution = c.option_margin(a, prices, block)
                opt_im[i], opt_mm[i] = contribution.initial_margin, contribution.maintenance_margin
        book = c.risk_book(snap, params)
        pm = portfolio_margin(build_risk_tables(book.instruments, book.market, self.scenario_params), book.positions)
        equity = np.array([s.equity for s in summaries], dtype=object) / WAD
        reg = {
            "isolated": ((iso_im + opt_im) / WAD, (iso_mm + opt_mm) / WAD),
            "standard": ((perps.initial_margin + opt_im) / WAD, (perps.maintenance_margin + opt_mm) / WAD),
            "portfolio": (pm.im, pm.mm),
            "on_chain": (
                np.array([s.initial_margin for s in summaries], dtype=object) / WAD,
                np.array([s.maintenance_margin for s in summaries], dtype=object) / WAD,
            ),
        }
        row = {"block": block}
        for name, (im, mm) in reg.items():
            im = np.asarray(im, dtype=float)
            mm = np.asarray(mm, dtype=float)
            row[f"{name}_im_usd"] = round(float(im.sum()), 2)
            row[f"{name}_mm_usd"] = round(float(mm.sum()), 2)
            self.below[name] |= {a for a, e, m in zip(self.accounts, equity, mm) if float(e) < m}
        self.steps.append(row)
        if self.first is None:
            self.first = {
                name: (np.asarray(im, dtype=float), np.asarray(mm, dtype=float)) for name, (im, mm) in reg.items()
            }
        return row

    def ratios_by_kind(self, kinds: dict[str, str]) -> dict[str, dict]:
        """Per book kind, at the first step: summed IM under each regime and portfolio / standard."""
        out: dict[str, dict] = {}
        for i, a in enumerate(self.accounts):
            k = kinds.get(a, "other")
            d = out.setdefault(
                k, {"accounts": 0, "isolated_im_usd": 0.0, "standard_im_usd": 0.0, "portfolio_im_usd": 0.0}
            )
            d["accounts"] += 1
            for name in ("isolated", "standard", "portfolio"):
                d[f"{name}_im_usd"] += float(self.first[name][0][i])
        for d in out.values():
            d["portfolio_over_standard"] = (
                round(d["portfolio_im_usd"] / d["standard_im_usd"], 4) if d["standard_im_usd"] else None
            )
            for key in ("isolated_im_usd", "standard_im_usd", "portfolio_im_usd"):
                d[key] = round(d[key], 2)
        return out


def option_liquidations(options_contract, from_block: int, to_block: int) -> list[dict]:
    """OptionsLiquidation events as the report's liquidation dicts (notional = value moved)."""
    return [
        {
            "account": log["args"]["account"],
            "liquidator": log["args"]["liquidator"],
            "notional": log["args"]["value_moved"],
            "penalty": log["args"]["penalty"],
            "block": log["blockNumber"],
            "tx": log["transactionHash"].hex(),
            "options": True,
        }
        for log in options_contract.events.OptionsLiquidation.get_logs(from_block=from_block, to_block=to_block)
    ]
