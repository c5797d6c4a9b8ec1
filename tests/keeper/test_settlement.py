"""The settlement job (keeper.settle): which markets and series are due at a block (a pure
function), and how the job sends, skips, retries and counts with fake chain objects; its
setting; and that a failing job never stops the liquidator's block."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import requests
from web3.exceptions import ContractLogicError

from keeper.bot import Liquidator
from keeper.chain.follower import BlockRef, HeadUpdate
from keeper.metrics import KeeperMetrics
from keeper.risk.book import SeriesInfo
from keeper.settings import KeeperSettings, SettingsError, load_settings
from keeper.settle import MARKET, SERIES, Settlement, SettlementJob, due_settlements, parse_key
from keeper.txmanager import FeeCapExceeded, Outcome

WAD = 10**18
GWEI = 10**9
T = 1_000_000


def series(i: int, expiry: int, settled: int = 0) -> SeriesInfo:
    return SeriesInfo(
        series_id=i, underlying=0, price_id=0, strike=2000 * WAD, expiry=expiry, is_call=True, settlement_price=settled
    )


# ---------------------------------------------------------------- the pure decision


def test_due_markets_expired_and_unsettled_only():
    # 0 perpetual (expiry 0), 1 expired unsettled, 2 expired settled, 3 live, 4 expiring exactly now
    expiry = [0, T - 10, T - 10, T + 1, T]
    price = [0, 0, 1900 * WAD, 0, 0]
    due = due_settlements(expiry, price, [], T)
    assert due == [Settlement(MARKET, 1, T - 10), Settlement(MARKET, 4, T)]
    assert [s.key for s in due] == ["settle_market:1", "settle_market:4"]


def test_due_series_and_order():
    got = due_settlements(
        [T - 5], [0], [series(0, T - 5), series(1, T - 100), series(2, T, settled=WAD), series(3, T + 60)], T
    )
    # oldest expiry first; a market before a series of the same expiry
    assert [(s.kind, s.id) for s in got] == [(SERIES, 1), (MARKET, 0), (SERIES, 0)]


def test_due_leaves_out_what_is_in_flight():
    got = due_settlements(
        [T - 1, T - 1], [0, 0], [series(0, T - 1)], T, pending={"settle_market:0", "settle_series:0", "liquidate:0xA"}
    )
    assert got == [Settlement(MARKET, 1, T - 1)]


def test_nothing_due_before_any_expiry_and_shapes_checked():
    assert due_settlements([0, T + 1], [0, 0], [series(0, T + 1)], T) == []
    assert due_settlements([], [], [], T) == []
    with pytest.raises(ValueError, match="2 market expiries but 1 settlement prices"):
        due_settlements([1, 2], [0], [], T)


def test_keys_round_trip():
    assert parse_key("settle_market:3") == (MARKET, 3)
    assert parse_key("settle_series:12") == (SERIES, 12)
    assert parse_key("liquidate:0xA") is None and parse_key("settle_market:x") is None


# ---------------------------------------------------------------- the job with fakes


class FakeCall:
    def __init__(self, revert: str | None = None, error: Exception | None = None):
        self.revert, self.error = revert, error

    def call(self, *a, **k):
        if self.error is not None:
            raise self.error
        if self.revert:
            raise ContractLogicError(f"execution reverted: {self.revert}", data="0x")
        return None

    def estimate_gas(self, *a, **k):
        return 60_000


class FakeTx:
    address = "0xKEEPER"

    def __init__(self):
        self.sent: list[str] = []
        self.pending: set[str] = set()
        self.fee_cap = False

    def pending_keys(self):
        return set(self.pending)

    def send(self, call, gas, key):
        if self.fee_cap:
            raise FeeCapExceeded("base fee 600.0 gwei is above the cap 500 gwei")
        if key in self.pending:
            return None
        self.sent.append(key)
        self.pending.add(key)
        return "0x" + "ab" * 32


class Events:
    def __init__(self, name):
        self.name = name

    def __call__(self):
        return self

    def process_receipt(self, receipt, errors=None):
        return [e for e in receipt.get("events", []) if e["event"] == self.name]


class FakeClient:
    def __init__(self, expiry, price, series_list=(), market_calls=None, series_calls=None):
        self.markets = SimpleNamespace(expiry=list(expiry), settlement_price=list(price))
        self.series = list(series_list)
        self.market_calls = market_calls or {}
        self.series_calls = series_calls or {}
        self.reads = 0
        self.engine = SimpleNamespace(
            functions=SimpleNamespace(settle_market=lambda m: self.market_calls.get(m, FakeCall())),
            events=SimpleNamespace(MarketSettled=Events("MarketSettled")),
        )
        self.options = SimpleNamespace(
            functions=SimpleNamespace(settle_series=lambda s: self.series_calls.get(s, FakeCall())),
            events=SimpleNamespace(SeriesSettled=Events("SeriesSettled")),
        )

    def market_table(self, block):
        self.reads += 1
        return self.markets

    def option_series(self, block):
        return self.series


HEAD = BlockRef(10, "0x01", "0x00", T, base_fee=1 * GWEI)


def job_with(client, **kw) -> tuple[SettlementJob, FakeTx]:
    tx = FakeTx()
    return SettlementJob(client, tx, KeeperMetrics(), **kw), tx


def test_sends_each_due_settlement_once_while_in_flight(caplog):
    caplog.set_level(logging.INFO, logger="keeper.settle")
    client = FakeClient([0, T - 1, T + 100], [0, 0, 0], [series(0, T - 1), series(1, T + 100)])
    job, tx = job_with(client)
    assert job.step(HEAD) == 2
    assert tx.sent == ["settle_market:1", "settle_series:0"]
    assert job.metrics.value("keeper_settlements_sent_total", kind="market") == 1
    assert job.metrics.value("keeper_settlements_sent_total", kind="series") == 1
    assert any(r.getMessage().startswith("settle market 1 (expiry") for r in caplog.records)
    # next block, both still in flight: nothing sent again
    assert job.step(BlockRef(11, "0x02", "0x01", T + 12, base_fee=GWEI)) == 0
    assert tx.sent == ["settle_market:1", "settle_series:0"]
    assert job.metrics.value("keeper_settlements_due") == 0


def test_reuses_the_markets_given():
    client = FakeClient([T - 1], [0])
    job, tx = job_with(client)
    job.step(HEAD, markets=SimpleNamespace(expiry=[T - 1, T - 2], settlement_price=[0, 0]))
    assert client.reads == 0 and tx.sent == ["settle_market:1", "settle_market:0"]


def test_price_not_published_is_skipped_quietly_and_retried(caplog):
    caplog.set_level(logging.DEBUG, logger="keeper.settle")
    waiting = FakeCall(revert="engine: price before expiry")
    client = FakeClient([T - 1], [0], market_calls={0: waiting})
    job, tx = job_with(client)
    for block in range(10, 13):
        assert job.step(BlockRef(block, "0x", "0x", T + block)) == 0
    assert tx.sent == [] and job.errors == 0
    assert job.metrics.value("keeper_settlements_skipped_total", reason="price_not_published") == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("waiting for a price published after expiry" in r.getMessage() for r in caplog.records) == 1  # once
    waiting.revert = None  # the oracle publishes
    assert job.step(BlockRef(13, "0x", "0x", T + 13)) == 1
    assert tx.sent == ["settle_market:0"]


def test_one_failure_does_not_stop_the_others(caplog):
    client = FakeClient(
        [T - 1, T - 1, T - 1], [0, 0, 0],
        market_calls={0: FakeCall(error=requests.ReadTimeout("timed out")), 1: FakeCall(revert="oracle: no valid price")},
    )  # fmt: skip
    job, tx = job_with(client)
    assert job.step(HEAD) == 1
    assert tx.sent == ["settle_market:2"]
    assert job.errors == 1 and job.metrics.value("keeper_settlement_errors_total") == 1
    assert job.metrics.value("keeper_settlements_skipped_total", reason="reverted") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("settle market 0: ReadTimeout" in m for m in warnings)
    assert any(
        "settle market 1: simulation reverted (execution reverted: oracle: no valid price)" in m for m in warnings
    )
    # the same failures next block: counted again, logged at DEBUG (no new warning)
    caplog.clear()
    job.step(BlockRef(11, "0x", "0x", T + 12, base_fee=GWEI))
    assert job.errors == 2 and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_fee_cap_and_stale_node_skip_like_liquidations():
    client = FakeClient([T - 1], [0])
    job, tx = job_with(client, max_fee_per_gas=20 * GWEI)
    job.step(BlockRef(10, "0x", "0x", T, base_fee=30 * GWEI))
    assert tx.sent == [] and job.metrics.value("keeper_settlements_skipped_total", reason="fee_cap") == 1
    job.step(HEAD, stale=True)
    assert tx.sent == [] and job.metrics.value("keeper_settlements_skipped_total", reason="stale_node") == 1
    tx.fee_cap = True  # the manager's own refusal
    job.step(HEAD)
    assert tx.sent == [] and job.metrics.value("keeper_settlements_skipped_total", reason="fee_cap") == 2


def test_series_without_an_option_market_is_not_sent():
    client = FakeClient([], [], [series(0, T - 1)])
    client.options = None
    job, tx = job_with(client)
    assert job.step(HEAD) == 0 and tx.sent == [] and job.errors == 0


def receipt(events, status=1):
    return {"status": status, "blockNumber": 11, "gasUsed": 50_000, "effectiveGasPrice": 2 * GWEI, "events": events}


def test_outcomes_logged_and_counted(caplog):
    caplog.set_level(logging.INFO, logger="keeper.settle")
    job, _ = job_with(FakeClient([], []))
    settled = {"event": "MarketSettled", "args": {"market": 1, "settlement_price": 1950 * WAD}}
    job.handle_outcome(Outcome("settle_market:1", "0xaa", "mined", receipt([settled])))
    assert job.succeeded == 1 and job.metrics.value("keeper_settlements_succeeded_total", kind="market") == 1
    assert any(r.getMessage() == "settled market 1 at 1950.000000 USD in block 11 (tx 0xaa)" for r in caplog.records)
    assert job.metrics.value("keeper_gas_spent_eth_total") == pytest.approx(50_000 * 2 * GWEI / WAD)
    # status 1 without our event: someone else settled first (a no-op call)
    job.handle_outcome(Outcome("settle_series:0", "0xbb", "mined", receipt([])))
    # reverted, and dropped
    job.handle_outcome(Outcome("settle_market:2", "0xcc", "failed", receipt([], status=0)))
    job.handle_outcome(Outcome("settle_market:3", "0xdd", "dropped", None))
    assert job.failed == 3 and job.succeeded == 1
    assert job.metrics.value("keeper_settlements_failed_total", kind="series") == 1
    assert job.metrics.value("keeper_settlements_failed_total", kind="market") == 2
    series_settled = {
        "event": "SeriesSettled",
        "args": {"series": 4, "settlement_price": 2100 * WAD, "settlement_value": 100 * WAD},
    }
    job.handle_outcome(Outcome("settle_series:4", "0xee", "mined", receipt([series_settled])))
    assert job.metrics.value("keeper_settlements_succeeded_total", kind="series") == 1


# ---------------------------------------------------------------- inside the liquidator's block


class EmptyIndex:
    accounts: dict = {}

    def catch_up(self, head):
        from keeper.chain.event_index import ScanResult

        return ScanResult(head.number, head.number, (), ())


class LoopTx(FakeTx):
    def __init__(self):
        super().__init__()
        self.outcomes: dict[int, list] = {}

    def poll(self, block):
        return self.outcomes.get(block, [])

    def balance(self):
        return 10 * WAD


class LoopClient(FakeClient):
    def risk_params(self, block):
        return None

    def liquidation_terms(self, block):
        return None


def test_a_failing_settlement_job_never_stops_the_block(caplog):
    client = LoopClient([T - 1], [0])
    tx = LoopTx()
    metrics = KeeperMetrics()
    job = SettlementJob(client, tx, metrics)
    bot = Liquidator(client, tx, index=EmptyIndex(), follower=None, metrics=metrics, settlement=job)

    def process(block: int) -> None:
        bot.process_block(HeadUpdate(BlockRef(block, "0x01", "0x00", T + block), True, None, 0.0, False))

    def broken(block):
        raise requests.ConnectionError("connection refused")

    client.market_table = client.option_series = broken  # nothing readable: the whole pass fails
    process(10)
    assert bot.stats.block == 10 and bot.stats.settlement_errors == 3  # two reads and the pass
    assert metrics.value("keeper_settlement_errors_total") == 3
    assert any(
        "settlement job failed at block 10 (RuntimeError: neither the markets nor the option series" in r.getMessage()
        for r in caplog.records
    )
    del client.market_table, client.option_series  # the node answers again: sent next block
    process(11)
    assert tx.sent == ["settle_market:0"] and bot.stats.settlements_sent == 1
    # its receipt reaches the job through the liquidator's outcome handling
    settled = {"event": "MarketSettled", "args": {"market": 0, "settlement_price": 1950 * WAD}}
    tx.outcomes[12] = [Outcome("settle_market:0", "0xaa", "mined", receipt([settled]))]
    tx.pending.clear()
    client.markets.settlement_price[0] = 1950 * WAD
    process(12)
    assert bot.stats.settlements_succeeded == 1 and tx.sent == ["settle_market:0"]
    assert bot.stats.sent == 0  # liquidation counters untouched


def test_disabled_job_ignores_settlement_outcomes():
    tx = LoopTx()
    bot = Liquidator(LoopClient([], []), tx, index=EmptyIndex(), follower=None, metrics=KeeperMetrics())
    tx.outcomes[5] = [Outcome("settle_market:0", "0xaa", "mined", receipt([]))]
    bot.process_block(HeadUpdate(BlockRef(5, "0x01", "0x00", T), True, None, 0.0, False))
    assert bot.stats.failed == 0 and bot.stats.succeeded == 0


# ---------------------------------------------------------------- the setting


def test_setting_on_by_default_and_turned_off_by_file_env_or_option(tmp_path):
    assert KeeperSettings().settle_expired is True
    assert load_settings(env={}).settle_expired is True
    path = tmp_path / "keeper.yaml"
    path.write_text("settle_expired: false\n")
    assert load_settings(path, env={}).settle_expired is False
    assert load_settings(path, env={"KEEPER_SETTLE_EXPIRED": "on"}).settle_expired is True
    for off in ("0", "false", "No", "OFF"):
        assert load_settings(env={"KEEPER_SETTLE_EXPIRED": off}).settle_expired is False
    assert (
        load_settings(env={"KEEPER_SETTLE_EXPIRED": "0"}, settle_expired=True).settle_expired is True
    )  # option over env
    with pytest.raises(
        SettingsError, match="environment KEEPER_SETTLE_EXPIRED: settle_expired: must be true or false, got 'maybe'"
    ):
        load_settings(env={"KEEPER_SETTLE_EXPIRED": "maybe"})
    path.write_text("settle_expired: 3\n")
    with pytest.raises(SettingsError, match="settle_expired: must be true or false, got 3"):
        load_settings(path, env={})


def test_a_failing_series_read_does_not_hold_back_the_futures(caplog):
    client = FakeClient([T - 1], [0], [series(0, T - 1)])

    def broken(block):
        raise ContractLogicError("execution reverted: vol: bad feed", data="0x")

    client.option_series = broken
    job, tx = job_with(client)
    assert job.step(HEAD) == 1 and tx.sent == ["settle_market:0"]
    assert job.errors == 1 and job.metrics.value("keeper_settlement_errors_total") == 1
    assert any(
        "settlement: cannot read the option series at block 10 (ContractLogicError" in r.getMessage()
        for r in caplog.records
    )
    client.market_table = broken  # both unreadable: the pass fails (the liquidator logs and counts it)
    with pytest.raises(RuntimeError, match="neither the markets nor the option series could be read"):
        job.step(BlockRef(11, "0x", "0x", T + 12))
