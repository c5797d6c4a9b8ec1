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

import yaml

from keeper import resources
from keeper.errors import ConfigError
from keeper.params.bounds import MAX_MIN_POSITION_NOTIONAL
from keeper.risk.scenarios import ScenarioParams
from keeper.units import MAX_UINT256, WAD, to_wad

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


class _At(str):
    """Where a field is: prints as `assets[0] WETH` (for problems with a value), and `missing`
    names the section first (`assets: missing 'haircut' in entry 0 (WETH)`)."""

    section: str
    entry: str

    def __new__(cls, section: str, index: int | None = None, name: str | None = None) -> "_At":
        label = section if index is None else f"{section}[{index}]" + ("" if name is None else f" {name}")
        self = super().__new__(cls, label)
        self.section = section
        self.entry = "" if index is None else f" in entry {index}" + ("" if name is None else f" ({name})")
        return self


def _get(d: dict, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        if isinstance(where, _At):
            raise ConfigError(f"{where.section}: missing '{key}'{where.entry}")
        raise ConfigError(f"{where}: missing '{key}'")
    return d[key]


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


def _show(value) -> str:
    """A config value as the user wrote it in YAML (None -> null, True -> true)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fraction(d: dict, key: str, where: str, lo: int = 0, hi: int = 1) -> int:
    """A decimal number in [lo, hi] as an exact WAD integer."""
    value = _get(d, key, where)
    try:
        wad = to_wad(value)
    except TypeError:
        wad = None  # bool, null, a list or a mapping
    except ValueError as e:  # not a number, not finite, more than 18 decimals, too large
        raise ConfigError(f"{where}: {key}: {e}") from None
    if wad is None or not lo * WAD <= wad <= hi * WAD:
        raise ConfigError(f"{where}: {key}: must be a number in [{lo}, {hi}], got {_show(value)}")
    return wad


def _integer(d: dict, key: str, where: str, lo: int, hi: int, unit: str = "") -> int:
    """An integer in [lo, hi]: a YAML int, not a bool, a float or a string."""
    value = _get(d, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}: {key}: must be an integer in [{lo}, {hi}]{unit}, got {_show(value)}")
    return value


def _symbol(d: dict, key: str, where: str) -> str:
    value = _get(d, key, where)
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ConfigError(f"{where}: {key}: must be a non-empty one-line string, got {_show(value)}")
    return value


def _entries(raw: dict, section: str, required: bool = True) -> list:
    """A section that is a list of mappings."""
    if required or section in raw:
        value = _get(raw, section, "top level")
    else:
        value = []
    if not isinstance(value, list):
        raise ConfigError(f"{section}: must be a list of entries, got {_show(value)}")
    return value


def _mapping(raw: dict, section: str) -> dict:
    value = _get(raw, section, "top level")
    if not isinstance(value, dict):
        raise ConfigError(f"{section}: must be a mapping, got {_show(value)}")
    return value


def _unique(names: list[str], section: str) -> None:
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{section}: duplicate {name!r} (entries {names.index(name)} and {i})")


def _deposit_cap(a: dict, where: str, decimals: int) -> int:
    """Whole tokens, an int or an integer-valued float that is exact; returns token units."""
    value = _get(a, "deposit_cap", where)
    if isinstance(value, float) and value > MAX_EXACT_FLOAT and math.isfinite(value):
        raise ConfigError(
            f"{where}: deposit_cap: {value!r} is a float above 2**53, which is not exact; write it as an integer"
        )
    written = value
    if isinstance(value, float) and value.is_integer():  # finite and exact: 1e6 is 1000000
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: deposit_cap: must be a non-negative whole number of tokens, got {_show(written)}")
    units = value * 10**decimals
    if units > MAX_UINT256:
        raise ConfigError(f"{where}: deposit_cap: {_show(value)} tokens is above max uint256 token units")
    return units


def _address(d: dict, key: str, where: str) -> str:
    """An EIP-55 address (all lower or all upper case carries no checksum and is accepted)."""
    from eth_utils import is_address, to_checksum_address

    value = _get(d, key, where)
    if not isinstance(value, str) or not is_address(value):
        raise ConfigError(f"{where}: {key}: must be a 0x-prefixed 20-byte hex address, got {_show(value)}")
    digits = value[2:]
    if digits not in (digits.lower(), digits.upper()) and value != to_checksum_address(value):
        raise ConfigError(f"{where}: {key}: wrong EIP-55 checksum (a typo?): {value}")
    if int(value, 16) == 0:
        raise ConfigError(f"{where}: {key}: is the zero address")
    return to_checksum_address(value)


def _feeds(p: dict, where: str) -> tuple[FeedConfig, ...]:
    """`feeds: [{address, heartbeat}, ...]`: one to MAX_FEEDS existing aggregators, no duplicates."""
    value = p["feeds"]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FEEDS:
        raise ConfigError(
            f"{where}: feeds: must be a list of 1 to {MAX_FEEDS} {{address, heartbeat}} entries, got {_show(value)}"
        )
    feeds = []
    for j, f in enumerate(value):
        at = f"{where} feeds[{j}]"
        if not isinstance(f, dict):
            raise ConfigError(f"{at}: must be a mapping {{address, heartbeat}}, got {_show(f)}")
        feeds.append(
            FeedConfig(
                _address(f, "address", at), _integer(f, "heartbeat", at, MIN_HEARTBEAT, MAX_HEARTBEAT, " seconds")
            )
        )
    _unique([f.address for f in feeds], f"{where} feeds")
    return tuple(feeds)


def _price_id(p: dict, symbol: str, where: "_At") -> PriceIdConfig:
    if "feeds" in p:
        feeds = _feeds(p, where)
        decimals = _integer(p, "feed_decimals", where, 0, MAX_DECIMALS) if "feed_decimals" in p else None
        return PriceIdConfig(symbol, decimals, 0, feeds[0].heartbeat, feeds)
    return PriceIdConfig(
        symbol=symbol,
        feed_decimals=_integer(p, "feed_decimals", where, 0, MAX_DECIMALS),
        initial_price=_integer(p, "initial_price", where, 1, MAX_INITIAL_PRICE, " USD"),
        heartbeat=_integer(p, "heartbeat", where, MIN_HEARTBEAT, MAX_HEARTBEAT, " seconds"),
    )


# `governance: {address: deployer}`: the deploying account governs (a placeholder for trying a
# testnet deployment as copied; resolved by `with_default_governance` / `deploy_protocol`).
DEPLOYER = "deployer"


def _governance(raw: dict) -> GovernanceConfig | None:
    if "governance" not in raw:
        return None
    g = _mapping(raw, "governance")
    return GovernanceConfig(
        address=DEPLOYER if g.get("address") == DEPLOYER else _address(g, "address", "governance"),
        timelock_delay=_integer(g, "timelock_delay", "governance", MIN_TIMELOCK_DELAY, MAX_TIMELOCK_DELAY, " seconds"),
    )


def _expiry_days(m: dict, where: str) -> float | None:
    value = m.get("expiry_days")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_EXPIRY_DAYS
    ):
        raise ConfigError(
            f"{where}: expiry_days: must be a number of days in (0, {MAX_EXPIRY_DAYS}], got {_show(value)}"
        )
    return float(value)


# Contract bounds: OptionMarket (MAX_STRIKE_RATIO, MAX_EXPIRY_HORIZON, MAX_SERIES, risk params),
# VolFeed (HARD_* vol bounds, heartbeat) and HealthAttestor (floor, band, validity), signer_set (16).
MAX_STRIKE_MULTIPLE = 10
MAX_OPTION_EXPIRY_DAYS = 2 * 365
MAX_OPTION_SERIES = 256
MAX_SIGNERS = 16
OPTIONS_KEYS = {"series", "risk", "vol_feed", "attestation"}


def _numbers(d: dict, key: str, where: str, lo: float, hi: float, what: str) -> tuple[float, ...]:
    """A non-empty list of distinct numbers in (lo, hi]."""
    value = _get(d, key, where)
    ok = (
        isinstance(value, list)
        and value
        and all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and lo < v <= hi for v in value
        )
    )
    if not ok:
        raise ConfigError(f"{where}: {key}: must be a non-empty list of {what} in ({lo}, {hi}], got {_show(value)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {key}: duplicate value in {_show(value)}")
    return tuple(float(v) for v in value)


def _signer_set(d: dict, where: str) -> SignerSetConfig:
    value = _get(d, "signers", where)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SIGNERS:
        raise ConfigError(f"{where}: signers: must be a list of 1 to {MAX_SIGNERS} addresses, got {_show(value)}")
    signers = tuple(_address({"signers": v}, "signers", f"{where} signers[{i}]") for i, v in enumerate(value))
    _unique(list(signers), f"{where} signers")
    return SignerSetConfig(signers, _integer(d, "threshold", where, 1, len(signers)))


def _scenario_params_path(a: dict, where: str) -> str:
    """The optional `scenario_params:` path (a YAML file with a `portfolio_margin:` section)."""
    value = a.get("scenario_params", "")
    if not isinstance(value, str) or (value and not value.strip()):
        raise ConfigError(
            f"{where}: scenario_params: must be the path of a portfolio margin YAML file, got {_show(value)}"
        )
    return value.strip()


def _options(raw: dict, u_symbols: list[str]) -> OptionsConfig | None:
    if "options" not in raw:
        return None
    o = _mapping(raw, "options")
    unknown = sorted(set(o) - OPTIONS_KEYS)
    if unknown:
        raise ConfigError(f"options: unknown key {unknown[0]!r} (expected {', '.join(sorted(OPTIONS_KEYS))})")
    series = []
    for i, e in enumerate(_entries(o, "series")):
        at = _At("options.series", i)
        underlying = _get(e, "underlying", at)
        if not isinstance(underlying, str) or underlying not in u_symbols:
            raise ConfigError(f"options.series[{i}]: unknown underlying {_show(underlying)}")
        where = f"options.series[{i}] {underlying}"
        series.append(
            OptionSeriesConfig(
                underlying=u_symbols.index(underlying),
                expiry_days=_numbers(e, "expiry_days", where, 0, MAX_OPTION_EXPIRY_DAYS, "days"),
                strikes=_numbers(
                    e, "strikes", where, 1 / MAX_STRIKE_MULTIPLE, MAX_STRIKE_MULTIPLE, "multiples of the index price"
                ),
            )
        )
    _unique([u_symbols[s.underlying] for s in series], "options.series")
    count = sum(2 * len(s.expiry_days) * len(s.strikes) for s in series)
    if count > MAX_OPTION_SERIES:
        raise ConfigError(
            f"options.series: {count} series (calls and puts), the option market lists at most {MAX_OPTION_SERIES}"
        )
    r = _get(o, "risk", "options")
    if not isinstance(r, dict):
        raise ConfigError(f"options.risk: must be a mapping, got {_show(r)}")
    at = "options.risk"
    risk = OptionRiskConfig(
        short_im_rate=_fraction(r, "short_im_rate", at),
        short_im_floor=_fraction(r, "short_im_floor", at),
        short_mm_rate=_fraction(r, "short_mm_rate", at),
        long_im_haircut=_fraction(r, "long_im_haircut", at),
        long_mm_haircut=_fraction(r, "long_mm_haircut", at),
        abs_price_band=_fraction(r, "abs_price_band", at),
        rel_price_band=_fraction(r, "rel_price_band", at),
    )
    if not (10**16 <= risk.short_mm_rate <= risk.short_im_floor <= risk.short_im_rate):
        raise ConfigError(f"{at}: need 0.01 <= short_mm_rate <= short_im_floor <= short_im_rate")
    if not risk.long_im_haircut <= risk.long_mm_haircut <= 9 * 10**17:
        raise ConfigError(f"{at}: need long_im_haircut <= long_mm_haircut <= 0.9")
    if not 10**14 <= risk.abs_price_band <= 5 * 10**16:
        raise ConfigError(f"{at}: abs_price_band: must be in [0.0001, 0.05]")
    if not 10**15 <= risk.rel_price_band <= 5 * 10**17:
        raise ConfigError(f"{at}: rel_price_band: must be in [0.001, 0.5]")
    v = _get(o, "vol_feed", "options")
    if not isinstance(v, dict):
        raise ConfigError(f"options.vol_feed: must be a mapping, got {_show(v)}")
    at = "options.vol_feed"
    vol = VolFeedConfig(
        signers=_signer_set(v, at),
        min_atm_vol=_fraction(v, "min_atm_vol", at, 0, 5),
        max_atm_vol=_fraction(v, "max_atm_vol", at, 0, 5),
        max_abs_skew=_fraction(v, "max_abs_skew", at, 0, 5),
        heartbeat=_integer(v, "heartbeat", at, 60, 86400, " seconds"),
    )
    if not 10**16 <= vol.min_atm_vol < vol.max_atm_vol:
        raise ConfigError(f"{at}: need 0.01 <= min_atm_vol < max_atm_vol <= 5")
    a = _get(o, "attestation", "options")
    if not isinstance(a, dict):
        raise ConfigError(f"options.attestation: must be a mapping, got {_show(a)}")
    at = "options.attestation"
    attestation = AttestationConfig(
        signers=_signer_set(a, at),
        margin_floor=_fraction(a, "margin_floor", at),
        price_band=_fraction(a, "price_band", at, 0, 1),
        max_validity=_integer(a, "max_validity", at, 60, 86400, " seconds"),
        scenario_params=_scenario_params_path(a, at),
    )
    if attestation.margin_floor < 2 * 10**17:
        raise ConfigError(f"{at}: margin_floor: must be in [0.2, 1] (an attestation lowers margin by at most 80%)")
    if not 0 < attestation.price_band <= 10**17:
        raise ConfigError(f"{at}: price_band: must be in (0, 0.1]")
    return OptionsConfig(tuple(series), risk, vol, attestation)


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


def _parse(raw: dict) -> ProtocolConfig:
    settlement = _mapping(raw, "settlement")
    price_ids = []
    for i, p in enumerate(_entries(raw, "price_ids")):
        symbol = _symbol(p, "symbol", _At("price_ids", i))
        where = _At("price_ids", i, symbol)
        price_ids.append(_price_id(p, symbol, where))
    symbols = [p.symbol for p in price_ids]
    _unique(symbols, "price_ids")

    def pid(symbol, where: _At) -> int:
        if not isinstance(symbol, str) or symbol not in symbols:
            raise ConfigError(f"{where.section}: unknown price id {_show(symbol)}{where.entry}")
        return symbols.index(symbol)

    assets = []
    for i, a in enumerate(_entries(raw, "assets", required=False)):
        symbol = _symbol(a, "symbol", _At("assets", i))
        where = _At("assets", i, symbol)
        decimals = _integer(a, "decimals", where, 0, MAX_DECIMALS)
        assets.append(
            AssetConfig(
                symbol=symbol,
                decimals=decimals,
                price_id=pid(_get(a, "price_id", where), where),
                haircut=_fraction(a, "haircut", where),
                deposit_cap=_deposit_cap(a, where, decimals),
                address=_address(a, "address", where) if "address" in a else "",
            )
        )
    _unique([a.symbol for a in assets], "assets")
    settlement_address = _address(settlement, "address", "settlement") if "address" in settlement else ""
    seen = {settlement_address: "settlement"} if settlement_address else {}
    for i, a in enumerate(assets):
        if a.address in seen:
            raise ConfigError(f"assets[{i}] {a.symbol}: address {a.address} is already the token of {seen[a.address]}")
        if a.address:
            seen[a.address] = f"assets[{i}] {a.symbol}"
    allow_mocks = raw.get("allow_mocks", False)
    if not isinstance(allow_mocks, bool):
        raise ConfigError(f"top level: allow_mocks: must be true or false, got {_show(allow_mocks)}")
    underlyings = []
    for i, u in enumerate(_entries(raw, "underlyings")):
        symbol = _symbol(u, "symbol", _At("underlyings", i))
        where = _At("underlyings", i, symbol)
        underlyings.append(
            UnderlyingConfig(
                symbol=symbol,
                price_id=pid(_get(u, "price_id", where), where),
                im_rate=_fraction(u, "im_rate", where),
                mm_rate=_fraction(u, "mm_rate", where),
                spread_im_rate=_fraction(u, "spread_im_rate", where),
                spread_mm_rate=_fraction(u, "spread_mm_rate", where),
                max_gap=_fraction(u, "max_gap", where) if "max_gap" in u else 0,
                reference_price=_integer(u, "reference_price", where, 1, 10**15, " USD")
                if "reference_price" in u
                else 0,
            )
        )
    u_symbols = [u.symbol for u in underlyings]
    _unique(u_symbols, "underlyings")
    markets = []
    for i, m in enumerate(_entries(raw, "markets")):
        name = _symbol(m, "name", _At("markets", i))
        underlying = _get(m, "underlying", f"market {name}")
        if not isinstance(underlying, str) or underlying not in u_symbols:
            raise ConfigError(f"market {name}: unknown underlying {underlying!r}")
        caps = {
            key: _integer(m, key, f"market {name}", 0, 10**30) * WAD if key in m else 0
            for key in ("max_open_interest", "max_position")
        }
        if caps["max_open_interest"] and caps["max_position"] > caps["max_open_interest"]:
            raise ConfigError(f"market {name}: max_position is above max_open_interest")
        markets.append(MarketConfig(name, u_symbols.index(underlying), _expiry_days(m, f"market {name}"), **caps))
    _unique([m.name for m in markets], "markets")
    liq = _mapping(raw, "liquidation")
    trading = _mapping(raw, "trading")
    backstop = _mapping(raw, "backstop") if "backstop" in raw else {}
    unknown = sorted(set(backstop) - {"insurance_fund_usd", "coverage"})
    if unknown:
        raise ConfigError(f"backstop: unknown key {unknown[0]!r} (expected coverage, insurance_fund_usd)")
    depeg = None
    if "depeg" in settlement:
        d = settlement["depeg"]
        if not isinstance(d, dict):
            raise ConfigError(f"settlement: depeg: must be a mapping {{price_id, threshold, factor}}, got {_show(d)}")
        from keeper.params.bounds import MAX_DEPEG_FACTOR, MIN_DEPEG_THRESHOLD

        where = _At("settlement depeg")
        threshold = _fraction(d, "threshold", "settlement depeg")
        if threshold < MIN_DEPEG_THRESHOLD:
            raise ConfigError(f"settlement depeg: threshold: must be a number in [0.9, 1], got {_show(d['threshold'])}")
        factor = _fraction(d, "factor", "settlement depeg", 0, MAX_DEPEG_FACTOR // WAD)
        depeg = DepegConfig(pid(_get(d, "price_id", where), where), threshold, factor)
    return ProtocolConfig(
        settlement_symbol=_symbol(settlement, "symbol", "settlement"),
        settlement_decimals=_integer(settlement, "decimals", "settlement", 0, MAX_DECIMALS),
        price_ids=tuple(price_ids),
        assets=tuple(assets),
        underlyings=tuple(underlyings),
        markets=tuple(markets),
        liquidation_penalty=_fraction(liq, "penalty", "liquidation"),
        liquidator_share=_fraction(liq, "liquidator_share", "liquidation"),
        liquidation_target=_fraction(liq, "target", "liquidation", 1, 2),
        max_price_deviation=_fraction(trading, "max_price_deviation", "trading"),
        max_funding_rate=_fraction(trading, "max_funding_rate", "trading"),
        funding_smoothing=_fraction(trading, "funding_smoothing", "trading"),
        min_position_notional=(
            _fraction(trading, "min_position_notional", "trading", 0, MAX_MIN_POSITION_NOTIONAL // WAD)
            if "min_position_notional" in trading
            else 0
        ),
        max_liquidation_penalty=_fraction(liq, "max_penalty", "liquidation") if "max_penalty" in liq else 0,
        penalty_ramp_time=_integer(liq, "penalty_ramp_seconds", "liquidation", 60, 86400)
        if "penalty_ramp_seconds" in liq
        else 3600,
        settlement_address=settlement_address,
        allow_mocks=allow_mocks,
        governance=_governance(raw),
        options=_options(raw, u_symbols),
        insurance_fund_usd=_integer(backstop, "insurance_fund_usd", "backstop", 0, 10**15, " USD")
        if "insurance_fund_usd" in backstop
        else 0,
        backstop_coverage=_fraction(backstop, "coverage", "backstop", 0, 10) if "coverage" in backstop else WAD,
        depeg=depeg,
    )


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
