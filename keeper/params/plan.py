"""Turn validated change entries into setter calls, checked against the on-chain bounds.

Each entry becomes one call per setter it touches (a price id's heartbeats -> `set_feeds`, its
band -> `set_circuit_breaker`; liquidation penalty / share / target ->
`set_liquidation_params`, max penalty / ramp -> `set_penalty_ramp`; attestation floor, band,
validity -> one HealthAttestor setter each; a portfolio margin file -> `set_scenario_params_hash`
(its hash; `show` lists the changed parameters when the current file is known); option risk params -> `set_risk_params` with the
whole struct; vol bounds -> `set_vol_bounds`, heartbeat -> `set_heartbeat`; backstop vault
parameters -> `BackstopVault.set_params`, a market's `backstop_max_exposure` ->
`BackstopVault.set_max_exposure`), with every
argument the entry leaves out taken from chain. Calls are checked in file order against the state the
earlier calls leave, as they will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from eth_abi import encode
from eth_utils import keccak

from keeper.chain.artifacts import load_artifact
from keeper.chain.deployment import Deployment
from keeper.params import bounds
from keeper.params.bounds import wad_text
from keeper.params.changes import (
    AMOUNT,
    BACKSTOP_VAULT,
    FIELDS,
    HASH,
    HEARTBEATS,
    OPTION_SECTIONS,
    SECONDS,
    Change,
    ChangeError,
)
from keeper.params.current import GOVERNED_CONTRACTS, OPTION_RISK_FIELDS, CurrentParams
from keeper.units import WAD

CONTRACT_NAMES = GOVERNED_CONTRACTS  # manifest field -> contract name
NO_OPTIONS = "this deployment has no options"
NO_BACKSTOP_VAULT = "this deployment has no backstop vault (its manifest names no backstop_vault)"
MAX_LISTED = 10  # names shown for an unknown item (a market lists up to 256 option series)


@dataclass(frozen=True)
class Setter:
    contract: str  # manifest field: oracle, vault, engine, option_market, vol_feed, health_attestor, backstop_vault
    function: str
    fields: tuple[str, ...]  # arguments after the item's id (if the section is named), in order
    check: Callable[[dict, CurrentParams], list[str]]
    struct: bool = False  # the fields are one struct argument (OptionMarket.set_risk_params)


def _liq(state: CurrentParams) -> dict:
    return state.values["liquidation"][""]


SETTERS: dict[str, tuple[Setter, ...]] = {
    "underlying": (Setter("engine", "set_underlying_params", ("im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate"),
                          lambda new, s: bounds.check_underlying(new, _liq(s)["penalty"], _liq(s)["max_penalty"])),),
    "asset": (Setter("vault", "set_asset_params", ("haircut", "deposit_cap"), lambda new, s: bounds.check_asset(new)),),
    "market": (
        Setter("engine", "set_position_caps", ("max_open_interest", "max_position"),
               lambda new, s: bounds.check_position_caps(new)),
        Setter("backstop_vault", "set_max_exposure", ("backstop_max_exposure",), lambda new, s: []),  # any size
    ),
    "price_id": (
        Setter("oracle", "set_feeds", ("aggregators", "heartbeats"), lambda new, s: bounds.check_feeds(new)),
        Setter("oracle", "set_circuit_breaker", ("min_price", "max_price", "max_jump"),
               lambda new, s: bounds.check_circuit_breaker(new)),
    ),
    "liquidation": (
        Setter("engine", "set_liquidation_params", ("penalty", "liquidator_share", "target"),
               lambda new, s: bounds.check_liquidation(new, _liq(s)["max_penalty"], s.mm_rates())),
        Setter("engine", "set_penalty_ramp", ("max_penalty", "penalty_ramp_seconds"),
               lambda new, s: bounds.check_penalty_ramp(new, _liq(s)["penalty"], s.mm_rates())),
    ),
    "depeg": (Setter("vault", "set_depeg_params", ("threshold", "factor"), lambda new, s: bounds.check_depeg(new)),),
    "trading": (Setter("engine", "set_trade_params", ("max_price_deviation", "max_funding_rate", "funding_smoothing",
                                                        "min_position_notional"),
                       lambda new, s: bounds.check_trading(new)),),
    "attestation": (
        Setter("health_attestor", "set_margin_floor", ("margin_floor",), lambda new, s: bounds.check_margin_floor(new)),
        Setter("health_attestor", "set_price_band", ("price_band",), lambda new, s: bounds.check_price_band(new)),
        Setter("health_attestor", "set_max_validity", ("max_validity",), lambda new, s: bounds.check_max_validity(new)),
    ),
    "portfolio_margin": (Setter("health_attestor", "set_scenario_params_hash", ("scenario_params_hash",),
                                lambda new, s: []),),  # any keccak256 output is non-zero
    "options": (Setter("option_market", "set_risk_params", OPTION_RISK_FIELDS,
                       lambda new, s: bounds.check_option_risk(new), struct=True),),
    "series": (Setter("option_market", "set_series_caps", ("max_open_interest", "max_position"),
                      lambda new, s: bounds.check_series_caps(new)),),
    "vol_feed": (
        Setter("vol_feed", "set_vol_bounds", ("min_atm_vol", "max_atm_vol", "max_abs_skew"),
               lambda new, s: bounds.check_vol_bounds(new)),
        Setter("vol_feed", "set_heartbeat", ("heartbeat",), lambda new, s: bounds.check_vol_heartbeat(new)),
    ),
    "backstop_vault": (Setter("backstop_vault", "set_params", tuple(FIELDS["backstop_vault"]),  # in set_params order
                              lambda new, s: bounds.check_backstop_params(new)),),
}  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One parameter of a call as shown to the user."""

    field: str
    current: str
    new: str

    @property
    def changed(self) -> bool:
        return self.current != self.new


