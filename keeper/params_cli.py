"""`keeper params`: change risk parameters through the timelock.

    keeper params show     CHANGES --rpc URL --manifest M   current and new values side by side
    keeper params rehearse CHANGES ...                      apply on an Anvil fork, compare margins
    keeper params queue    CHANGES ... [--accept-liquidations] [--calldata-only] [--safe-json FILE]
    keeper params execute  [--id ID]...                     after the delay
    keeper params cancel   (--id ID... | --all)
    keeper params status                                    queued operations, eta, ready/expired

Queue, execute and cancel sign with the governance key from GOVERNANCE_PRIVATE_KEY (or the
variable named by --private-key-env), or from an encrypted keystore (--keystore PATH, its
password from KEEPER_KEYSTORE_PASSWORD, --password-env VAR, or a prompt on a terminal). Every expected failure is one line on stderr with exit
code 1; a rehearsal (or a refused queue) that would make accounts liquidatable exits with 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from keeper.chain.client import ProtocolClient, connect
from keeper.chain.manifest import load_manifest
from keeper.cli_common import chain_options, key_options, one_line_errors, signing_key
from keeper.errors import KeeperError
from keeper.params.bounds import REQUIREMENT_RAMP
from keeper.params.changes import ChangeError, load_changes
from keeper.params.current import read_current
from keeper.params.plan import Call, plan_calls
from keeper.params.rehearsal import Rehearsal, rehearse
from keeper.params.timelock import (
    OperationStore,
    Sender,
    TimelockError,
    cancel_operation,
    execute_operation,
    plan_operations,
    queue_calldata,
    queue_calls,
    recover_operations,
    safe_batch,
    state,
    store_path,
    timelock_contract,
    utc,
)
from keeper.settings import SigningKey
from keeper.units import MAX_UINT256, WAD

LIQUIDATIONS_EXIT = 2
stdout = Console(width=None if sys.stdout.isatty() else 160)


class WouldLiquidate(click.ClickException):
    """The change would make accounts liquidatable (exit code 2)."""

    exit_code = LIQUIDATIONS_EXIT


_one_line_errors = one_line_errors(KeeperError)
_chain_options = chain_options


GOVERNANCE_KEY_ENV = "GOVERNANCE_PRIVATE_KEY"
_key_option = key_options(GOVERNANCE_KEY_ENV, "the timelock governance")


@click.group("params")
def params() -> None:
    """Risk parameter changes through the timelock: show, rehearse, queue, execute, cancel, status."""


# ---------------------------------------------------------------- helpers


def _connect(rpc: str, manifest: Path):
    """(deployment, web3) after checking that the RPC serves the manifest's chain and engine."""
    deployment = load_manifest(manifest)
    w3 = connect(rpc)
    ProtocolClient(w3, deployment).check_chain()
    return deployment, w3


def _plan(changes_path: Path, rpc: str, manifest: Path):
    changes = load_changes(changes_path)
    deployment, w3 = _connect(rpc, manifest)
    current = read_current(w3, deployment)
    try:
        calls = plan_calls(changes, current, deployment)
    except ChangeError as e:
        raise ChangeError(e.problems, str(changes_path)) from None
    return deployment, w3, current, calls


def _print_calls(calls: list[Call], block: int) -> None:
    table = Table(title=f"Parameter changes (current values at block {block})")
    for col in ("#", "item", "setter", "parameter", "current", "new"):
        table.add_column(
            col,
            justify="right" if col in ("current", "new") else "left",
            overflow="fold" if col in ("current", "new") else "ellipsis",
        )  # full hashes
    for n, call in enumerate(calls):
        for j, row in enumerate(call.rows):
            new = f"[bold yellow]{row.new}[/]" if row.changed else f"[dim]{row.new}[/]"
            table.add_row(
                str(n) if j == 0 else "",
                call.label if j == 0 else "",
                f"{call.contract}.{call.function}" if j == 0 else "",
                row.field,
                row.current,
                new,
            )
        table.add_section()
    stdout.print(table)


