"""The bot's money decisions against hand calculations, and its skip / missed-liquidation logic
with fake chain objects."""

from __future__ import annotations

import io
import json
import logging
import urllib.request

import pytest
from web3.exceptions import ContractLogicError

from keeper.bot import Liquidator, expected_reward, gas_cost_usd, liquidation_key
from keeper.chain.client import LiquidationTerms, ProtocolLog
from keeper.chain.event_index import ScanResult
from keeper.chain.follower import BlockRef, HeadUpdate
from keeper.chain.anvil import free_port
from keeper.logs import setup_logging
from keeper.metrics import KeeperMetrics
from keeper.txmanager import Outcome

WAD = 10**18
GWEI = 10**9


def test_expected_reward_hand_calculations():
    # $100,000 closed at 2 % = $2,000 penalty, half to the liquidator
    assert expected_reward(100_000 * WAD, 50_000 * WAD, 2 * 10**16, WAD // 2) == 1_000 * WAD
    # the penalty never exceeds the account's equity: $500 -> $250
    assert expected_reward(100_000 * WAD, 500 * WAD, 2 * 10**16, WAD // 2) == 250 * WAD
    # no equity left: no penalty
    assert expected_reward(100_000 * WAD, -1, 2 * 10**16, WAD // 2) == 0
    # penalty rounds up (the contract's mul_div_up), the share rounds down: 1 wei -> 1 wei -> 0
    assert expected_reward(1, WAD, 2 * 10**16, WAD // 2) == 0
    assert expected_reward(1, WAD, 2 * 10**16, WAD) == 1


def test_gas_cost_hand_calculation():
    # 300,000 gas x 3 gwei = 0.0009 ETH; at $2,000 = $1.80
    assert gas_cost_usd(300_000, 3 * GWEI, 2_000 * WAD) == 18 * WAD // 10
    assert gas_cost_usd(1, 1, 1) == 1  # rounds up


def test_penalty_rate_ramp_mirrors_the_contract():
    terms = LiquidationTerms(penalty=2 * 10**16, max_penalty=25 * 10**15, ramp_seconds=3600, liquidator_share=WAD // 2)
    assert terms.penalty_rate(0, 10_000) == 2 * 10**16  # never flagged
    assert terms.penalty_rate(1000, 1000 + 1800) == 225 * 10**14  # half the ramp: 2.25 %
    assert terms.penalty_rate(1000, 1000 + 5000) == 25 * 10**15  # ramp done: 2.5 %
    assert terms.penalty_rate(1000, 1000 + 7200) == 2 * 10**16  # a flag two ramps old earns nothing
    assert terms.penalty_rate(1000, 1000 + 1) == 2 * 10**16 + 5 * 10**15 // 3600  # rounds down


class FakeCall:
    def __init__(self, notional, gas, revert=None):
        self.notional, self.gas, self.revert = notional, gas, revert

    def call(self, *a, **k):
        if self.revert:
            raise ContractLogicError(f"execution reverted: {self.revert}", data="0x")
        return self.notional

    def estimate_gas(self, *a, **k):
        return self.gas


class FakeTx:
    address = "0xKEEPER"

    def __init__(self):
        self.sent = []

    def send(self, call, gas, key):
        self.sent.append(key)
        return "0x" + "ab" * 32


class FakeClient:
    def __init__(self, call):
        self._call = call
        engine = type("E", (), {})()
        engine.functions = type("F", (), {"liquidate": lambda _self, account: call})()
        self.engine = engine

    def liquidatable_since(self, account, block):
        return 0


def bot_with(call, **kw) -> tuple[Liquidator, FakeTx]:
    tx = FakeTx()
    bot = Liquidator(FakeClient(call), tx, index=None, follower=None, metrics=KeeperMetrics(), **kw)
    bot._terms = LiquidationTerms(2 * 10**16, 2 * 10**16, 3600, WAD // 2)
    return bot, tx


HEAD = BlockRef(10, "0x01", "0x00", 1000, base_fee=1 * GWEI)
ETH = 2_000 * WAD


def test_profitable_liquidation_is_sent():
    # reward $1,000 vs gas 300k x 3 gwei x $2,000 = $1.80
    bot, tx = bot_with(FakeCall(100_000 * WAD, 300_000), min_profit_usd=10)
    bot._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == ["liquidate:0xA"] and bot.metrics.value("keeper_liquidations_sent_total") == 1


def test_unprofitable_liquidation_is_skipped_and_counted(caplog):
    # $100 closed: reward $1.00 < gas $1.80
    bot, tx = bot_with(FakeCall(100 * WAD, 300_000), min_profit_usd=0)
    with caplog.at_level(logging.INFO, logger="keeper.bot"):
        bot._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == [] and bot.metrics.value("keeper_liquidations_skipped_total", reason="unprofitable") == 1
    assert "reward 1.00 USD <= gas 1.80 USD x 1.25 + min profit 0.00 USD = 2.25 USD" in caplog.text


def test_always_sends_everything_liquidatable():
    bot, tx = bot_with(FakeCall(100 * WAD, 300_000), min_profit_usd=None)  # min_profit_usd: always
    bot._liquidate("0xA", -5 * WAD, HEAD, ETH)  # bad debt: no reward, sent anyway
    assert tx.sent == ["liquidate:0xA"]


def test_reverting_simulation_is_skipped_as_unsafe():
    bot, tx = bot_with(FakeCall(0, 0, revert="engine: liquidator below IM"))
    bot._liquidate("0xA", 0, HEAD, ETH)
    assert tx.sent == [] and bot.metrics.value("keeper_liquidations_skipped_total", reason="unsafe") == 1


def test_base_fee_above_the_cap_is_skipped():
    bot, tx = bot_with(FakeCall(100_000 * WAD, 300_000), max_fee_per_gas=20 * GWEI)
    bot._liquidate("0xA", 50_000 * WAD, BlockRef(10, "0x01", "0x00", 1000, base_fee=50 * GWEI), ETH)
    assert tx.sent == [] and bot.metrics.value("keeper_liquidations_skipped_total", reason="fee_cap") == 1


def test_missed_liquidation_counted_once_per_episode():
    bot, _ = bot_with(FakeCall(0, 0), missed_after_blocks=3)
    for block in range(100, 106):  # liquidatable from 100 to 105, nobody liquidates
        bot._track_episodes(["0xA"], block)
    assert bot.stats.missed == 1 and bot.metrics.value("keeper_missed_liquidations_total") == 1
    bot._track_episodes([], 106)  # recovered
    for block in range(107, 110):  # a new episode, not yet past N blocks
        bot._track_episodes(["0xA"], block)
    assert bot.stats.missed == 1


def test_metrics_endpoint_serves_the_issue_metrics():
    metrics = KeeperMetrics()
    port = free_port()
    server, _ = metrics.serve(port)
    try:
        metrics.sent.inc()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    for name in (
        "keeper_accounts_tracked", "keeper_accounts_liquidatable", "keeper_liquidations_sent_total 1.0",
        "keeper_liquidations_succeeded_total", "keeper_liquidations_failed_total", 'keeper_liquidations_skipped_total{reason="unprofitable"}',
        "keeper_detection_latency_blocks_bucket", "keeper_missed_liquidations_total", "keeper_gas_spent_eth_total", "keeper_balance_eth",
        "keeper_node_stale", "keeper_reorgs_total",
    ):  # fmt: skip
        assert name in text, name


def test_json_logs_carry_extra_fields():
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    try:
        logging.getLogger("keeper.bot").warning("skip %s", "0xA", extra={"account": "0xA", "reason": "unsafe"})
    finally:
        setup_logging("WARNING", "text")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "skip 0xA" and line["level"] == "WARNING" and line["logger"] == "keeper.bot"
    assert line["account"] == "0xA" and line["reason"] == "unsafe"


def test_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="text or json"):
        setup_logging("INFO", "xml")


# ---------------------------------------------------------------- detection latency


class LatencyIndex:
    """An event index whose catch_up returns the Liquidation logs queued for each head."""

    accounts: dict = {}

    def __init__(self):
        self.logs: dict[int, list] = {}

    def catch_up(self, head):
        entries = [ProtocolLog("Liquidation", a, head.number, "0x", "0x", {}) for a in self.logs.get(head.number, [])]
        return ScanResult(head.number, head.number, tuple(entries), ())


class LatencyTx(FakeTx):
    def __init__(self):
        super().__init__()
        self.outcomes: dict[int, list] = {}

    def poll(self, block):
        return self.outcomes.get(block, [])

    def pending_keys(self):
        return set()

    def balance(self):
        return 10 * WAD


class LatencyClient(FakeClient):
    """Receipts carry their Liquidation events as `events` (what process_receipt decodes)."""

    def __init__(self):
        super().__init__(FakeCall(0, 0))
        liquidation = type("L", (), {"process_receipt": lambda _self, receipt, errors=None: receipt["events"]})
        self.engine.events = type("Ev", (), {"Liquidation": liquidation})()

    def risk_params(self, block):
        return None

    def liquidation_terms(self, block):
        return LiquidationTerms(2 * 10**16, 2 * 10**16, 3600, WAD // 2)


def our_liquidation(account: str, mined: int) -> Outcome:
    receipt = {"status": 1, "blockNumber": mined, "gasUsed": 0, "effectiveGasPrice": 0, "events": [{"args": {"account": account}}]}
    return Outcome(liquidation_key(account), "0x" + "cd" * 32, "mined", receipt)


def test_detection_latency_counts_every_liquidation_once():
    index, tx = LatencyIndex(), LatencyTx()
    bot = Liquidator(LatencyClient(), tx, index=index, follower=None, metrics=KeeperMetrics())

    def process(block: int) -> None:
        bot.process_block(HeadUpdate(BlockRef(block, "0x01", "0x00", 1000), True, None, 0.0, False))

    bot._track_episodes(["0xA", "0xB", "0xC"], 100)  # all three first seen liquidatable at block 100
    bot._track_episodes(["0xA", "0xB", "0xC"], 101)
    # ours, mined in 102: the index yields its log in the same pass, before the receipt
    index.logs[102], tx.outcomes[102] = ["0xA"], [our_liquidation("0xA", 102)]
    process(102)
    # another liquidator's, mined in 103: only its log
    index.logs[103] = ["0xB"]
    process(103)
    # ours, whose receipt is polled (104) before the index returns its log (105)
    tx.outcomes[104], index.logs[105] = [our_liquidation("0xC", 104)], ["0xC"]
    process(104)
    process(105)
    assert bot.stats.succeeded == 2
    # 102 - 100, 103 - 100, 104 - 100: three observations, sum 2 + 3 + 4 = 9
    assert bot.metrics.value("keeper_detection_latency_blocks_count") == 3
    assert bot.metrics.value("keeper_detection_latency_blocks_sum") == 9
    assert bot.metrics.value("keeper_detection_latency_blocks_bucket", le="2.0") == 1
    assert bot.metrics.value("keeper_detection_latency_blocks_bucket", le="3.0") == 2
    assert bot.first_seen == {}


def test_late_receipt_does_not_end_a_newer_episode():
    bot, _ = bot_with(FakeCall(0, 0))
    bot._track_episodes(["0xA"], 100)
    bot._episode_ended("0xA", 102)  # its log: latency 2
    bot._track_episodes(["0xA"], 103)  # still liquidatable after the partial liquidation: new episode
    bot._episode_ended("0xA", 102)  # the receipt of the same liquidation, a block late
    assert bot.first_seen == {"0xA": 103}
    assert bot.metrics.value("keeper_detection_latency_blocks_count") == 1
    bot._episode_ended("0xA", 104)  # the next liquidation: latency 1
    assert bot.metrics.value("keeper_detection_latency_blocks_sum") == 3 and bot.first_seen == {}
