"""`keeper` command line: run the liquidator, inspect an account or all of them, replay a crash.

Every expected failure (bad input, unreachable RPC, wrong manifest, missing data) is one line
on stderr and exit code 1; no tracebacks.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keeper import resources
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.manifest import load_manifest
from keeper.cli_common import chain_options, key_options, one_line_errors, signing_key
from keeper.config import DEFAULT_CONFIG, load_config
from keeper.errors import KeeperError
from keeper.marketdata.prices import align, load_price_csv, parse_price_arg, parse_utc, synthetic_path
from keeper.units import MAX_UINT256, WAD

console = Console(stderr=True)
# tables keep their full width when piped to a file or another program
stdout = Console(width=None if sys.stdout.isatty() else 160)


def _setup_logging(level: str) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, handlers=[handler])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crossmargin-keeper", message="keeper %(version)s")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def cli(log_level: str) -> None:
    """Cross-margin protocol keeper: liquidator bot, account inspector, crash replay."""
    _setup_logging(log_level)


@cli.command()
@click.option(
    "--rpc",
    "--rpc-url",
    "rpc_urls",
    multiple=True,
    metavar="URL",
    help="JSON-RPC endpoint; repeat for fallbacks, first preferred (or KEEPER_RPC_URLS, comma-separated).",
)
@click.option(
    "--manifest", type=click.Path(path_type=Path), default=None, help="Deployment manifest JSON (or KEEPER_MANIFEST)."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Keeper settings YAML (see config/keeper.example.yaml).",
)
@key_options("KEEPER_PRIVATE_KEY", "the liquidator")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the transaction journal and the event-index checkpoint (default: nothing persisted).",
)
@click.option(
    "--from-block",
    type=click.IntRange(min=0),
    default=None,
    help="First block to scan for accounts when there is no checkpoint (default: the manifest's deploy block).",
)
@click.option(
    "--min-profit-usd",
    type=str,
    default=None,
    metavar="USD|always",
    help="Send a liquidation only if its expected reward exceeds gas x (1 + gas_margin) + this [default: 0, never at a loss]; 'always' liquidates every account whatever it earns.",
)
@click.option("--max-fee-gwei", type=float, default=None, help="Never pay more than this per gas [default: 500].")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port at /metrics.",
)
@click.option("--log-json", is_flag=True, default=False, help="Log one JSON object per line.")
@click.option(
    "--poll", type=click.FloatRange(min=0.01), default=None, help="Seconds between head checks [default: 0.5]."
)
@click.option(
    "--status-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the keeper's counters here after every block.",
)
@click.option(
    "--max-blocks", type=click.IntRange(min=1), default=None, help="Stop after this many blocks (default: run forever)."
)
@click.option(
    "--settle-expired/--no-settle-expired",
    default=None,
    help="Settle expired dated futures and option series each block (or settle_expired / KEEPER_SETTLE_EXPIRED) [default: on].",
)
@click.option(
    "--send-rpc",
    default=None,
    metavar="URL",
    help="Send transactions (eth_sendRawTransaction) through this endpoint, e.g. a private relay; reads and receipts stay on --rpc (or send_rpc / KEEPER_SEND_RPC).",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Run as shard I of N keepers (one key each): liquidate the accounts this shard owns, and another shard's once it has been liquidatable past the takeover delay (or shard / KEEPER_SHARD).",
)
@click.option(
    "--takeover-blocks",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Blocks the next shard in ring order waits before taking over a stopped shard's liquidatable account [default: 2] (or takeover_blocks / KEEPER_TAKEOVER_BLOCKS).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=False,
    help="Follow the chain and judge accounts as usual, but simulate each liquidation (eth_call) and log it instead of sending; needs no funded key.",
)
@click.option(
    "--from",
    "from_address",
    default=None,
    metavar="ADDRESS",
    help="With --dry-run: simulate from this address (no key needed) [default: the key's address].",
)
@click.pass_context
def run(
    ctx,
    rpc_urls,
    manifest,
    config_path,
    private_key_env,
    keystore,
    password_env,
    state_dir,
    from_block,
    min_profit_usd,
    max_fee_gwei,
    metrics_port,
    log_json,
    poll,
    status_file,
    max_blocks,
    settle_expired,
    send_rpc,
    shard,
    takeover_blocks,
    dry_run,
    from_address,
) -> None:
    """Run the liquidator bot against RPC for the deployment in MANIFEST.

    Settings come from --config, then KEEPER_* environment variables, then these options."""
    from eth_account import Account

    from keeper.bot import Liquidator
    from keeper.chain.client import connect_any
    from keeper.chain.event_index import EventIndex
    from keeper.chain.follower import ChainFollower
    from keeper.chain.rpc import fallback_web3
    from keeper.chain.startup import startup_checks
    from keeper.journal import TxJournal
    from keeper.logs import setup_logging
    from keeper.metrics import KeeperMetrics
    from keeper.settings import SettingsError, load_settings, validate_for_run
    from keeper.txmanager import DryRunTx, GasPolicy, TxManager

    level = (
        ctx.parent.params.get("log_level")
        if ctx.parent.get_parameter_source("log_level") == click.core.ParameterSource.COMMANDLINE
        else None
    )
    settings = load_settings(
        config_path,
        rpc_urls=list(rpc_urls) or None, manifest=manifest, private_key_env=private_key_env, state_dir=state_dir,
        from_block=from_block, min_profit_usd=min_profit_usd, max_fee_gwei=max_fee_gwei, metrics_port=metrics_port,
        log_format="json" if log_json else None, poll_seconds=poll, log_level=level, settle_expired=settle_expired,
        send_rpc=send_rpc, shard=shard, takeover_blocks=takeover_blocks,
    )  # fmt: skip
    validate_for_run(settings)
    setup_logging(settings.log_level, settings.log_format)
    key = None
    source = ""
    if from_address is not None:
        if not dry_run:
            raise click.ClickException("--from is only for --dry-run: a keeper that sends uses its key's address")
        from eth_utils import is_address, to_checksum_address

        if not is_address(from_address):
            raise click.ClickException(f"--from: not an address (or a wrong EIP-55 checksum): {from_address!r}")
        address = to_checksum_address(from_address)
    else:
        try:
            signer = signing_key(private_key_env, keystore, password_env, settings.private_key_env)
        except SettingsError as e:
            if dry_run and str(e).startswith("no private key"):
                raise SettingsError(f"{e}, or give --from ADDRESS with --dry-run") from None
            raise
        key, source = signer.key, signer.source
        address = Account.from_key(key).address
    deployment = load_manifest(settings.manifest)
    w3 = connect_any(settings.rpc_urls, timeout=settings.rpc_timeout_seconds)
    # built without a request: the startup checks below ask it for its chain id
    send_w3 = (
        fallback_web3([settings.send_rpc], timeout=settings.rpc_timeout_seconds)
        if settings.send_rpc is not None and not dry_run
        else None
    )
    client = ProtocolClient(w3, deployment)
    gas = settings.gas
    report = startup_checks(
        w3, deployment, address, vault=client.vault, send_w3=send_w3, dry_run=dry_run, gas_floor=settings.liquidation_gas_floor,
        max_fee_per_gas=gas.max_fee_wei, priority_fee=gas.priority_fee_wei, base_fee_multiplier=gas.base_fee_multiplier,
        low_balance_eth=settings.low_balance_eth, stale_after_seconds=settings.stale_after_seconds,
    )  # fmt: skip
    log = logging.getLogger("keeper")
    for warning in report.warnings:
        log.warning("startup: %s", warning)
    report.raise_if_failed()
    log.info("startup checks passed: %s", ", ".join(report.notes))
    journal_path = None
    if settings.state_dir is not None and not dry_run:  # a dry run sends nothing: no journal
        try:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.ClickException(f"cannot create state dir {settings.state_dir}: {e.strerror}") from None
        journal_path = settings.state_dir / "tx-journal.sqlite"
    policy = GasPolicy(
        priority_fee=gas.priority_fee_wei, base_fee_multiplier=gas.base_fee_multiplier, max_fee_cap=gas.max_fee_wei
    )
    if settings.state_dir is not None and dry_run:
        try:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.ClickException(f"cannot create state dir {settings.state_dir}: {e.strerror}") from None
    try:
        tx = (
            DryRunTx(w3, address)
            if dry_run
            else TxManager(w3, key, policy=policy, journal=TxJournal(journal_path), send_w3=send_w3)
        )
    except ValueError as e:
        if "key" in str(e).lower() or "hex" in str(e).lower() or "non-hexadecimal" in str(e).lower():
            raise click.ClickException(f"{source} does not hold a valid private key") from None
        raise
    start = deployment.deploy_block if settings.from_block is None else settings.from_block
    index = EventIndex(
        client, start, settings.state_dir, chunk_blocks=settings.log_chunk_blocks, keep_recent=settings.reorg_depth
    )
    index.load()
    metrics = KeeperMetrics()
    bot = Liquidator(
        client, tx, index, ChainFollower(w3, settings.reorg_depth, settings.stale_after_seconds), metrics,
        min_profit_usd=settings.min_profit_usd, gas_margin=settings.gas_margin, liquidation_gas_floor=settings.liquidation_gas_floor,
        max_fee_per_gas=gas.max_fee_wei, priority_fee=gas.priority_fee_wei,
        base_fee_multiplier=gas.base_fee_multiplier, low_balance_eth=settings.low_balance_eth,
        missed_after_blocks=settings.missed_after_blocks, status_file=status_file, dry_run=dry_run,
        shard=settings.shard, takeover_blocks=settings.takeover_blocks, route=settings.liquidation.route,
        deleverage=settings.liquidation.deleverage,
    )  # fmt: skip
    if settings.scoring.event_driven:
        from keeper.scoring import RescoreIndex

        sc = settings.scoring
        bot.rescore = RescoreIndex(
            high_risk_health=sc.high_risk_health, rescore_every_blocks=sc.rescore_every_blocks,
            resync_every_blocks=sc.resync_every_blocks, headroom_fraction=sc.headroom_fraction,
        )  # fmt: skip
    if settings.scoring.cache_states:
        from keeper.chain.state_cache import AccountStateCache

        bot.state_cache = AccountStateCache(resync_every_blocks=settings.scoring.resync_every_blocks)
    log.info(
        "account reads: %s",
        "the accounts each block's logs name, every account every "
        f"{settings.scoring.resync_every_blocks} blocks and after a reorg"
        if settings.scoring.cache_states
        else "every account every block (scoring.cache_states off)",
    )
    log.info(
        "re-scoring: %s",
        f"event-driven (high-risk below health {settings.scoring.high_risk_health:g}, every account at least every "
        f"{settings.scoring.rescore_every_blocks} blocks, full resync every {settings.scoring.resync_every_blocks})"
        if settings.scoring.event_driven
        else "every account every block (scoring.event_driven off)",
    )
    if settings.settle_expired:
        from keeper.settle import SettlementJob

        bot.settlement = SettlementJob(
            client, tx, metrics, max_fee_per_gas=gas.max_fee_wei, priority_fee=gas.priority_fee_wei
        )
    from keeper.unwind import InventoryJob

    lq = settings.liquidation
    bot.inventory = InventoryJob(
        client, tx, metrics, quotes_file=lq.unwind_quotes, slippage_bps=lq.unwind_slippage_bps,
        max_blocks=lq.unwind_blocks, dry_run=bot.dry_run,
    )  # fmt: skip
    log.info(
        "inventory: %s",
        f"unwound against the quotes in {lq.unwind_quotes} within {lq.unwind_slippage_bps} bps of the index"
        if lq.unwind_quotes is not None and client.matching is not None
        else "reported, not unwound (liquidation.unwind_quotes)"
        if client.matching is not None
        else "reported, not unwound: the deployment has no matching contract",
    )
    log.info(
        "liquidation route: %s",
        "direct (liquidation.route): the keeper takes the positions"
        if settings.liquidation.route == "direct"
        else f"through the backstop vault {client.backstop.address}, direct when it cannot take them"
        if client.backstop is not None
        else "direct: the deployment has no backstop vault",
    )
    log.info(
        "settlement of expired futures and option series %s",
        "on" if settings.settle_expired else "off (settle_expired)",
    )
    if settings.attestation.enabled:
        bot.attestation = _attestation_service(client, tx, settings, metrics)
        log.info(
            "health attestations on: %d signer keys, accounts %s",
            len(settings.attestation.signer_key_envs),
            "all holding options" if settings.attestation.accounts is None else len(settings.attestation.accounts),
        )
    if settings.metrics_port is not None:
        try:
            metrics.serve(settings.metrics_port, settings.metrics_addr)
        except OSError as e:
            raise click.ClickException(
                f"cannot serve metrics on {settings.metrics_addr}:{settings.metrics_port}: {e.strerror}"
            ) from None
        log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, settings.metrics_port)
    profit = (
        "liquidate all (min_profit_usd: always)"
        if settings.min_profit_usd is None
        else f"reward > gas x {1 + settings.gas_margin:g} + {settings.min_profit_usd:g} USD"
    )
    if dry_run:
        log.warning(
            "DRY RUN: nothing is signed or sent; each liquidation is simulated from %s at the latest block and logged",
            address,
        )
    elif send_w3 is not None:
        log.info("transactions are sent through %s; reads and receipts through --rpc", send_w3.provider)
    if settings.shard is not None:
        log.info(
            "shard %s: the accounts this shard owns, and another shard's after %d blocks per step in ring order",
            settings.shard,
            settings.takeover_blocks,
        )
    log.info(
        "%s %s following %s (engine %s; %s; max fee %g gwei; state %s)", "dry-run liquidator" if dry_run else "liquidator",
        tx.address, w3.provider, deployment.engine, profit, gas.max_fee_gwei, settings.state_dir or "in memory",
    )  # fmt: skip
    try:
        bot.run(poll_interval=settings.poll_seconds, max_blocks=max_blocks)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("address")
@chain_options
@click.option(
    "--scenario-config",
    type=click.Path(path_type=Path),
    default=None,
    help="Portfolio margin parameters YAML [default: config/portfolio_margin.yaml].",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a PNG heat map of the account's P&L by spot move and vol shock here.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    help="Print collateral, positions and margin as one JSON object (WAD integers) instead of tables.",
)
def account(address, rpc, manifest, scenario_config, plot_path, as_json) -> None:
    """Positions, collateral, equity, IM, MM and health of ADDRESS; with options: its Greeks,
    the scenario table and the isolated, standard and portfolio margin requirements.

    Unrealized P&L is the engine's: price P&L minus the funding a position owes, so equity =
    cash + collateral value + unrealized P&L."""
    from eth_utils import is_address, to_checksum_address

    from keeper.chain.account import read_account
    from keeper.config import DEFAULT_PM_CONFIG, load_scenario_params

    if not is_address(address):
        raise click.ClickException(f"not an address: {address!r}")
    if as_json and plot_path is not None:
        raise click.ClickException("--json and --plot do not go together: the JSON is the account's numbers only")
    address = to_checksum_address(address)
    scenario_params = None if as_json else load_scenario_params(scenario_config or DEFAULT_PM_CONFIG)
    deployment = load_manifest(manifest)
    client = ProtocolClient(connect(rpc), deployment)
    client.check_chain()
    view = read_account(client, address, client.w3.eth.block_number)
    if as_json:
        import json

        click.echo(json.dumps(_account_json(view, client), indent=2))
        return
    out = stdout
    out.print(_collateral_table(view, deployment))
    book = client.risk_book(view.snap, view.params)
    out.print(_positions_table(view, deployment, client, book.market.symbols))
    out.print(_margin_table(view))
    if not book.positions.any():
        if plot_path is not None:  # exit 0: the report above is complete; there is just nothing to plot
            click.echo(
                f"no heat map written to {plot_path}: {address} has no positions (its P&L is 0 in every scenario)",
                err=True,
            )
        return
    _print_portfolio(view, client, book, scenario_params)
    if plot_path is not None:
        written = plot_heat_map(book, 0, plot_path, scenario_params.spot_range)
        out.print(f"heat map written to {written}", highlight=False)


@cli.command("accounts")
@chain_options
@click.option(
    "--sort",
    type=click.Choice(["health", "equity", "mm", "address"]),
    default="health",
    show_default=True,
    help="health: lowest first; equity, mm: largest first; address.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N accounts (after sorting).")
@click.option(
    "--liquidatable-only", is_flag=True, default=False, help="Only accounts with equity < maintenance margin."
)
@click.option(
    "--from-block",
    type=click.IntRange(min=0),
    default=None,
    help="First block to scan for accounts [default: the manifest's deploy block].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    help="Print one JSON array of objects (WAD integers, as `keeper account --json`) instead of a table.",
)
@one_line_errors(KeeperError)
def accounts_cmd(rpc, manifest, sort, limit, liquidatable_only, from_block, as_json) -> None:
    """Every account's equity, IM, MM, health factor and whether it is liquidatable, read at one
    block: accounts found from Deposit and PositionChanged events as `keeper run` finds them,
    their margin the contract's own (MarginLens.margin_summaries, in batches)."""
    from keeper.chain.account import read_health, select_health

    deployment = load_manifest(manifest)
    client = ProtocolClient(connect(rpc), deployment)
    client.check_chain()
    block = client.w3.eth.block_number
    rows = read_health(client, deployment.deploy_block if from_block is None else from_block, block)
    shown = select_health(rows, sort, limit, liquidatable_only)
    if as_json:
        import json

        click.echo(json.dumps(_health_json(shown), indent=2))
        return
    stdout.print(_health_table(shown, rows, block))


