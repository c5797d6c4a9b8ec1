"""A change file (YAML) of risk parameter changes, validated strictly.

    changes:
      - {underlying: ETH, im_rate: 0.12, mm_rate: 0.06}
      - {asset: WETH, haircut: 0.80, deposit_cap: 5000000}
      - {market: ETH-PERP, max_open_interest: 1000000}
      - {price_id: ETH, heartbeats: [1800]}
      - {liquidation: {penalty: 0.025}}

and, when the deployment has options (its manifest names an option market, vol feed and
health attestor):

      - {attestation: {margin_floor: 0.3, price_band: 0.02, max_validity: 600}}
      - {options: {short_im_rate: 0.16, short_mm_rate: 0.1}}
      - {series: ETH-30D-C-2200, max_open_interest: 1000, max_position: 100}
      - {vol_feed: {min_atm_vol: 0.05, max_atm_vol: 3, max_abs_skew: 1, heartbeat: 1200}}
      - {portfolio_margin: config/portfolio_margin.yaml}

and, when the manifest names a backstop vault (`backstop_vault`):

      - {backstop_vault: {caller_fee_share: 0.2, auction_discount: 0.02, request_delay_seconds: 172800}}
      - {market: ETH-PERP, backstop_max_exposure: 500}

`portfolio_margin:` names a portfolio-margin parameters YAML (keeper.risk.scenarios, path relative
to the working directory); the HealthAttestor is governed to its hash
(`set_scenario_params_hash`), after which attestations must be computed with that file.

An entry names one underlying, asset, market, price id or option series (by the manifest's
names) with the fields to change, or is a one-key mapping `liquidation:` / `trading:` /
`attestation:` / `options:` / `vol_feed:` / `backstop_vault:` of fields, or `portfolio_margin: <file>`.
Fields not given keep their on-chain value. A market's `backstop_max_exposure` is the backstop
vault's own cap on its position there (`BackstopVault.set_max_exposure`), beside the engine's
caps of the same market. Units: rates and fractions are decimals (0.12 = 12%, exact
to 18 decimals), prices USD, caps whole units of the underlying (`max_open_interest`,
`max_position`) or whole tokens (`deposit_cap`), heartbeats, the ramp and the backstop vault's `auction_seconds` / `request_delay_seconds` in
seconds.
Entries are applied in file order, so a change that depends on another (raise mm_rate before
raising the penalty) comes after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, create_model

from keeper.errors import KeeperError
from keeper.units import to_wad

FRACTION, NUMBER, USD, AMOUNT, SECONDS, HEARTBEATS = "fraction", "number", "usd", "amount", "seconds", "heartbeats"
HASH = "hash"  # 32 bytes

# section -> field -> kind. "Named" sections address one item of the manifest by name.
FIELDS: dict[str, dict[str, str]] = {
    "underlying": {"im_rate": FRACTION, "mm_rate": FRACTION, "spread_im_rate": FRACTION, "spread_mm_rate": FRACTION},
    "asset": {"haircut": FRACTION, "deposit_cap": AMOUNT},
    # backstop_max_exposure: BackstopVault.set_max_exposure (only with a backstop vault)
    "market": {"max_open_interest": AMOUNT, "max_position": AMOUNT, "backstop_max_exposure": AMOUNT},
    "price_id": {"heartbeats": HEARTBEATS, "min_price": USD, "max_price": USD, "max_jump": FRACTION},
    "liquidation": {"penalty": FRACTION, "liquidator_share": FRACTION, "target": NUMBER,
                    "max_penalty": FRACTION, "penalty_ramp_seconds": SECONDS},
    "trading": {"max_price_deviation": FRACTION, "max_funding_rate": FRACTION, "funding_smoothing": FRACTION,
                "min_position_notional": USD},
    # CollateralVault.set_depeg_params: the settlement-asset depeg rule (threshold in USD, factor a multiplier)
    "depeg": {"threshold": FRACTION, "factor": NUMBER},
    # HealthAttestor
    "attestation": {"margin_floor": FRACTION, "price_band": FRACTION, "max_validity": SECONDS},
    # OptionMarket.set_risk_params (the RiskParams struct, in order) and set_series_caps
    "options": {"short_im_rate": FRACTION, "short_im_floor": FRACTION, "short_mm_rate": FRACTION,
                "long_im_haircut": FRACTION, "long_mm_haircut": FRACTION, "abs_price_band": FRACTION,
                "rel_price_band": FRACTION},
    "series": {"max_open_interest": AMOUNT, "max_position": AMOUNT},
    # VolFeed: ATM vol and |skew| bounds are decimals (3 = 300% a year), heartbeat seconds
    "vol_feed": {"min_atm_vol": NUMBER, "max_atm_vol": NUMBER, "max_abs_skew": NUMBER, "heartbeat": SECONDS},
    # HealthAttestor.set_scenario_params_hash: from `portfolio_margin: <file>` (not a mapping)
    "portfolio_margin": {"scenario_params_hash": HASH},
    # BackstopVault.set_params, named as the config's `backstop_vault:` section
    "backstop_vault": {"caller_fee_share": FRACTION, "max_margin_usage": FRACTION, "auction_discount": FRACTION,
                       "auction_seconds": SECONDS, "request_delay_seconds": SECONDS},
}  # fmt: skip
NAMED = ("underlying", "asset", "market", "price_id", "series")
GLOBAL = ("liquidation", "trading", "depeg", "attestation", "options", "vol_feed", "portfolio_margin", "backstop_vault")
# sections that exist only when the deployment has options, -> the manifest field they need
OPTION_SECTIONS = {
    "attestation": "health_attestor",
    "options": "option_market",
    "series": "option_market",
    "vol_feed": "vol_feed",
    "portfolio_margin": "health_attestor",
}
# the manifest field of the backstop vault; the section and the fields of other sections that
# address it exist only when the manifest names one
BACKSTOP_VAULT = "backstop_vault"
BACKSTOP_FIELDS = {"backstop_vault": tuple(FIELDS["backstop_vault"]), "market": ("backstop_max_exposure",)}
MAX_SECONDS = 10**9
MAX_FEEDS = 3


class ChangeError(KeeperError, ValueError):
    """A change file is unreadable or has mistakes; `problems` holds one line per mistake."""

    def __init__(self, problems: list[str], source: str = ""):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            super().__init__(head + self.problems[0])
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            super().__init__(f"{head}{len(self.problems)} problems:\n{lines}")


@dataclass(frozen=True)
class Change:
    """One entry: `section` (see FIELDS), `name` ("" for liquidation / trading) and the new
    values: WAD integers for decimals (AMOUNT still in whole units x 1e18), ints for seconds,
    a tuple of ints for heartbeats; for `portfolio_margin` the file's `scenario_params_hash`
    (32 bytes), its `params` (ScenarioParams) and `path`."""

    index: int
    section: str
    name: str
    values: dict

    @property
    def where(self) -> str:
        """How error lines name the entry: `changes[0] underlying ETH`."""
        return f"changes[{self.index}] {self.section}" + (f" {self.name}" if self.name else "")

    @property
    def needs_backstop_vault(self) -> bool:
        """The entry sets a parameter of the backstop vault (see BACKSTOP_FIELDS)."""
        return any(f in self.values for f in BACKSTOP_FIELDS.get(self.section, ()))


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wad(value: Any) -> int:
    """A non-negative decimal as a WAD integer (keeper.units.to_wad: exact to 18 decimals)."""
    try:
        wad = to_wad(value)
    except TypeError:
        raise ValueError(f"must be a number, got {_show(value)}") from None
    if wad < 0:
        raise ValueError(f"must not be negative, got {_show(value)}")
    return wad


Seconds = Annotated[StrictInt, Field(ge=0, le=MAX_SECONDS)]
_TYPES: dict[str, Any] = {
    SECONDS: Seconds,
    HEARTBEATS: Annotated[tuple[Seconds, ...], Field(min_length=1, max_length=MAX_FEEDS)],
    **{kind: Annotated[int, BeforeValidator(_wad)] for kind in (FRACTION, NUMBER, USD, AMOUNT)},
}
# a bad whole number of seconds, by kind and depth (a heartbeats list, or one item of it)
_WORDING = {
    (SECONDS, 1): "must be a whole number of seconds",
    (HEARTBEATS, 1): f"must be a list of 1 to {MAX_FEEDS} heartbeats in seconds (one per feed)",
    (HEARTBEATS, 2): "each heartbeat must be a whole number of seconds",
}
# section -> the model of its fields (all optional; unknown fields refused)
_MODELS: dict[str, type[BaseModel]] = {
    section: create_model(
        f"{section}_fields",
        __config__=ConfigDict(extra="forbid", frozen=True),
        **{key: (_TYPES[kind], None) for key, kind in kinds.items()},
    )
    for section, kinds in FIELDS.items()
    if section != "portfolio_margin"
}


def _fields(section: str, raw: dict, where: str, problems: list[str]) -> dict:
    """The fields of one entry, validated by its section's model; one problem per bad field, in
    the file's order."""
    allowed = FIELDS[section]
    if not raw:
        problems.append(f"{where}: nothing to change; give at least one of {', '.join(allowed)}")
        return {}
    try:
        checked = _MODELS[section].model_validate(raw)
    except ValidationError as e:
        first: dict = {}  # the first (outermost) error of each field
        for err in sorted(e.errors(include_url=False), key=lambda err: len(err["loc"])):
            if err["type"] == "too_short" and len(err["input"]) >= err["ctx"]["min_length"]:
                continue  # counted after dropping the bad items, which are reported instead
            first.setdefault(err["loc"][0], err)
        order = list(raw)
        for key, err in sorted(first.items(), key=lambda item: order.index(item[0])):
            if err["type"] in ("extra_forbidden", "invalid_key"):
                problem = f"unknown field {_show(key)}; {section} takes {', '.join(allowed)}"
            elif err["type"] == "value_error":  # _wad's own wording
                problem = f"{key}: {err['ctx']['error']}"
            else:
                problem = f"{key}: {_WORDING[allowed[key], len(err['loc'])]}, got {_show(err['input'])}"
            problems.append(f"{where}: {problem}")
        return {}
    return {key: getattr(checked, key) for key in raw}


