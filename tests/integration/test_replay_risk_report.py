"""The replay's risk-transfer figures and timeline, cross-checked against the chain they were
measured on: a short real-data crash with no insurance fund (`--insurance-fund 0`) on an Anvil
that outlives the replay, then withdrawals that socialization cuts, then the CLI's picture."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from keeper.replay.driver import Replay, ReplayOptions
from keeper.replay.timeline import flat_account_exposure, socialization
from keeper.units import WAD
from tests.integration.test_replay_anvil import black_thursday

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def replayed(replay_chain, tmp_path_factory):
    """The steepest hours of 2020-03-12 (ETH 174 -> 97), 40 accounts, no insurance fund, no
    backstop vault seeded (it would pay the deficits: tests/integration/test_backstop_replay.py
    covers the vault) and no auto-deleveraging, so the deficits stay as bad debt and the keeper
    takes the positions."""
    path = black_thursday("2020-03-12T06:00:00Z", "2020-03-13T04:00:00Z")
    opts = ReplayOptions(
        path=path,
        accounts=40,
        seed=7,
        rpc=replay_chain,
        insurance_fund_usd=0,
        backstop_usd=0,
        deleverage=False,  # no auto-deleveraging either (tests/integration/test_adl_replay.py has it)
        workdir=tmp_path_factory.mktemp("replay"),
    )
    replay = Replay(opts)
    report = replay.run().data
    return replay, report


def test_no_insurance_fund_leaves_bad_debt_that_no_flat_account_has_paid(replayed):
    replay, r = replayed
    assert r["insurance_fund_start_usd"] == 0
    assert r["liquidations"] > 0 and r["missed_liquidations"] == 0
    assert r["bad_debt_usd"] > 0  # the deficits the fund would have paid
    # nobody withdrew during the replay: nothing was socialized yet, nothing taken from flat accounts
    assert r["socialized_loss_usd"] == 0 and r["socialized_withdrawals"] == 0
    assert r["flat_account_losses_usd"] == 0
    assert r["adl_events"] == 0 and r["adl_notional_usd"] == 0 and r["not_yet"] == {}
    assert r["vault_balances_reconcile"], r["reconciliation"]


def test_figures_and_timeline_equal_the_chain(replayed):
    replay, r = replayed
    client = replay.client
    vault, oracle = client.vault.functions, client.oracle.functions
    timeline = r["timeline"]
    end = timeline[-1]["block"]
    assert r["insurance_fund_usd"] == vault.insurance_fund().call(block_identifier=end) / WAD
    assert r["bad_debt_usd"] == vault.bad_debt().call(block_identifier=end) / WAD
    assert len(timeline) == r["blocks"] + 1  # the block the keeper started on, then every replay block
    assert [row["block"] for row in timeline] == list(range(timeline[0]["block"], end + 1))
    assert sum(row["liquidations"] for row in timeline) == r["liquidations"]
    events = client.liquidations(timeline[0]["block"], end)
    keepers = [address for address, _ in replay.keeper_keys]
    makers = {m.address for m in replay.market_makers}
    backstop = client.backstop.address  # deployed, not seeded: it takes nothing
    users = sorted(client.discover_accounts(0, end) - makers - set(keepers) - {backstop})  # the population
    assert len(users) == r["accounts"]
    inventories, exposures = [], []
    for row in timeline:
        block = row["block"]
        assert row["liquidations"] == sum(ev["block"] == block for ev in events)
        assert row["insurance_fund_usd"] == vault.insurance_fund().call(block_identifier=block) / WAD
        assert row["bad_debt_usd"] == vault.bad_debt().call(block_identifier=block) / WAD
        index = oracle.index_prices().call(block_identifier=block)
        ids = client.deployment.price_ids
        assert row["prices"] == {s: index[ids[s]] / WAD for s in ("ETH", "BTC")}
        # the keeper's positions as the lens reads them at that block, at that block's index
        assert row["keeper_inventory_usd"] == gross_notional(client, keepers, block, index)
        inventories.append(gross_notional(client, keepers, block, index))
        # the backstop vault's: its positions and its equity as the engine reads them
        assert row["backstop_exposure_usd"] == gross_notional(client, [backstop], block, index)
        exposures.append(gross_notional(client, [backstop], block, index))
        assert (
            row["backstop_equity_usd"]
            == client.engine.functions.margin_summary(backstop).call(block_identifier=block)[0] / WAD
        )
        below = [s.equity < s.maintenance_margin for s in client.margin_summaries(users, block)]
        assert row["below_mm"] == sum(below)
    # the empty vault took nothing: the keeper holds every position it liquidated
    assert r["routed_liquidations"] == 0 and r["keeper_max_inventory_usd"] == max(inventories) > 0
    assert r["keeper_inventory_end_usd"] == inventories[-1]
    assert r["backstop_max_exposure_usd"] == max(exposures) == 0
    assert r["backstop_pnl_usd"] == timeline[-1]["backstop_equity_usd"] - r["backstop_seed_usd"] == 0
    assert any(row["below_mm"] for row in timeline)


def gross_notional(client, accounts: list[str], block: int, index) -> float:
    """USD: sum of |size| x the underlying's index at `block` over `accounts`' positions, as the
    lens reads them at that block."""
    underlying = client.market_states(block)
    price_id = client.risk_params(block).price_id
    total = sum(
        abs(p.size) * index[price_id[underlying[p.market].underlying]] // WAD
        for state in client.account_states(accounts, block)
        for p in state.positions
    )
    return total / WAD


def impersonate(w3, account: str) -> str:
    """Anvil sends `account`'s transactions unsigned, and gives it ETH for gas."""
    w3.provider.make_request("anvil_impersonateAccount", [account])
    w3.provider.make_request("anvil_setBalance", [account, hex(10**18)])
    return account


