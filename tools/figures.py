"""Render the figures tables of README.md and docs/*.md from the JSON reports in reports/.

    bin/figures [--run] [--check]          (python -m tools.figures from the repository root)

A figures table lives between two markers, and everything between them is this module's output:

    <!-- figures:NAME -->
    ...
    <!-- /figures:NAME -->

Each NAME has a renderer and the report it reads (`BLOCKS`); the same block may appear in several
files. A report that is missing or unreadable (for instance written by an older version of its
benchmark) leaves its blocks as they are and is named on stderr.

--run    first run the commands that write the reports (`producers`: minutes, not seconds)
--check  change nothing; exit 1 if rendering would change a file or a report is missing

Only the standard library: the renderers read JSON and write Markdown, and nothing here imports
the keeper or the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# benchmarks.gas scenarios, in the order of the table, and what each one measures
GAS_OPERATIONS = {
    "match_orders": "`Matching.match_orders` on a perpetual between two traders who have traded the market before "
    "(two signatures, both margin checks, caps)",
    "match_orders_first_trade": "the same between two traders holding only cash (their first position)",
    "liquidate": "partial liquidation of a two-market account by a liquidator that has liquidated before "
    "(holds both markets)",
    "liquidate_first": "the same by a liquidator holding only cash (its first positions)",
    "withdraw_usdc": "USDC withdrawal with the initial-margin check",
    "deposit_usdc": "USDC deposit",
    "margin_check_16_options": "one margin check of an account short 16 options (`margin_summary`, a view)",
    "max_liquidation_call": "largest call to liquidate a maximal account (8 markets, 32 series, all collateral)",
    "liquidate_routed": "vault-routed liquidation: the partial liquidation above through `BackstopVault.liquidate`, "
    "the vault taking the positions and paying the caller its fee (no vault before)",
    "unwind": "one `BackstopVault.unwind`: a taker buys half the position the vault took over, at the auction price",
    "buy_collateral": "one `BackstopVault.buy_collateral`: a buyer pays cash for half the WETH the vault bought "
    "from a bankrupt account, at the auction price",
    "deleverage": "one auto-deleveraging step, `MarginEngine.deleverage`: a bankrupt long closed against the two "
    "shorts in profit nominated in its round, at its bankruptcy price (no fund, no vault before)",
    "nominate": "the `MarginEngine.nominate` that opens that round with both shorts (no round before)",
}

# the Black Thursday replay of docs/replay.md (its data files are looked up in FIGURES_DATA)
BLACK_THURSDAY = ("--start", "2020-03-11T00:00:00Z", "--end", "2020-03-14T00:00:00Z")
# the same crash run several ways (README: "how the protocol rode the crash"): report -> the extra
# arguments and the picture it draws into docs/img/ (committed: the README shows it)
BLACK_THURSDAY_RUNS = {
    "black-thursday.json": ((), "black-thursday.png"),
    "black-thursday-no-insurance-fund.json": (("--insurance-fund", "0"), "black-thursday-no-insurance-fund.png"),
    "black-thursday-no-backstop.json": (("--backstop", "0"), "black-thursday-no-backstop.png"),
    "black-thursday-adl-only.json": (("--insurance-fund", "0", "--backstop", "0"), "black-thursday-adl-only.png"),
}
# the column heads of those runs, in the same order
BLACK_THURSDAY_COLUMNS = (
    "as configured (seeded backstop vault)",
    "`--insurance-fund 0`",
    "`--backstop 0`",
    "`--insurance-fund 0 --backstop 0` (ADL alone)",
)
PRICE_FILES = {"ETH": "eth_usdt_1h_binance_2018-01_2021-08.csv", "BTC": "btc_usdt_1h_binance_2018-01_2021-08.csv"}
DEFAULT_DATA = "../shared/data"
OPTION_REPLAY_POPULATION = ("--accounts", "100", "--seed", "7")
# the benchmarks' timings are one core's: numpy's BLAS runs one thread (the machine may be shared)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class ReportError(ValueError):
    """A report that exists but cannot be rendered (a missing key, a wrong type)."""


# What every replay table reads of a replay report: who was liquidated, how fast, who paid.
REPLAY_OUTCOME_KEYS = (
    "accounts",
    "liquidations",
    "liquidated_accounts",
    "missed_liquidations",
    "max_blocks_to_liquidate",
    "bad_debt_usd",
    "insurance_fund_usd",
)


def _require(report: dict, *keys: str) -> None:
    if not isinstance(report, dict):
        raise ReportError("not a JSON object")
    missing = [k for k in keys if k not in report]
    if missing:
        raise ReportError("missing " + ", ".join(repr(k) for k in missing))


def _rows(report: dict) -> list[dict]:
    """report["rows"]: a non-empty list of objects."""
    rows = report["rows"]
    if not isinstance(rows, list) or not rows:
        raise ReportError("rows: not a non-empty list")
    for row in rows:
        if not isinstance(row, dict):
            raise ReportError(f"rows: {row!r} is not an object")
    return rows


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportError(f"{what}: {value!r} is not an integer")
    return value


def _num(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{what}: {value!r} is not a number")
    return float(value)


def _gas(value: object | None, what: str) -> str:
    return "-" if value is None else f"{_int(value, what):,}"


def _change(before: int | None, after: int) -> str:
    if not before:
        return "-"
    return f"{(after - before) / before * 100:+.1f}%"


def render_gas(report: dict) -> str:
    """Gas per operation (benchmarks.gas --json): before, after, change, target, receipt gas after."""
    _require(report, *GAS_OPERATIONS, "baseline", "baseline_rev", "receipt_gas")
    baseline, targets, receipt = report["baseline"], report.get("targets") or {}, report["receipt_gas"]
    for name in ("baseline", "receipt_gas", "targets"):
        if not isinstance(report.get(name, {}), dict):
            raise ReportError(f"{name}: not a JSON object")
    rev = str(report["baseline_rev"])
    lines = [
        "Gas is the execution gas (the computation, child calls included, without the transaction's 21,000 base and "
        "calldata, before refunds); receipt gas is what a receipt's `gasUsed` states (21,000 + calldata + "
        "execution - refund).",
        "",
        f"| operation | before ({rev}) | after | change | target | receipt gas, after |",
        "|---|---|---|---|---|---|",
    ]
    for key, description in GAS_OPERATIONS.items():
        after = _int(report[key], key)
        before = baseline.get(key)
        before_int = None if before is None else _int(before, f"baseline.{key}")
        target = targets.get(key)
        lines.append(
            f"| {description} | {_gas(before_int, f'baseline.{key}')} | {after:,} | "
            f"{_change(before_int, after)} | {'-' if target is None else '<= ' + _gas(target, f'targets.{key}')} | "
            f"{_gas(receipt.get(key), f'receipt_gas.{key}')} |"
        )
    return "\n".join(lines)


def render_gas_calls(report: dict) -> str:
    """Each call a liquidator needs for the maximal account (benchmarks.gas max_liquidation_calls).
    A label that repeats (a fall that needs several calls of one function) is numbered, and
    the k-th call of a label on one side is set next to the k-th on the other."""
    _require(report, "max_liquidation_calls", "baseline_rev")
    calls = report["max_liquidation_calls"]
    if not isinstance(calls, dict):
        raise ReportError("max_liquidation_calls: not a JSON object")
    columns: dict[tuple[str, int], dict[str, int]] = {}
    order: dict[str, list[tuple[str, int]]] = {}
    repeats: dict[str, int] = {}
    for side in ("baseline", "current"):
        rows = calls.get(side) or []
        if not isinstance(rows, list):
            raise ReportError(f"max_liquidation_calls.{side}: not a list")
        seen: dict[str, int] = {}
        order[side] = []
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)):
                raise ReportError(f"max_liquidation_calls.{side}: {row!r} is not [label, gas]")
            key = (row[0], seen.get(row[0], 0))
            seen[row[0]] = key[1] + 1
            repeats[row[0]] = max(repeats.get(row[0], 0), seen[row[0]])
            order[side].append(key)
            columns.setdefault(key, {})[side] = _int(row[1], f"max_liquidation_calls.{side}")
    keys = order["current"] + [key for key in order["baseline"] if key not in order["current"]]
    lines = [
        f"| call | before ({report['baseline_rev']}) | after |",
        "|---|---|---|",
    ]
    for label, k in keys:
        got = columns[(label, k)]
        name = f"{label} (call {k + 1})" if repeats[label] > 1 else label
        lines.append(f"| {name} | {_gas(got.get('baseline'), label)} | {_gas(got.get('current'), label)} |")
    return "\n".join(lines)


def render_replay(report: dict) -> str:
    """The summary of a `keeper replay --report` file."""
    _require(
        report,
        "accounts",
        "blocks",
        "liquidations",
        "liquidated_accounts",
        "liquidated_notional_usd",
        "bad_debt_usd",
        "insurance_fund_usd",
        "max_blocks_to_liquidate",
        "missed_liquidations",
        "cross_margin_usd",
        "isolated_margin_usd",
        "vault_balances_reconcile",
        "keeper",
    )
    keeper = report["keeper"]
    _require(keeper, "processing_ms_median", "processing_ms_max")
    kinds = report.get("liquidations_by_kind") or {}
    if not isinstance(kinds, dict):
        raise ReportError("liquidations_by_kind: not a JSON object")
    by_kind = ", ".join(f"{kind} {_int(n, kind)}" for kind, n in sorted(kinds.items())) or "none"

    def usd(key: str, decimals: int = 0) -> str:
        return f"${_num(report[key], key):,.{decimals}f}"

    rows = [
        ("accounts", f"{_int(report['accounts'], 'accounts'):,}"),
        ("blocks", f"{_int(report['blocks'], 'blocks'):,}"),
        (
            "liquidations",
            f"{_int(report['liquidations'], 'liquidations'):,} "
            f"({_int(report['liquidated_accounts'], 'liquidated_accounts'):,} accounts)",
        ),
        ("liquidations by book kind", by_kind),
        *(
            [
                (
                    "routed to the backstop vault / direct",
                    f"{_int(report['routed_liquidations'], 'routed_liquidations'):,} / "
                    f"{_int(report['direct_liquidations'], 'direct_liquidations'):,}",
                )
            ]
            if "routed_liquidations" in report
            else []
        ),
        ("liquidated notional", usd("liquidated_notional_usd")),
        ("bad debt", usd("bad_debt_usd", 2)),
        ("insurance fund at the end", usd("insurance_fund_usd")),
        ("max blocks to liquidate", str(report["max_blocks_to_liquidate"])),
        ("missed liquidations", f"{_int(report['missed_liquidations'], 'missed_liquidations'):,}"),
        ("initial margin, cross", usd("cross_margin_usd")),
        ("initial margin, isolated", usd("isolated_margin_usd")),
        ("vault balances reconcile", "yes" if report["vault_balances_reconcile"] is True else "no"),
        (
            "keeper processing per block",
            f"{_num(keeper['processing_ms_median'], 'processing_ms_median'):.0f} ms median, "
            f"{_num(keeper['processing_ms_max'], 'processing_ms_max'):.0f} ms max",
        ),
    ]
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows])


BLACK76_FUNCTIONS = {
    "exp_wad": "`exp_wad`",
    "ln_wad": "`ln_wad`",
    "norm_cdf": "`norm_cdf`",
    "black76": "`black76`, call and put",
    "black76_near_money": "`black76`, ETH strikes 0.7-1.3 F",
}


def render_black76_gas(report: dict) -> str:
    """Gas per call of the fixed-point maths (benchmarks.black76_gas --json) next to lyra-utils."""
    _require(report, "functions", "samples")
    functions = report["functions"]
    if not isinstance(functions, dict):
        raise ReportError("functions: not a JSON object")
    lines = ["| function | gas, mean (max) | lyra-utils |", "|---|---|---|"]
    for key, label in BLACK76_FUNCTIONS.items():
        row = functions.get(key)
        if not isinstance(row, dict):
            raise ReportError(f"functions.{key}: missing")
        lyra = f"{_int(row.get('lyra_gas'), key):,} (`{row.get('lyra_test')}`)"
        lines.append(f"| {label} | {_int(row.get('call_mean'), key):,} ({_int(row.get('call_max'), key):,}) | {lyra} |")
    return "\n".join(lines)


def render_option_margin_gas(report: dict) -> str:
    """One margin check with N short options (benchmarks.option_margin_gas --json)."""
    _require(report, "rows")
    rows = report["rows"]
    if not isinstance(rows, list):
        raise ReportError("rows: not a list")
    lines = ["| options | gas | per option | Derive SRM (lyra v2-core PR #272) |", "|---|---|---|---|"]
    for row in rows:
        n = _int(row.get("options"), "options")
        part = _int(row.get("options_part"), "options_part")
        srm = row.get("derive_srm")
        lines.append(
            f"| {n} | {_int(row.get('margin_summary'), 'margin_summary'):,} | {part // n:,} | "
            f"{'' if srm is None else format(_int(srm, 'derive_srm'), ',')} |"
        )
    return "\n".join(lines)


def _sig(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant figures, with thousands separators: 714,000, 3,320, 21.5."""
    if value <= 0:
        return f"{value:,.0f}"
    decimals = digits - 1 - math.floor(math.log10(value))
    return f"{round(value, decimals):,.{max(0, decimals)}f}"