def _health_json(rows) -> list[dict]:
    """One object per account, the numbers as `keeper account --json` prints its margin: WAD ints."""
    return [
        {"address": r.address, "block": r.block, **r.margin._asdict(), "liquidatable": r.liquidatable} for r in rows
    ]


def _health_table(shown, rows, block: int) -> Table:
    liquidatable = sum(r.liquidatable for r in rows)
    title = f"{len(rows)} accounts at block {block}, {liquidatable} liquidatable"
    if len(shown) != len(rows):
        title += f" (showing {len(shown)})"
    t = Table(title=title)
    for col in ("account", "equity (USD)", "IM (USD)", "MM (USD)", "health", "liquidatable"):
        t.add_column(col, justify="left" if col == "account" else "right")
    for r in shown:
        m = r.margin
        hf = "inf" if m.health_factor == MAX_UINT256 else f"{m.health_factor / WAD:.4f}"
        t.add_row(
            r.address, f"{m.equity / WAD:,.2f}", f"{m.initial_margin / WAD:,.2f}",
            f"{m.maintenance_margin / WAD:,.2f}", hf, "[bold red]yes[/]" if r.liquidatable else "no",
        )  # fmt: skip
    return t


def _collateral_rows(view, deployment) -> list[dict]:
    """Each non-zero collateral balance: symbol, balance (token units), index price, haircut and
    value (WAD), as the vault values it."""
    book, params, prices = view.snap.book, view.params, view.snap.prices
    rows = []
    for symbol, asset_id in deployment.asset_ids.items():
        balance = int(book.collateral[0, asset_id])
        if balance:
            rows.append(
                {
                    "asset": symbol,
                    "balance": balance,
                    "decimals": int(deployment.asset_decimals[symbol]),
                    "index_price": int(prices[params.asset_price_id[asset_id]]),
                    "haircut": int(params.asset_haircut[asset_id]),
                    "value": int(view.values.collateral_value[0, asset_id]),
                }
            )
    return rows