def usdc_withdrawal(replay, account: str, amount: int) -> int:
    """`account` (impersonated) withdraws `amount` USDC token units; returns the tokens received."""
    w3, usdc = replay.w3, replay.tokens[replay.opts.config.settlement_symbol]
    impersonate(w3, account)
    before = usdc.functions.balanceOf(account).call()
    tx = replay.client.vault.functions.withdraw(usdc.address, amount).transact({"from": account, "gas": 1_000_000})
    # read the balance once the withdrawal is in a block (under load the read can come first)
    block = w3.eth.wait_for_transaction_receipt(tx, timeout=60)["blockNumber"]
    return usdc.functions.balanceOf(account).call(block_identifier=block) - before


def test_socialization_of_withdrawals_is_measured_and_attributed(replayed):
    """After the replay, with bad debt outstanding: a market maker (holding positions) and a
    fresh account that never traded (flat) withdraw; socialization pays each less, and the
    figures attribute the flat account's share to flat_account_losses_usd."""
    replay, r = replayed
    client, w3 = replay.client, replay.w3
    usdc = replay.tokens[replay.opts.config.settlement_symbol]
    start = w3.eth.block_number + 1
    flat = impersonate(w3, w3.to_checksum_address("0x" + "77" * 20))
    deposit = 2_000_000 * 10**6
    usdc.functions.mint(flat, deposit).transact({"from": replay.admin})
    usdc.functions.approve(client.vault.address, deposit).transact({"from": flat})
    client.vault.functions.deposit(usdc.address, deposit).transact({"from": flat})
    holders = [flat, replay.market_makers[0].address]
    bad_debt = client.vault.functions.bad_debt().call()
    positive = client.vault.functions.total_positive_cash().call()
    exposure = flat_account_exposure(client, holders, w3.eth.block_number)
    assert exposure == bad_debt * deposit * 10**12 // positive / WAD > 0  # the maker holds positions: not counted

    amount = 1_000_000 * 10**6
    maker_got = usdc_withdrawal(replay, replay.market_makers[0].address, amount)
    flat_got = usdc_withdrawal(replay, flat, amount)
    assert 0 < amount - maker_got and 0 < amount - flat_got  # both paid less
    figures = socialization(client, start, w3.eth.block_number, client.deployment.deploy_block)
    assert figures["socialized_withdrawals"] == 2
    retired = client.vault.events.BadDebtRetired.get_logs(from_block=start, to_block=w3.eth.block_number)
    assert figures["socialized_loss_usd"] == sum(log["args"]["amount"] for log in retired) / WAD
    # what the flat account was not paid, as retired bad debt (WAD), to one token unit
    assert abs(figures["flat_account_losses_usd"] * WAD - (amount - flat_got) * 10**12) <= 10**12 + 10**6
    assert figures["flat_account_losses_usd"] < figures["socialized_loss_usd"]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_cli_draws_the_picture_beside_the_report(replay_chain, tmp_path):
    report = tmp_path / "out" / "crash.json"
    out = subprocess.run(
        [sys.executable, "-m", "keeper", "replay", "--rpc", replay_chain, "--steps", "6", "--accounts", "6",
         "--insurance-fund", "250000", "--report", str(report)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    picture = tmp_path / "out" / "crash.png"
    assert f"picture written to {picture}" in " ".join(out.stdout.split())
    assert png_size(picture) == (1100, 1200) and picture.stat().st_size > 20_000
    for row in ("insurance fund (start)", "$250,000.00", "flat-account losses", "keeper max inventory", "ADL events"):
        assert row in out.stdout
