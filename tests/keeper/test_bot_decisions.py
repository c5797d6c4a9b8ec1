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
from keeper.chain.anvil import free_port
from keeper.chain.client import LiquidationTerms, ProtocolLog
from keeper.chain.event_index import ScanResult
from keeper.chain.follower import BlockRef, HeadUpdate
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
        self.engine.address = ENGINE

    def risk_params(self, block):
        return None

    def liquidation_terms(self, block):
        return LiquidationTerms(2 * 10**16, 2 * 10**16, 3600, WAD // 2)


ENGINE = "0x" + "e0" * 20


def our_liquidation(account: str, mined: int) -> Outcome:
    receipt = {
        "status": 1,
        "blockNumber": mined,
        "gasUsed": 0,
        "effectiveGasPrice": 0,
        "events": [{"address": ENGINE, "args": {"account": account}}],
    }
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


# ---------------------------------------------------------------- dust, ordering and isolation

from collections import Counter  # noqa: E402

import requests  # noqa: E402
from web3.exceptions import Web3RPCError  # noqa: E402

from keeper.bot import rank, screen_rewards  # noqa: E402
from keeper.chain.client import Snapshot  # noqa: E402
from keeper.risk.margin import AccountBook, MarketTable, RiskParams  # noqa: E402

TERMS = LiquidationTerms(penalty=2 * 10**16, max_penalty=25 * 10**15, ramp_seconds=3600, liquidator_share=WAD // 2)
PARAMS = RiskParams(
    price_id=[0], im_rate=[10**17], mm_rate=[5 * 10**16], spread_im_rate=[2 * 10**16], spread_mm_rate=[10**16],
    asset_price_id=[0], asset_decimals=[18], asset_haircut=[85 * 10**16],
)  # fmt: skip
USDC_UNIT = 10**12  # 1 unit of a 6-decimal USDC, as WAD cash
DUST_SIZE = 4 * 10**9  # 4e-9 ETH: 8e-6 USD of notional at 2,000 USD, 8x leverage on 1 USDC unit


def snapshot(rows: list[tuple[int, int, int, int]], markets: MarketTable | None = None) -> Snapshot:
    """rows: (cash WAD, WETH balance, ETH-PERP size, entry price) per account; ETH at 2,000 USD."""
    markets = markets or MarketTable(
        underlying=[0], settlement_price=[0], funding_index=[0], expiry=[0], timestamp=1000
    )
    m = markets.n_markets
    book = AccountBook(
        cash=[r[0] for r in rows], collateral=[[r[1]] for r in rows],
        size=[[r[2]] + [0] * (m - 1) for r in rows], entry_price=[[r[3]] + [0] * (m - 1) for r in rows],
        funding_index=[[0] * m for _ in rows],
    )  # fmt: skip
    return Snapshot(0, tuple(f"0x{i:040x}" for i in range(len(rows))), [2000 * WAD], markets, book)


def test_screen_rewards_hand_calculations():
    snap = snapshot([
        (2900 * WAD, 0, 10 * WAD, 2200 * WAD),  # 10 ETH long: closable $20,000
        (USDC_UNIT, 0, DUST_SIZE, 2200 * WAD),  # dust: closable 8e12 wei ($8e-6)
        (-5 * WAD, WAD, 0, 0),  # debt and 1 WETH of collateral, no position
        (1000 * WAD, 0, 10 * WAD, 2000 * WAD),  # equity below the top-rate penalty
    ])  # fmt: skip
    bounds = screen_rewards(snap, PARAMS, TERMS, [900 * WAD, 2 * 10**11, -5 * WAD, 300 * WAD])
    # min(ceil(20,000 x 2.5 %) = 500, equity 900) x 0.5 = $250 (the ramp's top rate: an upper bound)
    assert bounds[0] == 250 * WAD
    # min(ceil(8e12 x 0.025) = 2e11, equity 2e11) x 0.5 = 1e11 wei = $1e-7
    assert bounds[1] == 10**11
    # no penalty (equity < 0); the collateral sale's discount at most 1 WETH x $2,000 x 2 % = $40
    assert bounds[2] == 40 * WAD
    # the penalty is capped by equity: min(500, 300) x 0.5 = $150
    assert bounds[3] == 150 * WAD
    # a future past expiry (and a settled one) cannot be closed by a liquidation: nothing to earn
    expired = MarketTable(
        underlying=[0, 0], settlement_price=[0, 0], funding_index=[0, 0], expiry=[900, 0], timestamp=1000
    )
    assert screen_rewards(snapshot([(2900 * WAD, 0, 10 * WAD, 2200 * WAD)], expired), PARAMS, TERMS, [900 * WAD]) == [0]


def test_collateral_reward_mirrors_the_vault_sale():
    from keeper.bot import collateral_reward

    # equity -$5 with 1 WETH ($2,000, haircut 0.85 -> $1,700 counted): cash after the close is
    # -$1,705; the vault sells WETH at 2,000 x (1 - min(2 %, 7.5 %)) = $1,960 until the debt is
    # paid: ceil(1,705 / 1,960 WETH) bought for $1,705 (rounded down), worth $1,739.80: gain ~$34.80
    gain = collateral_reward(-5 * WAD, [WAD], PARAMS, [2000 * WAD], 2 * 10**16)
    amount = -(-1705 * WAD * WAD // (1960 * WAD))
    assert gain == amount * 2000 - amount * 1960 * WAD // WAD
    assert abs(gain / WAD - 1705 / 1960 * 40) < 1e-9
    # solvent accounts sell nothing; collateral too small to cover the debt: all of it is sold
    assert collateral_reward(5 * WAD, [WAD], PARAMS, [2000 * WAD], 2 * 10**16) == 0
    assert collateral_reward(-5000 * WAD, [WAD], PARAMS, [2000 * WAD], 2 * 10**16) == 40 * WAD


def test_bad_debt_with_collateral_is_liquidated_for_the_discount():
    """No penalty (equity < 0) but 1 WETH to sell at a 2 % discount: ~$34.80 > gas $1.50."""
    rows = [(-1705 * WAD, WAD, 0, 0)]
    bot, tx, accounts, calls = book_bot(rows, lambda i, a, c: CountingCall(c, a, 0, 300_000))
    process_at(bot, 10)
    assert tx.sent == [liquidation_key(accounts[0])]


def test_rank_puts_the_largest_reward_first_and_drops_what_cannot_pay_gas():
    bounds = [250 * WAD, 10**11, 40 * WAD, None, 250 * WAD, 2 * WAD]
    health = [5, 1, 0, 3, 2, 9]
    # threshold: 200,000 gas x 3 gwei x $2,000 x 1.25 = $1.50
    tried, below = rank([0, 1, 2, 3, 4, 5], bounds, health, 3 * WAD // 2)
    assert below == [1]  # the dust: never simulated
    assert tried == [4, 0, 2, 5, 3]  # $250 (health 2), $250 (health 5), $40, $2, then unknown (options)
    # min_profit_usd: always: nothing dropped, still the largest first
    tried, below = rank([0, 1, 2], bounds, health, None)
    assert below == [] and tried == [0, 2, 1]


class CountingCall(FakeCall):
    """A liquidate() call that counts eth_call / eth_estimateGas per account and can raise."""

    def __init__(self, calls: Counter, account: str, notional: int, gas: int, raises=None, at: str = "call"):
        super().__init__(notional, gas)
        self.calls, self.account, self.raises, self.at = calls, account, raises, at

    def call(self, *a, **k):
        self.calls[self.account] += 1
        if self.raises is not None and self.at == "call":
            raise self.raises
        return self.notional

    def estimate_gas(self, *a, **k):
        self.calls[self.account] += 1
        if self.raises is not None and self.at == "estimate":
            raise self.raises
        return self.gas


class BookClient:
    """A protocol client over a fixed snapshot; `liquidate(account)` gives that account's call."""

    def __init__(self, snap: Snapshot, calls: dict[str, CountingCall]):
        self.snap, self.options, self.attestor = snap, None, None
        self.deployment = type("D", (), {"price_ids": {"ETH": 0}})()
        engine = type("E", (), {})()
        engine.functions = type("F", (), {"liquidate": lambda _self, account: calls[account]})()
        self.engine = engine

    def risk_params(self, block):
        return PARAMS

    def liquidation_terms(self, block):
        return TERMS

    def snapshot(self, accounts, block):
        assert tuple(accounts) == self.snap.accounts
        return self.snap

    def liquidatable_since(self, account, block):
        return 0


class BookIndex:
    def __init__(self, accounts):
        self.accounts = set(accounts)

    def catch_up(self, head):
        return ScanResult(head.number, head.number, (), ())


def book_bot(rows, make_call, **kw):
    """A bot over `rows` (see snapshot); make_call(i, account, calls) -> the account's call."""
    snap = snapshot(rows)
    calls_made: Counter = Counter()
    calls = {a: make_call(i, a, calls_made) for i, a in enumerate(snap.accounts)}
    tx = LatencyTx()
    bot = Liquidator(
        BookClient(snap, calls), tx, BookIndex(snap.accounts), follower=None, metrics=KeeperMetrics(), **kw
    )
    return bot, tx, snap.accounts, calls_made


def process_at(bot, block: int) -> None:
    bot.process_block(HeadUpdate(BlockRef(block, "0x01", "0x00", 1000, base_fee=GWEI), True, None, 0.0, False))


def test_dust_costs_no_rpc_call_and_the_largest_reward_goes_first():
    """200 dust accounts (1 USDC unit, 4e-9 ETH long, 8x) below their margin after ETH fell from
    2,200 to 2,000, and two real ones: with the default settings the real ones are sent, larger
    reward first, and no dust account is simulated, estimated or sent."""
    rows = [(USDC_UNIT, 0, DUST_SIZE, 2200 * WAD)] * 200 + [
        (2900 * WAD, 0, 10 * WAD, 2200 * WAD),
        (5800 * WAD, 0, 20 * WAD, 2200 * WAD),
    ]
    bot, tx, accounts, calls = book_bot(
        rows, lambda i, a, c: CountingCall(c, a, 20_000 * WAD * (1 + (i == 201)), 400_000)
    )
    process_at(bot, 10)
    real_small, real_large = accounts[200], accounts[201]
    assert tx.sent == [liquidation_key(real_large), liquidation_key(real_small)]
    assert set(calls) == {real_small, real_large}  # eth_call + eth_estimateGas for the two real ones only
    assert bot.stats.liquidatable == 202 and bot.stats.below_gas == 200
    assert bot.metrics.value("keeper_liquidations_skipped_total", reason="below_gas") == 200


def test_always_keeps_liquidating_dust_but_after_real_value():
    rows = [(USDC_UNIT, 0, DUST_SIZE, 2200 * WAD)] * 3 + [(2900 * WAD, 0, 10 * WAD, 2200 * WAD)]
    bot, tx, accounts, calls = book_bot(
        rows, lambda i, a, c: CountingCall(c, a, 8 * 10**12, 240_000), min_profit_usd=None
    )
    process_at(bot, 10)
    assert tx.sent[0] == liquidation_key(accounts[3]) and len(tx.sent) == 4


def test_one_failing_account_does_not_stop_the_others_and_backs_off():
    """Account 0 (the largest reward, tried first) answers every eth_call with an RPC error,
    account 1 times out in eth_estimateGas, account 2 raises a bug: the other five are sent in
    the same block; each failure is counted by reason and the failing accounts are skipped for
    1 block, then 2 (doubling) while they keep failing."""
    rows = [(5800 * WAD, 0, 20 * WAD, 2200 * WAD)] * 3 + [(2900 * WAD, 0, 10 * WAD, 2200 * WAD)] * 5
    faults = {
        0: (Web3RPCError("injected: eth_call failed"), "call"),
        1: (requests.ReadTimeout("injected: read timed out"), "estimate"),
        2: (RuntimeError("injected bug"), "call"),
    }

    def make(i, a, c):
        raises, at = faults.get(i, (None, "call"))
        return CountingCall(c, a, 20_000 * WAD, 400_000, raises, at)

    bot, tx, accounts, calls = book_bot(rows, make)
    tx.pending_keys = lambda: set()  # nothing ever mines in this test: keep sending allowed
    process_at(bot, 10)
    assert sorted(tx.sent) == sorted(liquidation_key(a) for a in accounts[3:])
    for reason in ("rpc_error", "timeout", "unexpected"):
        assert bot.metrics.value("keeper_liquidation_errors_total", reason=reason) == 1
    assert bot.stats.account_errors == 3
    tried = Counter(calls)
    process_at(bot, 11)  # skipped for one block: no RPC call for them
    assert all(calls[a] == tried[a] for a in accounts[:3])
    assert bot.metrics.value("keeper_liquidations_skipped_total", reason="backoff") == 3
    process_at(bot, 12)  # tried again, fail again: now skipped for 2 blocks
    assert all(calls[a] > tried[a] for a in accounts[:3])
    assert bot.backoff[accounts[0]] == (15, 2)
    assert bot.stats.account_errors == 6


def test_position_opened_this_block_is_retried_next_block_quietly(caplog):
    rows = [(2900 * WAD, 0, 10 * WAD, 2200 * WAD)]
    reverts = [ContractLogicError("execution reverted: engine: position opened this block", data="0x")]

    def make(i, a, c):
        call = CountingCall(c, a, 20_000 * WAD, 400_000)
        original = call.call

        def maybe_revert(*args, **kw):
            if reverts:
                c[a] += 1
                raise reverts.pop()
            return original(*args, **kw)

        call.call = maybe_revert
        return call

    bot, tx, accounts, calls = book_bot(rows, make)
    with caplog.at_level(logging.INFO, logger="keeper.bot"):
        process_at(bot, 10)
    assert tx.sent == [] and bot.metrics.value("keeper_liquidations_skipped_total", reason="opened_this_block") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "opened this block" in r.getMessage()]
    assert accounts[0] not in bot.backoff
    process_at(bot, 11)  # the next block: sent
    assert tx.sent == [liquidation_key(accounts[0])]


def test_a_failed_pass_is_redone_on_the_same_head():
    """An RPC error reading the book escapes process_block (the loop backs off); the next step
    processes the same head again instead of waiting for a new block."""

    class Follower:
        def __init__(self):
            self.head = BlockRef(10, "0x01", "0x00", 1000, base_fee=GWEI)
            self.new = True

        def update(self):
            new, self.new = self.new, False
            return HeadUpdate(self.head, new, None, 0.0, False)

    rows = [(2900 * WAD, 0, 10 * WAD, 2200 * WAD)]
    bot, tx, accounts, calls = book_bot(rows, lambda i, a, c: CountingCall(c, a, 20_000 * WAD, 400_000))
    bot.follower, bot._reconciled = Follower(), True
    snapshot_of = bot.client.snapshot
    failures = [Web3RPCError("injected: account_states failed")]

    def flaky(accounts, block):
        if failures:
            raise failures.pop()
        return snapshot_of(accounts, block)

    bot.client.snapshot = flaky
    with pytest.raises(Web3RPCError):
        bot.step()
    bot.step()  # the head did not move
    assert tx.sent == [liquidation_key(accounts[0])]