def _position_rows(view, deployment) -> list[dict]:
    """Each open future or perpetual: size, entry, mark, price P&L, funding owed and unrealized
    P&L (price P&L - funding owed), WAD."""
    names = {v: k for k, v in deployment.markets.items()}
    book, values = view.snap.book, view.values
    rows = []
    for m in range(book.size.shape[1]):
        size = int(book.size[0, m])
        if size:
            rows.append(
                {
                    "market": names.get(m, str(m)),
                    "size": size,
                    "entry_price": int(book.entry_price[0, m]),
                    "mark": int(values.mark[m]),
                    "price_pnl": int(values.price_pnl[0, m]),
                    "funding": int(values.funding[0, m]),
                    "unrealized_pnl": int(values.unrealized_pnl[0, m]),
                }
            )
    return rows


def _account_json(view, client) -> dict:
    c = view.onchain
    return {
        "address": view.address,
        "block": view.block,
        "cash": {"balance": int(view.snap.book.cash[0]), "value": view.cash_value},
        "collateral": _collateral_rows(view, client.deployment),
        "collateral_value": view.collateral_value,
        "positions": _position_rows(view, client.deployment),
        "options": [s._asdict() for s in view.options],
        "option_margin": view.option_margin._asdict(),
        "unrealized_pnl": view.unrealized_pnl,
        "margin": {**c._asdict(), "liquidatable": c.equity < c.maintenance_margin},
        "keeper_agrees": view.agrees,
    }