def _usd(wad: int) -> str:
    return f"${wad / WAD:,.2f}"


def _health(h: int) -> str:
    return "inf" if h == MAX_UINT256 else f"{h / WAD:.4f}"


def _print_rehearsal(r: Rehearsal, calls: list[Call]) -> None:
    stdout.print(f"Rehearsal on an Anvil fork at block {r.block}, calls sent as {r.actor}: {len(r.accounts)} accounts")
    if r.failed is not None:
        i, reason = r.failed
        stdout.print(
            Panel(
                f"call {i} ({calls[i].label}: {calls[i].describe()}) would revert: {reason}",
                title="REHEARSAL FAILED",
                style="bold red",
            )
        )
        return
    if r.after_error is not None:
        stdout.print(
            Panel(
                f"after the change the margins cannot be read: {r.after_error}",
                title="REHEARSAL FAILED",
                style="bold red",
            )
        )
        return
    totals = Table(title="Totals over all accounts")
    for col in ("", "before", "after (phased in)", "change"):
        totals.add_column(col, justify="left" if not col else "right")
    for label, name in (
        ("initial margin", "initial_margin"),
        ("maintenance margin", "maintenance_margin"),
        ("equity", "equity"),
    ):
        b, a = r.total("before", name), r.total("after", name)
        pct = f" ({(a - b) / b:+.2%})" if b > 0 else ""
        totals.add_row(label, _usd(b), _usd(a), f"{(a - b) / WAD:+,.2f}{pct}")
    stdout.print(totals)
    for title, rows, style in (
        ("NEWLY LIQUIDATABLE (equity < maintenance margin)", r.newly_liquidatable, "bold red"),
        ("Newly below initial margin (can no longer withdraw or add risk)", r.newly_below_im, "yellow"),
    ):
        if not rows:
            stdout.print(f"{title.split(' (')[0].lower()}: none")
            continue
        t = Table(title=f"{title}: {len(rows)}", title_style=style)
        for col in (
            "account",
            "equity",
            "IM before",
            "IM after",
            "MM before",
            "MM after",
            "health before",
            "health after",
        ):
            t.add_column(col, justify="left" if col == "account" else "right")
        for i in rows:
            b, a = r.before[i], r.after[i]
            t.add_row(
                r.accounts[i],
                _usd(a.equity),
                _usd(b.initial_margin),
                _usd(a.initial_margin),
                _usd(b.maintenance_margin),
                _usd(a.maintenance_margin),
                _health(b.health_factor),
                _health(a.health_factor),
            )
        stdout.print(t)
    if r.newly_liquidatable:
        stdout.print(
            Panel(
                f"{len(r.newly_liquidatable)} account(s) would become LIQUIDATABLE once this change has "
                f"phased in ({REQUIREMENT_RAMP // 86400} days), at today's prices, unless they add margin or reduce",
                title="WARNING",
                style="bold red",
            )
        )


def _rehearse(rpc: str, deployment, calls: list[Call]) -> Rehearsal:
    result = rehearse(rpc, deployment, calls)
    _print_rehearsal(result, calls)
    if result.backstop_warning:  # a warning, not a refusal: the exit code is unchanged
        click.echo(f"warning: {result.backstop_warning}", err=True)
    if result.failed is not None:
        i, reason = result.failed
        raise click.ClickException(f"call {i} ({calls[i].label}) would revert on chain: {reason}")
    if result.after_error is not None:
        raise click.ClickException(f"after the change the margins cannot be read: {result.after_error}")
    return result


def _signer(private_key_env: str | None, keystore: Path | None, password_env: str | None) -> SigningKey:
    """The governance key (from the environment or a keystore), read before any RPC call."""
    return signing_key(private_key_env, keystore, password_env, GOVERNANCE_KEY_ENV, what="governance key")


