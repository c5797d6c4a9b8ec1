"""Deploy the protocol from a `ProtocolConfig`, one recorded step at a time.

Backend-agnostic: the same sequence deploys through web3.py to any RPC endpoint (the replay,
the CLI, the dry run), through brownie (`scripts/deploy.py`) and through titanoboa in-process
(the contract tests), so all of them test exactly what users deploy.

Every completed step (a contract deployed, a listing call mined) is recorded in
`Deployment.steps` as it happens; `deploy_to_manifest` writes that record to the manifest
after each step, so an interrupted deployment resumes from its first undone step instead of
leaving half a protocol or listing anything twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from keeper.chain.deployment import ZERO_ADDRESS, Backend, Deployment
from keeper.chain.types import MarketInfo, OptionSeries
from keeper.config import ProtocolConfig
from keeper.errors import KeeperError


class DeployError(KeeperError, RuntimeError):
    """A deployment transaction reverted or could not be sent, or a deployment cannot go on."""


def config_echo(config: ProtocolConfig) -> dict:
    """`config` as JSON data (WAD integers and token units exactly as listed on chain)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _empty(config: ProtocolConfig, admin: str, chain_id: int) -> Deployment:
    return Deployment(
        chain_id=chain_id,
        oracle="",
        vault="",
        engine="",
        settlement_token="",
        settlement_decimals=config.settlement_decimals,
        admin=admin,
        deployer=admin,
        parameters=config_echo(config),
        status="partial",
    )


class _Steps:
    """Runs each step once: skips steps already recorded, records each one done."""

    def __init__(self, backend: Backend, dep: Deployment, on_step: Callable[[Deployment], None] | None):
        self.backend = backend
        self.dep = dep
        self.on_step = on_step
        self.resuming = bool(dep.steps)

    def _record(self, key: str, sent: bool = True, **extra: Any) -> dict:
        """Record step `key`; `sent`: done by the backend's last transaction (its block and gas)."""
        record = {
            "block": int(getattr(self.backend, "last_block", 0) or 0) if sent else 0,
            "gas": int(getattr(self.backend, "last_gas", 0) or 0) if sent else 0,
        }
        record.update(extra)
        self.dep.steps[key] = record
        if self.on_step is not None:
            self.on_step(self.dep)
        return record

    def contract(self, key: str, name: str, *args: Any) -> Any:
        """Deploy `name` once; `key` is the manifest field its address goes to (and its ABI
        file's, in `abis`, for a deployable contract)."""
        record = self.dep.steps.get(key)
        if record is not None:
            _name_abi(self.dep, key, name)  # also for a manifest written before `abis` existed
            return self.backend.at(name, record["address"])
        handle = self.backend.deploy(name, *args)
        self.dep.blocks[key] = int(getattr(self.backend, "last_block", 0) or 0)
        _name_abi(self.dep, key, name)
        self._record(key, address=handle.address)
        return handle

    def call(
        self, key: str, contract: Any, fn: str, *args: Any, done: Callable[[], bool] | None = None, **extra: Any
    ) -> dict:
        """Send `fn` once. `done` reads the chain when resuming: a call mined before a crash but
        not yet recorded is recorded without being sent again (listings are not idempotent)."""
        record = self.dep.steps.get(key)
        if record is not None:
            return record
        if self.resuming and done is not None and done():
            return self._record(key, sent=False, found_on_chain=True, **extra)
        self.backend.transact(contract, fn, *args)
        return self._record(key, **extra)


def _name_abi(dep: Deployment, key: str, name: str) -> None:
    """Record in `dep.abis` where contract `name`'s ABI is committed (deployables only: the
    mocks' ABIs are not published)."""
    from keeper.chain.abis import abi_path, deployables

    if name in deployables():
        dep.abis[key] = abi_path(name)