def _collateral_table(view, deployment) -> Table:
    from keeper.risk.margin import settlement_price

    t = Table(title=f"Collateral of {view.address} at block {view.block}")
    for col in ("asset", "balance", "index price", "haircut", "margin value (USD)"):
        t.add_column(col, justify="right" if col != "asset" else "left")
    # cash by the vault's depeg rule: the settlement asset's own price when it has one
    settle_px = settlement_price(view.params, view.snap.prices)
    t.add_row(
        "cash (" + "USDC" + ")",
        f"{view.snap.book.cash[0] / WAD:,.2f}",
        f"{settle_px / WAD:,.4f}" if settle_px else "1",
        "depeg rule" if settle_px else "1",
        f"{view.cash_value / WAD:,.2f}",
    )
    for r in _collateral_rows(view, deployment):
        t.add_row(
            r["asset"],
            f"{r['balance'] / 10 ** r['decimals']:,.6f}",
            f"{r['index_price'] / WAD:,.2f}",
            f"{r['haircut'] / WAD:.2f}",
            f"{r['value'] / WAD:,.2f}",
        )
    return t


def _positions_table(view, deployment, client, symbols) -> Table:
    from keeper.risk.book import series_name

    t = Table(title="Positions (unrealized P&L includes accrued funding)")
    for col in ("market", "size", "entry", "mark", "funding owed (USD)", "unrealized PnL (USD)"):
        t.add_column(col, justify="right" if col != "market" else "left")
    for r in _position_rows(view, deployment):
        t.add_row(
            r["market"],
            f"{r['size'] / WAD:,.6f}",
            f"{r['entry_price'] / WAD:,.2f}",
            f"{r['mark'] / WAD:,.2f}",
            f"{r['funding'] / WAD:,.2f}",
            f"{r['unrealized_pnl'] / WAD:,.2f}",
        )
    if view.options:
        series = {s.series_id: s for s in client.option_series(view.block)}
        for st in view.options:
            s = series[st.series]
            label = series_name(symbols[s.underlying] if s.underlying < len(symbols) else f"U{s.underlying}", s)
            t.add_row(
                label,
                f"{st.size / WAD:,.6f}",
                f"{st.entry_price / WAD:,.2f}",
                f"{st.mark / WAD:,.2f}",
                "",
                f"{st.value / WAD:,.2f}",
            )
    return t