def _sender(w3, signer: SigningKey) -> Sender:
    try:
        return Sender(w3, signer.key)
    except ValueError:
        raise click.ClickException(f"{signer.source} does not hold a valid private key") from None


def _timelock(deployment) -> str:
    address = getattr(deployment, "timelock", "")
    if not address:
        raise click.ClickException(
            "the deployment manifest has no timelock: install one first "
            "(keeper.chain.governance.install_timelock, or `governance:` in the deploy config)"
        )
    return address


def _store(manifest: Path, operations: Path | None, deployment, w3, timelock: str) -> OperationStore:
    """The operations file; rebuilt from the timelock's Queued events when missing."""
    store = OperationStore.load(operations or store_path(manifest))
    if store.timelock and store.timelock.lower() != timelock.lower():
        raise TimelockError(f"{store.path} is for timelock {store.timelock}, the manifest names {timelock}")
    store.timelock, store.chain_id = timelock, deployment.chain_id
    if not store.operations:
        store.merge(recover_operations(w3, timelock, deployment, deployment.deploy_block))
    return store


def _operations_option(fn):
    return click.option(
        "--operations",
        type=click.Path(path_type=Path),
        default=None,
        help="Operations JSON [default: <manifest>.operations.json beside the manifest].",
    )(fn)


# ---------------------------------------------------------------- commands


@params.command()
@click.argument("changes", type=click.Path(path_type=Path))
@_chain_options
@_one_line_errors
def show(changes, rpc, manifest) -> None:
    """Current and new values of every parameter CHANGES touches (nothing is sent)."""
    _, _, current, calls = _plan(changes, rpc, manifest)
    _print_calls(calls, current.block)


@params.command("rehearse")
@click.argument("changes", type=click.Path(path_type=Path))
@_chain_options
@_one_line_errors
def rehearse_cmd(changes, rpc, manifest) -> None:
    """Apply CHANGES on an Anvil fork and show which accounts fall below IM or become
    liquidatable, and how total requirements change. Exit code 2 if any becomes liquidatable."""
    deployment, _, current, calls = _plan(changes, rpc, manifest)
    _print_calls(calls, current.block)
    result = _rehearse(rpc, deployment, calls)
    if result.newly_liquidatable:
        raise WouldLiquidate(f"{len(result.newly_liquidatable)} account(s) would become liquidatable")


