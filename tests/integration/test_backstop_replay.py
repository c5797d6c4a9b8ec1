"""The keeper with a backstop vault, on Anvil (short: it runs in CI). A gradual synthetic fall
(ETH and BTC about -30% over 14 blocks) liquidates accounts while they still have equity. Seeded,
the vault takes every liquidation, those that sell collateral included, and the keeper ends with
no inventory; unseeded (`--backstop 0`), the vault can take none (no equity) and the
keeper liquidates everything directly and unwinds what it takes against the market makers'
quotes (keeper.unwind). Latency is the same both ways."""

from __future__ import annotations

import re

import pytest

from keeper.marketdata.prices import synthetic_path
from keeper.replay import quotes
from keeper.replay.driver import Replay, ReplayOptions
from keeper.risk import unwind

pytestmark = pytest.mark.anvil

UNWOUND = re.compile(r"unwind: (sell|buy) [0-9.]+ of market \d+ at ([0-9.]+) \(index ([0-9.]+)\)")
FALLBACK = re.compile(r"backstop vault cannot take (0x[0-9a-fA-F]{40}) \((.*)\); liquidating it directly")


def gradual():
    return synthetic_path(steps=20, seed=7, crash_at=0.1, crash_depth=0.3, crash_len=0.7, vol_per_step=0.001)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[dict, list[str]]]:
    """backstop USD -> (report, keeper log lines)."""
    out = {}
    for usd in (2_000_000, 0):
        workdir = tmp_path_factory.mktemp(f"backstop-{usd}")
        opts = ReplayOptions(path=gradual(), accounts=30, seed=7, workdir=workdir, backstop_usd=usd)
        out[usd] = (Replay(opts).run().data, (workdir / "keeper.log").read_text().splitlines())
    return out


def fallbacks(lines: list[str]) -> list[tuple[str, str]]:
    return [m.groups() for line in lines if (m := FALLBACK.search(line))]


def test_a_seeded_vault_takes_the_liquidations_and_the_keeper_holds_little(runs):
    report, log = runs[2_000_000]
    assert report["liquidations"] > 10 and report["missed_liquidations"] == 0
    assert report["keeper"]["succeeded"] == report["liquidations"] and report["keeper"]["failed"] == 0
    # all go to the vault: the keeper needs no inventory
    assert report["routed_liquidations"] == report["liquidations"], fallbacks(log)
    assert report["keeper_max_inventory_usd"] == 0 and not fallbacks(log)
    # mined in the block after the one the account became liquidatable in, as direct
    assert report["max_blocks_to_liquidate"] <= 1 and report["duplicate_sends"] == 0
    assert report["backstop_seed_usd"] == 2_000_000 and report["backstop_max_exposure_usd"] > 0
    assert report["backstop_pnl_usd"] == report["backstop_equity_end_usd"] - 2_000_000
    # the seeded vault pays every deficit whole: nothing is deleveraged
    assert report["not_yet"] == {} and report["adl_events"] == 0
    assert report["timeline"][-1]["backstop_equity_usd"] == pytest.approx(report["backstop_equity_end_usd"])
    assert report["vault_balances_reconcile"], report["reconciliation"]
    unseeded, _ = runs[0]
    assert unseeded["keeper_max_inventory_usd"] > 0


def test_an_empty_vault_leaves_the_liquidations_to_the_keeper(runs):
    report, log = runs[0]
    seeded, _ = runs[2_000_000]
    assert report["liquidations"] == seeded["liquidations"] and report["missed_liquidations"] == 0
    assert report["routed_liquidations"] == 0 and report["direct_liquidations"] == report["liquidations"]
    assert report["max_blocks_to_liquidate"] <= 1
    assert report["keeper_max_inventory_usd"] > 0 and report["backstop_max_exposure_usd"] == 0
    assert report["backstop_seed_usd"] == 0 and report["backstop_pnl_usd"] == 0
    named = fallbacks(log)
    # once per account (and liquidatable episode), never once per attempt
    assert {account for account, _ in named} and len(named) <= report["liquidations"]
    assert all("liquidator below IM" in why or "backstop: full" in why for _, why in named), named


def test_the_keeper_unwinds_what_it_takes_within_the_bound(runs):
    """Without the vault the keeper takes every liquidation itself; against the market makers'
    quotes it closes each position in the next block, within the slippage bound (the default
    50 bps; the makers quote 10 bps off the index), down to less than one quote lot a market."""
    report, log = runs[0]
    assert report["keeper_max_inventory_usd"] > 10_000
    assert report["keeper"]["unwinds_succeeded"] == report["keeper"]["unwinds_sent"] > 0
    # taken in block N, closed in N + 1: held at the end of one block
    assert report["keeper_max_inventory_age_blocks"] == 1
    assert report["keeper_inventory_end_usd"] <= 4 * unwind.DUST_USD
    fills = [m.groups() for line in log if (m := UNWOUND.search(line))]
    assert len(fills) == report["keeper"]["unwinds_sent"]
    for side, price, index in fills:
        worse = (float(index) - float(price)) if side == "sell" else (float(price) - float(index))
        assert 0 <= worse <= float(index) * (quotes.SPREAD_BPS + 1) / 10_000, (side, price, index)
    seeded, _ = runs[2_000_000]
    assert seeded["keeper"]["unwinds_sent"] == 0
