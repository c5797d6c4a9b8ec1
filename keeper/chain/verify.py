"""Post-deploy check: read every listed parameter back from the chain and compare it with the
protocol config and the manifest.

    python -m keeper.chain.verify --rpc URL --manifest deployments/NAME.json [--config FILE]

(`brownie run scripts/verify.py --network NAME` does the same through brownie.) Prints a table
with OK / MISMATCH per parameter and exits 1 on any mismatch. What is read: every contract's
code, the oracle's price ids, feeds (aggregator, decimals, heartbeat), the vault's settlement
token, wiring and assets (token, decimals, price id, haircut, deposit cap), the engine's
underlyings (margin rates), markets (underlying, kind, expiry, caps), liquidation and trade
parameters, the lens wiring, and the roles (admin / risk admin: the timelock when the config
has `governance`, else the deployer; no pending admin), plus the timelock's governance and delay.
With an `options:` section: the option market, vol feed and attestor (code, engine/vault wiring,
the attestor's version source = the lens, parameters, signer sets, every listed series).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from keeper.chain.deploy import config_echo, governed_scenario_params_hash
from keeper.chain.deployment import ZERO_ADDRESS, Deployment
from keeper.chain.governance import governed as governed_contracts
from keeper.chain.types import AssetInfo, FeedInfo, MarketInfo, OptionSeries, UnderlyingRates
from keeper.config import OptionRiskConfig, ProtocolConfig
from keeper.units import WAD


@dataclass(frozen=True)
class Check:
    """One parameter: what the config (or manifest) says and what the chain holds."""

    contract: str
    parameter: str
    expected: Any
    actual: Any
    wad: bool = False  # show as a decimal fraction
    pending: bool = False  # a role handed over but not yet accepted: not a mismatch, but shown

    @property
    def ok(self) -> bool:
        return self.pending or _norm(self.expected) == _norm(self.actual)

    @property
    def result(self) -> str:
        if _norm(self.expected) == _norm(self.actual):
            return "OK"
        return "PENDING" if self.pending else "MISMATCH"


class _ReadError:
    """A read that failed (no code, a revert): never equal to an expected value."""

    def __init__(self, error: Exception):
        self.text = f"read failed: {error.__class__.__name__}"

    def __str__(self) -> str:
        return self.text


def _norm(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def _show(value: Any, wad: bool) -> str:
    if wad and isinstance(value, int) and not isinstance(value, bool):
        return f"{(Decimal(value) / WAD).normalize():f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v, wad) for v in value) + "]"
    return str(value)


def verify_deployment(
    w3, deployment: Deployment, config: ProtocolConfig, abi: Callable[[str], list] | None = None
) -> list[Check]:
    """All checks of `deployment` on the chain behind `w3` against `config`.

    `abi(name)` gives a contract's ABI (default: compiled from `contracts/`). Never raises for
    a wrong or missing value on chain: such a value becomes a failed Check.
    """
    if abi is None:
        from keeper.chain.artifacts import load_artifact

        def abi(name: str) -> list:
            return load_artifact(name).abi

    checks: list[Check] = []
    d = deployment

    def at(name: str, address: str):
        return w3.eth.contract(address=address, abi=abi(name))

    def read(contract, fn: str, *args):
        try:
            return getattr(contract.functions, fn)(*args).call()
        except Exception as e:  # noqa: BLE001 - any failed read is reported, not raised
            return _ReadError(e)

    def add(contract: str, parameter: str, expected, actual, wad: bool = False, pending: bool = False) -> None:
        if isinstance(actual, tuple):
            actual = list(actual)
        checks.append(Check(contract, parameter, expected, actual, wad, pending))

    add("chain", "chain id", d.chain_id, w3.eth.chain_id)
    add("manifest", "parameters = config", "same", "same" if d.parameters == config_echo(config) else "differ")
    addresses = {
        "OracleRouter": d.oracle,
        "CollateralVault": d.vault,
        "MarginEngine": d.engine,
        "MarginLens": d.lens,
        f"settlement {config.settlement_symbol}": d.settlement_token,
    }
    addresses |= {f"token {s}": a for s, a in d.tokens.items()}
    if d.timelock:
        addresses["Timelock"] = d.timelock
    if d.backstop_vault:
        addresses["BackstopVault"] = d.backstop_vault
    for label, address in addresses.items():
        has_code = bool(address) and len(w3.eth.get_code(address)) > 0
        add(label, "contract code at", address or "(none)", address if has_code else "no code")

    oracle = at("OracleRouter", d.oracle)
    vault = at("CollateralVault", d.vault)
    engine = at("MarginEngine", d.engine)

    # oracle: price ids and feeds
    add("OracleRouter", "price_id_count", len(config.price_ids), read(oracle, "price_id_count"))
    for i, p in enumerate(config.price_ids):
        add("OracleRouter", f"price id {i} name", p.symbol, read(oracle, "price_id_name", i))
        if p.feeds:
            aggregators, heartbeats = [f.address for f in p.feeds], [f.heartbeat for f in p.feeds]
        else:
            aggregators, heartbeats = [d.feeds.get(p.symbol, "")], [p.heartbeat]
        feeds = read(oracle, "feeds", i)
        if isinstance(feeds, _ReadError):
            add("OracleRouter", f"{p.symbol} feeds", aggregators, feeds)
            continue
        feeds = [FeedInfo.decode(f) for f in feeds]
        add("OracleRouter", f"{p.symbol} feeds", aggregators, [f.aggregator for f in feeds])
        add("OracleRouter", f"{p.symbol} heartbeats (s)", heartbeats, [f.heartbeat for f in feeds])
        for j, f in enumerate(feeds):
            decimals = read(at("MockAggregator", f.aggregator), "decimals")
            if j == 0:
                expected = p.feed_decimals if p.feed_decimals is not None else d.feed_decimals.get(p.symbol)
                add("OracleRouter", f"{p.symbol} feed {j} decimals", expected, decimals)
            if isinstance(decimals, int):
                add("OracleRouter", f"{p.symbol} feed {j} scale", 10 ** (18 - decimals), f.scale)

    # vault: settlement, wiring, assets
    settlement = config.settlement_address or d.settlement_token
    add("CollateralVault", "SETTLEMENT_TOKEN", settlement, read(vault, "SETTLEMENT_TOKEN"))
    add("CollateralVault", "SETTLEMENT_SCALE", 10 ** (18 - config.settlement_decimals), read(vault, "SETTLEMENT_SCALE"))
    add(
        f"settlement {config.settlement_symbol}",
        "decimals",
        config.settlement_decimals,
        read(at("MockERC20", d.settlement_token), "decimals"),
    )
    add("CollateralVault", "ORACLE", d.oracle, read(vault, "ORACLE"))
    add("CollateralVault", "engine", d.engine, read(vault, "engine"))
    add("CollateralVault", "asset_count", len(config.assets), read(vault, "asset_count"))
    for i, a in enumerate(config.assets):
        asset = read(vault, "assets", i)
        token = a.address or d.tokens.get(a.symbol, "")
        if isinstance(asset, _ReadError):
            add("CollateralVault", f"asset {i} {a.symbol}", token, asset)
            continue
        asset = AssetInfo.decode(asset)
        add("CollateralVault", f"{a.symbol} token", token, asset.token)
        add("CollateralVault", f"{a.symbol} decimals", a.decimals, asset.decimals)
        add(f"token {a.symbol}", "decimals", a.decimals, read(at("MockERC20", asset.token), "decimals"))
        add("CollateralVault", f"{a.symbol} price id", a.price_id, asset.price_id)
        add("CollateralVault", f"{a.symbol} haircut", a.haircut, asset.haircut, wad=True)
        add("CollateralVault", f"{a.symbol} deposit cap (units)", a.deposit_cap, asset.deposit_cap)

    # vault: the settlement asset's price and the depeg rule (unset: cash counts 1:1)
    add("CollateralVault", "settlement_priced", config.depeg is not None, read(vault, "settlement_priced"))
    if config.depeg is not None:
        add("CollateralVault", "settlement_price_id", config.depeg.price_id, read(vault, "settlement_price_id"))
        add("CollateralVault", "depeg_threshold", config.depeg.threshold, read(vault, "depeg_threshold"), wad=True)
        add("CollateralVault", "depeg_factor", config.depeg.factor, read(vault, "depeg_factor"), wad=True)

    # engine: wiring, liquidation and trade parameters, underlyings, markets
    add("MarginEngine", "VAULT", d.vault, read(engine, "VAULT"))
    add("MarginEngine", "ORACLE", d.oracle, read(engine, "ORACLE"))
    add("MarginEngine", "LIQUIDATION", d.engine_liquidation, read(engine, "LIQUIDATION"))
    add("MarginEngine", "DELEVERAGING", d.engine_deleveraging, read(engine, "DELEVERAGING"))
    add("MarginEngine", "matching", d.matching, read(engine, "matching"))
    add("Matching", "ENGINE", d.engine, read(at("Matching", d.matching), "ENGINE") if d.matching else "(none)")
    for fn, expected in (
        ("liquidation_penalty", config.liquidation_penalty),
        ("liquidator_share", config.liquidator_share),
        ("liquidation_target", config.liquidation_target),
        ("max_price_deviation", config.max_price_deviation),
        ("max_funding_rate", config.max_funding_rate),
        ("funding_smoothing", config.funding_smoothing),
        ("min_position_notional", config.min_position_notional),
        ("max_liquidation_penalty", config.max_liquidation_penalty),
    ):
        add("MarginEngine", fn, expected, read(engine, fn), wad=True)
    if config.max_liquidation_penalty:  # the ramp is set only with a max penalty
        add("MarginEngine", "penalty_ramp_time (s)", config.penalty_ramp_time, read(engine, "penalty_ramp_time"))
    add("MarginEngine", "underlying_count", len(config.underlyings), read(engine, "underlying_count"))
    for i, u in enumerate(config.underlyings):
        got = read(engine, "underlyings", i)
        if isinstance(got, _ReadError):
            add("MarginEngine", f"underlying {i} {u.symbol}", u.price_id, got)
            continue
        rates = UnderlyingRates.decode(got)
        add("MarginEngine", f"{u.symbol} price id", u.price_id, rates.price_id)
        for name in ("im_rate", "mm_rate", "spread_im_rate", "spread_mm_rate"):
            add("MarginEngine", f"{u.symbol} {name}", getattr(u, name), getattr(rates, name), wad=True)
    add("MarginEngine", "market_count", len(config.markets), read(engine, "market_count"))
    for i, m in enumerate(config.markets):
        got = read(engine, "markets", i)
        if isinstance(got, _ReadError):
            add("MarginEngine", f"market {i} {m.name}", m.underlying, got)
            continue
        market = MarketInfo.decode(got)
        add("MarginEngine", f"{m.name} underlying", m.underlying, market.underlying)
        add("MarginEngine", f"{m.name} perpetual", m.expiry_days is None, market.is_perpetual)
        add("MarginEngine", f"{m.name} expiry", d.market_expiries.get(m.name, 0), market.expiry)
        add(
            "MarginEngine",
            f"{m.name} max_open_interest",
            m.max_open_interest,
            read(engine, "max_open_interest", i),
            wad=True,
        )
        add("MarginEngine", f"{m.name} max_position", m.max_position, read(engine, "max_position", i), wad=True)

    if d.lens:
        lens = at("MarginLens", d.lens)
        add("MarginLens", "ENGINE", d.engine, read(lens, "ENGINE"))
        add("MarginLens", "VAULT", d.vault, read(lens, "VAULT"))

    if config.options is not None:
        _check_options(d, config, at, read, add, engine, vault)
    if config.backstop_vault is not None:
        _check_backstop_vault(d, config, at, read, add, engine, vault)

    # roles
    governed = config.governance is not None
    holder = d.timelock if governed else d.admin
    add("manifest", "timelock recorded", governed, bool(d.timelock))
    for _, label, address in governed_contracts(d):
        contract = at(label, address)
        admin, pending_admin = read(contract, "admin"), read(contract, "pending_admin")
        # governance (not the deployer) accepts the admin role later: the deployer is admin
        # with the timelock proposed until then
        waiting = (
            governed
            and bool(d.timelock)
            and _norm(pending_admin) == _norm(d.timelock)
            and _norm(admin) == _norm(d.admin)
        )
        add(label, "admin", holder, admin, pending=waiting)
        add(label, "risk_admin", holder, read(contract, "risk_admin"))
        add(label, "pending_admin", d.timelock if waiting else ZERO_ADDRESS, pending_admin)
    if governed and d.timelock:
        timelock = at("Timelock", d.timelock)
        add("Timelock", "governance", config.governance.address, read(timelock, "governance"))
        add("Timelock", "delay (s)", config.governance.timelock_delay, read(timelock, "delay"))
    return checks


def _check_backstop_vault(d: Deployment, config: ProtocolConfig, at, read, add, engine, vault) -> None:
    """The backstop vault: recorded, wired to this engine and named by the collateral vault as
    its deficit cover, its parameters and per-market exposure caps as configured."""
    b = config.backstop_vault
    assert b is not None
    add("BackstopVault", "recorded in the manifest", True, bool(d.backstop_vault))
    if not d.backstop_vault:
        return
    backstop = at("BackstopVault", d.backstop_vault)
    add("BackstopVault", "ENGINE", d.engine, read(backstop, "ENGINE"))
    add("BackstopVault", "COLLATERAL_VAULT", d.vault, read(backstop, "COLLATERAL_VAULT"))
    add("CollateralVault", "backstop", d.backstop_vault, read(vault, "backstop"))
    for name, value in zip(
        ("caller_fee_share", "max_margin_usage", "auction_discount", "auction_time", "request_delay"),
        b.params(),
        strict=True,
    ):
        add("BackstopVault", name, value, read(backstop, name), wad=name not in ("auction_time", "request_delay"))
    markets = {m.name: i for i, m in enumerate(config.markets)}
    for name, size in b.max_exposure:
        add("BackstopVault", f"{name} max_exposure", size, read(backstop, "max_exposure", markets[name]), wad=True)


def _check_options(d: Deployment, config: ProtocolConfig, at, read, add, engine, vault) -> None:
    """Option market, vol feed and attestor: code, wiring (engine modules, vault, the market's
    matching contract and liquidation code, the attestor's version source = the engine),
    parameters, signer sets and every listed series."""
    o = config.options
    for label, address in (
        ("OptionMarket", d.option_market),
        ("VolFeed", d.vol_feed),
        ("HealthAttestor", d.health_attestor),
    ):
        add(label, "recorded in the manifest", True, bool(address))
        if not address:
            return
    market, feed, attestor = (
        at("OptionMarket", d.option_market),
        at("VolFeed", d.vol_feed),
        at("HealthAttestor", d.health_attestor),
    )
    add("MarginEngine", "option_market", d.option_market, read(engine, "option_market"))
    add("MarginEngine", "health_attestor", d.health_attestor, read(engine, "health_attestor"))
    add("CollateralVault", "option_market", d.option_market, read(vault, "option_market"))
    add("OptionMarket", "ENGINE", d.engine, read(market, "ENGINE"))
    add("OptionMarket", "VOL_FEED", d.vol_feed, read(market, "VOL_FEED"))
    add("OptionMarket", "MATCHING", d.matching, read(market, "MATCHING"))
    add("OptionMarket", "LIQUIDATION", d.option_liquidation, read(market, "LIQUIDATION"))
    add("HealthAttestor", "engine (position version source)", d.engine, read(attestor, "engine"))
    add("HealthAttestor", "oracle", d.oracle, read(attestor, "oracle"))
    params = read(market, "risk_params")
    for j, name in enumerate(f.name for f in dataclasses.fields(OptionRiskConfig)):
        add(
            "OptionMarket",
            name,
            getattr(o.risk, name),
            params if isinstance(params, _ReadError) else params[j],
            wad=True,
        )
    for fn, expected in (
        ("min_atm_vol", o.vol_feed.min_atm_vol),
        ("max_atm_vol", o.vol_feed.max_atm_vol),
        ("max_abs_skew", o.vol_feed.max_abs_skew),
    ):
        add("VolFeed", fn, expected, read(feed, fn), wad=True)
    add("VolFeed", "heartbeat (s)", o.vol_feed.heartbeat, read(feed, "heartbeat"))
    for fn, expected, wad in (
        ("margin_floor", o.attestation.margin_floor, True),
        ("price_band", o.attestation.price_band, True),
        ("max_validity", o.attestation.max_validity, False),
    ):
        add("HealthAttestor", fn, expected, read(attestor, fn), wad=wad)
    got = read(attestor, "scenario_params_hash")
    add(
        "HealthAttestor",
        "scenario_params_hash",
        "0x" + governed_scenario_params_hash(config).hex(),
        got if isinstance(got, _ReadError) else "0x" + bytes(got).hex(),
    )
    for label, contract, signers in (
        ("VolFeed", feed, o.vol_feed.signers),
        ("HealthAttestor", attestor, o.attestation.signers),
    ):
        add(label, "threshold", signers.threshold, read(contract, "threshold"))
        add(label, "signer_count", len(signers.signers), read(contract, "signer_count"))
        for a in signers.signers:
            add(label, f"is_signer {a}", True, read(contract, "is_signer", a))
    expected_count = sum(2 * len(s.expiry_days) * len(s.strikes) for s in o.series)
    add("OptionMarket", "series_count", expected_count, read(market, "series_count"))
    records = {r["series"]: r for r in d.steps.values() if "series" in r and "strike" in r}
    for name, sid in sorted(d.option_series.items(), key=lambda kv: kv[1]):
        got = read(market, "series", sid)
        r = records.get(sid)
        if isinstance(got, _ReadError) or r is None:
            add(
                "OptionMarket",
                f"series {sid} {name}",
                "listed as recorded",
                got if isinstance(got, _ReadError) else "no step record",
            )
            continue
        listed = OptionSeries.decode(got)
        add(
            "OptionMarket",
            f"{name} (strike, expiry, call)",
            [r["strike"], r["expiry"], name.split("-")[2] == "C"],
            [listed.strike, listed.expiry, listed.is_call],
        )


def mismatches(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def print_checks(checks: list[Check], console=None) -> None:
    """A rich table of every check, then one summary line."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file: wide enough for full addresses
            console.width = 150
    table = Table(title="Post-deploy check: chain vs config", show_lines=False)
    for column in ("contract", "parameter", "expected", "on chain", "result"):
        table.add_column(column)
    style = {
        "OK": "[green]OK[/green]",
        "PENDING": "[yellow]PENDING[/yellow]",
        "MISMATCH": "[bold red]MISMATCH[/bold red]",
    }
    for c in checks:
        table.add_row(c.contract, c.parameter, _show(c.expected, c.wad), _show(c.actual, c.wad), style[c.result])
    console.print(table)
    bad = mismatches(checks)
    waiting = [c for c in checks if c.result == "PENDING"]
    if bad:
        console.print(f"[bold red]{len(bad)} of {len(checks)} checks MISMATCH[/bold red]")
    else:
        console.print(f"[green]all {len(checks)} checks OK[/green]" + (f" ({len(waiting)} PENDING)" if waiting else ""))
    if waiting:
        console.print(
            "[yellow]PENDING: governance must accept the admin role of each contract through the "
            "timelock (Timelock.accept_admin_of; keeper.chain.governance.accept_admin_roles)[/yellow]"
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m keeper.chain.verify`: 0 when every check is OK, 1 on a mismatch, 2 on bad input."""
    import click
    from web3 import Web3

    from keeper.chain.manifest import ManifestError, load_manifest
    from keeper.config import DEFAULT_CONFIG, ConfigError, load_config

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--rpc", "--rpc-url", required=True, envvar="KEEPER_RPC", help="JSON-RPC endpoint URL.")
    @click.option("--manifest", required=True, type=click.Path(path_type=Path), help="Deployment manifest JSON.")
    @click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=DEFAULT_CONFIG,
        show_default=True,
        help="Protocol config the deployment should match.",
    )
    def cli(rpc: str, manifest: Path, config_path: Path) -> None:
        try:
            deployment = load_manifest(manifest)
            config = load_config(config_path)
        except (ManifestError, ConfigError) as e:
            raise click.UsageError(str(e)) from None
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
        if not w3.is_connected():
            raise click.UsageError(f"no JSON-RPC answer at {rpc}")
        checks = verify_deployment(w3, deployment, config)
        print_checks(checks)
        sys.exit(1 if mismatches(checks) else 0)

    try:
        cli.main(args=argv, prog_name="python -m keeper.chain.verify", standalone_mode=False)
    except click.UsageError as e:
        click.echo(f"Error: {e.format_message()}", err=True)
        return 2
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
