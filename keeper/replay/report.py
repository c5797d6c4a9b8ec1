"""The replay report: liquidations, their latency in blocks, bad debt, the insurance fund,
cross vs isolated margin, and a reconciliation of the vault's token balances. With option books:
the total requirement under the isolated, standard and portfolio regimes (at the start and per
block), the accounts that fell below each regime's maintenance margin (counterfactual) next to
the actual liquidations, and portfolio / standard IM per book kind
(keeper.replay.option_books)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from keeper import sharding
from keeper.units import WAD


@dataclass
class ReplayReport:
    data: dict

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path


def latency_episodes(
    liquidatable_at: list[tuple[int, set[str]]], liquidations: list[dict]
) -> tuple[list[int], set[str]]:
    """Blocks from an account first becoming liquidatable to its liquidation, per episode.

    `liquidatable_at` lists, block by block (ascending), the accounts liquidatable at the end of
    that block; `liquidations` are Liquidation events with their block. An episode opens at the
    first block an account is liquidatable and closes at its next liquidation (latency recorded)
    or when it is no longer liquidatable (recovered by price). Returns (latencies, accounts
    still in an open episode at the end = missed liquidations).
    """
    episodes, missed = account_latencies(liquidatable_at, liquidations)
    return [latency for _, latency in episodes], missed


def account_latencies(
    liquidatable_at: list[tuple[int, set[str]]], liquidations: list[dict]
) -> tuple[list[tuple[str, int]], set[str]]:
    """`latency_episodes` with the account of each episode: ([(account, blocks)], missed)."""
    by_block: dict[int, set[str]] = {}
    for ev in liquidations:
        by_block.setdefault(ev["block"], set()).add(ev["account"])
    open_since: dict[str, int] = {}
    latencies: list[tuple[str, int]] = []
    for block, liquidatable in liquidatable_at:
        for account in by_block.get(block, ()):
            if account in open_since:
                latencies.append((account, block - open_since.pop(account)))
        for account in list(open_since):
            if account not in liquidatable:
                del open_since[account]
        for account in liquidatable:
            open_since.setdefault(account, block)
    return latencies, set(open_since)


def liquidation_sends(w3, engine, options, start_block: int, end_block: int, backstop=None) -> list[dict]:
    """Every `MarginEngine.liquidate`, `OptionMarket.liquidate_options` and (with `backstop`,
    the BackstopVault contract) `BackstopVault.liquidate` transaction mined in [start_block,
    end_block], oldest first: {"block", "index" (position in the block), "sender", "account",
    "status", "liquidated" (the receipt has the engine's Liquidation or the option market's
    OptionsLiquidation event for that account)}. One block read with its transactions per
    block, one receipt per liquidation transaction."""
    targets = {engine.address.lower(): (engine, "liquidate")}
    if options is not None:
        targets[options.address.lower()] = (options, "liquidate_options")
    if backstop is not None:
        targets[backstop.address.lower()] = (backstop, "liquidate")
    out: list[dict] = []
    for number in range(start_block, end_block + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            target = targets.get(str(tx.get("to") or "").lower())
            if target is None:
                continue
            contract, name = target
            try:
                fn, args = contract.decode_function_input(tx["input"])
            except ValueError:
                continue
            if fn.fn_name != name:
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            events = list(engine.events.Liquidation().process_receipt(receipt, errors=_DISCARD))
            if options is not None:
                events += options.events.OptionsLiquidation().process_receipt(receipt, errors=_DISCARD)
            account = args["account"]
            out.append(
                {
                    "block": number,
                    "index": tx["transactionIndex"],
                    "sender": tx["from"],
                    "account": account,
                    "status": receipt["status"],
                    "liquidated": receipt["status"] == 1 and any(ev["args"]["account"] == account for ev in events),
                }
            )
    return out


def route_counts(liquidations: list[dict], backstop: str | None) -> tuple[int, int]:
    """(routed, direct): of `liquidations` (Liquidation events as dicts; option liquidations,
    which name no liquidator, count as direct), those whose liquidator is the backstop vault at
    address `backstop` (None: no vault, all direct) and the others."""
    vault = (backstop or "").lower()
    routed = sum(1 for ev in liquidations if vault and str(ev.get("liquidator", "")).lower() == vault)
    return routed, len(liquidations) - routed


def duplicate_sends(sends: list[dict]) -> int:
    """Liquidation transactions sent for an account whose liquidation another transaction (by
    another keeper, or the same one) had already taken: a send is a duplicate when an earlier
    transaction of the same block targets the same account (both were decided on the same state:
    at most one of them was needed, whatever each one did), or when it liquidated nothing and
    the account was liquidated in the block before it (it was decided before that liquidation
    was seen). A later liquidation of an account still liquidatable after a partial one is a new
    episode, not a duplicate. `sends`: `liquidation_sends`' list."""
    seen_in_block: set[tuple[int, str]] = set()
    liquidated_in: set[tuple[int, str]] = {(s["block"], s["account"]) for s in sends if s["liquidated"]}
    count = 0
    for s in sorted(sends, key=lambda s: (s["block"], s["index"])):
        key = (s["block"], s["account"])
        if key in seen_in_block or (not s["liquidated"] and (s["block"] - 1, s["account"]) in liquidated_in):
            count += 1
        seen_in_block.add(key)
    return count


