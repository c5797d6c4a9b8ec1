"""What a replay records block by block (the report's `timeline`), and the risk-transfer figures
measured from it and from the chain's events: the keeper's inventory, what socialization of bad
debt took from withdrawals, and what of that fell on accounts holding no position.

Per block the driver already knows the accounts below maintenance margin (it reads every
account's margin summary to time liquidations); `TimelineRecorder.record` adds one JSON-RPC batch
of three `eth_call`s pinned to the block (the oracle's index prices, the vault's insurance fund
and bad debt), plus a fourth with a backstop vault (the engine's margin summary of the backstop
vault: its equity), whose cost does not depend on the number of accounts. Liquidations per
block, the keeper's inventory and the backstop vault's exposure come after the replay from event
logs (one `eth_getLogs` per event kind), so the replay's blocks carry no extra work for them.

Figures that need a contract the deployment lacks (a backstop vault) are present as None with
the reason in `not_yet`, so that readers of the report can rely on the keys.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from eth_abi.abi import decode

from keeper.risk import unwind
from keeper.units import WAD

# one position change: (block, log index, account, ("engine" | "option", market or series id),
# new signed WAD size)
Change = tuple[int, int, str, tuple[str, int], int]

# the backstop vault's keys when the deployment has none (config without `backstop_vault:`)
NO_BACKSTOP = {
    "backstop_pnl_usd": "the deployment has no backstop vault",
    "backstop_max_exposure_usd": "the deployment has no backstop vault",
}


@dataclass
class TimelineRow:
    """One replay block. `timestamp`: unix seconds of the price path step whose prices the block
    published (the tail blocks after the last step: that step's time plus the chain time since).
    `prices`: USD per unit by symbol, the oracle's index at the block. `below_mm`: accounts of
    the population with equity < maintenance margin at the end of the block. `insurance_fund_usd`,
    `bad_debt_usd`: the vault's at the end of the block. `backstop_equity_usd`: the backstop
    vault's equity as its depositors own it (`MarginEngine.margin_summary(vault).equity` plus
    `CollateralVault.sale_markup(vault)`: what `BackstopVault.totalAssets` counts), None without
    a vault.
    `prices_wad`: the oracle's index prices by price id (WAD), for valuing positions; not in
    the report."""

    block: int
    timestamp: int
    prices: dict[str, float]
    below_mm: int
    insurance_fund_usd: float
    bad_debt_usd: float
    prices_wad: tuple[int, ...] = field(default=(), repr=False)
    backstop_equity_usd: float | None = None

    def as_dict(
        self,
        liquidations: int,
        keeper_inventory_usd: float,
        backstop_exposure_usd: float | None = None,
        adl_events: int = 0,
    ) -> dict[str, Any]:
        """The report's timeline entry; `backstop_exposure_usd`: the vault's gross position
        notional at the block's index (None without a vault); `adl_events`: Deleveraged events
        (one per counterparty) mined in the block."""
        return {
            "block": self.block,
            "timestamp": self.timestamp,
            "prices": self.prices,
            "below_mm": self.below_mm,
            "liquidations": liquidations,
            "adl_events": adl_events,
            "insurance_fund_usd": self.insurance_fund_usd,
            "bad_debt_usd": self.bad_debt_usd,
            "keeper_inventory_usd": keeper_inventory_usd,
            "backstop_equity_usd": self.backstop_equity_usd,
            "backstop_exposure_usd": backstop_exposure_usd,
        }


class TimelineRecorder:
    """Records a `TimelineRow` per replay block with one batched read (see the module notice),
    and the wall time each record took (`record_ms`, milliseconds)."""

    def __init__(self, client: Any, symbols: Sequence[str]):
        """`client`: a ProtocolClient; with a backstop vault (`client.backstop`) each record
        also reads its equity."""
        self.client = client
        self.w3 = client.w3
        ids = client.deployment.price_ids
        self.symbols = {s: ids[s] for s in symbols if s in ids}
        self._calls = [
            (client.oracle.address, client.oracle.functions.index_prices()._encode_transaction_data(), "uint256[]"),
            (client.vault.address, client.vault.functions.insurance_fund()._encode_transaction_data(), "uint256"),
            (client.vault.address, client.vault.functions.bad_debt()._encode_transaction_data(), "uint256"),
        ]
        backstop = getattr(client, "backstop", None)
        self.backstop: str | None = None if backstop is None else backstop.address
        if self.backstop is not None:
            summary = client.engine.functions.margin_summary(self.backstop)._encode_transaction_data()
            self._calls.append((client.engine.address, summary, "(int256,uint256,uint256,uint256)"))
            markup = client.vault.functions.sale_markup(self.backstop)._encode_transaction_data()
            self._calls.append((client.vault.address, markup, "uint256"))
        self.rows: list[TimelineRow] = []
        self.record_ms: list[float] = []
        self.after_ms: float | None = None  # the figures measured after the replay (risk_figures)

    def read(self, block: int) -> tuple[tuple[int, ...], int, int, int | None]:
        """(index prices by price id, insurance fund, bad debt, backstop vault equity or None),
        WAD, at `block`: one JSON-RPC batch. Raises RuntimeError naming the call that failed."""
        requests = [("eth_call", [{"to": to, "data": data}, hex(block)]) for to, data, _ in self._calls]
        answers = self.w3.provider.make_batch_request(requests)
        if not isinstance(answers, list) or len(answers) != len(requests):
            raise RuntimeError(f"the node answered a batch of {len(requests)} eth_calls with {answers!r:.200}")
        values = []
        for (_, _, kind), answer in zip(self._calls, answers):
            if "error" in answer or "result" not in answer:
                raise RuntimeError(f"eth_call at block {block} failed: {answer.get('error', answer)!r:.200}")
            raw = answer["result"]
            values.append(decode([kind], bytes.fromhex(raw[2:] if raw.startswith("0x") else raw))[0])
        prices, insurance, bad_debt = values[:3]
        # the depositors' equity (`BackstopVault.totalAssets` before rounding to token units)
        equity = int(values[3][0]) + int(values[4]) if len(values) > 3 else None
        return tuple(int(p) for p in prices), int(insurance), int(bad_debt), equity

    def record(self, block: int, timestamp: int, below_mm: int) -> TimelineRow:
        started = time.perf_counter()
        prices, insurance, bad_debt, equity = self.read(block)
        row = TimelineRow(
            block=block,
            timestamp=int(timestamp),
            prices={s: prices[i] / WAD for s, i in self.symbols.items()},
            below_mm=int(below_mm),
            insurance_fund_usd=insurance / WAD,
            bad_debt_usd=bad_debt / WAD,
            prices_wad=prices,
            backstop_equity_usd=None if equity is None else equity / WAD,
        )
        self.rows.append(row)
        self.record_ms.append((time.perf_counter() - started) * 1000)
        return row

    def overhead(self) -> dict[str, float | None]:
        """Milliseconds the recording took: per block (median, max, total over the replay) and
        once after the replay (`risk_figures`: event logs, the end-of-replay reads)."""
        ms = self.record_ms
        return {
            "per_block_median": round(statistics.median(ms), 3) if ms else None,
            "per_block_max": round(max(ms), 3) if ms else None,
            "per_block_total": round(sum(ms), 1),
            "after_replay": None if self.after_ms is None else round(self.after_ms, 1),
        }


# ---------------------------------------------------------------- positions from events


def _logs(event: Any, from_block: int, to_block: int, accounts: Sequence[str] | None = None) -> list[Any]:
    filters = {"account": list(accounts)} if accounts is not None else None
    logs = event.get_logs(from_block=from_block, to_block=to_block, argument_filters=filters)
    return sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))


def position_logs(client: Any, accounts: Sequence[str], from_block: int, to_block: int) -> list[Change]:
    """Every position change of `accounts` in [from_block, to_block], in chain order:
    (block, log index, account, ("engine" | "option", market or series id), new signed WAD size),
    from PositionChanged (engine) and OptionPositionChanged (option market) events."""
    if not accounts:
        return []
    out: list[Change] = [
        (
            log["blockNumber"],
            log["logIndex"],
            log["args"]["account"],
            ("engine", log["args"]["market"]),
            log["args"]["size"],
        )
        for log in _logs(client.engine.events.PositionChanged, from_block, to_block, accounts)
    ]
    if client.options is not None:
        out += [
            (log["blockNumber"], log["logIndex"], log["args"]["account"], ("option", log["args"]["series"]), log["args"]["size"])
            for log in _logs(client.options.events.OptionPositionChanged, from_block, to_block, accounts)
        ]  # fmt: skip
    return sorted(out, key=lambda c: (c[0], c[1]))


def deleverage_logs(client: Any, from_block: int, to_block: int) -> list[Any]:
    """The engine's Deleveraged events in [from_block, to_block], in chain order (one per
    counterparty a `deleverage` closed against)."""
    return _logs(client.engine.events.Deleveraged, from_block, to_block)


def adl_figures(logs: Sequence[Any]) -> dict[str, Any]:
    """`adl_events` (Deleveraged events: one per counterparty closed against) and
    `adl_notional_usd` (sum of |size| x price over them, USD)."""
    return {
        "adl_events": len(logs),
        "adl_notional_usd": sum(abs(int(log["args"]["size"])) * int(log["args"]["price"]) // WAD for log in logs) / WAD,
    }


def price_ids(client: Any, block: int) -> dict[tuple[str, int], int]:
    """("engine", market id) and ("option", series id) -> the oracle price id of its underlying."""
    underlying_price = list(client.risk_params(block).price_id)
    out: dict[tuple[str, int], int] = {
        ("engine", m): int(underlying_price[s.underlying]) for m, s in enumerate(client.market_states(block))
    }
    out.update({("option", s.series_id): int(s.price_id) for s in client.option_series(block)})
    return out


def inventory_by_block(
    changes: Iterable[Change], rows: Sequence[TimelineRow], instrument_price: dict[tuple[str, int], int]
) -> list[float]:
    """Gross notional (USD) of the positions `changes` build, at the end of each row's block,
    at that block's index prices: sum over positions of |size| x index of the underlying (an
    option position counts the underlying it controls). `changes` as `position_logs` gives them."""
    pending = sorted(changes, key=lambda c: (c[0], c[1]))
    sizes: dict[tuple[str, tuple[str, int]], int] = {}
    out: list[float] = []
    i = 0
    for row in rows:
        while i < len(pending) and pending[i][0] <= row.block:
            _, _, account, instrument, size = pending[i]
            sizes[(account, instrument)] = int(size)
            i += 1
        total = 0
        for (_, instrument), size in sizes.items():
            price_id = instrument_price.get(instrument)
            if size and price_id is not None and price_id < len(row.prices_wad):
                total += abs(size) * row.prices_wad[price_id] // WAD
        out.append(total / WAD)
    return out


def inventory_age_by_block(
    changes: Iterable[Change], rows: Sequence[TimelineRow], instrument_price: dict[tuple[str, int], int]
) -> list[int]:
    """At the end of each row's block, how many blocks the oldest part of the positions
    `changes` build that is still held has been held at the end of (first in, first out:
    `keeper.risk.unwind.update_lots`, `keeper.risk.unwind.age` at that block's index; 1: taken
    in that block, 0: flat or dust)."""
    pending = sorted(changes, key=lambda c: (c[0], c[1]))
    lots: dict[tuple[str, tuple[str, int]], list[unwind.Lot]] = {}
    out: list[int] = []
    i = 0
    for row in rows:
        while i < len(pending) and pending[i][0] <= row.block:
            block, _, account, instrument, size = pending[i]
            key = (account, instrument)
            lots[key] = unwind.update_lots(lots.get(key, []), int(size), block)
            i += 1
        ages = [
            unwind.age(held, row.block, row.prices_wad[instrument_price[instrument]])
            for (_, instrument), held in lots.items()
            if instrument_price.get(instrument, len(row.prices_wad)) < len(row.prices_wad)
        ]
        out.append(max(ages, default=0))
    return out


def flat_before(changes: Sequence[Change], account: str, block: int, log_index: int) -> bool:
    """Whether `account` held no position just before the log at (`block`, `log_index`), from
    its position changes (`position_logs`, which must cover the account from its first one)."""
    sizes: dict[tuple[str, int], int] = {}
    for b, i, who, instrument, size in changes:
        if (b, i) >= (block, log_index):
            break
        if who == account:
            sizes[instrument] = int(size)
    return not any(sizes.values())


# ---------------------------------------------------------------- socialization


def socialization(client: Any, from_block: int, to_block: int, first_block: int) -> dict[str, Any]:
    """What pro-rata socialization of bad debt took from withdrawals in [from_block, to_block]:
    the vault's `BadDebtRetired(amount, by_withdrawal=True)` events, each attributed to the account
    of the `Withdraw` event of its transaction. Returns `socialized_loss_usd` (their sum: the bad
    debt retired by paying withdrawals less, WAD USD as float; a last withdrawal that clears the
    debt may withhold up to one token unit more than it retires), `flat_account_losses_usd` (the
    part withheld from accounts with no engine or option position just before the withdrawal,
    from their position events since `first_block`), and `socialized_withdrawals` (how many)."""
    vault = client.vault
    retired = [
        log
        for log in _logs(vault.events.BadDebtRetired, from_block, to_block)
        if log["args"]["by_withdrawal"] and log["args"]["amount"]
    ]
    total = flat = 0
    withdrawals = _logs(vault.events.Withdraw, from_block, to_block) if retired else []
    by_tx: dict[bytes, list[Any]] = defaultdict(list)
    for log in withdrawals:
        by_tx[bytes(log["transactionHash"])].append(log)
    accounts = sorted({log["args"]["account"] for log in withdrawals})
    changes = position_logs(client, accounts, first_block, to_block)
    for log in retired:
        amount = int(log["args"]["amount"])
        total += amount
        # the Withdraw event the vault logs after this BadDebtRetired, in the same transaction
        after = [w for w in by_tx.get(bytes(log["transactionHash"]), []) if w["logIndex"] > log["logIndex"]]
        if not after:
            continue
        if flat_before(changes, after[0]["args"]["account"], log["blockNumber"], log["logIndex"]):
            flat += amount
    return {
        "socialized_loss_usd": total / WAD,
        "flat_account_losses_usd": flat / WAD,
        "socialized_withdrawals": len(retired),
    }


def flat_account_exposure(client: Any, holders: Sequence[str], block: int) -> float:
    """USD the vault's socialization rule would withhold from accounts holding no position if
    they withdrew all their positive cash at `block`: bad debt x their positive cash / total
    positive cash. Not a loss yet (0 while no bad debt is outstanding)."""
    v = client.vault.functions
    bad_debt = v.bad_debt().call(block_identifier=block)
    positive = v.total_positive_cash().call(block_identifier=block)
    if bad_debt == 0 or positive == 0 or not holders:
        return 0.0
    states = client.account_states(list(holders), block)
    options = client.option_positions(list(holders), block)
    flat_cash = sum(max(s.cash, 0) for s, o in zip(states, options) if not s.positions and not o)
    return float(int(bad_debt) * flat_cash // int(positive) / WAD)


def backstop_figures(equity_end: int, seed_usd: float, exposure: Sequence[float | None]) -> dict[str, Any]:
    """The report's backstop vault figures: `backstop_seed_usd` (USD the replay deposited),
    `backstop_equity_end_usd` (its depositors' equity at the end, `equity_end` WAD USD: the
    collateral it bought at its sale price), `backstop_pnl_usd`
    (that equity minus the seed: the liquidation gains it kept less what the positions it took
    over lost, USD) and `backstop_max_exposure_usd` (the largest of `exposure`, the gross
    notional of its positions at each block's index, USD; 0 when it took none)."""
    return {
        "backstop_seed_usd": float(seed_usd),
        "backstop_pnl_usd": equity_end / WAD - float(seed_usd),
        "backstop_max_exposure_usd": max((e for e in exposure if e is not None), default=0.0),
        "backstop_equity_end_usd": equity_end / WAD,
    }


def risk_figures(
    client: Any,
    recorder: TimelineRecorder,
    liquidations: Sequence[dict[str, Any]],
    keepers: Sequence[str],
    holders: Sequence[str],
    start_block: int,
    end_block: int,
    first_block: int,
    backstop_seed_usd: float = 0.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report's risk-transfer figures and its `timeline` (one dict per recorded block, with
    the liquidations mined in that block and the keepers' inventory at its end).

    Figures: `socialized_loss_usd`, `flat_account_losses_usd`, `socialized_withdrawals` (see
    `socialization`), `flat_account_socialization_exposure_usd` (see `flat_account_exposure`,
    at `end_block`), `keeper_max_inventory_usd` (largest gross notional of the keeper accounts'
    own positions at the end of any recorded block, USD at that block's index),
    `keeper_max_inventory_age_blocks` (the longest the keepers held a part of it, first in first
    out: `inventory_age_by_block`), with a backstop
    vault `backstop_seed_usd` (what the replay deposited in it), `backstop_pnl_usd` (its equity
    at `end_block` minus the seed) and `backstop_max_exposure_usd` (the largest gross notional
    of its positions at the end of any recorded block, at that block's index; as the keeper's
    inventory), `adl_events` and `adl_notional_usd` (`adl_figures`), and without a vault the keys of
    `NO_BACKSTOP` as None with `not_yet` giving why. `first_block`: where position events start (the deployment's first
    block)."""
    started = time.perf_counter()
    rows = recorder.rows
    per_block: dict[int, int] = defaultdict(int)
    for ev in liquidations:
        per_block[int(ev["block"])] += 1
    instruments = price_ids(client, end_block)
    changes = position_logs(client, list(keepers), first_block, end_block)
    inventory = inventory_by_block(changes, rows, instruments) if rows else []
    adl_logs = deleverage_logs(client, start_block + 1, end_block)
    adl_per_block: dict[int, int] = defaultdict(int)
    for log in adl_logs:
        adl_per_block[int(log["blockNumber"])] += 1
    vault = recorder.backstop
    not_yet = {} if vault is not None else dict(NO_BACKSTOP)
    exposure: list[float | None] = [None] * len(rows)
    backstop: dict[str, Any] = {key: None for key in NO_BACKSTOP}
    if vault is not None:
        exposure = list(inventory_by_block(position_logs(client, [vault], first_block, end_block), rows, instruments))
        equity = client.engine.functions.margin_summary(vault).call(block_identifier=end_block)[0]
        equity += client.vault.functions.sale_markup(vault).call(block_identifier=end_block)
        backstop = backstop_figures(int(equity), backstop_seed_usd, exposure)
    figures: dict[str, Any] = {
        **socialization(client, start_block + 1, end_block, first_block),
        "flat_account_socialization_exposure_usd": flat_account_exposure(client, holders, end_block),
        "keeper_max_inventory_usd": max(inventory, default=0.0),
        "keeper_inventory_end_usd": inventory[-1] if inventory else 0.0,
        "keeper_max_inventory_age_blocks": max(inventory_age_by_block(changes, rows, instruments), default=0),
        **backstop,
        **adl_figures(adl_logs),
        "not_yet": not_yet,
    }
    timeline = [
        row.as_dict(per_block.get(row.block, 0), inv, exp, adl_per_block.get(row.block, 0))
        for row, inv, exp in zip(rows, inventory, exposure)
    ]
    recorder.after_ms = (time.perf_counter() - started) * 1000
    return figures, timeline
