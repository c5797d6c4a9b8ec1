"""Protocol listing configuration (`config/*.yaml`): price ids, assets, underlyings, markets and
risk parameters. Pure data: loading validates and converts fractions to exact WAD integers.

Also the portfolio-margin scenario parameters (`config/portfolio_margin.yaml`,
:func:`load_scenario_params`): the risk engine (`keeper.risk`) defines and checks them, this
module reads them from YAML."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from keeper import resources
from keeper.errors import ConfigError
from keeper.params.bounds import MAX_DEPEG_FACTOR, MAX_MIN_POSITION_NOTIONAL, MIN_DEPEG_THRESHOLD
from keeper.risk.scenarios import ScenarioParams
from keeper.units import MAX_UINT256, WAD, to_wad
from keeper.validation import checksummed, first_problem

# the checkout's config/, or the installed package's copy (`keeper.resources`)
DEFAULT_CONFIG = resources.config_file("local.yaml")
# the portfolio-margin scenario parameters (`keeper.risk.scenarios.ScenarioParams`), set by governance
DEFAULT_PM_CONFIG = resources.config_file("portfolio_margin.yaml")


@dataclass(frozen=True)
class FeedConfig:
    """An existing Chainlink-compatible aggregator for a price id."""

    address: str  # EIP-55 checksummed
    heartbeat: int  # seconds


@dataclass(frozen=True)
class PriceIdConfig:
    symbol: str
    feed_decimals: int | None  # None: read from the existing feed at deployment
    initial_price: int  # whole USD, used for the mock feed on local chains (0 with `feeds`)
    heartbeat: int  # seconds (the first feed's with `feeds`)
    feeds: tuple[FeedConfig, ...] = ()  # existing feeds; empty = deploy a mock feed


@dataclass(frozen=True)
class DepegConfig:
    """The settlement asset's own USD price and the vault's depeg rule (`settlement: depeg:`;
    `CollateralVault.set_settlement_price_id` / `set_depeg_params`; Derive v2 StandardManager
    depeg parameters)."""

    price_id: int  # oracle price id of the settlement token (USD per token)
    threshold: int  # WAD, in [0.9, 1]: below it positive cash takes factor x shortfall more
    factor: int  # WAD, in [0, 3]


@dataclass(frozen=True)
class AssetConfig:
    symbol: str
    decimals: int
    price_id: int
    haircut: int  # WAD
    deposit_cap: int  # token units
    address: str = ""  # an existing token; "" = deploy a mock token


@dataclass(frozen=True)
class UnderlyingConfig:
    symbol: str
    price_id: int
    im_rate: int  # WAD
    mm_rate: int
    spread_im_rate: int
    spread_mm_rate: int
    max_gap: int = 0  # WAD: the largest plausible adverse move between liquidations (0 = not stated)
    reference_price: int = 0  # whole USD the OI caps are judged at (0 = the price id's initial_price)


@dataclass(frozen=True)
class MarketConfig:
    name: str
    underlying: int
    expiry_days: float | None  # None = perpetual
    max_open_interest: int = 0  # WAD units of the underlying, 0 = no cap
    max_position: int = 0  # WAD units per account, 0 = no cap


@dataclass(frozen=True)
class GovernanceConfig:
    """Who governs after deployment: a timelock whose proposer/executor is `address`."""

    address: str  # EIP-55 checksummed (a multisig, typically)
    timelock_delay: int  # seconds


@dataclass(frozen=True)
class OptionSeriesConfig:
    """Series to list for one underlying: every (expiry, strike) pair as a call and a put.
    Strikes are multiples of the index price at listing, rounded to whole USD."""

    underlying: int  # index into `underlyings`
    expiry_days: tuple[float, ...]  # days after listing
    strikes: tuple[float, ...]  # multiples of the index price, in [0.1, 10] (OptionMarket MAX_STRIKE_RATIO)


@dataclass(frozen=True)
class OptionRiskConfig:
    """OptionMarket.set_risk_params (standard margin and trade price band), all WAD fractions."""

    short_im_rate: int
    short_im_floor: int
    short_mm_rate: int
    long_im_haircut: int
    long_mm_haircut: int
    abs_price_band: int
    rel_price_band: int

    def as_tuple(self) -> tuple[int, ...]:
        """In the order of the contract's RiskParams struct (the fields' order)."""
        return dataclasses.astuple(self)


@dataclass(frozen=True)
class SignerSetConfig:
    """m-of-n signers (addresses, never keys) of a VolFeed or HealthAttestor."""

    signers: tuple[str, ...]  # EIP-55 checksummed, distinct
    threshold: int  # m in [1, n]


@dataclass(frozen=True)
class VolFeedConfig:
    signers: SignerSetConfig
    min_atm_vol: int  # WAD
    max_atm_vol: int
    max_abs_skew: int
    heartbeat: int  # seconds


@dataclass(frozen=True)
class AttestationConfig:
    signers: SignerSetConfig
    margin_floor: int  # WAD fraction of the standard margin an attestation cannot go below
    price_band: int  # WAD fraction
    max_validity: int  # seconds
    # portfolio-margin parameters YAML whose hash the attestor is governed to (relative to the
    # working directory); "" = config/portfolio_margin.yaml
    scenario_params: str = ""


@dataclass(frozen=True)
class OptionsConfig:
    """The `options:` section: an OptionMarket, its VolFeed and a HealthAttestor."""

    series: tuple[OptionSeriesConfig, ...]
    risk: OptionRiskConfig
    vol_feed: VolFeedConfig
    attestation: AttestationConfig


@dataclass(frozen=True)
class BackstopVaultConfig:
    """The `backstop_vault:` section: a BackstopVault (`contracts/BackstopVault.vy`) and its
    parameters, WAD fractions and seconds, in the order of its `set_params`."""

    caller_fee_share: int
    max_margin_usage: int
    auction_discount: int
    auction_time: int
    request_delay: int
    # market name -> the vault's largest position there, WAD units (absent = no cap of its own)
    max_exposure: tuple[tuple[str, int], ...] = ()

    def params(self) -> tuple[int, int, int, int, int]:
        """The arguments of `BackstopVault.set_params` (and of its constructor after the engine)."""
        return (
            self.caller_fee_share,
            self.max_margin_usage,
            self.auction_discount,
            self.auction_time,
            self.request_delay,
        )


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
    max_liquidation_penalty: int = 0  # WAD; 0 = the penalty does not grow
    penalty_ramp_time: int = 3600  # seconds
    min_position_notional: int = 0  # WAD USD; 0 = no minimum
    settlement_address: str = ""  # an existing settlement token; "" = deploy a mock
    allow_mocks: bool = False  # deploy mocks on a non-development chain too
    governance: GovernanceConfig | None = None  # None: the deployer keeps both roles
    options: OptionsConfig | None = None  # None: no option market
    # the backstop the OI caps are sized against (keeper.params.backstop): USD, and the WAD
    # share of it one market's gap may take (k)
    insurance_fund_usd: int = 0
    backstop_coverage: int = WAD
    depeg: DepegConfig | None = None  # None: cash counts 1:1 as USD (no settlement price)
    backstop_vault: BackstopVaultConfig | None = None  # None: no backstop vault

    def mocks(self) -> list[str]:
        """What deployment would create as a mock (no `address` given): e.g. ["USDC", "WETH", "ETH feed"]."""
        out = [] if self.settlement_address else [self.settlement_symbol]
        out += [a.symbol for a in self.assets if not a.address]
        out += [f"{p.symbol} feed" for p in self.price_ids if not p.feeds]
        return out

    def price_id(self, symbol: str) -> int:
        """Index of a price id by symbol; raises ConfigError if unknown."""
        for i, p in enumerate(self.price_ids):
            if p.symbol == symbol:
                return i
        raise ConfigError(f"unknown price id {symbol!r}")


# Bounds the contracts enforce (OracleRouter MIN_HEARTBEAT / MAX_HEARTBEAT, decimals <= 18).
MIN_HEARTBEAT = 60
MAX_HEARTBEAT = 2 * 86400
MAX_DECIMALS = 18
# Whole USD for a mock feed's first answer; as prices.py, at most 1e15 USD.
MAX_INITIAL_PRICE = 10**15
# A future further out than 100 years is a typo.
MAX_EXPIRY_DAYS = 36500
# Floats hold every integer exactly only up to 2**53.
MAX_EXACT_FLOAT = 2**53
# OracleRouter MAX_FEEDS.
MAX_FEEDS = 3
# Timelock.vy MIN_DELAY / MAX_DELAY.
MIN_TIMELOCK_DELAY = 3600
MAX_TIMELOCK_DELAY = 30 * 86400
# Contract bounds: OptionMarket (MAX_STRIKE_RATIO, MAX_EXPIRY_HORIZON, MAX_SERIES, risk params),
# VolFeed (HARD_* vol bounds, heartbeat) and HealthAttestor (floor, band, validity), signer_set (16).
MAX_STRIKE_MULTIPLE = 10
MAX_OPTION_EXPIRY_DAYS = 2 * 365
MAX_OPTION_SERIES = 256
MAX_SIGNERS = 16

# `governance: {address: deployer}`: the deploying account governs (a placeholder for trying a
# testnet deployment as copied; resolved by `with_default_governance` / `deploy_protocol`).
DEPLOYER = "deployer"


def _show(value) -> str:
    """A config value as the user wrote it in YAML (None -> null, True -> true)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- value types