def render_portfolio_risk(report: dict) -> str:
    """Portfolio margin throughput (benchmarks.portfolio_risk --json): the scenario table against the
    per-account loop, in accounts per second (3 significant figures)."""
    _require(report, "instruments", "scenarios", "table_build_ms", "rows")
    rows = _rows(report)
    lines = [
        f"{_int(report['instruments'], 'instruments')} instruments x {_int(report['scenarios'], 'scenarios')} "
        f"scenarios; the scenario table is built in {_num(report['table_build_ms'], 'table_build_ms'):.1f} ms "
        "(once per market state, included in the figures).",
        "",
        "| accounts | scenario table x positions matrix, accounts / s | per-account loop, accounts / s | speed-up |",
        "|---|---|---|---|",
    ]
    for row in rows:
        n = _int(row.get("accounts"), "accounts")
        table_s, loop_s = _num(row.get("table_s"), "table_s"), _num(row.get("loop_s"), "loop_s")
        if table_s <= 0 or loop_s <= 0:
            raise ReportError(f"rows: the timings of {n} accounts are not positive")
        extrapolated = " (extrapolated)" if row.get("loop_extrapolated") else ""
        lines.append(f"| {n:,} | {_sig(n / table_s)} | {_sig(n / loop_s)}{extrapolated} | {_sig(loop_s / table_s)}x |")
    return "\n".join(lines)


