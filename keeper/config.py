"""Protocol listing configuration (`config/*.yaml`): price ids, assets, underlyings, markets and
risk parameters. Pure data: loading validates and converts fractions to exact WAD integers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from keeper.risk.fixed import to_wad

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "local.yaml"


class ConfigError(ValueError):
    """A protocol configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class PriceIdConfig:
    symbol: str
    feed_decimals: int
    initial_price: int  # whole USD, used for the mock feed on local chains
    heartbeat: int  # seconds


@dataclass(frozen=True)
class AssetConfig:
    symbol: str
    decimals: int
    price_id: int
    haircut: int  # WAD
    deposit_cap: int  # token units


@dataclass(frozen=True)
class UnderlyingConfig:
    symbol: str
    price_id: int
    im_rate: int  # WAD
    mm_rate: int
    spread_im_rate: int
    spread_mm_rate: int


@dataclass(frozen=True)
class MarketConfig:
    name: str
    underlying: int
    expiry_days: float | None  # None = perpetual


@dataclass(frozen=True)
class ProtocolConfig:
    settlement_symbol: str
    settlement_decimals: int
    price_ids: tuple[PriceIdConfig, ...]
    assets: tuple[AssetConfig, ...]
    underlyings: tuple[UnderlyingConfig, ...]
    markets: tuple[MarketConfig, ...]
    liquidation_penalty: int  # WAD
    liquidator_share: int
    liquidation_target: int
    max_price_deviation: int
    max_funding_rate: int
    funding_smoothing: int

    def price_id(self, symbol: str) -> int:
        """Index of a price id by symbol; raises ConfigError if unknown."""
        for i, p in enumerate(self.price_ids):
            if p.symbol == symbol:
                return i
        raise ConfigError(f"unknown price id {symbol!r}")


def _get(d: dict, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise ConfigError(f"{where}: missing '{key}'")
    return d[key]


def load_config(path: str | Path = DEFAULT_CONFIG) -> ProtocolConfig:
    """Load and validate a protocol configuration YAML.

    Raises ConfigError with one line naming the file and the problem.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    try:
        return _parse(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None


def _parse(raw: dict) -> ProtocolConfig:
    settlement = _get(raw, "settlement", "top level")
    price_ids = tuple(
        PriceIdConfig(
            symbol=str(_get(p, "symbol", "price_ids")),
            feed_decimals=int(_get(p, "feed_decimals", "price_ids")),
            initial_price=int(_get(p, "initial_price", "price_ids")),
            heartbeat=int(_get(p, "heartbeat", "price_ids")),
        )
        for p in _get(raw, "price_ids", "top level")
    )
    symbols = [p.symbol for p in price_ids]

    def pid(symbol: str, where: str) -> int:
        if symbol not in symbols:
            raise ConfigError(f"{where}: unknown price id {symbol!r}")
        return symbols.index(symbol)

    assets = tuple(
        AssetConfig(
            symbol=str(_get(a, "symbol", "assets")),
            decimals=int(_get(a, "decimals", "assets")),
            price_id=pid(_get(a, "price_id", "assets"), "assets"),
            haircut=to_wad(_get(a, "haircut", "assets")),
            deposit_cap=int(_get(a, "deposit_cap", "assets")) * 10 ** int(a["decimals"]),
        )
        for a in raw.get("assets", [])
    )
    underlyings = tuple(
        UnderlyingConfig(
            symbol=str(_get(u, "symbol", "underlyings")),
            price_id=pid(_get(u, "price_id", "underlyings"), "underlyings"),
            im_rate=to_wad(_get(u, "im_rate", "underlyings")),
            mm_rate=to_wad(_get(u, "mm_rate", "underlyings")),
            spread_im_rate=to_wad(_get(u, "spread_im_rate", "underlyings")),
            spread_mm_rate=to_wad(_get(u, "spread_mm_rate", "underlyings")),
        )
        for u in _get(raw, "underlyings", "top level")
    )
    u_symbols = [u.symbol for u in underlyings]
    markets = []
    for m in _get(raw, "markets", "top level"):
        name = str(_get(m, "name", "markets"))
        underlying = _get(m, "underlying", f"market {name}")
        if underlying not in u_symbols:
            raise ConfigError(f"market {name}: unknown underlying {underlying!r}")
        expiry = m.get("expiry_days")
        markets.append(MarketConfig(name, u_symbols.index(underlying), None if expiry is None else float(expiry)))
    liq = _get(raw, "liquidation", "top level")
    trading = _get(raw, "trading", "top level")
    return ProtocolConfig(
        settlement_symbol=str(_get(settlement, "symbol", "settlement")),
        settlement_decimals=int(_get(settlement, "decimals", "settlement")),
        price_ids=price_ids,
        assets=assets,
        underlyings=underlyings,
        markets=tuple(markets),
        liquidation_penalty=to_wad(_get(liq, "penalty", "liquidation")),
        liquidator_share=to_wad(_get(liq, "liquidator_share", "liquidation")),
        liquidation_target=to_wad(_get(liq, "target", "liquidation")),
        max_price_deviation=to_wad(_get(trading, "max_price_deviation", "trading")),
        max_funding_rate=to_wad(_get(trading, "max_funding_rate", "trading")),
        funding_smoothing=to_wad(_get(trading, "funding_smoothing", "trading")),
    )
