"""The keeper with a backstop vault, on Anvil with real Black Thursday prices (short: it runs in
CI). Seeded, the vault takes every liquidation: the keeper ends with no inventory and liquidates
as fast as it does directly; unseeded (`--backstop 0`), the vault cannot take any (no equity) and
the keeper falls back to direct liquidations, saying so once per account."""

from __future__ import annotations

import pytest

from keeper.replay.driver import Replay, ReplayOptions
from tests.integration.test_replay_anvil import black_thursday

pytestmark = pytest.mark.anvil

# the steepest hours of 2020-03-12 (ETH 190 -> 110)
WINDOW = ("2020-03-12T06:00:00Z", "2020-03-12T16:00:00Z")


def run(tmp_path, backstop_usd: int) -> dict:
    opts = ReplayOptions(path=black_thursday(*WINDOW), accounts=30, seed=7, workdir=tmp_path, backstop_usd=backstop_usd)
    return Replay(opts).run().data


def test_a_seeded_vault_takes_every_liquidation_and_the_keeper_holds_nothing(tmp_path):
    report = run(tmp_path, 2_000_000)
    assert report["liquidations"] > 0 and report["missed_liquidations"] == 0
    assert report["routed_liquidations"] == report["liquidations"] and report["direct_liquidations"] == 0
    assert report["keeper"]["succeeded"] == report["liquidations"] and report["keeper"]["failed"] == 0
    # mined in the block after the one the account became liquidatable in, as direct
    assert report["max_blocks_to_liquidate"] <= 1
    assert report["keeper_max_inventory_usd"] == 0 and report["keeper_inventory_end_usd"] == 0
    assert report["backstop_seed_usd"] == 2_000_000 and report["backstop_max_exposure_usd"] > 0
    assert report["backstop_pnl_usd"] == report["backstop_equity_end_usd"] - 2_000_000
    assert "backstop_pnl_usd" not in report["not_yet"] and "adl_events" in report["not_yet"]
    assert report["timeline"][-1]["backstop_equity_usd"] == pytest.approx(report["backstop_equity_end_usd"])
    assert report["vault_balances_reconcile"], report["reconciliation"]
    assert report["duplicate_sends"] == 0


def test_an_empty_vault_leaves_the_liquidations_to_the_keeper(tmp_path):
    report = run(tmp_path, 0)
    assert report["liquidations"] > 0 and report["missed_liquidations"] == 0
    assert report["routed_liquidations"] == 0 and report["direct_liquidations"] == report["liquidations"]
    assert report["max_blocks_to_liquidate"] <= 1
    assert report["keeper_max_inventory_usd"] > 0 and report["backstop_max_exposure_usd"] == 0
    assert report["backstop_pnl_usd"] == 0
    log = (tmp_path / "keeper.log").read_text().splitlines()
    fallbacks = [line for line in log if "backstop vault cannot take" in line]
    # one line per account (and liquidatable episode), never one per attempt
    assert 0 < len(fallbacks) <= report["liquidations"]
    assert len({line.split("cannot take ")[1].split(" ")[0] for line in fallbacks}) == report["liquidated_accounts"]
