"""Typed results of the protocol's view functions: one NamedTuple per ABI struct, fields named
and ordered as the contracts' outputs (`abi/*.json`), values as the chain returns them (ints in
WAD unless stated). `ProtocolClient` converts where it decodes a call, so the rest of the keeper
reads fields by name (`s.equity < s.maintenance_margin`). Being tuples, they still unpack and
compare like the raw web3 results, and keeper.risk (which cannot import the chain layer) reads
them by position."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence


class MarginSummary(NamedTuple):
    """`MarginEngine.margin_summary` / `MarginLens.margin_summaries`: WAD USD; health factor WAD,
    max uint256 when there is nothing to maintain."""

    equity: int
    initial_margin: int
    maintenance_margin: int
    health_factor: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> MarginSummary:
        return cls(*(int(x) for x in raw))


class UnderlyingRates(NamedTuple):
    """`MarginEngine.underlyings` / `rates_now`: the underlying's price id and WAD margin rates."""

    price_id: int
    im_rate: int
    mm_rate: int
    spread_im_rate: int
    spread_mm_rate: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> UnderlyingRates:
        return cls(*(int(x) for x in raw))


class AssetInfo(NamedTuple):
    """`CollateralVault.assets`: token address, decimals, price id, haircut (WAD), deposit cap and
    total deposited (token units)."""

    token: str
    decimals: int
    price_id: int
    haircut: int
    deposit_cap: int
    total: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> AssetInfo:
        token, *rest = raw
        return cls(str(token), *(int(x) for x in rest))


class MarketState(NamedTuple):
    """`MarginLens.market_states` entry: funding_index accrued to the block's time (WAD USD per
    unit), settlement_price 0 while live, expiry 0 for a perpetual's (unused) slot."""

    underlying: int
    is_perpetual: bool
    expiry: int
    settlement_price: int
    funding_rate: int
    funding_index: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> MarketState:
        u, perpetual, *rest = raw
        return cls(int(u), bool(perpetual), *(int(x) for x in rest))


class PositionState(NamedTuple):
    """One position of `MarginLens.account_states`: signed WAD size, WAD entry price, the funding
    index at which it last settled funding."""

    market: int
    size: int
    entry_price: int
    funding_index: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> PositionState:
        return cls(*(int(x) for x in raw))


class AccountState(NamedTuple):
    """`MarginLens.account_states` entry: WAD cash (signed), collateral balances by asset id
    (token units), open positions."""

    cash: int
    collateral: tuple[int, ...]
    positions: tuple[PositionState, ...]

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> AccountState:
        cash, collateral, positions = raw
        return cls(int(cash), tuple(int(x) for x in collateral), tuple(PositionState.decode(p) for p in positions))


class OptionState(NamedTuple):
    """`OptionMarket.option_states` / `MarginLens.option_states_of` entry: signed WAD size, WAD
    entry price and mark, WAD USD value and standard margins."""

    series: int
    size: int
    entry_price: int
    mark: int
    value: int
    initial_margin: int
    maintenance_margin: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> OptionState:
        return cls(*(int(x) for x in raw))


class SeriesState(NamedTuple):
    """`OptionMarket.series_states` entry (WAD prices, sigma, open interest)."""

    underlying: int
    price_id: int
    strike: int
    expiry: int
    is_call: bool
    settlement_price: int
    open_interest: int
    index_price: int
    vol_fresh: bool
    sigma: int
    mark: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> SeriesState:
        return cls(*(x if isinstance(x, bool) else int(x) for x in raw))


class OptionMargin(NamedTuple):
    """`OptionMarket.margin_contribution(account, prices)`: what the option market adds to the
    account's standard margin, WAD USD (its outputs are unnamed in the ABI: value, IM, MM)."""

    value: int
    initial_margin: int
    maintenance_margin: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> OptionMargin:
        return cls(*(int(x) for x in raw))


class MarketInfo(NamedTuple):
    """`MarginEngine.markets(market_id)`: the stored market (funding index as of funding_time,
    not accrued; `MarketState` has it accrued)."""

    underlying: int
    is_perpetual: bool
    expiry: int
    settlement_price: int
    funding_rate: int
    funding_index: int
    funding_time: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> MarketInfo:
        u, perpetual, *rest = raw
        return cls(int(u), bool(perpetual), *(int(x) for x in rest))


class OptionSeries(NamedTuple):
    """`OptionMarket.series(series_id)`: a listed series (WAD strike, settlement price 0 while live)."""

    underlying: int
    price_id: int
    strike: int
    expiry: int
    is_call: bool
    settlement_price: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> OptionSeries:
        u, pid, strike, expiry, is_call, settled = raw
        return cls(int(u), int(pid), int(strike), int(expiry), bool(is_call), int(settled))


class FeedInfo(NamedTuple):
    """One entry of `OracleRouter.feeds(price_id)`: aggregator address, scale to WAD
    (10**(18 - decimals)), heartbeat seconds."""

    aggregator: str
    scale: int
    heartbeat: int

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> FeedInfo:
        aggregator, scale, heartbeat = raw
        return cls(str(aggregator), int(scale), int(heartbeat))