# benchmarks.risk_engine's methods, in the order of the table, and what each one is
RISK_ENGINE_METHODS = {
    "margin": "exact integer, vectorized (`margin`)",
    "margin_first_call": "the same, first call on a book (builds the per-market view)",
    "margin_float": "float64 screen (`margin_float`)",
    "margin_float_first_call": "the same, first call on a book (copies to float64)",
    "isolated_initial_margin": "isolated initial margin, exact (`isolated_initial_margin`)",
    "margin_loop": "per-account Python loop (`margin_loop`)",
}


def render_risk_engine(report: dict) -> str:
    """Risk engine throughput (benchmarks.risk_engine --json): accounts per second of each method
    and its speed against the per-account loop (3 and 2 significant figures)."""
    _require(report, "rows")
    rows = _rows(report)
    lines = ["| accounts | method | accounts / s | vs loop |", "|---|---|---|---|"]
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("seconds"), dict):
            raise ReportError(f"rows: {row!r} is not an object with 'seconds'")
        n = _int(row.get("accounts"), "accounts")
        seconds = {key: _num(row["seconds"].get(key), f"seconds.{key}") for key in RISK_ENGINE_METHODS}
        if min(seconds.values()) <= 0:
            raise ReportError(f"rows: the timings of {n} accounts are not positive")
        for key, label in RISK_ENGINE_METHODS.items():
            if key == "margin_loop" and row.get("loop_extrapolated"):
                label += f" (extrapolated from {_int(row.get('loop_accounts'), 'loop_accounts'):,})"
            lines.append(
                f"| {n:,} | {label} | {_sig(n / seconds[key])} | {_sig(seconds['margin_loop'] / seconds[key], 2)}x |"
            )
    return "\n".join(lines)


