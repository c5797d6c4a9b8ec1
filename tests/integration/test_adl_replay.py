"""Auto-deleveraging end to end on Anvil: the steepest hours of Black Thursday with no insurance
fund and no backstop vault seeded (`--insurance-fund 0 --backstop 0`), so that only ADL stands
between the bankrupt accounts and bad debt. The same crash with the keeper's duty off
(tests/integration/test_replay_risk_report.py) ends in bad debt."""

from __future__ import annotations

import pytest

from keeper.replay.driver import Replay, ReplayOptions
from keeper.risk import adl
from keeper.units import WAD
from tests.integration.test_replay_anvil import black_thursday

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def replayed(replay_chain, tmp_path_factory):
    path = black_thursday("2020-03-12T06:00:00Z", "2020-03-13T04:00:00Z")
    workdir = tmp_path_factory.mktemp("adl")
    opts = ReplayOptions(
        path=path, accounts=40, seed=7, rpc=replay_chain, insurance_fund_usd=0, backstop_usd=0, workdir=workdir
    )
    replay = Replay(opts)
    return replay, replay.run().data, (workdir / "keeper.log").read_text()


def test_adl_alone_leaves_no_bad_debt_and_no_flat_account_loss(replayed):
    _, r, log = replayed
    assert r["insurance_fund_start_usd"] == 0 and r["backstop_seed_usd"] == 0
    assert r["adl_events"] > 0 and r["adl_notional_usd"] > 0
    assert r["bad_debt_usd"] == 0 and r["socialized_loss_usd"] == 0
    assert r["flat_account_losses_usd"] == 0 and r["flat_account_socialization_exposure_usd"] == 0
    assert r["missed_liquidations"] == 0 and r["vault_balances_reconcile"], r["reconciliation"]
    assert sum(row["adl_events"] for row in r["timeline"]) == r["adl_events"]
    assert "deleverage 0x" in log and "Traceback" not in log


def test_every_fill_is_within_the_counterpartys_profit_and_the_report_equals_the_chain(replayed):
    replay, r, _ = replayed
    client = replay.client
    engine = client.engine
    fills = engine.events.Deleveraged.get_logs(from_block=0, to_block="latest")
    assert len(fills) == r["adl_events"]
    notional = 0
    for ev in fills:
        a = ev["args"]
        # the counterparty's entry price before the call: its PositionChanged in the same
        # transaction keeps it (what it still holds keeps its entry)
        before = ev["blockNumber"] - 1
        entry = engine.functions.positions(a["counterparty"], a["market"]).call(block_identifier=before)[1]
        size = a["size"]
        if size > 0:  # the account was long: its short counterparty buys back at or below its entry
            assert a["price"] <= entry
        else:
            assert a["price"] >= entry
        assert a["score"] >= 0
        notional += abs(size) * a["price"] // WAD
    assert r["adl_notional_usd"] == pytest.approx(notional / WAD)


def test_every_fill_was_nominated_and_came_after_the_notice_in_score_order(replayed):
    """The keeper deleverages in rounds: each counterparty was nominated for that account and
    market, the call came at least `ADL_NOTICE` after the round opened, and each call's fills
    are by non-increasing score."""
    replay, _, log = replayed
    engine = replay.client.engine
    w3 = replay.client.w3
    nominated = {}
    for ev in engine.events.Nominated.get_logs(from_block=0, to_block="latest"):
        a = ev["args"]
        nominated.setdefault((a["account"], a["market"], a["counterparty"]), []).append(a["opened_at"])
    assert nominated and "nominate " in log
    calls: dict[str, list] = {}
    for ev in engine.events.Deleveraged.get_logs(from_block=0, to_block="latest"):
        calls.setdefault(ev["transactionHash"], []).append(ev)
    for evs in calls.values():
        a = evs[0]["args"]
        when = w3.eth.get_block(evs[0]["blockNumber"])["timestamp"]
        for ev in evs:
            opened = nominated[(ev["args"]["account"], ev["args"]["market"], ev["args"]["counterparty"])]
            assert any(o + adl.NOTICE <= when <= o + adl.NOTICE + adl.ROUND_TIME for o in opened), (a, when, opened)
        scores = [ev["args"]["score"] for ev in evs]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