class _Metered:
    """A backend wrapper that sums the gas of several transactions (one step, many calls)."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self.gas = 0
        self.first_block = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _count(self) -> None:
        self.gas += int(getattr(self._backend, "last_gas", 0) or 0)
        self.first_block = self.first_block or int(getattr(self._backend, "last_block", 0) or 0)

    def deploy(self, name: str, *args: Any) -> Any:
        handle = self._backend.deploy(name, *args)
        self._count()
        return handle

    def transact(self, contract: Any, fn: str, *args: Any) -> Any:
        out = self._backend.transact(contract, fn, *args)
        self._count()
        return out


def _check_roles_untouched(view: Callable, admin: str, contracts: dict[str, Any]) -> None:
    """Before retrying the governance handover: the deployer must still be `admin` everywhere
    (then a retry reassigns risk_admin and re-proposes admin to a new timelock); once a timelock
    has accepted an admin role, a blind retry cannot repair the handover."""
    for name, contract in contracts.items():
        holder = view(contract, "admin")
        if str(holder).lower() != admin.lower():
            raise DeployError(
                f"the governance handover was interrupted after {name} accepted admin {holder}: "
                "finish it by hand (keeper.chain.governance.accept_admin_roles) and record the timelock"
            )


def _check_existing(backend: Backend, config: ProtocolConfig) -> None:
    """Tokens and feeds the config names by address must be contracts with the configured
    decimals: one clear line here instead of a revert deep in a listing call."""
    code_at = getattr(backend, "code_at", None)

    def check(what: str, address: str, name: str, decimals: int | None) -> int:
        if code_at is not None and not code_at(address):
            raise DeployError(f"{what}: no contract at {address} on this chain")
        try:
            on_chain = int(backend.view(backend.at(name, address), "decimals"))
        except Exception as e:  # noqa: BLE001 - any failure to read decimals() means a wrong address
            raise DeployError(f"{what}: {address} does not answer decimals() ({e.__class__.__name__})") from None
        if decimals is not None and on_chain != decimals:
            raise DeployError(f"{what}: {address} has {on_chain} decimals on chain, the config says {decimals}")
        if on_chain > 18:
            raise DeployError(f"{what}: {address} has {on_chain} decimals; the protocol takes at most 18")
        return on_chain

    if config.settlement_address:
        check(
            f"settlement {config.settlement_symbol}", config.settlement_address, "MockERC20", config.settlement_decimals
        )
    for i, a in enumerate(config.assets):
        if a.address:
            check(f"assets[{i}] {a.symbol}", a.address, "MockERC20", a.decimals)
    for i, p in enumerate(config.price_ids):
        for j, f in enumerate(p.feeds):
            check(
                f"price_ids[{i}] {p.symbol} feeds[{j}]",
                f.address,
                "MockAggregator",
                p.feed_decimals if j == 0 else None,
            )


def warn_backstop(config: ProtocolConfig) -> str | None:
    """Log (and return) one warning line if the config's open-interest caps are not coherent
    with its insurance fund (keeper.params.backstop); deploying goes on: the rule is a
    judgement about risk, not a contract bound."""
    from keeper.params import backstop

    lines = backstop.check_config(config)
    if not lines:
        return None
    line = backstop.warning_line(lines)
    logging.getLogger("keeper.deploy").warning("%s", line)
    return line


def deploy_protocol(
    backend: Backend,
    config: ProtocolConfig,
    admin: str,
    chain_id: int,
    *,
    progress: Deployment | None = None,
    on_step: Callable[[Deployment], None] | None = None,
) -> Deployment:
    """Deploy mocks where the config gives no address, the oracle router, vault, engine (with
    its liquidation code and matching contract) and lens, list everything in `config`, and hand governance to a timelock if configured. With
    `config.options`: the VolFeed, OptionMarket and HealthAttestor, their parameters, the
    series (recorded as `option_series`, name -> id) and the engine/vault wiring, each a step.

    `admin` must be the backend's sender; it ends up holding both roles (or the timelock does).
    `progress`: a partial Deployment (from its manifest) to resume; its recorded steps are
    skipped. `on_step(deployment)` runs after each step (to save the manifest).
    Returns the Deployment with status "complete". Raises DeployError, or the backend's error
    when a transaction fails (the steps done so far are recorded).
    """
    from keeper.params.bounds import check_config

    problems = check_config(config)  # before the first transaction: nothing half-deployed
    if problems:
        raise DeployError("the config is outside the contracts' bounds, nothing was sent: " + "; ".join(problems))
    warn_backstop(config)
    dep = progress if progress is not None else _empty(config, admin, chain_id)
    dep.status = "partial"
    run = _Steps(backend, dep, on_step)
    view = getattr(backend, "view", None)
    if config.settlement_address or any(a.address for a in config.assets) or any(p.feeds for p in config.price_ids):
        _check_existing(backend, config)

    if config.settlement_address:
        dep.settlement_token = config.settlement_address
    else:
        usdc = run.contract(
            "settlement_token", "MockERC20", "USD Coin", config.settlement_symbol, config.settlement_decimals
        )
        dep.settlement_token = usdc.address
    oracle = run.contract("oracle", "OracleRouter", admin)
    dep.oracle = oracle.address
    for i, p in enumerate(config.price_ids):
        if p.feeds:
            addresses = [f.address for f in p.feeds]
            heartbeats = [f.heartbeat for f in p.feeds]
            decimals = p.feed_decimals
            if decimals is None:
                decimals = int(view(backend.at("MockAggregator", addresses[0]), "decimals"))
        else:
            feed = run.contract(
                f"feeds.{p.symbol}",
                "MockAggregator",
                p.feed_decimals,
                f"{p.symbol} / USD",
                p.initial_price * 10**p.feed_decimals,
            )
            addresses, heartbeats, decimals = [feed.address], [p.heartbeat], p.feed_decimals
        run.call(
            f"add_price_id {p.symbol}",
            oracle,
            "add_price_id",
            p.symbol,
            done=lambda i=i: view(oracle, "price_id_count") > i,
        )
        run.call(f"set_feeds {p.symbol}", oracle, "set_feeds", i, addresses, heartbeats)
        dep.feeds[p.symbol] = addresses[0]
        dep.feed_decimals[p.symbol] = decimals
        dep.price_ids[p.symbol] = i
    vault = run.contract("vault", "CollateralVault", admin, dep.settlement_token, oracle.address)
    dep.vault = vault.address
    engine_liquidation = run.contract("engine_liquidation", "EngineLiquidation", vault.address, oracle.address)
    dep.engine_liquidation = engine_liquidation.address
    engine_deleveraging = run.contract("engine_deleveraging", "EngineDeleveraging", vault.address, oracle.address)
    dep.engine_deleveraging = engine_deleveraging.address
    engine = run.contract(
        "engine",
        "MarginEngine",
        admin,
        vault.address,
        oracle.address,
        engine_liquidation.address,
        engine_deleveraging.address,
    )
    dep.engine = engine.address
    matching = run.contract("matching", "Matching", engine.address)
    dep.matching = matching.address
    run.call(
        "set_matching", engine, "set_matching", matching.address, done=lambda: view(engine, "matching") != ZERO_ADDRESS
    )
    run.call("set_engine", vault, "set_engine", engine.address, done=lambda: view(vault, "engine") != ZERO_ADDRESS)
    lens = run.contract("lens", "MarginLens", engine.address, vault.address)
    dep.lens = lens.address
    if config.backstop_vault is not None:
        _deploy_backstop_vault(run, view, config, dep, admin, engine.address, vault)
    if config.depeg is not None:
        # the settlement asset's USD price: cash is valued by the vault's depeg rule from here on
        depeg = config.depeg
        run.call(
            "set_depeg_params",
            vault,
            "set_depeg_params",
            depeg.threshold,
            depeg.factor,
            done=lambda: (
                (view(vault, "depeg_threshold"), view(vault, "depeg_factor")) == (depeg.threshold, depeg.factor)
            ),
        )
        run.call(
            "set_settlement_price_id",
            vault,
            "set_settlement_price_id",
            depeg.price_id,
            done=lambda: view(vault, "settlement_priced") and view(vault, "settlement_price_id") == depeg.price_id,
        )
    for i, a in enumerate(config.assets):
        if a.address:
            token_address = a.address
        else:
            token_address = run.contract(
                f"tokens.{a.symbol}", "MockERC20", f"Wrapped {a.symbol}", a.symbol, a.decimals
            ).address
        run.call(
            f"list_asset {a.symbol}",
            vault,
            "list_asset",
            token_address,
            a.price_id,
            a.haircut,
            a.deposit_cap,
            done=lambda i=i: view(vault, "asset_count") > i,
        )
        dep.tokens[a.symbol] = token_address
        dep.asset_ids[a.symbol] = i
        dep.asset_decimals[a.symbol] = a.decimals
    # liquidation parameters first: underlying bounds check mm_rate against the penalty
    run.call(
        "set_liquidation_params",
        engine,
        "set_liquidation_params",
        config.liquidation_penalty,
        config.liquidator_share,
        config.liquidation_target,
    )
    run.call(
        "set_trade_params",
        engine,
        "set_trade_params",
        config.max_price_deviation,
        config.max_funding_rate,
        config.funding_smoothing,
        config.min_position_notional,
    )
    for i, u in enumerate(config.underlyings):
        run.call(
            f"add_underlying {u.symbol}",
            engine,
            "add_underlying",
            u.price_id,
            u.im_rate,
            u.mm_rate,
            u.spread_im_rate,
            u.spread_mm_rate,
            done=lambda i=i: view(engine, "underlying_count") > i,
        )
        dep.underlyings[u.symbol] = i
    if config.max_liquidation_penalty:
        run.call(
            "set_penalty_ramp", engine, "set_penalty_ramp", config.max_liquidation_penalty, config.penalty_ramp_time
        )
    now: int | None = None
    for i, m in enumerate(config.markets):
        key = f"list_market {m.name}"
        expiry = dep.steps.get(key, {}).get("expiry")
        if expiry is None:
            if m.expiry_days is None:
                expiry = 0
            else:
                now = backend.timestamp() if now is None else now
                expiry = now + int(m.expiry_days * 86400)
            if run.resuming and view(engine, "market_count") > i:  # listed before a crash
                expiry = MarketInfo.decode(view(engine, "markets", i)).expiry
        run.call(
            key,
            engine,
            "list_market",
            m.underlying,
            expiry,
            expiry=expiry,
            done=lambda i=i: view(engine, "market_count") > i,
        )
        if m.max_open_interest or m.max_position:
            run.call(f"set_position_caps {m.name}", engine, "set_position_caps", i, m.max_open_interest, m.max_position)
        dep.markets[m.name] = i
        if expiry:
            dep.market_expiries[m.name] = expiry
    if config.options is not None:
        _deploy_options(run, backend, config, dep, admin, engine, vault, oracle)
    if config.governance is not None:
        record = dep.steps.get("timelock")
        if record is None:
            from keeper.chain.governance import install_timelock

            if run.resuming:
                from keeper.chain.governance import contract_at, governed

                _check_roles_untouched(
                    view, admin, {name: contract_at(backend, name, at) for _, name, at in governed(dep)}
                )
            metered = _Metered(backend)
            governor = admin if config.governance.address == "deployer" else config.governance.address
            address = install_timelock(metered, dep, governor, config.governance.timelock_delay)
            dep.blocks["timelock"] = metered.first_block
            record = run._record("timelock", sent=False, address=address, block=metered.first_block, gas=metered.gas)
        dep.timelock = record["address"]
        _name_abi(dep, "timelock", "Timelock")
    dep.status = "complete"
    return dep


def _deploy_backstop_vault(
    run: _Steps, view: Callable, config: ProtocolConfig, dep: Deployment, admin: str, engine: str, vault: Any
) -> None:
    """The BackstopVault with its parameters, named to the collateral vault as the deficit
    cover after the insurance fund, then its per-market exposure caps, each a step."""
    b = config.backstop_vault
    assert b is not None
    backstop = run.contract("backstop_vault", "BackstopVault", admin, engine, *b.params())
    dep.backstop_vault = backstop.address
    run.call(
        "set_backstop",
        vault,
        "set_backstop",
        backstop.address,
        done=lambda: view(vault, "backstop") == backstop.address,
    )
    markets = {m.name: i for i, m in enumerate(config.markets)}
    for name, size in b.max_exposure:
        market_id = markets[name]
        run.call(
            f"set_max_exposure {name}",
            backstop,
            "set_max_exposure",
            market_id,
            size,
            done=lambda market_id=market_id, size=size: view(backstop, "max_exposure", market_id) == size,
        )


def series_name(underlying: str, expiry_days: float, is_call: bool, strike_usd: int) -> str:
    """A listed series' manifest name, e.g. "ETH-30D-C-2200" (strike in whole USD)."""
    return f"{underlying}-{expiry_days:g}D-{'C' if is_call else 'P'}-{strike_usd}"