def render_keeper(report: dict) -> str:
    """Keeper time per block against the book's size (benchmarks.keeper --json): reading and
    valuing every account against the event-driven keeper (state cache, event-driven re-scoring)
    at a block where BTC moved and a few accounts changed, chain reads included, then the
    valuation alone."""
    _require(report, "rows", "move", "changed")
    rows = _rows(report)
    move = _num(report["move"], "move")
    changed = _int(report["changed"], "changed")
    lines = [
        f"| accounts | full: reads + valuation, ms | event-driven: reads + cache + valuation, ms "
        f"(BTC {-move:+.1%}, {changed} accounts changed) | speed-up | valuation alone: full / event-driven, ms | "
        "accounts valued | same liquidations |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n = _int(row.get("accounts"), "accounts")
        full, event = _num(row.get("full_ms"), "full_ms"), _num(row.get("event_ms"), "event_ms")
        full_cpu, event_cpu = _num(row.get("full_cpu_ms"), "full_cpu_ms"), _num(row.get("event_cpu_ms"), "event_cpu_ms")
        if min(full, event, full_cpu, event_cpu) <= 0:
            raise ReportError(f"rows: the timings of {n} accounts are not positive")
        same = row.get("same_liquidations")
        if not isinstance(same, bool):
            raise ReportError("same_liquidations: not true or false")
        lines.append(
            f"| {n:,} | {_sig(full)} | {_sig(event)} | {_sig(full / event, 2)}x | "
            f"{_sig(full_cpu)} / {_sig(event_cpu)} ({_sig(full_cpu / event_cpu, 2)}x) | "
            f"{_int(row.get('valued'), 'valued'):,} | {'yes' if same else 'NO'} |"
        )
    chain = report.get("chain")
    if chain is not None:
        if not isinstance(chain, dict):
            raise ReportError("chain: not an object")
        rate = _num(chain.get("read_accounts_per_s"), "chain.read_accounts_per_s")
        per_block = _num(chain.get("per_block_ms"), "chain.per_block_ms")
        opened = _int(chain.get("read_accounts"), "chain.read_accounts")
        lines.append("")
        lines.append(
            f"Reads on Anvil through the lens: {_sig(rate)} accounts/s ({opened:,} accounts opened); "
            f"{_sig(per_block)} ms a block whatever the book (prices, markets, risk parameters, logs)."
        )
    else:
        lines.append("")
        lines.append("Chain reads not measured (`--no-chain`): valuation only.")
    return "\n".join(lines)


# the ways benchmarks.chain reads the accounts, in the order of the table
CHAIN_READS = {
    "raw_batched": "raw state batched (`account_states` x200) + keeper valuation",
    "raw_naive": "raw state, one call per account and field (naive)",
    "summaries_batched": "contract margin via `MarginLens.margin_summaries` (x200)",
    "summaries_naive": "contract `margin_summary`, one call per account (naive)",
}


def render_chain_reads(report: dict) -> str:
    """Reading N accounts from Anvil at one block (benchmarks.chain --json): seconds and accounts
    per second of each way."""
    _require(report, "accounts", "seconds")
    n = _int(report["accounts"], "accounts")
    seconds = report["seconds"]
    if not isinstance(seconds, dict):
        raise ReportError("seconds: not a JSON object")
    lines = [f"| reading {n:,} accounts | seconds | accounts / s |", "|---|---|---|"]
    for key, label in CHAIN_READS.items():
        t = _num(seconds.get(key), f"seconds.{key}")
        if t <= 0:
            raise ReportError(f"seconds.{key}: not positive")
        lines.append(f"| {label} | {_sig(t)} | {_sig(n / t)} |")
    return "\n".join(lines)


def render_operator_jobs(report: dict) -> str:
    """Deploy, timelock handover, rehearsal and timelock queue / execute (benchmarks.operator_jobs
    --json): gas from receipts, the rehearsal's seconds."""
    _require(
        report, "config", "changes", "deploy_steps", "deploy_gas", "handover_gas", "rehearsal_s", "rehearsal_accounts"
    )
    setters = report.get("setters")
    if not isinstance(setters, list) or not setters:
        raise ReportError("setters: not a non-empty list")
    rehearsal_s = _num(report["rehearsal_s"], "rehearsal_s")
    lines = [
        "| job | gas or time |",
        "|---|---|",
        f"| deploy `config/{report['config']}` ({_int(report['deploy_steps'], 'deploy_steps')} steps) | "
        f"{_int(report['deploy_gas'], 'deploy_gas'):,} gas |",
        f"| hand its admin roles to a timelock (install, accept) | {_int(report['handover_gas'], 'handover_gas'):,} gas |",
        f"| rehearse `config/{report['changes']}` on a fork ({len(setters)} setter calls, "
        f"{_int(report['rehearsal_accounts'], 'rehearsal_accounts')} accounts) | {_sig(rehearsal_s, 2)} s |",
        "",
        "| setter call, through the timelock | queue gas | execute gas |",
        "|---|---|---|",
    ]
    for row in setters:
        if not isinstance(row, dict):
            raise ReportError(f"setters: {row!r} is not an object")
        lines.append(
            f"| `{row.get('call')}` ({row.get('label')}) | {_int(row.get('queue_gas'), 'queue_gas'):,} | "
            f"{_int(row.get('execute_gas'), 'execute_gas'):,} |"
        )
    return "\n".join(lines)


def render_replay_keeper_time(report: dict) -> str:
    """The keeper's processing time per block in a `keeper replay --report` file, as one line."""
    _require(report, "accounts", "blocks", "keeper", "price_path")
    _require(report["keeper"], "processing_ms_median", "processing_ms_max")
    _require(report["price_path"], "start", "end")
    keeper = report["keeper"]
    return (
        f"{_period(report)}, {_int(report['accounts'], 'accounts'):,} accounts, "
        f"{_int(report['blocks'], 'blocks'):,} blocks: "
        f"{_num(keeper['processing_ms_median'], 'processing_ms_median'):,.0f} ms median keeper time per block, "
        f"{_num(keeper['processing_ms_max'], 'processing_ms_max'):,.0f} ms max."
    )


def render_replay_runs(*reports: dict) -> str:
    """The Black Thursday runs side by side (`BLACK_THURSDAY_RUNS`): who carried the losses."""
    for report in reports:
        _require(
            report,
            *REPLAY_OUTCOME_KEYS,
            "insurance_fund_start_usd",
            "socialized_loss_usd",
            "flat_account_losses_usd",
            "flat_account_socialization_exposure_usd",
            "keeper_max_inventory_usd",
            "adl_events",
            "adl_notional_usd",
            "backstop_pnl_usd",
            "backstop_max_exposure_usd",
        )

    def usd(report: dict, key: str) -> str:
        value = _num(report[key], key)
        return f"-${-value:,.0f}" if round(value) < 0 else f"${value:,.0f}"

    def adl(report: dict) -> str:
        return f"{_int(report['adl_events'], 'adl_events'):,} / {usd(report, 'adl_notional_usd')}"

    def backstop(report: dict) -> str:
        if report["backstop_pnl_usd"] is None:
            return "n/a (no backstop vault)"
        return f"{usd(report, 'backstop_pnl_usd')} / {usd(report, 'backstop_max_exposure_usd')}"

    def routes(report: dict) -> str:
        if "routed_liquidations" not in report:
            return "-"
        return (
            f"{_int(report['routed_liquidations'], 'routed_liquidations'):,} / "
            f"{_int(report['direct_liquidations'], 'direct_liquidations'):,}"
        )

    def seed(report: dict) -> str:
        return usd(report, "backstop_seed_usd") if report.get("backstop_seed_usd") is not None else "-"

    cells = {
        "insurance fund at the start / end": lambda r: (
            f"{usd(r, 'insurance_fund_start_usd')} / {usd(r, 'insurance_fund_usd')}"
        ),
        "backstop vault seeded before the crash": seed,
        "liquidations (accounts)": lambda r: (
            f"{_int(r['liquidations'], 'liquidations'):,} ({_int(r['liquidated_accounts'], 'liquidated_accounts'):,})"
        ),
        "liquidations routed to the backstop vault / direct": routes,
        "missed liquidations / max blocks to liquidate": lambda r: (
            f"{_int(r['missed_liquidations'], 'missed_liquidations')} / {r['max_blocks_to_liquidate']}"
        ),
        "bad debt at the end (outstanding)": lambda r: usd(r, "bad_debt_usd"),
        "socialized loss (taken from withdrawals)": lambda r: usd(r, "socialized_loss_usd"),
        "flat-account losses": lambda r: usd(r, "flat_account_losses_usd"),
        "bad debt flat accounts would bear if they withdrew": lambda r: usd(
            r, "flat_account_socialization_exposure_usd"
        ),
        "keeper's largest inventory / at the end (gross notional)": lambda r: (
            f"{usd(r, 'keeper_max_inventory_usd')} / "
            + (usd(r, "keeper_inventory_end_usd") if r.get("keeper_inventory_end_usd") is not None else "-")
        ),
        "longest the keeper held inventory (blocks)": lambda r: (
            str(_int(r["keeper_max_inventory_age_blocks"], "keeper_max_inventory_age_blocks"))
            if r.get("keeper_max_inventory_age_blocks") is not None
            else "-"
        ),
        "backstop vault P&L / largest exposure (gross notional)": backstop,
        "ADL events / notional": adl,
    }
    first = reports[0]
    header = f"{_int(first['accounts'], 'accounts'):,} accounts"
    columns = BLACK_THURSDAY_COLUMNS[: len(reports)]
    lines = [
        f"| {header} | {' | '.join(columns)} |",
        "|---|" + "---|" * len(reports),
    ]
    lines += [f"| {name} | {' | '.join(cell(r) for r in reports)} |" for name, cell in cells.items()]
    return "\n".join(lines)


# the option books of `keeper replay --options` (keeper.replay.population.OPTION_KINDS), as the
# docs' table groups them; every other book kind is a perpetuals-and-futures one
OPTION_BOOKS = {
    "risk-defined (short straddle + long 90/110 strangle)": ("risk_defined",),
    "call spread / put spread": ("call_spread", "put_spread"),
    "delta-hedged short straddle": ("delta_hedged_straddle",),
    "short straddle": ("short_straddle",),
    "covered call / protective put": ("covered_call", "protective_put"),
}
OPTION_KINDS = frozenset(kind for kinds in OPTION_BOOKS.values() for kind in kinds)
MARGIN_REGIMES = ("isolated", "standard", "portfolio", "on_chain")


def _options(report: dict) -> dict:
    _require(
        report,
        *REPLAY_OUTCOME_KEYS,
        "price_path",
        "options",
    )
    _require(report["price_path"], "start", "end")
    options = report["options"]
    _require(
        options,
        "vol_source",
        "vol_at_start",
        "requirement_at_start_usd",
        "below_maintenance_accounts",
        "option_liquidations",
        "by_kind",
    )
    for key in ("vol_source", "vol_at_start", "requirement_at_start_usd", "below_maintenance_accounts", "by_kind"):
        if not isinstance(options[key], dict):
            raise ReportError(f"options.{key}: not a JSON object")
    return options


def _period(report: dict) -> str:
    """The replay's window, first to last block: `2020-03-11 .. 2020-03-13`."""
    path = report["price_path"]
    return f"{str(path['start'])[:10]} .. {str(path['end'])[:10]}"


def _short_usd(value: float) -> str:
    if abs(value) >= 1e6:
        return f"${value / 1e6:.2f}M"
    if abs(value) >= 1e3:
        return f"${value / 1e3:.0f}k"
    return f"${value:.0f}"


def _vols(options: dict) -> str:
    sources, vols = options["vol_source"], options["vol_at_start"]
    names = {"dvol": "DVOL", "realised": "realised"}
    symbols = ("ETH", "BTC")
    figures = [f"{_num(vols.get(s), f'vol_at_start.{s}'):.2f}" for s in symbols]
    labels = [names.get(str(sources.get(s)), str(sources.get(s))) for s in symbols]
    if labels[0] == labels[1]:
        return f"{labels[0]} {figures[0]} / {figures[1]}"
    return " / ".join(f"{label} {figure}" for label, figure in zip(labels, figures))


def render_options_replay(*reports: dict) -> str:
    """The option replays side by side (`keeper replay --options --report`, one per window)."""
    options = [_options(r) for r in reports]
    accounts = {_int(r["accounts"], "accounts") for r in reports}
    head = f"{'/'.join(f'{n:,}' for n in sorted(accounts))} accounts"

    def liquidations(r: dict, o: dict) -> str:
        text = (
            f"{_int(r['liquidations'], 'liquidations'):,} ({_int(r['liquidated_accounts'], 'liquidated_accounts'):,})"
        )
        n = _int(o["option_liquidations"], "option_liquidations")
        return text + (f", {n:,} of them option liquidations" if n else "")

    def margins(o: dict) -> str:
        start = o["requirement_at_start_usd"]
        got = []
        for name in MARGIN_REGIMES[:3]:
            if not isinstance(start.get(name), dict):
                raise ReportError(f"options.requirement_at_start_usd.{name}: missing")
            got.append(_short_usd(_num(start[name].get("im"), f"requirement_at_start_usd.{name}.im")))
        return " / ".join(got)

    def below(o: dict) -> str:
        counts = o["below_maintenance_accounts"]
        return " / ".join(str(_int(counts.get(n), f"below_maintenance_accounts.{n}")) for n in MARGIN_REGIMES)

    rows = [
        (head, [_period(r) for r in reports]),
        ("vol at the start (ETH / BTC)", [_vols(o) for o in options]),
        ("liquidations (accounts)", [liquidations(r, o) for r, o in zip(reports, options)]),
        (
            "missed liquidations / max blocks to liquidate",
            [
                f"{_int(r['missed_liquidations'], 'missed_liquidations')} / {r['max_blocks_to_liquidate']}"
                for r in reports
            ],
        ),
        ("bad debt", [f"${_num(r['bad_debt_usd'], 'bad_debt_usd'):,.0f}" for r in reports]),
        (
            "insurance fund at the end",
            [f"${_num(r['insurance_fund_usd'], 'insurance_fund_usd'):,.0f}" for r in reports],
        ),
        ("initial margin at the start: isolated / standard / portfolio", [margins(o) for o in options]),
        ("accounts that fell below MM: isolated / standard / portfolio / on chain", [below(o) for o in options]),
    ]
    lines = [f"| {rows[0][0]} | " + " | ".join(rows[0][1]) + " |", "|---" * (len(reports) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows[1:]]
    return "\n".join(lines)


def _ratio(value: float) -> str:
    """Two decimals, or two significant figures below 0.1: 0.81, 2.25, 0.022."""
    if value <= 0 or value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.{1 - math.floor(math.log10(value))}f}"


def render_options_books(*reports: dict) -> str:
    """Portfolio over standard initial margin at the start, by book, one figure per replay."""
    by_kind = [_options(r)["by_kind"] for r in reports]

    def ratio(kinds: dict, names: tuple[str, ...] | None) -> str:
        picked = [d for k, d in kinds.items() if (k in names if names else k not in OPTION_KINDS)]
        if not picked:
            return "-"
        for d in picked:
            if not isinstance(d, dict):
                raise ReportError(f"options.by_kind: {d!r} is not an object")
        standard = sum(_num(d.get("standard_im_usd"), "standard_im_usd") for d in picked)
        portfolio = sum(_num(d.get("portfolio_im_usd"), "portfolio_im_usd") for d in picked)
        return _ratio(portfolio / standard) if standard else "-"

    lines = [f"| book | portfolio / standard ({' / '.join(_period(r) for r in reports)}) |", "|---|---|"]
    for label, kinds in OPTION_BOOKS.items():
        cells = [" / ".join(ratio(k, (kind,)) for k in by_kind) for kind in kinds]
        lines.append(f"| {label} | {', '.join(cells)} |")
    lines.append(f"| perpetuals and futures alone | {' / '.join(ratio(k, None) for k in by_kind)} |")
    return "\n".join(lines)


# the option replays of docs/replay.md, one report per window (their data files are in FIGURES_DATA)
OPTION_REPLAYS = {
    "options-2020.json": ("--start", "2020-03-11T00:00:00Z", "--end", "2020-03-14T00:00:00Z"),
    "options-2021.json": ("--start", "2021-05-18T00:00:00Z", "--end", "2021-05-21T00:00:00Z"),
}

# the keeper fleet's replays of docs/replay.md ("Large populations"): 10,000 accounts, three keeper
# shards; report -> (whether it replays the hourly data files, the arguments of `keeper replay`)
FLEET = (
    "--accounts", "10000", "--keepers", "3", "--config", "config/replay-xl.yaml", "--keeper-timeout", "900",
    "--block-gas-limit", "3000000000",
)  # fmt: skip
FLEET_STOP = ("--stop-keeper", "1@28")  # shard 1 stops at 2020-03-12T04:00Z, before the worst hours
FLEET_MINUTE = ("--steps", "120", "--seed", "7", "--block-seconds", "60")  # the synthetic one-minute crash
FLEET_REPLAYS = {
    "fleet-hourly.json": (True, (*FLEET, *BLACK_THURSDAY)),
    "fleet-hourly-stop.json": (True, (*FLEET, *BLACK_THURSDAY, *FLEET_STOP)),
    "fleet-minute.json": (False, (*FLEET, *FLEET_MINUTE)),
}


def render_replay_fleet(*reports: dict) -> str:
    """The fleet replays (FLEET_REPLAYS, in that order) side by side: set-up, keeper time per
    block, liquidations, misses, latency, duplicate sends and the stopped shard's accounts."""
    heads, rows = [], {k: [] for k in (
        "accounts / keepers", "blocks", "set-up", "keeper time per block (slowest shard)", "liquidations",
        "missed liquidations", "max blocks to liquidate", "duplicate sends",
        "stopped shard's accounts: liquidations, max blocks, missed", "accounts read per block at the end",
    )}  # fmt: skip
    for report in reports:
        _require(report, "accounts", "blocks", "keeper", "price_path", "missed_liquidations", "duplicate_sends")
        keeper = report["keeper"]
        _require(keeper, "processing_ms_median", "processing_ms_max", "keepers")
        steps = _int(report["price_path"].get("steps"), "price_path.steps")
        heads.append(f"{_period(report)}, {steps} steps")
        stopped = report.get("stopped_shards")
        rows["accounts / keepers"].append(
            f"{_int(report['accounts'], 'accounts'):,} / {_int(keeper['keepers'], 'keepers')}"
            + (f", shard {', '.join(map(str, stopped['shards']))} stopped" if stopped else "")
        )
        rows["blocks"].append(f"{_int(report['blocks'], 'blocks'):,}")
        setup = report.get("setup_seconds")
        rows["set-up"].append("-" if setup is None else f"{_num(setup, 'setup_seconds'):,.0f} s")
        rows["keeper time per block (slowest shard)"].append(
            f"{_num(keeper['processing_ms_median'], 'processing_ms_median'):,.0f} ms median, "
            f"{_num(keeper['processing_ms_max'], 'processing_ms_max'):,.0f} ms max"
        )
        rows["liquidations"].append(
            f"{_int(report.get('liquidations'), 'liquidations'):,} ({_int(report.get('liquidated_accounts'), 'liquidated_accounts'):,} accounts)"
        )
        rows["missed liquidations"].append(f"{_int(report['missed_liquidations'], 'missed_liquidations')}")
        rows["max blocks to liquidate"].append(
            f"{_int(report.get('max_blocks_to_liquidate'), 'max_blocks_to_liquidate')}"
        )
        rows["duplicate sends"].append(
            f"{_int(report['duplicate_sends'], 'duplicate_sends')} of "
            f"{_int(report.get('liquidation_transactions'), 'liquidation_transactions'):,} liquidation transactions"
        )
        rows["stopped shard's accounts: liquidations, max blocks, missed"].append(
            "-"
            if not stopped
            else f"{_int(stopped.get('liquidations'), 'stopped_shards.liquidations'):,}, "
            f"{_int(stopped.get('max_blocks_to_liquidate'), 'stopped_shards.max_blocks_to_liquidate')}, "
            f"{_int(stopped.get('missed_liquidations'), 'stopped_shards.missed_liquidations')}"
        )
        read = keeper.get("accounts_read_last_block")
        rows["accounts read per block at the end"].append(
            "-" if read is None else f"{_int(read, 'accounts_read_last_block'):,}"
        )
    lines = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows.items()]
    return "\n".join(lines)


