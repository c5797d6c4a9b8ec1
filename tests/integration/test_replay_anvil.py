"""A short real-data replay on Anvil with the keeper as its own process (the main job, small)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keeper.marketdata.prices import align, load_price_csv, parse_utc
from keeper.replay.driver import Replay, ReplayOptions
from tests.conftest import data_file

pytestmark = pytest.mark.anvil


def black_thursday(start: str, end: str):
    eth = load_price_csv(data_file("eth_usdt_1h_binance_2018-01_2021-08.csv"))
    btc = load_price_csv(data_file("btc_usdt_1h_binance_2018-01_2021-08.csv"))
    return align({"ETH": eth, "BTC": btc}, parse_utc(start), parse_utc(end))


def test_black_thursday_replay_liquidates_in_time_and_reconciles(tmp_path):
    # the steepest hours of 2020-03-12: ETH 190 -> 110
    path = black_thursday("2020-03-12T06:00:00Z", "2020-03-13T04:00:00Z")
    report = Replay(ReplayOptions(path=path, accounts=40, seed=7, workdir=tmp_path)).run().data
    assert report["liquidations"] > 0
    assert report["missed_liquidations"] == 0
    assert report["max_blocks_to_liquidate"] <= 2
    assert report["vault_balances_reconcile"], report["reconciliation"]
    assert report["keeper"]["succeeded"] == report["liquidations"]
    assert report["keeper"]["failed"] == 0
    # cross margin nets basis trades and hedges: strictly less than margining each leg alone
    assert 0 < report["cross_margin_usd"] < report["isolated_margin_usd"]
    # the insurance fund only pays deficits; whatever it could not pay is bad debt
    assert report["insurance_fund_usd"] > 0 or report["bad_debt_usd"] > 0


def test_keeper_account_command_matches_the_contract(tmp_path):
    path = black_thursday("2020-03-12T00:00:00Z", "2020-03-12T04:00:00Z")
    replay = Replay(ReplayOptions(path=path, accounts=5, seed=1, workdir=tmp_path))
    try:
        users = replay.setup()
        out = subprocess.run(
            [sys.executable, "-m", "keeper", "account", users[0].address, "--rpc", replay.rpc_url, "--manifest", str(replay.manifest)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "keeper = contract" in out.stdout
        assert "maintenance margin" in out.stdout
    finally:
        replay.close()


def test_three_shards_and_one_stops_mid_crash(tmp_path):
    """Three keeper processes split the accounts (`keeper run --shard i/3`); shard 1 stops before
    the crash's worst hours and the next shard takes its accounts over after the takeover delay
    (2 blocks): nothing is missed, nothing fails, no bad debt, every vault balance reconciles."""
    path = black_thursday("2020-03-12T06:00:00Z", "2020-03-13T04:00:00Z")
    opts = ReplayOptions(path=path, accounts=40, seed=7, workdir=tmp_path, keepers=3, stop_keeper=(1, 4))
    report = Replay(opts).run().data
    assert report["keeper"]["keepers"] == 3 and report["keeper"]["keepers_stopped"] == 1
    assert report["liquidations"] > 0 and report["missed_liquidations"] == 0
    # first seen liquidatable, then the 2-block takeover delay, then mined in the next block
    assert report["max_blocks_to_liquidate"] <= 3
    assert report["keeper"]["succeeded"] == report["liquidations"] and report["keeper"]["failed"] == 0
    assert report["bad_debt_usd"] == 0
    assert report["vault_balances_reconcile"], report["reconciliation"]
    assert any("takeover:" in line for i in (0, 2) for line in (tmp_path / f"keeper-{i}.log").read_text().splitlines())
    # the stopped shard's accounts, on their own: taken over within the delay plus one block
    stopped = report["stopped_shards"]
    assert stopped["shards"] == [1] and stopped["liquidations"] > 0
    assert stopped["max_blocks_to_liquidate"] <= 3 and stopped["missed_liquidations"] == 0
    assert report["duplicate_sends"] == 0


def test_three_shards_send_each_liquidation_once(tmp_path):
    """Three shards all running: every liquidation in the block after the account became
    liquidatable, and no liquidation sent twice (duplicate_sends, counted from the chain)."""
    path = black_thursday("2020-03-12T06:00:00Z", "2020-03-13T04:00:00Z")
    report = Replay(ReplayOptions(path=path, accounts=40, seed=7, workdir=tmp_path, keepers=3)).run().data
    assert report["liquidations"] > 0 and report["missed_liquidations"] == 0
    assert report["max_blocks_to_liquidate"] <= 1
    assert report["duplicate_sends"] == 0 and report["liquidation_transactions"] == report["liquidations"]
    assert "stopped_shards" not in report
    # the state cache: after the first block each keeper re-reads only what the logs named
    assert report["keeper"]["accounts_read_last_block"] < report["accounts"]