def _portfolio_margin(i: int, entry: dict, problems: list[str]) -> Change | None:
    """`{portfolio_margin: <file>}`: the file's parameters and their hash."""
    from keeper.config import ConfigError, load_scenario_params
    from keeper.risk.scenarios import scenario_params_hash

    where = f"changes[{i}] portfolio_margin"
    path = entry["portfolio_margin"]
    if len(entry) != 1:
        extra = ", ".join(str(k) for k in entry if k != "portfolio_margin")
        problems.append(
            f"{where}: takes only the parameters file (portfolio_margin: path.yaml), found {extra} beside it"
        )
        return None
    if not isinstance(path, str) or not path.strip():
        problems.append(f"{where}: must be the path of a portfolio margin YAML file, got {_show(path)}")
        return None
    try:
        params = load_scenario_params(path.strip())
    except ConfigError as e:
        problems.append(f"{where}: {e}")
        return None
    return Change(
        i,
        "portfolio_margin",
        "",
        {"scenario_params_hash": scenario_params_hash(params), "params": params, "path": path.strip()},
    )


def _entry(i: int, entry, problems: list[str]) -> Change | None:
    where = f"changes[{i}]"
    if not isinstance(entry, dict) or not entry:
        problems.append(f"{where}: must be a mapping such as {{underlying: ETH, im_rate: 0.12}}, got {_show(entry)}")
        return None
    selectors = [k for k in entry if k in NAMED or k in GLOBAL]
    if len(selectors) != 1:
        what = "none" if not selectors else ", ".join(map(str, selectors))
        problems.append(f"{where}: needs exactly one of {', '.join(NAMED + GLOBAL)} (found {what})")
        return None
    section = selectors[0]
    if section == "portfolio_margin":
        return _portfolio_margin(i, entry, problems)
    if section in GLOBAL:
        body = entry[section]
        if len(entry) != 1:
            extra = ", ".join(str(k) for k in entry if k != section)
            problems.append(
                f"{where}: {section} takes its fields inside it ({section}: {{...}}), found {extra} beside it"
            )
            return None
        if not isinstance(body, dict):
            problems.append(f"{where}: {section}: must be a mapping of fields, got {_show(body)}")
            return None
        n = len(problems)
        values = _fields(section, body, f"{where} {section}", problems)
        return Change(i, section, "", values) if len(problems) == n else None
    name = entry[section]
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        problems.append(f"{where}: {section}: must be a name from the manifest, got {_show(name)}")
        return None
    n = len(problems)
    values = _fields(section, {k: v for k, v in entry.items() if k != section}, f"{where} {section} {name}", problems)
    return Change(i, section, name, values) if len(problems) == n else None