# block name -> (the report files in reports/ it reads, renderer taking them in that order)
# tools.price_gaps' kinds of move, as the table words them ({pct}, {day} and {time} of the move's
# start or end bar, UTC)
PRICE_GAP_WORDS = {
    "one hour": ("{pct} in one hour ({start_time} → {end_time} UTC)"),
    "one 10-minute step": "{pct} in one 10-minute step",
    "close to close": "{pct} close to close ({end_day} {end_time} UTC)",
    "open to low within an hour": "{pct} open to low within an hour ({start_day} {start_time} UTC)",
}


def render_price_gaps(report: dict) -> str:
    """The worst moves in the market data (tools.price_gaps --json), one row per file."""
    _require(report, "rows")
    rows = _rows(report)
    lines = ["| data | worst move |", "|---|---|"]
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("moves"), list):
            raise ReportError(f"rows: {row!r} is not an object with 'moves'")
        words = []
        for move in row["moves"]:
            kind = move.get("kind")
            if kind not in PRICE_GAP_WORDS:
                raise ReportError(f"moves: unknown kind {kind!r}")
            pct = _num(move.get("move"), "move") * 100
            stamps = {}
            for side in ("start", "end"):
                stamp = str(move.get(side, ""))
                if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp):
                    raise ReportError(f"moves: {side} {stamp!r} is not a UTC timestamp")
                stamps[f"{side}_day"], stamps[f"{side}_time"] = stamp[:10], stamp[11:16]
            sign = "−" if pct < 0 else "+"
            words.append(PRICE_GAP_WORDS[kind].format(pct=f"{sign}{abs(pct):.1f}%", **stamps))
        lines.append(f"| {row.get('data')} | {'; '.join(words)} |")
    return "\n".join(lines)