def _margin_table(view) -> Table:
    t = Table(title="Margin (keeper = contract)" if view.agrees else "Margin (KEEPER DIFFERS FROM CONTRACT)")
    for col in ("equity (USD)", "initial margin", "maintenance margin", "health factor", "liquidatable"):
        t.add_column(col, justify="right")
    c = view.onchain
    hf = c.health_factor
    t.add_row(
        f"{c.equity / WAD:,.2f}", f"{c.initial_margin / WAD:,.2f}", f"{c.maintenance_margin / WAD:,.2f}",
        "inf" if hf == MAX_UINT256 else f"{hf / WAD:.4f}", "yes" if c.equity < c.maintenance_margin else "no",
    )  # fmt: skip
    return t


def _print_portfolio(view, client, book, scenario_params) -> None:
    """Greeks, the scenario grid and the isolated, standard and portfolio requirements."""
    from keeper.risk.margin import isolated_initial_margin
    from keeper.risk.portfolio import account_reports
    from keeper.risk.scenarios import build_risk_tables, portfolio_margin

    out = stdout
    snap, address, block = view.snap, view.address, view.block
    standard_im, standard_mm = view.standard_im, view.standard_mm
    tables = build_risk_tables(book.instruments, book.market, scenario_params)
    pm = portfolio_margin(tables, book.positions)
    isolated = int(isolated_initial_margin(snap.book, snap.markets, view.params, snap.prices)[0])
    isolated += view.option_margin.initial_margin
    (report,) = account_reports(
        tables, book.positions, isolated_im=[isolated / WAD], standard_im=[standard_im / WAD], margin=pm
    )

    greeks = Table(title="Greeks (Black-76, r = 0; delta in units, vega USD per 1.00 vol, theta USD per day)")
    for col in ("underlying", "spot", "delta", "gamma", "vega", "theta / day"):
        greeks.add_column(col, justify="right" if col != "underlying" else "left")
    for u, sym in enumerate(book.market.symbols):
        if any(abs(x[sym]) > 0 for x in (report.delta, report.gamma, report.vega, report.theta_day)):
            greeks.add_row(
                sym,
                f"{book.market.spot[u]:,.2f}",
                f"{report.delta[sym]:,.4f}",
                f"{report.gamma[sym]:,.6f}",
                f"{report.vega[sym]:,.2f}",
                f"{report.theta_day[sym]:,.2f}",
            )
    greeks.add_row(
        "account (USD)",
        "",
        f"{report.delta_usd:,.2f} / 100%",
        f"{report.gamma_usd:,.2f} / 1%",
        f"{report.vega_total:,.2f}",
        f"{report.theta_day_total:,.2f}",
    )
    out.print(greeks)

    grid = Table(title="Scenario P&L (portfolio margin grid, weighted; worst marked)")
    grid.add_column("scenario")
    grid.add_column("P&L (USD)", justify="right")
    pnl = book.positions[0] @ tables.pnl
    worst = int(pm.worst_scenario[0])
    held_u = {int(u) for u in book.instruments.underlying[book.positions[0] != 0]}
    for s, label in enumerate(tables.grid.labels):
        moving = {
            u
            for u in range(book.market.n_underlyings)
            if tables.grid.spot_move[s, u] != 0 or tables.grid.vol_dir[s, u] != 0
        }
        if s != worst and moving and not moving & held_u:
            continue  # scenarios that move only underlyings the account does not hold
        grid.add_row(("[bold red]" + label + " (worst)[/]") if s == worst else label, f"{pnl[s]:,.2f}")
    out.print(grid)

    req = Table(title="Requirements (USD)")
    for col in ("", "initial margin", "maintenance margin"):
        req.add_column(col, justify="right" if col else "left")
    req.add_row("isolated (each position alone)", f"{isolated / WAD:,.2f}", "")
    req.add_row("standard (cross margin + option SRM)", f"{standard_im / WAD:,.2f}", f"{standard_mm / WAD:,.2f}")
    req.add_row("portfolio (scenario grid)", f"{report.portfolio_im:,.2f}", f"{report.portfolio_mm:,.2f}")
    req.add_row(
        "in force on chain",
        f"{view.onchain.initial_margin / WAD:,.2f}",
        f"{view.onchain.maintenance_margin / WAD:,.2f}",
    )
    out.print(req)
    out.print(
        f"worst scenario: {report.worst_scenario} P&L {report.worst_pnl:,.2f} USD; grid loss {report.grid_loss:,.2f} + contingencies "
        f"{report.delta_one_contingency + report.basis_contingency + report.naked_option_contingency:,.2f} USD",
        highlight=False,
    )
    stored = client.stored_attestation(address, block)
    if stored is not None:
        holds = client.attestor.functions.attestation_holds(address).call(block_identifier=block)
        out.print(
            f"attestation: IM {stored.initial_margin / WAD:,.2f} / MM {stored.maintenance_margin / WAD:,.2f} USD, "
            f"valid until {stored.valid_until} ({'holds' if holds else 'VOID'})", highlight=False,
        )  # fmt: skip
    if book.unpriced or book.stale:
        out.print(
            f"warning: series without a fresh vol: {sorted(book.unpriced | book.stale)} (unpriced ones are left out)",
            highlight=False,
        )


