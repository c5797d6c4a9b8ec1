"""Chain benchmarks on a local Anvil: time to read N accounts (batched and pinned to one block,
vs one call per account and field, the naive way), and gas per protocol operation.

    python -m benchmarks.chain [--accounts 1000] [--config config/replay-large.yaml] [--json]

The protocol is deployed from `--config`: by default config/replay-large.yaml, whose caps and
insurance fund fit thousands of accounts (config/local.yaml's fit about 100).

Prints figures; asserts nothing about speed. With --json, also writes them to
reports/chain-reads.json: the seconds of each way of reading the accounts (the docs' table is
rendered from there by bin/figures) and the receipt gas of each operation. The gas table of the
docs comes from `benchmarks.gas`, not from here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from keeper.chain.anvil import DEV_ACCOUNTS
from keeper.config import load_config
from keeper.marketdata.prices import synthetic_path
from keeper.replay.driver import Replay, ReplayOptions
from keeper.risk.margin import margin
from keeper.units import WAD

REPORT = Path(__file__).resolve().parents[1] / "reports" / "chain-reads.json"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "replay-large.yaml"
# the report's name of each way of reading, and the printed table's
READS = {
    "raw_batched": "raw state batched (account_states x200) + keeper valuation",
    "raw_naive": "raw state, one call per account and field (naive)",
    "summaries_batched": "contract margin_summaries batched (x200)",
    "summaries_naive": "contract margin_summary, one call per account (naive)",
}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--config", type=Path, default=CONFIG, help="the protocol config to deploy")
    ap.add_argument(
        "--json", action="store_true", help=f"also write the figures to {REPORT.relative_to(REPORT.parents[1])}"
    )
    args = ap.parse_args(argv)
    if args.accounts < 1:
        ap.error("--accounts must be positive")
    console = Console()
    replay = Replay(
        ReplayOptions(path=synthetic_path(steps=10), accounts=args.accounts, seed=5, config=load_config(args.config))
    )
    try:
        console.print(f"setting up {args.accounts} accounts on Anvil ...")
        users = replay.setup()
        w3, client = replay.w3, replay.client
        addresses = [u.address for u in users]
        block = w3.eth.block_number
        params = client.risk_params(block)

        def batched():
            snap = client.snapshot(addresses, block)
            return margin(snap.book, snap.markets, params, snap.prices)

        def naive():
            e, v = client.engine.functions, client.vault.functions
            out = []
            for a in addresses:
                markets = e.open_markets(a).call(block_identifier=block)
                positions = [e.positions(a, m).call(block_identifier=block) for m in markets]
                out.append(
                    (
                        v.cash(a).call(block_identifier=block),
                        v.collateral_balances(a).call(block_identifier=block),
                        positions,
                    )
                )
            return out

        def summaries_batched():
            return client.margin_summaries(addresses, block)

        def summaries_naive():
            return [client.engine.functions.margin_summary(a).call(block_identifier=block) for a in addresses]

        result, t_batched = timed(batched)
        _, t_naive = timed(naive)
        onchain, t_sum_batched = timed(summaries_batched)
        _, t_sum_naive = timed(summaries_naive)
        assert [tuple(s) for s in onchain] == list(
            zip(result.equity, result.initial_margin, result.maintenance_margin, result.health_factor)
        ), "keeper and contract disagree"

        reads = Table(title=f"Reading {len(addresses)} accounts from Anvil (one block)")
        for col in ("method", "seconds", "accounts / s"):
            reads.add_column(col, justify="right" if col != "method" else "left")
        seconds = dict(zip(READS, (t_batched, t_naive, t_sum_batched, t_sum_naive)))
        for key, t in seconds.items():
            reads.add_row(READS[key], f"{t:.2f}", f"{len(addresses) / t:,.0f}")
        console.print(reads)
        gas = gas_used(replay, users)
        table = Table(title="Gas per operation")
        table.add_column("operation")
        table.add_column("gas", justify="right")
        for name, used in gas.items():
            table.add_row(name, f"{used:,}")
        console.print(table)
        if args.json:
            report = {
                "accounts": len(addresses),
                "config": args.config.name,
                "block": block,
                "seconds": seconds,
                "receipt_gas": gas,
            }
            REPORT.parent.mkdir(parents=True, exist_ok=True)
            REPORT.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        replay.close()
    return 0


def gas_used(replay: Replay, users) -> dict[str, int]:
    """Gas used by one deposit, withdraw, trade and liquidation, measured from receipts."""
    w3, client, dep = replay.w3, replay.client, replay.deployment
    usdc = replay.tokens[replay.opts.config.settlement_symbol]
    weth = replay.tokens["WETH"]
    admin = replay.admin
    fees = {"maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
    rows = []

    def used(tx_hash) -> int:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, "benchmark transaction reverted"
        return receipt["gasUsed"]

    user = next(u for u in users if u.spec.deposits.get("USDC"))
    w3.provider.make_request("anvil_impersonateAccount", [user.address])
    for token, amount, name in ((usdc, 1_000 * 10**6, "USDC (6 dec)"), (weth, 10**18, "WETH (18 dec)")):
        w3.eth.wait_for_transaction_receipt(
            token.functions.mint(user.address, amount).transact({"from": admin, **fees})
        )
        w3.eth.wait_for_transaction_receipt(
            token.functions.approve(dep.vault, amount).transact({"from": user.address, **fees})
        )
        rows.append(
            (
                f"deposit {name}",
                used(client.vault.functions.deposit(token.address, amount).transact({"from": user.address, **fees})),
            )
        )
    rows.append(
        (
            "withdraw USDC (IM check)",
            used(client.vault.functions.withdraw(usdc.address, 500 * 10**6).transact({"from": user.address, **fees})),
        )
    )
    rows.append(
        (
            "withdraw WETH (IM check)",
            used(client.vault.functions.withdraw(weth.address, 10**17).transact({"from": user.address, **fees})),
        )
    )
    a, b = users[0], users[1]
    maker, msig = replay._order(a, dep.markets["ETH-PERP"], WAD // 100, replay.opts.path.as_wad(0)["ETH"])
    taker, tsig = replay._order(b, dep.markets["ETH-PERP"], -WAD // 100, replay.opts.path.as_wad(0)["ETH"])
    rows.append(
        (
            "trade (match_orders, 2 signatures)",
            used(
                client.matching.functions.match_orders(maker, msig, taker, tsig).transact(
                    {"from": admin, "gas": 2_000_000, **fees}
                )
            ),
        )
    )
    # crash ETH and BTC by 30% and liquidate the first liquidatable account
    start = replay.opts.path.as_wad(0)
    for symbol, feed in replay.feeds.items():
        if symbol not in start:  # the settlement asset's own feed (depeg rule) stays at par
            continue
        price = start[symbol] * 7 // 10 // 10 ** (18 - dep.feed_decimals[symbol])
        w3.eth.wait_for_transaction_receipt(feed.functions.set_answer(price).transact({"from": admin, **fees}))
    summaries = client.margin_summaries([u.address for u in users])
    victim = next(u for u, s in zip(users, summaries) if s[0] < s[2] and s[0] > 0)
    keeper = DEV_ACCOUNTS[1][0]
    rows.append(
        (
            "liquidate (partial, positions to liquidator)",
            used(
                client.engine.functions.liquidate(victim.address).transact({"from": keeper, "gas": 3_000_000, **fees})
            ),
        )
    )
    return dict(rows)


if __name__ == "__main__":
    sys.exit(main())