BLOCKS: dict[str, tuple[tuple[str, ...], Callable[..., str]]] = {
    "price-gaps": (("price-gaps.json",), render_price_gaps),
    "gas": (("gas.json",), render_gas),
    "gas-liquidation-calls": (("gas.json",), render_gas_calls),
    "replay-black-thursday": (("black-thursday.json",), render_replay),
    "replay-black-thursday-runs": (tuple(BLACK_THURSDAY_RUNS), render_replay_runs),
    "black76-gas": (("black76-gas.json",), render_black76_gas),
    "option-margin-gas": (("option-margin-gas.json",), render_option_margin_gas),
    "portfolio-risk": (("portfolio-risk.json",), render_portfolio_risk),
    "risk-engine": (("risk-engine.json",), render_risk_engine),
    "keeper": (("keeper.json",), render_keeper),
    "chain-reads": (("chain-reads.json",), render_chain_reads),
    "operator-jobs": (("operator-jobs.json",), render_operator_jobs),
    "replay-options-keeper": (("options-2020.json",), render_replay_keeper_time),
    "replay-options": (tuple(OPTION_REPLAYS), render_options_replay),
    "replay-fleet": (tuple(FLEET_REPLAYS), render_replay_fleet),
    "replay-options-books": (tuple(OPTION_REPLAYS), render_options_books),
}