def build_report(*, client, users, tokens, settlement_symbol, start_block, end_block, liquidatable_at,
                 cross_margin, isolated_margin, keeper_stats, processing_ms, path, workdir,
                 options: dict | None = None, setup_seconds: float | None = None,
                 timeline=None, keepers: tuple[str, ...] = (), insurance_fund_start: float | None = None,
                 backstop_seed: float = 0.0,
                 ) -> ReplayReport:  # fmt: skip
    """Assemble the report from chain state at `end_block` and what the driver observed.

    `options`: None, or {"regimes": RegimeTracker, "kinds": account -> book kind,
    "option_liquidations": OptionsLiquidation events as liquidation dicts, "vol_source",
    "vol_at_start"}; option liquidations then count with the engine's. `setup_seconds`: how long
    deploying and opening the accounts took (wall clock). `timeline`: the driver's
    keeper.replay.timeline.TimelineRecorder, or None; with it the report gains the risk-transfer
    figures (`socialized_loss_usd`, `flat_account_losses_usd`, `keeper_max_inventory_usd` of the
    `keepers` addresses, the later contracts' keys as None; see keeper.replay.timeline.risk_figures)
    and a `timeline` of one entry per recorded block. `insurance_fund_start`: USD the replay
    funded the insurance fund with. `backstop_seed`: USD the replay deposited in the backstop
    vault before the crash. `routed_liquidations` / `direct_liquidations`: the engine's
    Liquidation events whose liquidator is the backstop vault / anyone else (option
    liquidations count as direct)."""
    liquidations = client.liquidations(start_block + 1, end_block)
    if options is not None:
        liquidations = sorted(liquidations + options["option_liquidations"], key=lambda ev: ev["block"])
    episodes, missed = account_latencies(liquidatable_at, liquidations)
    latencies = [latency for _, latency in episodes]
    backstop = getattr(client, "backstop", None)
    sends = liquidation_sends(
        client.w3, client.engine, getattr(client, "options", None), start_block + 1, end_block, backstop
    )
    routed = sum(
        1
        for ev in liquidations
        if backstop is not None and str(ev.get("liquidator", "")).lower() == backstop.address.lower()
    )
    vault = client.vault.functions
    kinds = {u.address: u.spec.kind for u in users}
    dep = client.deployment

    # Reconciliation: every token the vault holds is owed to an account or the insurance fund.
    holders = sorted(client.discover_accounts(0, end_block))
    reconcile: dict[str, dict] = {}
    states = client.account_states(holders, end_block)  # cash and balances, 200 accounts a call
    for symbol, asset_id in dep.asset_ids.items():
        held = tokens[symbol].functions.balanceOf(dep.vault).call(block_identifier=end_block)
        credited = sum(st.collateral[asset_id] for st in states)
        reconcile[symbol] = {"vault_balance": held, "credited": credited, "equal": held == credited}
    scale = 10 ** (18 - dep.settlement_decimals)
    usdc_wad = tokens[settlement_symbol].functions.balanceOf(dep.vault).call(block_identifier=end_block) * scale
    summaries = client.margin_summaries(holders, end_block)
    cash = sum(st.cash for st in states)
    collateral = sum(vault.collateral_value(a).call(block_identifier=end_block) for a in holders)
    equity = sum(s.equity for s in summaries)
    unrealized = equity - cash - collateral
    insurance = vault.insurance_fund().call(block_identifier=end_block)
    bad_debt = vault.bad_debt().call(block_identifier=end_block)
    # cash + insurance + unrealized PnL - bad debt is what the settlement tokens back; the gap is
    # rounding dust kept by the protocol (never negative)
    gap = usdc_wad - (cash + insurance + unrealized - bad_debt)
    reconcile[settlement_symbol] = {
        "vault_balance_wad": usdc_wad,
        "cash_plus_insurance_plus_unrealized_minus_bad_debt_wad": cash + insurance + unrealized - bad_debt,
        "rounding_dust_wad": gap,
        "equal": 0 <= gap <= 10**12,
    }
    ts = path.timestamps
    risk: dict = {}
    rows: list[dict] = []
    if timeline is not None:
        from keeper.replay.timeline import risk_figures

        risk, rows = risk_figures(
            client, timeline, liquidations, keepers, holders, start_block, end_block, dep.deploy_block, backstop_seed
        )
    data = {
        "accounts": len(users),
        "blocks": len(liquidatable_at),
        "liquidations": len(liquidations),
        "liquidated_accounts": len({ev["account"] for ev in liquidations}),
        "routed_liquidations": routed,
        "direct_liquidations": len(liquidations) - routed,
        "liquidated_notional_usd": sum(ev["notional"] for ev in liquidations) / WAD,
        "penalties_usd": sum(ev["penalty"] for ev in liquidations) / WAD,
        "bad_debt_usd": bad_debt / WAD,
        "insurance_fund_usd": insurance / WAD,
        **({"insurance_fund_start_usd": insurance_fund_start} if insurance_fund_start is not None else {}),
        **risk,
        "max_blocks_to_liquidate": max(latencies, default=0),
        "mean_blocks_to_liquidate": float(np.mean(latencies)) if latencies else 0.0,
        "missed_liquidations": len(missed),
        "duplicate_sends": duplicate_sends(sends),
        "liquidation_transactions": len(sends),
        "cross_margin_usd": cross_margin / WAD,
        "isolated_margin_usd": isolated_margin / WAD,
        "liquidations_by_kind": dict(Counter(kinds.get(ev["account"], "other") for ev in liquidations)),
        "accounts_by_kind": dict(Counter(kinds.values())),
        "vault_balances_reconcile": all(r["equal"] for r in reconcile.values()),
        "reconciliation": reconcile,
        "keeper": {
            "keepers": keeper_stats.get("keepers", 1),
            "keepers_stopped": keeper_stats.get("keepers_stopped", 0),
            "sent": keeper_stats.get("sent", 0),
            "succeeded": keeper_stats.get("succeeded", 0),
            "failed": keeper_stats.get("failed", 0),
            "rpc_errors": keeper_stats.get("rpc_errors", 0),
            # trades against the market makers' quotes closing the keepers' inventory (keeper.unwind)
            "unwinds_sent": keeper_stats.get("unwinds_sent", 0),
            "unwinds_succeeded": keeper_stats.get("unwinds_succeeded", 0),
            "processing_ms_median": float(np.median(processing_ms)) if processing_ms else None,
            "processing_ms_max": float(np.max(processing_ms)) if processing_ms else None,
            "processing_ms_mean": float(np.mean(processing_ms)) if processing_ms else None,
            "accounts_valued_last_block": keeper_stats.get("rescored"),
            "accounts_read_last_block": keeper_stats.get("accounts_read"),
        },
        "setup_seconds": None if setup_seconds is None else round(setup_seconds, 1),
        "price_path": {
            "symbols": list(path.symbols),
            "steps": path.steps,
            "start": _iso(ts[0]),
            "end": _iso(ts[-1]),
            "max_drawdown": {k: round(v, 4) for k, v in path.max_drawdown().items()},
        },
        "workdir": str(workdir),
    }
    stopped = keeper_stats.get("stopped_shards") or []
    if stopped:  # the accounts those shards owned: taken over by the others
        count = keeper_stats.get("keepers", 1)
        theirs = [latency for account, latency in episodes if sharding.owner(account, count) in stopped]
        data["stopped_shards"] = {
            "shards": sorted(stopped),
            "liquidations": len(theirs),
            "max_blocks_to_liquidate": max(theirs, default=0),
            "missed_liquidations": sum(1 for a in missed if sharding.owner(a, count) in stopped),
        }
    if timeline is not None:
        data["timeline_overhead_ms"] = timeline.overhead()
        data["timeline"] = rows
    if options is not None:
        data["options"] = _options_section(options, liquidations, len(missed))
    return ReplayReport(data)