@dataclass(frozen=True)
class Call:
    """A setter call: `contract` (a manifest field, see CONTRACT_NAMES) at `address`,
    `function(*args)`; a struct argument is a tuple."""

    index: int  # the change entry it comes from
    section: str
    name: str
    contract: str
    address: str
    function: str
    args: tuple
    rows: tuple[Row, ...]

    @property
    def label(self) -> str:
        return self.section + (f" {self.name}" if self.name else "")

    def describe(self) -> str:
        args = ", ".join(
            f"[{', '.join(map(str, a))}]"
            if isinstance(a, (list, tuple))
            else "0x" + a.hex()
            if isinstance(a, bytes)
            else str(a)
            for a in self.args
        )
        return f"{self.contract}.{self.function}({args})"


def _abi_type(arg: dict) -> str:
    """Canonical ABI type: a struct is `(type,type,...)` (Solidity ABI spec, "tuple")."""
    if arg["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in arg["components"]) + ")" + arg["type"][len("tuple") :]
    return arg["type"]


def calldata(contract: str, function: str, args: tuple) -> bytes:
    """Selector + ABI-encoded arguments of `function` on a governed contract (manifest field
    `contract`, see CONTRACT_NAMES)."""
    abi = load_artifact(CONTRACT_NAMES[contract]).abi
    (entry,) = [e for e in abi if e.get("type") == "function" and e["name"] == function]
    types = [_abi_type(i) for i in entry["inputs"]]
    selector = keccak(text=f"{function}({','.join(types)})")[:4]
    return selector + encode(types, [list(a) if isinstance(a, tuple) else a for a in args])


def call_data(call: Call) -> bytes:
    return calldata(call.contract, call.function, call.args)


def _text(section: str, key: str, value, decimals: int | None) -> str:
    kind = FIELDS[section].get(key)
    if kind == SECONDS:
        return f"{value} s"
    if kind == HEARTBEATS:
        return "[" + ", ".join(f"{v} s" for v in value) + "]"
    if kind == HASH:
        return "0x" + bytes(value).hex()
    if kind == AMOUNT and decimals is not None:  # token units
        return wad_text(value * 10 ** (18 - decimals))
    return wad_text(value)