def producers(root: Path, python: str, data: Path) -> dict[str, list[str]]:
    """report file -> the command that writes it (run from the repository root)."""
    prices = [arg for symbol, name in PRICE_FILES.items() for arg in ("--prices", f"{symbol}={data / name}")]
    options = [
        python,
        "-m",
        "keeper",
        "replay",
        "--options",
        *OPTION_REPLAY_POPULATION,
        *prices,
    ]
    return {
        "gas.json": [python, "-m", "benchmarks.gas", "--json"],
        "price-gaps.json": [python, "-m", "tools.price_gaps", "--data", str(data), "--json"],
        "portfolio-risk.json": [python, "-m", "benchmarks.portfolio_risk", "--json"],
        "risk-engine.json": [python, "-m", "benchmarks.risk_engine", "--json"],
        "keeper.json": [python, "-m", "benchmarks.keeper", "--json"],
        "chain-reads.json": [python, "-m", "benchmarks.chain", "--json"],
        "operator-jobs.json": [python, "-m", "benchmarks.operator_jobs", "--json"],
        "black76-gas.json": [python, "-m", "benchmarks.black76_gas", "--json"],
        "option-margin-gas.json": [python, "-m", "benchmarks.option_margin_gas", "--json"],
        **{
            report: [
                python,
                "-m",
                "keeper",
                "replay",
                *prices,
                *BLACK_THURSDAY,
                *extra,
                "--plot",
                str(root / "docs" / "img" / picture),
                "--report",
                str(root / "reports" / report),
            ]
            for report, (extra, picture) in BLACK_THURSDAY_RUNS.items()
        },
        **{
            report: [*options, *window, "--report", str(root / "reports" / report)]
            for report, window in OPTION_REPLAYS.items()
        },
        **{
            report: [
                python,
                "-m",
                "keeper",
                "replay",
                *(prices if hourly else []),
                *args,
                "--report",
                str(root / "reports" / report),
            ]
            for report, (hourly, args) in FLEET_REPLAYS.items()
        },
    }