def listing_strike(multiple: float, index: int) -> int:
    """The strike (WAD USD) a series listed at `multiple` x the index `index` (WAD) gets: whole
    USD, at least 1 (the contract keeps it within [index / 10, index * 10])."""
    return max(1, round(multiple * index / 10**18)) * 10**18


def governed_scenario_params_hash(config: ProtocolConfig) -> bytes:
    """The hash (32 bytes) of the portfolio-margin parameters `options.attestation.scenario_params`
    names (default config/portfolio_margin.yaml): the HealthAttestor's `scenario_params_hash`.
    Raises ConfigError (one line) for a missing or invalid file."""
    from keeper.config import DEFAULT_PM_CONFIG, load_scenario_params
    from keeper.risk.scenarios import scenario_params_hash

    path = config.options.attestation.scenario_params if config.options else ""
    return scenario_params_hash(load_scenario_params(path or DEFAULT_PM_CONFIG))


def _deploy_options(
    run: _Steps,
    backend: Backend,
    config: ProtocolConfig,
    dep: Deployment,
    admin: str,
    engine: Any,
    vault: Any,
    oracle: Any,
) -> None:
    """VolFeed, OptionMarket, HealthAttestor (version source: the engine; its scenario parameters
    hash from `governed_scenario_params_hash`), their parameters, the
    series of `config.options` (strike = multiple x the index at listing, whole USD; expiry =
    listing time + days), then the wiring: engine.set_portfolio_modules and
    vault.set_option_market, last, so that the engine counts options only once all is set."""
    opts = config.options
    view = getattr(backend, "view", None)
    vf = opts.vol_feed
    feed = run.contract("vol_feed", "VolFeed", admin, list(vf.signers.signers), vf.signers.threshold)
    dep.vol_feed = feed.address
    run.call("set_vol_bounds", feed, "set_vol_bounds", vf.min_atm_vol, vf.max_atm_vol, vf.max_abs_skew)
    run.call("set_vol_heartbeat", feed, "set_heartbeat", vf.heartbeat)
    option_liquidation = run.contract("option_liquidation", "OptionLiquidation", engine.address, feed.address)
    dep.option_liquidation = option_liquidation.address
    market = run.contract(
        "option_market", "OptionMarket", admin, engine.address, feed.address, option_liquidation.address
    )
    dep.option_market = market.address
    run.call("set_option_risk_params", market, "set_risk_params", opts.risk.as_tuple())
    at = opts.attestation
    attestor = run.contract(
        "health_attestor",
        "HealthAttestor",
        admin,
        engine.address,
        oracle.address,
        list(at.signers.signers),
        at.signers.threshold,
        governed_scenario_params_hash(config),
    )
    dep.health_attestor = attestor.address
    run.call("set_margin_floor", attestor, "set_margin_floor", at.margin_floor)
    run.call("set_attestation_price_band", attestor, "set_price_band", at.price_band)
    run.call("set_max_validity", attestor, "set_max_validity", at.max_validity)
    n = 0
    now: int | None = None
    for s in opts.series:
        u = config.underlyings[s.underlying]
        index: int | None = None
        for days in s.expiry_days:
            for multiple in s.strikes:
                for is_call in (True, False):
                    key = f"list_option {u.symbol} {days:g}D {'C' if is_call else 'P'} x{multiple:g}"
                    record = dep.steps.get(key)
                    if record is None:
                        if run.resuming and view(market, "series_count") > n:  # listed before a crash
                            listed = OptionSeries.decode(view(market, "series", n))
                            strike, expiry = listed.strike, listed.expiry
                        else:
                            now = backend.timestamp() if now is None else now
                            if index is None:
                                index = int(view(oracle, "index_price", u.price_id))
                            strike = listing_strike(multiple, index)
                            expiry = now + int(days * 86400)
                        name = series_name(u.symbol, days, is_call, strike // 10**18)
                        record = run.call(
                            key,
                            market,
                            "list_option",
                            s.underlying,
                            strike,
                            expiry,
                            is_call,
                            done=lambda n=n: view(market, "series_count") > n,
                            name=name,
                            series=n,
                            strike=strike,
                            expiry=expiry,
                        )
                    dep.option_series[record["name"]] = record["series"]
                    n += 1
    run.call(
        "set_portfolio_modules",
        engine,
        "set_portfolio_modules",
        market.address,
        attestor.address,
        done=lambda: view(engine, "option_market") != ZERO_ADDRESS,
    )
    run.call(
        "set_option_market",
        vault,
        "set_option_market",
        market.address,
        done=lambda: view(vault, "option_market") != ZERO_ADDRESS,
    )


# ---------------------------------------------------------------- deployment with a manifest


def _code(backend: Backend, address: str) -> bool:
    code_at = getattr(backend, "code_at", None)
    return True if code_at is None else bool(code_at(address))


def prepare(
    backend: Backend,
    config: ProtocolConfig,
    manifest_path: str | Path,
    chain_id: int,
    *,
    development: bool,
    force_new: bool = False,
) -> Deployment | None:
    """Decide what to do given the manifest at `manifest_path`: None = deploy afresh, or the
    partial Deployment to resume. Raises DeployError (one line) when the manifest records a
    complete deployment, another chain, changed parameters, or addresses without code; and
    when the config needs mocks on a non-development chain without `allow_mocks: true`."""
    from keeper.chain.manifest import ManifestError, load_manifest

    mocks = config.mocks()
    if mocks and not development and not config.allow_mocks:
        raise DeployError(
            f"the config deploys mocks for {', '.join(mocks)} on a non-development chain: give their addresses "
            "(settlement/assets `address:`, price_ids `feeds:`) or set `allow_mocks: true`"
        )
    path = Path(manifest_path)
    if force_new or not path.exists():
        return None
    try:
        previous = load_manifest(path, allow_partial=True)
    except ManifestError as e:
        raise DeployError(f"{e}; move it away or set DEPLOY_FORCE_NEW=1 to deploy afresh") from None
    if previous.chain_id != chain_id:
        raise DeployError(
            f"{path} records a deployment on chain {previous.chain_id}, this is chain {chain_id}: "
            "pass another DEPLOYMENT_MANIFEST or set DEPLOY_FORCE_NEW=1"
        )
    if previous.status == "complete":
        hint = "" if _code(backend, previous.engine) else " (but its engine has no code here: a restarted local chain?)"
        raise DeployError(
            f"{path} already records a complete deployment on chain {chain_id}{hint}; "
            "refusing to deploy again: set DEPLOY_FORCE_NEW=1 to write a fresh one"
        )
    if previous.parameters != config_echo(config):
        raise DeployError(
            f"{path} records an unfinished deployment of other parameters than this config: "
            "deploy it with the same config, or set DEPLOY_FORCE_NEW=1 to start afresh"
        )
    for key, record in previous.steps.items():
        if "address" in record and not _code(backend, record["address"]):
            raise DeployError(
                f"{path}: step {key!r} recorded {record['address']}, which has no code on chain {chain_id} "
                "(a restarted local chain?): set DEPLOY_FORCE_NEW=1 to start afresh"
            )
    return previous


def deploy_to_manifest(
    backend: Backend,
    config: ProtocolConfig,
    manifest_path: str | Path,
    *,
    admin: str,
    chain_id: int,
    development: bool,
    compiler: str = "",
    force_new: bool = False,
) -> Deployment:
    """Deploy (or resume) and keep `manifest_path` up to date after every step (atomic writes).

    Refuses (DeployError, one line) as `prepare` does. A forced fresh deployment first moves
    an existing manifest to `<name>.replaced-<unix time>.json`. Returns the complete Deployment.
    """
    from keeper.chain.manifest import save_manifest

    path = Path(manifest_path)
    previous = prepare(backend, config, path, chain_id, development=development, force_new=force_new)
    if previous is None and path.exists():
        path.replace(path.with_name(f"{path.stem}.replaced-{int(time.time())}{path.suffix}"))

    def save(dep: Deployment) -> None:
        recorded = [b for b in dep.blocks.values() if b]
        dep.deploy_block = min(recorded) if recorded else 0
        dep.compiler = compiler
        dep.deployed_at = backend.timestamp()
        save_manifest(dep, path)

    dep = deploy_protocol(backend, config, admin, chain_id, progress=previous, on_step=save)
    save(dep)
    return dep


def env_flag(name: str) -> bool:
    """An on/off environment setting: "1", "true", "yes" are on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class Web3Backend:
    """Deploys through web3.py from an account the node can sign for (e.g. Anvil's dev accounts,
    or any account impersonated on an Anvil fork). `artifacts(name)` may supply ABI and bytecode
    (e.g. brownie's build), by default they are compiled from `contracts/`."""

    def __init__(self, w3, sender: str, artifacts: Callable[[str], Any] | None = None):
        from keeper.chain.artifacts import load_artifact

        self.w3 = w3
        self.sender = sender
        self._load = artifacts or load_artifact
        self.last_block = 0
        self.last_gas = 0

    def _wait(self, tx_hash, what: str):
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if receipt["status"] != 1:
            raise DeployError(f"{what} reverted (tx {tx_hash.hex()})")
        self.last_block = receipt["blockNumber"]
        self.last_gas = receipt["gasUsed"]
        return receipt

    def deploy(self, name: str, *args):
        art = self._load(name)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = self._wait(factory.constructor(*args).transact({"from": self.sender}), f"deploying {name}")
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)

    def transact(self, contract, fn: str, *args):
        tx_hash = getattr(contract.functions, fn)(*args).transact({"from": self.sender})
        self._wait(tx_hash, fn)

    def timestamp(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def at(self, name: str, address: str):
        return self.w3.eth.contract(address=address, abi=self._load(name).abi)

    def view(self, contract, fn: str, *args):
        return getattr(contract.functions, fn)(*args).call()

    def code_at(self, address: str) -> bytes:
        return bytes(self.w3.eth.get_code(address))
