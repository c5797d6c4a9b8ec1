"""Read every risk parameter the change file can touch, at one block.

Values are in the setters' own units (WAD fractions, token units, seconds), grouped like the
change file: `values[section][name][field]`, with name "" for `liquidation`, `trading` and
the option sections `attestation`, `portfolio_margin` (the scenario parameters hash, 32 bytes),
`options`, `vol_feed` (read only when the manifest names the HealthAttestor / OptionMarket /
VolFeed; `series` with the OptionMarket) and `backstop_vault` (`BackstopVault.set_params`, read
only when the manifest names a backstop vault, which also adds each market's
`backstop_max_exposure`).
Items the manifest does not name are listed as "#<id>" (they still bound other changes: a
penalty must stay within half of every underlying's mm_rate).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from web3 import Web3

from keeper.chain.artifacts import load_artifact
from keeper.chain.deployment import Deployment
from keeper.chain.types import AssetInfo, FeedInfo, UnderlyingRates
from keeper.config import OptionRiskConfig


@dataclass
class CurrentParams:
    """Parameters read at `block`. `ids[section][name]` is the on-chain id of a named item;
    `asset_decimals[name]` the token's decimals; `roles[contract]` = (admin, risk_admin), by
    manifest field (oracle, vault, engine, and option_market / vol_feed / health_attestor /
    backstop_vault when deployed)."""

    block: int
    values: dict[str, dict[str, dict]] = field(default_factory=dict)
    ids: dict[str, dict[str, int]] = field(default_factory=dict)
    asset_decimals: dict[str, int] = field(default_factory=dict)
    roles: dict[str, tuple[str, str]] = field(default_factory=dict)
    # MM rate in force per underlying (`MarginEngine.rates_now`), below the target while a raise
    # phases in; absent = the target
    mm_rates_in_force: dict[str, int] = field(default_factory=dict)

    def copy(self) -> "CurrentParams":
        return copy.deepcopy(self)

    def mm_rates(self) -> dict[str, int]:
        """The MM rates in force, which bound the liquidation penalty (`_check_penalty_fits`)."""
        return {name: self.mm_rates_in_force.get(name, v["mm_rate"]) for name, v in self.values["underlying"].items()}

    def set_mm_rate(self, name: str, target: int) -> None:
        """A new target: a lower rate is in force at once, a higher one only phases in."""
        self.mm_rates_in_force[name] = min(self.mm_rates()[name], target)


def _names(mapping: dict[str, int], count: int) -> list[tuple[int, str]]:
    by_id = {i: name for name, i in mapping.items()}
    return [(i, by_id.get(i, f"#{i}")) for i in range(count)]


# manifest field -> contract name of every contract whose risk setters `keeper params` drives
GOVERNED_CONTRACTS = {
    "oracle": "OracleRouter",
    "vault": "CollateralVault",
    "engine": "MarginEngine",
    "option_market": "OptionMarket",
    "vol_feed": "VolFeed",
    "health_attestor": "HealthAttestor",
    "backstop_vault": "BackstopVault",
}
OPTION_RISK_FIELDS = tuple(f.name for f in dataclasses.fields(OptionRiskConfig))  # OptionMarket RiskParams, in order


def contracts(w3: Web3, deployment: Deployment) -> dict:
    """web3 contract objects of the governed contracts the manifest names, by manifest field
    (the option contracts and the backstop vault only when deployed)."""
    return {
        name: w3.eth.contract(address=getattr(deployment, name), abi=load_artifact(contract).abi)
        for name, contract in GOVERNED_CONTRACTS.items()
        if getattr(deployment, name, "")
    }


def read_current(w3: Web3, deployment: Deployment, block: int | None = None) -> CurrentParams:
    """All risk parameters at `block` (default: the latest block)."""
    block = w3.eth.block_number if block is None else block
    c = contracts(w3, deployment)
    o, v, e = c["oracle"].functions, c["vault"].functions, c["engine"].functions

    def get(fn):
        return fn.call(block_identifier=block)

    out = CurrentParams(block=block)
    out.values = {s: {} for s in ("underlying", "asset", "market", "price_id")}
    out.ids = {s: {} for s in out.values}
    for u, name in _names(deployment.underlyings, get(e.underlying_count())):
        rates = UnderlyingRates.decode(get(e.underlyings(u)))
        out.values["underlying"][name] = {
            "im_rate": rates.im_rate,
            "mm_rate": rates.mm_rate,
            "spread_im_rate": rates.spread_im_rate,
            "spread_mm_rate": rates.spread_mm_rate,
        }
        out.mm_rates_in_force[name] = UnderlyingRates.decode(get(e.rates_now(u))).mm_rate
        out.ids["underlying"][name] = u
    for a, name in _names(deployment.asset_ids, get(v.asset_count())):
        asset = AssetInfo.decode(get(v.assets(a)))
        out.values["asset"][name] = {"haircut": asset.haircut, "deposit_cap": asset.deposit_cap}
        out.ids["asset"][name] = a
        out.asset_decimals[name] = asset.decimals
    for m, name in _names(deployment.markets, get(e.market_count())):
        out.values["market"][name] = {
            "max_open_interest": get(e.max_open_interest(m)),
            "max_position": get(e.max_position(m)),
        }
        out.ids["market"][name] = m
    for p, name in _names(deployment.price_ids, get(o.price_id_count())):
        feeds = [FeedInfo.decode(f) for f in get(o.feeds(p))]
        lo, hi, jump = get(o.circuit_breakers(p))
        out.values["price_id"][name] = {
            "aggregators": tuple(f.aggregator for f in feeds),
            "heartbeats": tuple(f.heartbeat for f in feeds),
            "min_price": lo,
            "max_price": hi,
            "max_jump": jump,
        }
        out.ids["price_id"][name] = p
    out.values["liquidation"] = {"": {
        "penalty": get(e.liquidation_penalty()),
        "liquidator_share": get(e.liquidator_share()),
        "target": get(e.liquidation_target()),
        "max_penalty": get(e.max_liquidation_penalty()),
        "penalty_ramp_seconds": get(e.penalty_ramp_time()),
    }}  # fmt: skip
    out.values["depeg"] = {"": {"threshold": get(v.depeg_threshold()), "factor": get(v.depeg_factor())}}
    out.values["trading"] = {"": {
        "max_price_deviation": get(e.max_price_deviation()),
        "max_funding_rate": get(e.max_funding_rate()),
        "funding_smoothing": get(e.funding_smoothing()),
        "min_position_notional": get(e.min_position_notional()),
    }}  # fmt: skip
    if "health_attestor" in c:
        h = c["health_attestor"].functions
        out.values["attestation"] = {"": {
            "margin_floor": get(h.margin_floor()), "price_band": get(h.price_band()), "max_validity": get(h.max_validity()),
        }}  # fmt: skip
        out.values["portfolio_margin"] = {"": {"scenario_params_hash": bytes(get(h.scenario_params_hash()))}}
    if "option_market" in c:
        m = c["option_market"].functions
        out.values["options"] = {"": dict(zip(OPTION_RISK_FIELDS, get(m.risk_params())))}
        out.values["series"], out.ids["series"] = {}, {}
        for i, name in _names(deployment.option_series, get(m.series_count())):
            out.values["series"][name] = {
                "max_open_interest": get(m.max_open_interest(i)),
                "max_position": get(m.max_position(i)),
            }
            out.ids["series"][name] = i
    if "vol_feed" in c:
        f = c["vol_feed"].functions
        out.values["vol_feed"] = {"": {
            "min_atm_vol": get(f.min_atm_vol()), "max_atm_vol": get(f.max_atm_vol()),
            "max_abs_skew": get(f.max_abs_skew()), "heartbeat": get(f.heartbeat()),
        }}  # fmt: skip
    if "backstop_vault" in c:
        b = c["backstop_vault"].functions
        out.values["backstop_vault"] = {"": {
            "caller_fee_share": get(b.caller_fee_share()), "max_margin_usage": get(b.max_margin_usage()),
            "auction_discount": get(b.auction_discount()), "auction_seconds": get(b.auction_time()),
            "request_delay_seconds": get(b.request_delay()),
        }}  # fmt: skip
        for name, m in out.ids["market"].items():
            out.values["market"][name]["backstop_max_exposure"] = get(b.max_exposure(m))
    out.roles = {name: (get(k.functions.admin()), get(k.functions.risk_admin())) for name, k in c.items()}
    return out