def known_scenario_params(h: bytes, candidates=None):
    """The ScenarioParams of the first file among `candidates` (default: the repository's
    config/portfolio_margin.yaml) whose hash is `h`, else None (the current file is not known)."""
    from keeper.config import DEFAULT_PM_CONFIG, ConfigError, load_scenario_params
    from keeper.risk.scenarios import scenario_params_hash

    for path in candidates if candidates is not None else (DEFAULT_PM_CONFIG,):
        try:
            params = load_scenario_params(path)
        except ConfigError:
            continue
        if scenario_params_hash(params) == h:
            return params
    return None


def _scenario_rows(current_hash: bytes, new_params) -> tuple[Row, ...]:
    """One row per scenario parameter that differs from the current file's (none if unknown)."""
    import dataclasses

    old = known_scenario_params(current_hash)
    if old is None:
        return (Row("parameters", "(current file not known)", "see the file"),)
    return tuple(
        Row(f.name, repr(getattr(old, f.name)), repr(getattr(new_params, f.name)))
        for f in dataclasses.fields(new_params)
        if getattr(old, f.name) != getattr(new_params, f.name)
    )


def plan_calls(changes: list[Change], current: CurrentParams, deployment: Deployment) -> list[Call]:
    """The setter calls for `changes`, checked in order against the on-chain bounds.

    Raises ChangeError with one line per problem: an unknown name, a deposit cap finer than the
    token's decimals, a value outside a setter's bounds (ending with the contract's revert
    string), an entry that changes nothing, option entries when the deployment has no options,
    or backstop vault entries when it has no backstop vault (one line naming them all, each)."""
    state = current.copy()
    problems: list[str] = []
    calls: list[Call] = []
    without = [
        c for c in changes if c.section in OPTION_SECTIONS and not getattr(deployment, OPTION_SECTIONS[c.section], "")
    ]
    if without:
        problems.append(
            f"{', '.join(c.where for c in without)}: {NO_OPTIONS} "
            "(its manifest names no option market, vol feed or health attestor)"
        )
    no_vault = [c for c in changes if c.needs_backstop_vault and not getattr(deployment, BACKSTOP_VAULT, "")]
    if no_vault:
        problems.append(f"{', '.join(c.where for c in no_vault)}: {NO_BACKSTOP_VAULT}")
    skip = {c.index for c in without + no_vault}
    for change in changes:
        if change.index in skip:
            continue
        section, name = change.section, change.name
        items = state.values[section]
        if name not in items:
            names = [n for n in items if not n.startswith("#")]
            known = ", ".join(names[:MAX_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else "")
            known = known or "none"
            problems.append(f"{change.where}: unknown {section}; the manifest names {known}")
            continue
        decimals = state.asset_decimals.get(name) if section == "asset" else None
        new_values = dict(change.values)
        if decimals is not None and "deposit_cap" in new_values:
            units, rest = divmod(new_values["deposit_cap"] * 10**decimals, WAD)
            if rest:
                problems.append(f"{change.where}: deposit_cap has more decimals than {name}'s {decimals}")
                continue
            new_values["deposit_cap"] = units
        touched = False
        for setter in SETTERS[section]:
            if not any(f in new_values for f in setter.fields):
                continue
            old = items[name]
            new = {f: new_values.get(f, old[f]) for f in setter.fields}
            found = setter.check(new, state)
            if found:
                problems += [f"{change.where}: {p}" for p in found]
                continue
            rows = tuple(
                Row(f, _text(section, f, old[f], decimals), _text(section, f, new[f], decimals))
                for f in setter.fields
                if f != "aggregators"
            )
            if not any(r.changed for r in rows):
                continue
            if section == "portfolio_margin":
                rows += _scenario_rows(old["scenario_params_hash"], new_values["params"])
            touched = True
            item_id = (state.ids[section][name],) if name else ()
            values = tuple(new[f] for f in setter.fields)
            args = item_id + ((values,) if setter.struct else values)
            address = getattr(deployment, setter.contract)
            calls.append(Call(change.index, section, name, setter.contract, address, setter.function, args, rows))
            if section == "underlying":
                state.set_mm_rate(name, new["mm_rate"])
            items[name] = {**old, **new}  # later entries are checked against this
        if not touched and not any(p.startswith(change.where + ":") for p in problems):
            problems.append(f"{change.where}: changes nothing (every value equals the on-chain one)")
    if problems:
        raise ChangeError(problems)
    return calls