#
# The listing file is validated by the pydantic models below (the file's shape), then turned
# into the public dataclasses above by `_Listing.config`. Every problem reaches the user as one
# line: a value's problem is a `config` error whose text follows `<where>: <field>: `, a rule
# across fields raises ValueError with its whole line, and `_message` words the rest (missing
# keys, a section of the wrong shape) as the loader always has.


def _bad(text: str) -> PydanticCustomError:
    """A value's problem, worded for the user (after `<where>: <field>: `)."""
    return PydanticCustomError("config", "{text}", {"text": text})


def _says(wording: str, entries: bool = False) -> WrapValidator:
    """Any problem with the value reads `<wording>, got <the value as written>`, except a
    problem already worded (`_bad`); with `entries`, a problem inside one entry of a list is
    left to that entry."""

    def wrap(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            if err["type"] == "config" or (entries and err["loc"]):
                raise
            raise _bad(f"{wording}, got {_show(value)}") from None

    return WrapValidator(wrap)


def _also(rule: Callable[[Any], bool], text: str) -> WrapValidator:
    """A further rule on an already valid value: `text` (`{got}` = the value as written) if not."""

    def wrap(value: Any, handler: Callable[[Any], Any]) -> Any:
        checked = handler(value)
        if not rule(checked):
            raise _bad(text.format(got=_show(value)))
        return checked

    return WrapValidator(wrap)


def _to_wad(value: Any) -> int:
    try:
        return to_wad(value)
    except TypeError:  # bool, null, a list or a mapping
        raise PydanticCustomError("float_type", "not a number") from None
    except ValueError as e:  # not a number, not finite, more than 18 decimals, too large
        raise _bad(str(e)) from None


def Fraction(lo: int, hi: int) -> Any:
    """A decimal number in [lo, hi], as an exact WAD integer (keeper.units.to_wad)."""
    return Annotated[
        int, BeforeValidator(_to_wad), Field(ge=lo * WAD, le=hi * WAD), _says(f"must be a number in [{lo}, {hi}]")
    ]


def Integer(lo: int, hi: int, unit: str = "") -> Any:
    """An integer in [lo, hi]: a YAML int, not a bool, a float or a string."""
    return Annotated[StrictInt, Field(ge=lo, le=hi), _says(f"must be an integer in [{lo}, {hi}]{unit}")]


def _numbers(lo: float, hi: float, what: str) -> Any:
    """A non-empty list of distinct numbers in (lo, hi]."""
    number = Annotated[float, Strict(), Field(gt=lo, le=hi, allow_inf_nan=False)]
    return Annotated[
        tuple[number, ...],
        Field(min_length=1),
        _says(f"must be a non-empty list of {what} in ({lo}, {hi}]"),
        _also(lambda v: len(set(v)) == len(v), "duplicate value in {got}"),
    ]


def _distinct(key: str | None = None) -> AfterValidator:
    """No two entries of a list with the same `key` (the entries themselves without one)."""

    def check(entries: tuple) -> tuple:
        names = [e if key is None else getattr(e, key) for e in entries]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise PydanticCustomError("duplicate", "duplicate", {"name": name, "i": names.index(name), "j": i})
        return entries

    return AfterValidator(check)


def _one_line(value: str) -> str:
    if not value.strip() or not value.isprintable():
        raise ValueError("not a one-line string")
    return value


def _address(value: Any) -> str:
    """An EIP-55 address (all lower or all upper case carries no checksum and is accepted)."""
    try:
        address = checksummed(value)
    except PydanticCustomError as e:
        if e.type == "checksum":
            raise _bad(f"wrong EIP-55 checksum (a typo?): {value}") from None
        raise _bad(f"must be a 0x-prefixed 20-byte hex address, got {_show(value)}") from None
    if int(address, 16) == 0:
        raise _bad("is the zero address")
    return address


def _whole_tokens(value: Any) -> Any:
    """Whole tokens: an int, or an integer-valued float that is exact (1e6 is 1000000)."""
    if isinstance(value, float) and value > MAX_EXACT_FLOAT and math.isfinite(value):
        raise _bad(f"{value!r} is a float above 2**53, which is not exact; write it as an integer")
    return int(value) if isinstance(value, float) and value.is_integer() else value


Symbol = Annotated[StrictStr, AfterValidator(_one_line), _says("must be a non-empty one-line string")]
Address = Annotated[str, BeforeValidator(_address)]
Seconds = Integer(MIN_HEARTBEAT, MAX_HEARTBEAT, " seconds")
Decimals = Integer(0, MAX_DECIMALS)
Tokens = Annotated[StrictInt, BeforeValidator(_whole_tokens), Field(ge=0)]
# a symbol naming an entry of another section, checked by `_Listing._references`
Reference = Any


# ---------------------------------------------------------------- the file's sections


class _Section(BaseModel):
    """Keys the loader does not know are ignored (as always), except where a section says."""

    model_config = ConfigDict(frozen=True)


class _Depeg(_Section):
    threshold: Annotated[
        Fraction(0, 1), _also(lambda wad: wad >= MIN_DEPEG_THRESHOLD, "must be a number in [0.9, 1], got {got}")
    ]
    factor: Fraction(0, MAX_DEPEG_FACTOR // WAD)
    price_id: Reference


class _Settlement(_Section):
    symbol: Symbol
    decimals: Decimals
    address: Address = ""
    depeg: _Depeg = None  # type: ignore[assignment]  # absent = None, null = an error


class _Feed(_Section):
    address: Address
    heartbeat: Seconds


class _MockPriceId(_Section):
    """A price id whose feed a deployment mocks."""

    symbol: Symbol
    feed_decimals: Decimals
    initial_price: Integer(1, MAX_INITIAL_PRICE, " USD")
    heartbeat: Seconds

    def config(self) -> PriceIdConfig:
        return PriceIdConfig(self.symbol, self.feed_decimals, self.initial_price, self.heartbeat)


class _FedPriceId(_Section):
    """A price id read from existing aggregators (`feeds:`)."""

    symbol: Symbol
    feeds: Annotated[
        tuple[_Feed, ...],
        Field(min_length=1, max_length=MAX_FEEDS),
        _says(f"must be a list of 1 to {MAX_FEEDS} {{address, heartbeat}} entries", entries=True),
        _distinct("address"),
    ]
    feed_decimals: Decimals = None  # None: read from the existing feed at deployment

    def config(self) -> PriceIdConfig:
        feeds = tuple(FeedConfig(**dict(f)) for f in self.feeds)
        return PriceIdConfig(self.symbol, self.feed_decimals, 0, feeds[0].heartbeat, feeds)


_PriceId = Annotated[
    Annotated[_MockPriceId, Tag("mock")] | Annotated[_FedPriceId, Tag("fed")],
    Discriminator(lambda p: "fed" if isinstance(p, dict) and "feeds" in p else "mock"),
]
_TAGS = ("mock", "fed")


class _Asset(_Section):
    symbol: Symbol
    decimals: Decimals
    price_id: Reference
    haircut: Fraction(0, 1)
    deposit_cap: Annotated[Tokens, _says("must be a non-negative whole number of tokens")]
    address: Address = ""

    @field_validator("deposit_cap")
    @classmethod
    def _token_units(cls, tokens: int, info: ValidationInfo) -> int:
        units = tokens * 10 ** info.data.get("decimals", 0)
        if units > MAX_UINT256:
            raise _bad(f"{_show(tokens)} tokens is above max uint256 token units")
        return units


class _Underlying(_Section):
    symbol: Symbol
    price_id: Reference
    im_rate: Fraction(0, 1)
    mm_rate: Fraction(0, 1)
    spread_im_rate: Fraction(0, 1)
    spread_mm_rate: Fraction(0, 1)
    max_gap: Fraction(0, 1) = 0
    reference_price: Integer(1, 10**15, " USD") = 0


class _Market(_Section):
    name: Symbol
    underlying: Reference
    expiry_days: Annotated[
        Annotated[float, Strict(), Field(gt=0, le=MAX_EXPIRY_DAYS, allow_inf_nan=False)] | None,
        _says(f"must be a number of days in (0, {MAX_EXPIRY_DAYS}]"),
    ] = None  # None = perpetual
    max_open_interest: Integer(0, 10**30) = 0  # whole units of the underlying
    max_position: Integer(0, 10**30) = 0

    @model_validator(mode="after")
    def _position_within_open_interest(self) -> _Market:
        if self.max_open_interest and self.max_position > self.max_open_interest:
            raise ValueError(f"market {self.name}: max_position is above max_open_interest")
        return self


class _Liquidation(_Section):
    penalty: Fraction(0, 1)
    liquidator_share: Fraction(0, 1)
    target: Fraction(1, 2)
    max_penalty: Fraction(0, 1) = 0
    penalty_ramp_seconds: Integer(60, 86400) = 3600


class _Trading(_Section):
    max_price_deviation: Fraction(0, 1)
    max_funding_rate: Fraction(0, 1)
    funding_smoothing: Fraction(0, 1)
    min_position_notional: Fraction(0, MAX_MIN_POSITION_NOTIONAL // WAD) = 0


class _Backstop(_Section):
    model_config = ConfigDict(frozen=True, extra="forbid")

    insurance_fund_usd: Integer(0, 10**15, " USD") = 0
    coverage: Fraction(0, 10) = WAD


class _BackstopVault(_Section):
    """Bounds as `BackstopVault.set_params` enforces them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    caller_fee_share: Fraction(0, 1) = WAD // 5
    max_margin_usage: Fraction(0, 1) = WAD // 2
    auction_discount: Fraction(0, 1) = WAD // 100
    auction_seconds: Integer(60, 7 * 86400, " seconds") = 3600
    request_delay_seconds: Integer(3600, 30 * 86400, " seconds") = 86400
    max_exposure: dict[str, Tokens] = {}

    @model_validator(mode="after")
    def _bounds(self) -> _BackstopVault:
        if self.caller_fee_share > WAD // 2:
            raise ValueError("backstop_vault: caller_fee_share must be at most 0.5")
        if not WAD // 20 <= self.max_margin_usage <= 9 * WAD // 10:
            raise ValueError("backstop_vault: max_margin_usage must be in [0.05, 0.9]")
        if self.auction_discount > WAD // 10:
            raise ValueError("backstop_vault: auction_discount must be at most 0.1")
        return self


class _Governance(_Section):
    address: Annotated[str, BeforeValidator(lambda a: a if a == DEPLOYER else _address(a))]
    timelock_delay: Integer(MIN_TIMELOCK_DELAY, MAX_TIMELOCK_DELAY, " seconds")


class _Series(_Section):
    underlying: Reference
    expiry_days: _numbers(0, MAX_OPTION_EXPIRY_DAYS, "days")
    strikes: _numbers(1 / MAX_STRIKE_MULTIPLE, MAX_STRIKE_MULTIPLE, "multiples of the index price")


class _OptionRisk(_Section):
    short_im_rate: Fraction(0, 1)
    short_im_floor: Fraction(0, 1)
    short_mm_rate: Fraction(0, 1)
    long_im_haircut: Fraction(0, 1)
    long_mm_haircut: Fraction(0, 1)
    abs_price_band: Annotated[Fraction(0, 1), _also(lambda w: 10**14 <= w <= 5 * 10**16, "must be in [0.0001, 0.05]")]
    rel_price_band: Annotated[Fraction(0, 1), _also(lambda w: 10**15 <= w <= 5 * 10**17, "must be in [0.001, 0.5]")]

    @model_validator(mode="after")
    def _ordered(self) -> _OptionRisk:
        if not (10**16 <= self.short_mm_rate <= self.short_im_floor <= self.short_im_rate):
            raise ValueError("options.risk: need 0.01 <= short_mm_rate <= short_im_floor <= short_im_rate")
        if not self.long_im_haircut <= self.long_mm_haircut <= 9 * 10**17:
            raise ValueError("options.risk: need long_im_haircut <= long_mm_haircut <= 0.9")
        return self


class _Signed(_Section):
    """m-of-n signers, beside the section's other keys."""

    signers: Annotated[
        tuple[Address, ...],
        Field(min_length=1, max_length=MAX_SIGNERS),
        _says(f"must be a list of 1 to {MAX_SIGNERS} addresses", entries=True),
        _distinct(),
    ]
    threshold: int

    @field_validator("threshold", mode="before")
    @classmethod
    def _m_of_n(cls, m: Any, info: ValidationInfo) -> int:
        return TypeAdapter(Integer(1, len(info.data.get("signers", ())))).validate_python(m)

    def signer_set(self) -> SignerSetConfig:
        return SignerSetConfig(self.signers, self.threshold)


class _VolFeed(_Signed):
    min_atm_vol: Fraction(0, 5)
    max_atm_vol: Fraction(0, 5)
    max_abs_skew: Fraction(0, 5)
    heartbeat: Integer(60, 86400, " seconds")

    @model_validator(mode="after")
    def _ordered(self) -> _VolFeed:
        if not 10**16 <= self.min_atm_vol < self.max_atm_vol:
            raise ValueError("options.vol_feed: need 0.01 <= min_atm_vol < max_atm_vol <= 5")
        return self


class _Attestation(_Signed):
    margin_floor: Annotated[
        Fraction(0, 1),
        _also(lambda w: w >= 2 * 10**17, "must be in [0.2, 1] (an attestation lowers margin by at most 80%)"),
    ]
    price_band: Annotated[Fraction(0, 1), _also(lambda w: 0 < w <= 10**17, "must be in (0, 0.1]")]
    max_validity: Integer(60, 86400, " seconds")
    # a portfolio margin YAML file (a `portfolio_margin:` section); "" = config/portfolio_margin.yaml
    scenario_params: Annotated[
        StrictStr,
        Field(pattern=r"^$|\S"),
        AfterValidator(str.strip),
        _says("must be the path of a portfolio margin YAML file"),
    ] = ""


class _Options(_Section):
    model_config = ConfigDict(frozen=True, extra="forbid")

    series: Annotated[tuple[_Series, ...], _distinct("underlying")]
    risk: _OptionRisk
    vol_feed: _VolFeed
    attestation: _Attestation

    @model_validator(mode="after")
    def _listable(self) -> _Options:
        count = sum(2 * len(s.expiry_days) * len(s.strikes) for s in self.series)
        if count > MAX_OPTION_SERIES:
            raise ValueError(
                f"options.series: {count} series (calls and puts), the option market lists at most {MAX_OPTION_SERIES}"
            )
        return self


class _Listing(_Section):
    """The whole file, its sections in the order they are checked."""

    settlement: _Settlement
    price_ids: Annotated[tuple[_PriceId, ...], _distinct("symbol")]
    assets: Annotated[tuple[_Asset, ...], _distinct("symbol")] = ()
    allow_mocks: Annotated[StrictBool, _says("must be true or false")] = False
    underlyings: Annotated[tuple[_Underlying, ...], _distinct("symbol")]
    markets: Annotated[tuple[_Market, ...], _distinct("name")]
    liquidation: _Liquidation
    trading: _Trading
    backstop: _Backstop = _Backstop()
    backstop_vault: _BackstopVault = None  # type: ignore[assignment]  # None: no backstop vault
    governance: _Governance = None  # type: ignore[assignment]  # None: the deployer keeps both roles
    options: _Options = None  # type: ignore[assignment]  # None: no option market

    @model_validator(mode="after")
    def _references(self) -> _Listing:
        """Price ids and underlyings named by symbol exist; no token is listed twice."""
        symbols = [p.symbol for p in self.price_ids]
        u_symbols = [u.symbol for u in self.underlyings]
        for section in ("assets", "underlyings"):
            for i, e in enumerate(getattr(self, section)):
                if not isinstance(e.price_id, str) or e.price_id not in symbols:
                    raise ValueError(f"{section}: unknown price id {_show(e.price_id)} in entry {i} ({e.symbol})")
        seen = {self.settlement.address: "settlement"} if self.settlement.address else {}
        for i, a in enumerate(self.assets):
            if a.address in seen:
                raise ValueError(
                    f"assets[{i}] {a.symbol}: address {a.address} is already the token of {seen[a.address]}"
                )
            if a.address:
                seen[a.address] = f"assets[{i}] {a.symbol}"
        for m in self.markets:
            if not isinstance(m.underlying, str) or m.underlying not in u_symbols:
                raise ValueError(f"market {m.name}: unknown underlying {m.underlying!r}")
        depeg = self.settlement.depeg
        if depeg is not None and (not isinstance(depeg.price_id, str) or depeg.price_id not in symbols):
            raise ValueError(f"settlement depeg: unknown price id {_show(depeg.price_id)}")
        names = [m.name for m in self.markets]
        for name in self.backstop_vault.max_exposure if self.backstop_vault else ():
            if name not in names:
                raise ValueError(f"backstop_vault max_exposure: unknown market {name!r}")
        for i, s in enumerate(self.options.series if self.options else ()):
            if not isinstance(s.underlying, str) or s.underlying not in u_symbols:
                raise ValueError(f"options.series[{i}]: unknown underlying {_show(s.underlying)}")
        return self

    def config(self) -> ProtocolConfig:
        symbols = [p.symbol for p in self.price_ids]
        u_symbols = [u.symbol for u in self.underlyings]
        s, liq, trading, o = self.settlement, self.liquidation, self.trading, self.options
        options = None
        if o is not None:
            options = OptionsConfig(
                series=tuple(
                    OptionSeriesConfig(u_symbols.index(e.underlying), e.expiry_days, e.strikes) for e in o.series
                ),
                risk=OptionRiskConfig(**dict(o.risk)),
                vol_feed=VolFeedConfig(
                    o.vol_feed.signer_set(), o.vol_feed.min_atm_vol, o.vol_feed.max_atm_vol, o.vol_feed.max_abs_skew,
                    o.vol_feed.heartbeat,
                ),
                attestation=AttestationConfig(
                    o.attestation.signer_set(), o.attestation.margin_floor, o.attestation.price_band,
                    o.attestation.max_validity, o.attestation.scenario_params,
                ),
            )  # fmt: skip
        return ProtocolConfig(
            settlement_symbol=s.symbol,
            settlement_decimals=s.decimals,
            price_ids=tuple(p.config() for p in self.price_ids),
            assets=tuple(AssetConfig(**{**dict(a), "price_id": symbols.index(a.price_id)}) for a in self.assets),
            underlyings=tuple(
                UnderlyingConfig(**{**dict(u), "price_id": symbols.index(u.price_id)}) for u in self.underlyings
            ),
            markets=tuple(
                MarketConfig(
                    m.name,
                    u_symbols.index(m.underlying),
                    m.expiry_days,
                    m.max_open_interest * WAD,
                    m.max_position * WAD,
                )
                for m in self.markets
            ),
            liquidation_penalty=liq.penalty,
            liquidator_share=liq.liquidator_share,
            liquidation_target=liq.target,
            max_price_deviation=trading.max_price_deviation,
            max_funding_rate=trading.max_funding_rate,
            funding_smoothing=trading.funding_smoothing,
            max_liquidation_penalty=liq.max_penalty,
            penalty_ramp_time=liq.penalty_ramp_seconds,
            min_position_notional=trading.min_position_notional,
            settlement_address=s.address,
            allow_mocks=self.allow_mocks,
            governance=GovernanceConfig(**dict(self.governance)) if self.governance else None,
            options=options,
            insurance_fund_usd=self.backstop.insurance_fund_usd,
            backstop_coverage=self.backstop.coverage,
            depeg=DepegConfig(symbols.index(s.depeg.price_id), s.depeg.threshold, s.depeg.factor) if s.depeg else None,
            backstop_vault=self._backstop_vault(),
        )

    def _backstop_vault(self) -> BackstopVaultConfig | None:
        b = self.backstop_vault
        if b is None:
            return None
        return BackstopVaultConfig(
            b.caller_fee_share,
            b.max_margin_usage,
            b.auction_discount,
            b.auction_seconds,
            b.request_delay_seconds,
            # in the markets' order, whatever the file's: the config echo compares equal
            tuple((m.name, b.max_exposure[m.name] * WAD) for m in self.markets if m.name in b.max_exposure),
        )


# list entries named by one of their keys (`assets[0] WETH`, `market ETH-PERP`, `options.series[1] BTC`)
_NAMES = {"price_ids": "symbol", "assets": "symbol", "underlyings": "symbol", "markets": "name", "series": "underlying"}


def _place(loc: tuple, raw: Any, named: bool = True) -> str:
    """Where `loc` is, as the messages name it: `top level`, `settlement depeg`, `assets[0] WETH`,
    `market ETH-PERP`, `price_ids[0] ETH feeds[1]`, `options.vol_feed signers[0]`; the last
    entry without its name unless `named`."""
    text, node, parent = "", raw, None
    for n, key in enumerate(loc):
        node = node[key]
        if isinstance(key, int):
            name = node.get(_NAMES[parent]) if parent in _NAMES and isinstance(node, dict) else None
            if name is None or (not named and n == len(loc) - 1):
                text += f"[{key}]"
            else:
                text = f"market {name}" if parent == "markets" else f"{text}[{key}] {name}"
        else:
            text = key if not text else f"{text}{'.' if text == 'options' else ' '}{key}"
        parent = key
    return text or "top level"


def _message(e: ValidationError, raw: Any) -> str:
    """pydantic's first problem as the one line this loader has always given (without the file)."""
    errors = e.errors(include_url=False)
    loc = tuple(k for k in errors[0]["loc"] if k not in _TAGS)
    unknown = sorted(
        str(err["loc"][-1])
        for err in errors
        if err["type"] == "extra_forbidden" and loc[: len(err["loc"]) - 1] == err["loc"][:-1]
    )
    if unknown:  # a section that names its keys (backstop, options): before any other problem in it
        section = str(loc[0])
        known = (_Backstop if section == "backstop" else _Options).model_fields
        return f"{section}: unknown key {unknown[0]!r} (expected {', '.join(sorted(known))})"
    p = first_problem(e)
    key = loc[-1] if loc else None
    entry = len(loc) >= 2 and isinstance(loc[-2 if p.kind == "missing" else -1], int)
    section = loc[-3 if p.kind == "missing" else -2] if entry else None
    if p.kind == "value_error":  # a rule across fields: its own whole line
        return p.text
    if p.kind == "duplicate":
        return f"{_place(loc, raw)}: duplicate {p.ctx['name']!r} (entries {p.ctx['i']} and {p.ctx['j']})"
    if p.kind == "config":  # a value's problem, after where it is and the field (a list's field for its entries)
        if isinstance(key, int):
            return f"{_place(loc, raw)}: {next(k for k in reversed(loc) if isinstance(k, str))}: {p.ctx['text']}"
        named = len(loc) < 3 or key != _NAMES.get(str(loc[-3]))
        return f"{_place(loc[:-1], raw, named)}: {key}: {p.ctx['text']}"
    if p.kind in ("tuple_type", "list_type"):
        return f"{key}: must be a list of entries, got {_show(p.value)}"
    if p.kind == "model_type" and section == "feeds":
        return f"{_place(loc, raw)}: must be a mapping {{address, heartbeat}}, got {_show(p.value)}"
    if p.kind in ("missing", "model_type") and section in _NAMES:  # an entry of a section
        label = _NAMES[str(section)]
        missing = key if p.kind == "missing" else label
        i = loc[-2] if p.kind == "missing" else loc[-1]
        if section in ("price_ids", "assets", "underlyings") or missing == label:
            name = "" if missing == label else f" ({_dig(raw, loc[:-1])[label]})"
            return f"{'options.series' if section == 'series' else section}: missing '{missing}' in entry {i}{name}"
    if p.kind == "missing":
        where = "top level" if loc[:-1] == ("options",) and key == "series" else _place(loc[:-1], raw)
        return f"{where}: missing '{key}'"
    if p.kind == "model_type" and not loc:
        return "top level: missing 'settlement'"
    if p.kind == "model_type" and loc == ("settlement", "depeg"):
        return f"settlement: depeg: must be a mapping {{price_id, threshold, factor}}, got {_show(p.value)}"
    if p.kind == "model_type":
        return f"{_place(loc, raw)}: must be a mapping, got {_show(p.value)}"
    return f"{_place(loc, raw)}: {p.kind}: {_show(p.value)}"  # not expected: every kind is worded above


def _dig(raw: Any, loc: tuple) -> Any:
    for key in loc:
        raw = raw[key]
    return raw


def _parse(raw: Any) -> ProtocolConfig:
    try:
        listing = _Listing.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_message(e, raw)) from None
    return listing.config()


def with_default_governance(config: ProtocolConfig, deployer: str, development: bool) -> ProtocolConfig:
    """`config` with a `governance` section: the deployment scripts always hand the protocol's
    roles to a timelock. On a development chain a config without one gets the deployer as
    governance and the shortest delay the timelock allows (MIN_TIMELOCK_DELAY, one hour); on any
    other chain a missing section raises ConfigError, because who governs must be a decision."""
    import dataclasses

    if config.governance is not None:
        if config.governance.address == DEPLOYER:
            return dataclasses.replace(config, governance=dataclasses.replace(config.governance, address=deployer))
        return config
    if not development:
        raise ConfigError(
            "the config has no `governance` section: name the governance address and timelock_delay "
            "(seconds) that will own the protocol's parameters on this network "
            "(`address: deployer` lets the deploying account govern, for a trial)"
        )

    return dataclasses.replace(config, governance=GovernanceConfig(deployer, MIN_TIMELOCK_DELAY))


def read_yaml(path: str | Path) -> object:
    """The parsed content of a YAML file; ConfigError with one line naming the file otherwise."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__})") from None


def _read_with_base(path: Path, seen: tuple[Path, ...] = ()) -> object:
    """A config's raw mapping; `extends: other.yaml` (relative to the file) takes every top-level
    section of that file that this one does not set, so a variant lists only what it changes."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: extends: must be the path of another config file, got {_show(base)}")
    base_path = (path.parent / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: extends: {base} makes a cycle")
    base_raw = _read_with_base(base_path, seen + (path.resolve(),))
    if not isinstance(base_raw, dict):
        raise ConfigError(f"{base_path}: a config file must be a mapping of sections")
    return {**base_raw, **raw}


def load_config(path: str | Path = DEFAULT_CONFIG) -> ProtocolConfig:
    """Load and validate a protocol configuration YAML (see `_read_with_base` for `extends:`).

    Raises ConfigError with one line naming the file, the section or field, and the problem.
    """
    path = Path(path)
    raw = _read_with_base(path)
    try:
        config = _parse(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (TypeError, ValueError, ArithmeticError) as e:  # not expected: every field is checked
        raise ConfigError(f"{path}: {e.__class__.__name__}: {e}") from None
    check_bounds(config, str(path))
    return _resolve_paths(config, path.parent)


def check_bounds(config: ProtocolConfig, where: str = "config") -> None:
    """Raise ConfigError (one line, every problem, each ending with the contract's revert string)
    if any value is outside what the contracts accept (`keeper.params.bounds.check_config`):
    a deployment would otherwise send its first transactions and revert half-way."""
    from keeper.params.bounds import check_config

    problems = check_config(config)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _resolve_paths(config: ProtocolConfig, base: Path) -> ProtocolConfig:
    """File names inside a config are relative to the config file (as `extends:` is)."""
    import dataclasses

    if config.options is None or not config.options.attestation.scenario_params:
        return config
    sp = Path(config.options.attestation.scenario_params)
    if sp.is_absolute():
        return config
    attestation = dataclasses.replace(config.options.attestation, scenario_params=str((base / sp).resolve()))
    return dataclasses.replace(config, options=dataclasses.replace(config.options, attestation=attestation))


def load_scenario_params(path: str | Path = DEFAULT_PM_CONFIG) -> ScenarioParams:
    """Read the ``portfolio_margin:`` section of a YAML file into :class:`ScenarioParams`.

    Absent keys take their documented defaults; unknown keys are errors (a typo must not fall
    back to a default silently). Raises ConfigError with one line naming the file and field."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict) or "portfolio_margin" not in raw:
        raise ConfigError(f"{path}: missing section 'portfolio_margin'")
    section = raw["portfolio_margin"]
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: portfolio_margin: must be a mapping, got {section!r}")
    known = {f.name for f in dataclasses.fields(ScenarioParams)}
    unknown = sorted(str(k) for k in section if k not in known)
    if unknown:
        raise ConfigError(f"{path}: portfolio_margin: unknown parameter(s) {', '.join(unknown)}")
    try:
        return ScenarioParams(**section)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