@params.command()
@click.argument("changes", type=click.Path(path_type=Path))
@_chain_options
@_key_option
@_operations_option
@click.option(
    "--accept-liquidations",
    is_flag=True,
    default=False,
    help="Queue even though the rehearsal shows accounts becoming liquidatable.",
)
@click.option(
    "--buffer",
    "buffer_seconds",
    type=click.IntRange(0, 86400),
    default=300,
    show_default=True,
    help="Seconds added to the delay for the eta, so the queue transactions land before it.",
)
@click.option(
    "--eta",
    type=click.IntRange(min=0),
    default=None,
    help="Earliest execution time, unix seconds [default: chain time + delay + --buffer]; the queue "
    "transactions must be mined at least the delay before it.",
)
@click.option(
    "--calldata-only",
    is_flag=True,
    default=False,
    help="Send nothing, need no key: print each operation's call (target, value, calldata) and the "
    "Timelock.queue transaction governance sends, for a multisig to send.",
)
@click.option(
    "--safe-json",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Write the queue transactions as a Safe Transaction Builder batch to FILE (implies --calldata-only).",
)
@_one_line_errors
def queue(
    changes, rpc, manifest, private_key_env, keystore, password_env, operations, accept_liquidations, buffer_seconds,
    eta, calldata_only, safe_json,
) -> None:  # fmt: skip
    """Rehearse CHANGES, then queue them on the timelock (one operation per setter call, one eta).

    With --calldata-only (or --safe-json) nothing is sent: the same checks and rehearsal run, and
    the transactions the keyed queue would send are printed for governance to send itself."""
    calldata_only = calldata_only or safe_json is not None
    if calldata_only and (private_key_env or keystore or password_env):
        raise click.ClickException(
            "--calldata-only signs nothing: drop --private-key-env, --keystore and --password-env"
        )
    signer = None if calldata_only else _signer(private_key_env, keystore, password_env)
    deployment, w3, current, calls = _plan(changes, rpc, manifest)
    timelock = _timelock(deployment)
    contract = timelock_contract(w3, timelock)
    governance = contract.functions.governance().call()
    tx = None
    if signer is not None:
        tx = _sender(w3, signer)
        if governance.lower() != tx.address.lower():
            raise click.ClickException(
                f"{signer.source} is {tx.address}, but the timelock's governance is {governance}"
            )
    for name in sorted({c.contract for c in calls}):
        risk_admin = current.roles[name][1]
        if risk_admin.lower() != timelock.lower():
            raise click.ClickException(
                f"the timelock {timelock} is not the risk admin of the {name} ({risk_admin}): its calls would revert"
            )
    _print_calls(calls, current.block)
    result = _rehearse(rpc, deployment, calls)
    if result.newly_liquidatable and not accept_liquidations:
        raise WouldLiquidate(
            f"refusing to queue: {len(result.newly_liquidatable)} account(s) would become "
            "liquidatable; pass --accept-liquidations to queue anyway"
        )
    now = w3.eth.get_block("latest")["timestamp"]
    delay = contract.functions.delay().call()
    if eta is None and calldata_only:
        click.echo(
            f"note: the eta is chain time + delay + {buffer_seconds} s, so the queue transactions must be mined "
            "within that many seconds; give --eta for the time a multisig needs to collect signatures",
            err=True,
        )
    if eta is None:
        eta = now + delay + buffer_seconds
    elif eta < now + delay:
        raise click.ClickException(
            f"--eta {eta} ({utc(eta)}) is less than the timelock's delay ({delay} s) after chain time "
            f"{utc(now)}: the timelock would refuse it"
        )
    if calldata_only:
        ops = plan_operations(calls, eta)
        _print_calldata(w3, timelock, governance, delay, ops)
        if safe_json is not None:
            batch = safe_batch(deployment.chain_id, timelock, governance, ops, int(time.time() * 1000))
            try:
                safe_json.write_text(json.dumps(batch, indent=2) + "\n")
            except OSError as e:
                raise click.ClickException(f"cannot write {safe_json}: {e.strerror}") from None
            stdout.print(f"Safe Transaction Builder batch written to {safe_json}", highlight=False)
        return
    store = _store(manifest, operations, deployment, w3, timelock)
    queued = []
    for call in calls:  # saved one by one: a failure half-way leaves the queued ones on record
        queued += queue_calls(tx, timelock, [call], eta)
        store.merge(queued)
        path = store.save()
    t = Table(title=f"Queued on timelock {timelock}: executable from {utc(eta)} (eta {eta}) for 14 days")
    for col in ("id", "operation"):
        t.add_column(col)
    for op in queued:
        t.add_row(op.id, op.label)
    stdout.print(t)
    stdout.print(f"operations saved to {path}")


def _print_calldata(w3, timelock: str, governance: str, delay: int, ops) -> None:
    """Each operation's call and the Timelock.queue transaction that queues it, in full (plain
    lines: hex is never wrapped or cut)."""
    click.echo(
        f"Not sent. To queue {len(ops)} operation(s), governance {governance} sends these transactions "
        f"to the timelock {timelock}, in this order, mined before {utc(ops[0].eta - delay) if ops else '-'} "
        f"(eta {ops[0].eta if ops else '-'} minus the {delay} s delay); each is then executable from "
        f"{utc(ops[0].eta) if ops else '-'} for 14 days."
    )
    for n, op in enumerate(ops, 1):
        click.echo(f"\noperation {n} of {len(ops)}: {op.id}\n  {op.label}")
        click.echo(f"  the timelock will call: to {op.target} value 0 data {op.data}")
        click.echo(f"  queue transaction:      to {timelock} value 0 data {queue_calldata(w3, timelock, op)}")
    click.echo("\nOnce mined, `keeper params status --recover` records them in the operations file.")