def plot_heat_map(book, row: int, path: Path, spot_range: float = 0.15, spot_steps: int = 13, vol_shocks=None) -> Path:
    """A PNG heat map of account `row`'s P&L (USD, full Black-76 revaluation) over spot moves
    -2 x spot_range .. +2 x spot_range (every underlying together) by relative vol shocks
    (default -50% .. +50%). Raises click.ClickException if the file cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from keeper.risk.scenarios import revalue

    moves = np.linspace(-2 * spot_range, 2 * spot_range, spot_steps)
    shocks = np.linspace(-0.5, 0.5, 11) if vol_shocks is None else np.asarray(vol_shocks, dtype=float)
    n_u, n_i = book.market.n_underlyings, len(book.instruments)
    spot_move = np.repeat(moves, len(shocks))[:, None] * np.ones((1, n_u))
    vol_mult = np.tile(1.0 + shocks, len(moves))[:, None] * np.ones((1, n_i))
    pnl = (book.positions[row] @ revalue(book.instruments, book.market, spot_move, vol_mult)).reshape(
        len(moves), len(shocks)
    )
    fig, ax = plt.subplots(figsize=(8, 5.5))
    limit = float(np.abs(pnl).max()) or 1.0
    image = ax.imshow(pnl.T, origin="lower", aspect="auto", cmap="RdYlGn", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(moves)), [f"{m:+.0%}" for m in moves], rotation=45)
    ax.set_yticks(range(len(shocks)), [f"{v:+.0%}" for v in shocks])
    ax.set_xlabel("spot move (all underlyings)")
    ax.set_ylabel("vol shock (relative)")
    ax.set_title(f"P&L of {book.accounts[row]}"[:60])
    fig.colorbar(image, ax=ax, label="P&L (USD)")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return path


def _attestation_service(client, tx, settings, metrics):
    """The AttestationService `keeper run` starts when `attestation.enabled` (keys from the
    environment variables the settings name)."""
    from keeper.attest import AttestationService, RefreshRules, ScenarioParamsNotGoverned
    from keeper.config import DEFAULT_PM_CONFIG, load_scenario_params
    from keeper.settings import attestation_keys

    a = settings.attestation
    if client.attestor is None:
        raise click.ClickException("attestation.enabled but the engine has no health attestor wired")
    keys = attestation_keys(a)
    threshold = client.attestor_terms().threshold
    if len(keys) < threshold:
        raise click.ClickException(
            f"the attestor needs {threshold} signatures; attestation.signer_key_envs names {len(keys)}"
        )
    source = a.scenario_config or DEFAULT_PM_CONFIG
    service = AttestationService(
        client, tx, keys, load_scenario_params(source),
        RefreshRules(a.refresh_before_seconds, a.price_move_fraction), a.accounts, a.validity_seconds, metrics, str(source),
    )  # fmt: skip
    try:
        service.check_governed()
    except ScenarioParamsNotGoverned as e:
        raise click.ClickException(str(e)) from None
    return service


@cli.command()
@click.option(
    "--prices",
    "price_args",
    multiple=True,
    metavar="SYMBOL=CSV",
    help="Price CSV per asset (timestamp,open,high,low,close,volume); repeat for ETH and BTC. Default: a seeded synthetic crash.",
)
@click.option("--start", default=None, help="Window start, ISO-8601 UTC (e.g. 2020-03-11T00:00:00Z).")
@click.option("--end", default=None, help="Window end (exclusive), ISO-8601 UTC.")
@click.option(
    "--accounts",
    type=click.IntRange(1, 20_000),
    default=100,
    show_default=True,
    help="Accounts to open (above about 100 use config/replay-large.yaml, up to 5,000, or config/replay-xl.yaml).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the population and synthetic path.")
@click.option(
    "--steps", type=click.IntRange(2, 100_000), default=300, show_default=True, help="Steps of the synthetic path."
)
@click.option(
    "--block-seconds",
    type=click.IntRange(1, 86_400),
    default=12,
    show_default=True,
    help="Chain time between replay blocks.",
)
@click.option("--rpc", "--rpc-url", default=None, help="Use this RPC endpoint instead of starting Anvil.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Protocol listing YAML [default: config/local.yaml, with --options config/options.yaml].",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    default=Path("reports/replay.json"),
    show_default=True,
    help="Where to write the JSON report.",
)
@click.option(
    "--keeper-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the keeper per block.",
)
@click.option(
    "--keepers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Keeper processes, each `keeper run --shard i/K` with its own key and collateral (docs/keeper.md, shards).",
)
@click.option(
    "--stop-keeper",
    default=None,
    metavar="I@STEP",
    help="Stop keeper I just before step STEP (a shard going down mid-crash: the others take its accounts over).",
)
@click.option(
    "--block-gas-limit",
    type=click.IntRange(30_000_000, 30_000_000_000),
    default=100_000_000,
    show_default=True,
    help="Gas limit of every block of the Anvil the replay starts: a step's liquidations must fit in the block after it.",
)
@click.option(
    "--options/--no-options",
    "with_options",
    default=False,
    show_default=True,
    help="Add option books (covered calls, straddles, spreads...), signed vols each step and the keeper's attestations; report isolated / standard / portfolio margin.",
)
@click.option(
    "--vol-data",
    "vol_data",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder with the daily price and DVOL files for the option vols [default: $KEEPER_DATA_DIR, else ../shared/data from the working directory].",
)
@click.option(
    "--insurance-fund",
    "insurance_fund",
    default=None,
    callback=lambda ctx, param, value: _whole_usd("--insurance-fund", value),
    metavar="USD",
    help="USD the insurance fund starts with, instead of the config's backstop.insurance_fund_usd (0: none, so deficits become bad debt).",
)
@click.option(
    "--backstop",
    "backstop",
    default=None,
    callback=lambda ctx, param, value: _whole_usd("--backstop", value),
    metavar="USD",
    help="USD deposited in the backstop vault before the crash (request, wait its request_delay, claim), so that the keeper routes liquidations to it [default: 2000000, twice config/local.yaml's insurance fund: enough margin for every liquidation of the 100-account Black Thursday replay]; 0: none, the keeper liquidates directly. Ignored without a backstop_vault section in the config.",
)
@click.option(
    "--adl/--no-adl",
    "deleverage",
    default=True,
    show_default=True,
    help="The keeper auto-deleverages a bankrupt account whose deficit the insurance fund and the backstop vault cannot pay whole; --no-adl: such deficits become bad debt (to compare).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Draw the crash (prices, accounts below MM, liquidations, insurance fund, bad debt) to this PNG [default: beside --report when --report is given, same name with .png].",
)
@click.option("--no-plot", is_flag=True, default=False, help="Draw no PNG.")
@click.pass_context
def replay(
    ctx,
    price_args,
    start,
    end,
    accounts,
    seed,
    steps,
    block_seconds,
    rpc,
    config_path,
    report_path,
    keeper_timeout,
    keepers,
    stop_keeper,
    block_gas_limit,
    with_options,
    vol_data,
    insurance_fund,
    backstop,
    deleverage,
    plot_path,
    no_plot,
) -> None:
    """Replay a price path block by block on a local chain with the keeper running."""
    plot_path = _replay_plot_path(ctx, report_path, plot_path, no_plot)
    stop = None
    if stop_keeper is not None:
        which, _, at = str(stop_keeper).partition("@")
        if not (which.isdigit() and at.isdigit() and int(which) < keepers and int(at) >= 1):
            raise click.ClickException(
                f"--stop-keeper is I@STEP with I < --keepers ({keepers}) and STEP >= 1, got {stop_keeper!r}"
            )
        if keepers < 2:
            raise click.ClickException("--stop-keeper needs --keepers 2 or more: another keeper must take over")
        stop = (int(which), int(at))
    from keeper.replay.driver import BACKSTOP_USD, Replay, ReplayError, ReplayOptions

    if config_path is None:
        config_path = resources.config_file("options.yaml") if with_options else DEFAULT_CONFIG
    config = load_config(config_path)
    if price_args:
        files: dict[str, Path] = {}
        known = [p.symbol for p in config.price_ids]
        for arg in price_args:  # every argument checked before any file is read
            symbol, csv = parse_price_arg(arg)
            if symbol in files:
                raise click.ClickException(
                    f"--prices {symbol} is given twice ({files[symbol]} and {csv}): give one file per symbol"
                )
            if symbol not in known:
                raise click.ClickException(
                    f"--prices {symbol}: {config_path} has no price id {symbol} (known: {', '.join(known)})"
                )
            files[symbol] = csv
        series = {symbol: load_price_csv(csv, symbol) for symbol, csv in files.items()}
        missing = {"ETH", "BTC"} - set(series)
        if missing:
            raise click.ClickException(
                f"--prices needs a file for each of ETH and BTC (missing {', '.join(sorted(missing))})"
            )
        path = align(series, parse_utc(start) if start else None, parse_utc(end) if end else None)
    else:
        if start or end:
            raise click.ClickException("--start/--end apply to --prices files only")
        path = synthetic_path(steps=steps, seed=seed)
    opts = ReplayOptions(path=path, accounts=accounts, seed=seed, block_seconds=block_seconds, rpc=rpc,
                         keeper_timeout=keeper_timeout, config=config, options=with_options,
                         vol_data_dir=vol_data, keepers=keepers, stop_keeper=stop,
                         insurance_fund_usd=insurance_fund, block_gas_limit=block_gas_limit,
                         backstop_usd=BACKSTOP_USD if backstop is None else backstop, deleverage=deleverage)  # fmt: skip
    with Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        try:
            report = Replay(opts, update).run()
        except ReplayError as e:
            raise click.ClickException(str(e)) from None
    written = report.write(report_path)
    _print_report(report.data)
    stdout.print(f"report written to {written}")
    if plot_path is not None:
        from keeper.replay.plot import plot_report

        stdout.print(f"picture written to {plot_report(report.data, plot_path)}")


def _whole_usd(option: str, value: str | None) -> int | None:
    """`value` as whole USD in [0, 10**15] (the config's bound), or None; one line otherwise."""
    if value is None:
        return None
    text = str(value).strip().replace("_", "").replace(",", "")
    if not text.isdigit() or int(text) > 10**15:
        raise click.ClickException(f"{option} is whole USD from 0 to 10**15 (e.g. 0 or 250000), got {value!r}")
    return int(text)


def _replay_plot_path(ctx, report_path: Path, plot_path: Path | None, no_plot: bool) -> Path | None:
    """The PNG `keeper replay` draws: --plot, else beside an explicit --report (same stem,
    .png), else none; --no-plot: none. Checked before the replay runs (one line on a problem)."""
    if no_plot:
        if plot_path is not None:
            raise click.ClickException("--plot and --no-plot: give one of them")
        return None
    if plot_path is None:
        if ctx.get_parameter_source("report_path") != click.core.ParameterSource.COMMANDLINE:
            return None
        plot_path = report_path.with_suffix(".png")
    if plot_path.suffix.lower() != ".png":
        raise click.ClickException(f"--plot writes a PNG: give a file name ending in .png, got {str(plot_path)!r}")
    if plot_path.is_dir():
        raise click.ClickException(f"--plot {plot_path} is a folder: give a file name ending in .png")
    return plot_path


def _print_report(d: dict) -> None:
    t = Table(title=f"Replay {d['price_path']['start']} -> {d['price_path']['end']} ({d['price_path']['steps']} steps)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("accounts", f"{d['accounts']}"),
        ("blocks", f"{d['blocks']}"),
        ("liquidations", f"{d['liquidations']} ({d['liquidated_accounts']} accounts)"),
        *(
            [("routed to the backstop vault / direct", f"{d['routed_liquidations']} / {d['direct_liquidations']}")]
            if "routed_liquidations" in d
            else []
        ),
        ("liquidated notional", f"${d['liquidated_notional_usd']:,.0f}"),
        ("bad debt", f"${d['bad_debt_usd']:,.2f}"),
        *(
            [("insurance fund (start)", f"${d['insurance_fund_start_usd']:,.2f}")]
            if d.get("insurance_fund_start_usd") is not None
            else []
        ),
        ("insurance fund (end)", f"${d['insurance_fund_usd']:,.2f}"),
        *_risk_transfer_rows(d),
        ("max blocks to liquidate", f"{d['max_blocks_to_liquidate']}"),
        ("missed liquidations", f"{d['missed_liquidations']}"),
        (
            "duplicate sends",
            f"{d.get('duplicate_sends', 0)} of {d.get('liquidation_transactions', 0)} liquidation transactions",
        ),
        ("initial margin, cross", f"${d['cross_margin_usd']:,.0f}"),
        ("initial margin, isolated", f"${d['isolated_margin_usd']:,.0f}"),
        ("vault balances reconcile", "yes" if d["vault_balances_reconcile"] else "NO"),
        (
            "keepers",
            f"{d['keeper'].get('keepers', 1)}"
            + (f" ({d['keeper']['keepers_stopped']} stopped)" if d["keeper"].get("keepers_stopped") else ""),
        ),
        (
            "keeper processing / block",
            f"{d['keeper']['processing_ms_median'] or 0:.0f} ms median, {d['keeper']['processing_ms_max'] or 0:.0f} ms max",
        ),
    ]
    if d.get("stopped_shards"):
        st = d["stopped_shards"]
        rows.append(
            (
                f"stopped shard(s) {', '.join(map(str, st['shards']))}: their accounts",
                f"{st['liquidations']} liquidations, max {st['max_blocks_to_liquidate']} blocks, {st['missed_liquidations']} missed",
            )
        )
    if d.get("setup_seconds") is not None:
        rows.append(("set-up (deploy, open accounts)", f"{d['setup_seconds']:,.1f} s"))
    for k, v in rows:
        t.add_row(k, v)
    stdout.print(t)
    if "options" in d:
        _print_options(d["options"])


def _risk_transfer_rows(d: dict) -> list[tuple[str, str]]:
    """Summary rows of the risk-transfer figures (keeper.replay.timeline); none for a report
    written before them. A figure whose contract is not in this version says so."""
    if "keeper_max_inventory_usd" not in d:
        return []

    def usd(key: str) -> str:
        value = d.get(key)
        if value is None:
            return "n/a: " + d.get("not_yet", {}).get(key, "not measured")
        return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"

    def pair(count_or_usd: str, usd_key: str) -> str:
        first = d.get(count_or_usd)
        if first is None and d.get(usd_key) is None:
            return usd(usd_key)
        shown = f"{first:,}" if isinstance(first, int) else usd(count_or_usd)
        return f"{shown} / {usd(usd_key)}"

    return [
        ("socialized loss (withdrawals)", usd("socialized_loss_usd")),
        ("flat-account losses", usd("flat_account_losses_usd")),
        ("bad debt flat accounts would bear", usd("flat_account_socialization_exposure_usd")),
        ("keeper max inventory", usd("keeper_max_inventory_usd")),
        ("keeper inventory (end)", usd("keeper_inventory_end_usd")),
        *(
            [("longest the keeper held inventory", f"{d['keeper_max_inventory_age_blocks']} blocks")]
            if "keeper_max_inventory_age_blocks" in d
            else []
        ),
        ("ADL events / notional", pair("adl_events", "adl_notional_usd")),
        *([("backstop vault seed", usd("backstop_seed_usd"))] if "backstop_seed_usd" in d else []),
        ("backstop P&L / max exposure", pair("backstop_pnl_usd", "backstop_max_exposure_usd")),
    ]


def _print_options(o: dict) -> None:
    t = Table(title=f"Margin regimes (vols {o['vol_source']} {o['vol_at_start']})")
    for col in ("regime", "IM at start", "MM at start", "IM at end", "MM at end", "accounts below MM"):
        t.add_column(col, justify="right")
    for name in ("isolated", "standard", "portfolio", "on_chain"):
        start, end = o["requirement_at_start_usd"][name], o["requirement_at_end_usd"][name]
        t.add_row(
            name,
            f"${start['im']:,.0f}",
            f"${start['mm']:,.0f}",
            f"${end['im']:,.0f}",
            f"${end['mm']:,.0f}",
            f"{o['below_maintenance_accounts'][name]}",
        )
    t.add_row(
        "liquidated (on chain)",
        "",
        "",
        "",
        "",
        f"{o['liquidated_accounts']} ({o['option_liquidations']} option liquidations)",
    )
    stdout.print(t)
    k = Table(title="Initial margin by book kind, at the start")
    for col in ("kind", "accounts", "isolated", "standard", "portfolio", "portfolio / standard"):
        k.add_column(col, justify="right")
    for kind, r in sorted(o["by_kind"].items()):
        ratio = r["portfolio_over_standard"]
        k.add_row(
            kind,
            f"{r['accounts']}",
            f"${r['isolated_im_usd']:,.0f}",
            f"${r['standard_im_usd']:,.0f}",
            f"${r['portfolio_im_usd']:,.0f}",
            "-" if ratio is None else f"{ratio:.3f}",
        )
    stdout.print(k)


# the subcommand modules import this one's helpers: added once `cli` exists
from keeper.dev_cli import dev  # noqa: E402
from keeper.params_cli import params  # noqa: E402

cli.add_command(params)
cli.add_command(dev)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        console.print(f"error: {e.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code or 1)
    except KeeperError as e:  # an error raised on purpose: its line (one per problem), no traceback
        for line in str(e).splitlines() or [""]:
            console.print(f"error: {line}", highlight=False, soft_wrap=True)
        sys.exit(1)
