"""Keeper-side costs of the operator jobs on a local Anvil: deploying a protocol config (its steps
and gas), handing its admin roles to a timelock, rehearsing a parameter change on a fork (time),
queuing it through the timelock and executing it after the delay (gas per setter call).

    python -m benchmarks.operator_jobs [--config config/local.yaml] [--changes config/changes.example.yaml] [--json]

Deploys with `keeper.chain.deploy.deploy_protocol` (what the CLI, brownie and the replay deploy
with), installs the timelock with `keeper.chain.governance` (governance a second key, 1-hour
delay), then runs the change file's calls through `keeper.params` as `keeper params rehearse`,
`queue` and `execute` do. Gas is each receipt's `gasUsed`. Prints figures; asserts nothing about
them. With --json, also writes them to reports/operator-jobs.json (the docs' sentence on the
operator jobs is rendered from there by bin/figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.chain.client import connect
from keeper.chain.deploy import Web3Backend, deploy_protocol
from keeper.chain.governance import accept_admin_roles, install_timelock
from keeper.config import load_config
from keeper.params.changes import load_changes
from keeper.params.current import read_current
from keeper.params.plan import plan_calls
from keeper.params.rehearsal import rehearse
from keeper.params.timelock import Sender, execute_operation, queue_calls

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "operator-jobs.json"
DELAY = 3600  # the timelock's delay, seconds
BUFFER = 300  # the eta's margin over the delay (`keeper params queue --buffer`)
ADMIN = DEV_ACCOUNTS[0][0]
GOVERNANCE, GOVERNANCE_KEY = DEV_ACCOUNTS[1]


def block_gas(w3, first: int, last: int) -> int:
    """The gas of every transaction mined in blocks `first`..`last` (Anvil mines each one alone)."""
    return sum(int(w3.eth.get_block(b)["gasUsed"]) for b in range(first, last + 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "local.yaml", help="the protocol config")
    ap.add_argument("--changes", type=Path, default=ROOT / "config" / "changes.example.yaml", help="a change file")
    ap.add_argument(
        "--json", action="store_true", help=f"also write the figures to {REPORT.relative_to(REPORT.parents[1])}"
    )
    args = ap.parse_args(argv)
    console = Console()
    config = load_config(args.config)
    if getattr(config, "governance", None) is not None:
        ap.error(f"{args.config} hands its roles to governance itself: give a config without `governance:`")
    changes = load_changes(args.changes)
    with Anvil() as url:
        w3 = connect(url, timeout=60)
        first = w3.eth.block_number + 1
        dep = deploy_protocol(Web3Backend(w3, ADMIN), config, ADMIN, w3.eth.chain_id)
        dep.deploy_block = first
        deployed = w3.eth.block_number
        deploy_gas = block_gas(w3, first, deployed)
        install_timelock(Web3Backend(w3, ADMIN), dep, GOVERNANCE, DELAY)
        accept_admin_roles(Web3Backend(w3, GOVERNANCE), dep)
        handover_gas = block_gas(w3, deployed + 1, w3.eth.block_number)

        calls = plan_calls(changes, read_current(w3, dep), dep)
        start = time.perf_counter()
        rehearsal = rehearse(url, dep, calls)
        rehearsal_s = time.perf_counter() - start
        if not rehearsal.applied:
            console.print(f"[red]the rehearsal did not apply the changes: {rehearsal.failed}[/red]")
            return 1

        sender = Sender(w3, GOVERNANCE_KEY)
        eta = int(w3.eth.get_block("latest")["timestamp"]) + DELAY + BUFFER
        ops = queue_calls(sender, dep.timelock, calls, eta)
        queued = [int(w3.eth.get_transaction_receipt(op.queued_tx)["gasUsed"]) for op in ops]
        w3.provider.make_request("evm_increaseTime", [DELAY + BUFFER])
        w3.provider.make_request("evm_mine", [])
        agg = load_artifact("MockAggregator").abi
        for address in dep.feeds.values():  # fresh answers: the mock feeds would be stale by now
            feed = w3.eth.contract(address=address, abi=agg)
            w3.eth.wait_for_transaction_receipt(
                feed.functions.set_answer(feed.functions.latestRoundData().call()[1]).transact({"from": ADMIN})
            )
        executed = [
            int(w3.eth.get_transaction_receipt(execute_operation(sender, dep.timelock, op))["gasUsed"]) for op in ops
        ]

    setters = [
        {"call": f"{call.contract}.{call.function}", "label": call.label, "queue_gas": q, "execute_gas": e}
        for call, q, e in zip(calls, queued, executed)
    ]
    table = Table(title=f"Operator jobs ({args.config.name}, {args.changes.name})")
    table.add_column("job")
    table.add_column("figure", justify="right")
    table.add_row(f"deploy: {len(dep.steps)} steps", f"{deploy_gas:,} gas")
    table.add_row("timelock handover (install, accept)", f"{handover_gas:,} gas")
    table.add_row(
        f"rehearsal on a fork ({len(calls)} calls, {len(rehearsal.accounts)} accounts)", f"{rehearsal_s:.2f} s"
    )
    for row in setters:
        table.add_row(
            f"queue / execute {row['call']} ({row['label']})", f"{row['queue_gas']:,} / {row['execute_gas']:,}"
        )
    console.print(table)
    if args.json:
        report = {
            "config": args.config.name,
            "changes": args.changes.name,
            "deploy_steps": len(dep.steps),
            "deploy_gas": deploy_gas,
            "handover_gas": handover_gas,
            "timelock_delay_s": DELAY,
            "rehearsal_s": rehearsal_s,
            "rehearsal_accounts": len(rehearsal.accounts),
            "setters": setters,
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