def parse_changes(raw) -> list[Change]:
    """Validate a parsed change file; raises ChangeError listing every mistake, one per line."""
    if not isinstance(raw, dict) or "changes" not in raw:
        raise ChangeError(["must be a mapping with a 'changes' list, e.g. changes: [{underlying: ETH, im_rate: 0.12}]"])
    problems: list[str] = []
    extra = [k for k in raw if k != "changes"]
    if extra:
        problems.append(f"top level: unknown key {_show(extra[0])}; only 'changes' is allowed")
    entries = raw["changes"]
    if not isinstance(entries, list) or not entries:
        raise ChangeError(problems + [f"changes: must be a non-empty list of entries, got {_show(entries)}"])
    out: list[Change] = []
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        change = _entry(i, entry, problems)
        if change is None:
            continue
        key = (change.section, change.name)
        if key in seen:
            problems.append(f"{change.where}: duplicate of changes[{seen[key]}]; put both in one entry")
            continue
        seen[key] = i
        out.append(change)
    if problems:
        raise ChangeError(problems)
    return out


def load_changes(path: str | Path) -> list[Change]:
    """Read and validate a change file. Raises ChangeError naming the file, one line per mistake."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChangeError(["file not found"], str(path)) from None
    except UnicodeDecodeError as e:
        raise ChangeError([f"not a UTF-8 text file ({e.reason} at byte {e.start})"], str(path)) from None
    except OSError as e:
        raise ChangeError([f"cannot read: {e.strerror or e}"], str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ChangeError([f"not valid YAML{at} ({e.__class__.__name__})"], str(path)) from None
    try:
        return parse_changes(raw)
    except ChangeError as e:
        raise ChangeError(e.problems, str(path)) from None