def _options_section(options: dict, liquidations: list[dict], missed: int) -> dict:
    regimes = options["regimes"]
    first, steps = regimes.steps[0], regimes.steps
    names = ("isolated", "standard", "portfolio", "on_chain")
    return {
        "vol_source": options["vol_source"],
        "vol_at_start": options["vol_at_start"],
        "requirement_at_start_usd": {n: {"im": first[f"{n}_im_usd"], "mm": first[f"{n}_mm_usd"]} for n in names},
        "requirement_at_end_usd": {n: {"im": steps[-1][f"{n}_im_usd"], "mm": steps[-1][f"{n}_mm_usd"]} for n in names},
        "requirement_peak_usd": {
            n: {"im": max(r[f"{n}_im_usd"] for r in steps), "mm": max(r[f"{n}_mm_usd"] for r in steps)} for n in names
        },
        # counterfactual: accounts whose equity fell below the regime's MM at the end of some block
        "below_maintenance_accounts": {n: len(regimes.below[n]) for n in names},
        "liquidated_accounts": len({ev["account"] for ev in liquidations}),
        "option_liquidations": len(options["option_liquidations"]),
        "missed_liquidations": missed,
        "by_kind": regimes.ratios_by_kind(options["kinds"]),
        "steps": steps,
    }


def _iso(t: int) -> str:
    return datetime.fromtimestamp(int(t), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


try:  # web3 7 names the log-processing error policy in web3.logs
    from web3.logs import DISCARD as _DISCARD
except ImportError:  # pragma: no cover
    _DISCARD = "discard"