def _selected(store: OperationStore, ids: tuple[str, ...]):
    return [store.find(i) for i in ids] if ids else list(store.operations)


@params.command()
@_chain_options
@_key_option
@_operations_option
@click.option("--id", "ids", multiple=True, help="Operation id or unique prefix; repeat (default: every queued one).")
@_one_line_errors
def execute(rpc, manifest, private_key_env, keystore, password_env, operations, ids) -> None:
    """Execute queued operations whose eta has come, in the order they were queued."""
    signer = _signer(private_key_env, keystore, password_env)
    deployment, w3 = _connect(rpc, manifest)
    timelock = _timelock(deployment)
    store = _store(manifest, operations, deployment, w3, timelock)
    chosen = _selected(store, ids)
    if not ids:
        chosen = [op for op in chosen if state(w3, timelock, op) in ("waiting", "ready", "expired")]
        if not chosen:
            raise click.ClickException("nothing to execute: no queued operation")
    tx = _sender(w3, signer)
    try:
        for op in chosen:
            tx_hash = execute_operation(tx, timelock, op)
            stdout.print(f"executed {op.short_id} {op.label} (tx {tx_hash})")
    finally:
        store.save()


@params.command()
@_chain_options
@_key_option
@_operations_option
@click.option("--id", "ids", multiple=True, help="Operation id or unique prefix; repeat.")
@click.option("--all", "all_queued", is_flag=True, default=False, help="Cancel every queued operation.")
@_one_line_errors
def cancel(rpc, manifest, private_key_env, keystore, password_env, operations, ids, all_queued) -> None:
    """Cancel queued operations (by --id, or --all)."""
    if bool(ids) == all_queued:
        raise click.ClickException("give --id (repeatable) or --all")
    signer = _signer(private_key_env, keystore, password_env)
    deployment, w3 = _connect(rpc, manifest)
    timelock = _timelock(deployment)
    store = _store(manifest, operations, deployment, w3, timelock)
    chosen = _selected(store, ids)
    if all_queued:
        chosen = [op for op in chosen if state(w3, timelock, op) in ("waiting", "ready", "expired")]
    tx = _sender(w3, signer)
    try:
        for op in chosen:
            tx_hash = cancel_operation(tx, timelock, op)
            stdout.print(f"cancelled {op.short_id} {op.label} (tx {tx_hash})")
    finally:
        store.save()


@params.command()
@_chain_options
@_operations_option
@click.option(
    "--recover", is_flag=True, default=False, help="Rebuild the operations file from the timelock's Queued events."
)
@_one_line_errors
def status(rpc, manifest, operations, recover) -> None:
    """Every operation queued through the timelock: eta and state (waiting, ready, expired,
    executed, cancelled)."""
    deployment, w3 = _connect(rpc, manifest)
    timelock = _timelock(deployment)
    store = _store(manifest, operations, deployment, w3, timelock)
    if recover:
        store.merge(recover_operations(w3, timelock, deployment, deployment.deploy_block))
    store.save()
    now = w3.eth.get_block("latest")["timestamp"]
    contract = timelock_contract(w3, timelock)
    t = Table(title=f"Timelock {timelock} (delay {contract.functions.delay().call()} s), chain time {utc(now)}")
    for col in ("id", "operation", "eta", "state"):
        t.add_column(col)
    styles = {"ready": "bold green", "waiting": "yellow", "expired": "red", "executed": "dim", "cancelled": "dim"}
    for op in store.operations:
        st = state(w3, timelock, op, now)
        when = utc(op.eta) + (f" (in {op.eta - now} s)" if st == "waiting" else "")
        t.add_row(op.short_id, op.label, when, f"[{styles[st]}]{st}[/]")
    stdout.print(t)