MARKER = re.compile(
    r"(?P<start><!-- figures:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(?P<end><!-- /figures:(?P=name) -->)", re.S
)


def replace_blocks(text: str, rendered: dict[str, str]) -> tuple[str, list[str]]:
    """`text` with the body of every block named in `rendered` replaced; also every block name found."""
    names: list[str] = []

    def sub(m: re.Match) -> str:
        names.append(m["name"])
        if m["name"] not in rendered:
            return m[0]
        return m["start"] + rendered[m["name"]].rstrip("\n") + "\n" + m["end"]

    return MARKER.sub(sub, text), names


def documents(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def render_all(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every block that its report can render, and a line per report that cannot be rendered."""
    rendered: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, (reports, renderer) in BLOCKS.items():
        loaded = []
        for report in reports:
            try:
                loaded.append(json.loads((root / "reports" / report).read_text()))
            except FileNotFoundError:
                problems.setdefault(report, "is missing")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problems.setdefault(report, f"cannot be rendered ({exc}; written by an older version?)")
        if len(loaded) < len(reports):
            continue
        try:
            rendered[name] = renderer(*loaded)
        except ReportError as exc:
            for report in reports:  # which of several reports is at fault, the message names
                problems.setdefault(report, f"cannot be rendered ({exc}; written by an older version?)")
    lines = []
    for report, problem in problems.items():
        kept = ", ".join(f"'{n}'" for n, (r, _) in BLOCKS.items() if report in r and n not in rendered)
        lines.append(f"reports/{report} {problem}: kept block(s) {kept} as they are (bin/figures --run writes it)")
    return rendered, lines


def update(root: Path, check: bool = False, out=sys.stdout, err=sys.stderr) -> int:
    """Render every block into README.md and docs/*.md (with `check`, only compare). The exit code."""
    rendered, problems = render_all(root)
    changed: list[str] = []
    for path in documents(root):
        text = path.read_text()
        new, names = replace_blocks(text, rendered)
        problems += [f"{path.relative_to(root)}: no renderer for block '{n}'" for n in names if n not in BLOCKS]
        if new != text:
            changed.append(str(path.relative_to(root)))
            if not check:
                path.write_text(new)
    for line in problems:
        print(f"figures: {line}", file=err)
    if check:
        for name in changed:
            print(f"figures: {name} is out of date with reports/ (run bin/figures)", file=err)
        return 1 if changed or problems else 0
    for name in changed:
        print(f"figures: rendered {name}", file=out)
    if not changed:
        print("figures: nothing to change", file=out)
    return 0


def run_producers(root: Path, data: Path) -> int:
    venv = root / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    (root / "reports").mkdir(exist_ok=True)
    failed = 0
    for report, command in producers(root, python, data).items():
        replay = (
            report in BLACK_THURSDAY_RUNS
            or report in OPTION_REPLAYS
            or (report in FLEET_REPLAYS and FLEET_REPLAYS[report][0])
        )
        if replay and not all((data / name).is_file() for name in PRICE_FILES.values()):
            print(
                f"figures: {data} lacks {', '.join(PRICE_FILES.values())}: not running the replay "
                "(FIGURES_DATA=folder)",
                file=sys.stderr,
            )
            failed += 1
            continue
        print(f"figures: writing reports/{report}: {' '.join(command)}", flush=True)
        env = {**os.environ, **ONE_THREAD}
        if report in OPTION_REPLAYS:  # the vols come from the daily files of the same folder
            env["KEEPER_DATA_DIR"] = str(data)
        if subprocess.run(command, cwd=root, env=env).returncode != 0:
            print(f"figures: the command writing reports/{report} failed", file=sys.stderr)
            failed += 1
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bin/figures", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", action="store_true", help="first run the commands that write the reports")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run and args.check:
        ap.error("--run and --check: run first, then check")
    root = args.root.resolve()
    failed = 0
    if args.run:
        failed = run_producers(root, (root / os.environ.get("FIGURES_DATA", DEFAULT_DATA)).resolve())
    code = update(root, check=args.check)
    return code or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
