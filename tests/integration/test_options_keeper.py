"""The keeper's portfolio-margin side on a real Anvil chain: the protocol with an OptionMarket, a
VolFeed and a HealthAttestor (2-of-2 risk signers) wired in; a risk-defined book (short
straddle + long strangle: an iron butterfly) and a naked short straddle.

The liquidator loop with its AttestationService (in process) attests the iron butterfly: its
on-chain IM drops to the attested value (never below the attestor's floor x standard); a trade
voids the attestation and the keeper refreshes it; a price move of more than half the band makes
the keeper refresh before the attestor would void it; a governance change of the scenario
parameters hash voids it and stops the keeper (whose file no longer matches) until it is set back,
and a keeper started with a file that does not match is refused; a crash makes the naked account
liquidatable and the bot liquidates its options through OptionMarket.liquidate_options. Then
`keeper account` prints Greeks, the scenario table and the three requirements, and `--plot`
writes a PNG.

`keeper run` as its own process settles a dated future and an option series listed to expire a
minute later: it waits quietly while no price has been published since expiry, and settles both
within two blocks of the block that publishes one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from eth_account import Account

from keeper.attest import AttestationService, ScenarioParamsNotGoverned, usd_to_wad_up
from keeper.bot import Liquidator
from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.chain.attestations import VolUpdate, sign_vol_update
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Web3Backend, deploy_protocol
from keeper.chain.event_index import EventIndex
from keeper.chain.follower import ChainFollower
from keeper.chain.manifest import save_manifest
from keeper.chain.orders import OptionOrder, sign_option_order
from keeper.cli import cli
from keeper.config import load_config, load_scenario_params
from keeper.metrics import KeeperMetrics
from keeper.risk.margin import margin
from keeper.risk.scenarios import (
    ScenarioParams,
    build_risk_tables,
    portfolio_margin,
    scenario_params_hash,
)
from keeper.txmanager import TxManager

pytestmark = pytest.mark.anvil

WAD = 10**18
USDC = 10**6
DAY = 86400
ADMIN = DEV_ACCOUNTS[0][0]
KEEPER_KEY = DEV_ACCOUNTS[2][1]
VOL_KEY = bytes([0x51]) * 32
RISK_KEYS = [bytes([0x61]) * 32, bytes([0x62]) * 32]
TRADER_KEYS = {name: bytes([0x70 + i]) * 32 for i, name in enumerate(("maker", "fly", "naked"))}
ATM, SKEW = 8 * WAD // 10, -WAD // 5


class Chain:
    def __init__(self, url: str):
        self.url = url
        self.w3 = connect(url)
        self.backend = Web3Backend(self.w3, ADMIN)
        first_block = self.w3.eth.block_number + 1
        self.dep = deploy_protocol(self.backend, load_config(), ADMIN, self.w3.eth.chain_id)
        self.dep.deploy_block = first_block
        self.client = ProtocolClient(self.w3, self.dep)
        self._wire_options()
        erc20 = load_artifact("MockERC20").abi
        self.usdc = self.w3.eth.contract(address=self.dep.settlement_token, abi=erc20)
        agg = load_artifact("MockAggregator").abi
        self.eth_feed = self.w3.eth.contract(address=self.dep.feeds["ETH"], abi=agg)
        self.addr = {name: Account.from_key(key).address for name, key in TRADER_KEYS.items()}
        self.nonce = 0

    def _wire_options(self) -> None:
        """OptionMarket (with its liquidation code), VolFeed and HealthAttestor (its version source
        is the engine), wired into the engine and the vault, as the deployment's options step does."""
        b = self.backend
        self.vol_feed = b.deploy("VolFeed", ADMIN, [Account.from_key(VOL_KEY).address], 1)
        liquidation = b.deploy("OptionLiquidation", self.dep.engine, self.vol_feed.address)
        self.market = b.deploy("OptionMarket", ADMIN, self.dep.engine, self.vol_feed.address, liquidation.address)
        signers = sorted((Account.from_key(k).address for k in RISK_KEYS), key=lambda a: int(a, 16))
        self.attestor = b.deploy(
            "HealthAttestor",
            ADMIN,
            self.dep.engine,
            self.dep.oracle,
            signers,
            2,
            scenario_params_hash(load_scenario_params()),
        )
        b.transact(self.client.vault, "set_option_market", self.market.address)
        b.transact(self.client.engine, "set_portfolio_modules", self.market.address, self.attestor.address)

    def send(self, call) -> dict:
        receipt = self.w3.eth.wait_for_transaction_receipt(call.transact({"from": ADMIN}))
        assert receipt["status"] == 1
        return receipt

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def mine(self) -> None:
        """A new block a second later (Anvil may stamp blocks of one second alike; an
        attestation must be issued strictly after the stored one)."""
        self.w3.provider.make_request("evm_increaseTime", [1])
        self.w3.provider.make_request("evm_mine", [])

    def deposit_usd(self, who: str, dollars: int) -> None:
        amount = dollars * USDC
        self.send(self.usdc.functions.mint(ADMIN, amount))
        self.send(self.usdc.functions.approve(self.dep.vault, amount))
        self.send(self.client.vault.functions.deposit_for(self.usdc.address, amount, who))

    def set_eth(self, usd: float) -> None:
        self.send(self.eth_feed.functions.set_answer(int(round(usd * 10**8))))

    def post_vol(self, expiry: int) -> None:
        t = self.now()
        update = VolUpdate(0, expiry, ATM, SKEW, t, t + 600)
        self.send(
            self.vol_feed.functions.submit_vol(
                *sign_vol_update(update, [VOL_KEY], self.dep.chain_id, self.vol_feed.address)
            )
        )

    def list(self, strike: int, expiry: int, is_call: bool) -> int:
        series = self.market.functions.series_count().call()
        self.send(self.market.functions.list_option(0, strike * WAD, expiry, is_call))
        return series

    def trade(self, buyer: str, seller: str, series: int, size: int) -> None:
        """`buyer` buys `size` WAD units of `series` from `seller` at the current mark."""
        mark = self.market.functions.series_states().call()[series][10]
        orders = []
        for who, signed in ((buyer, size), (seller, -size)):
            self.nonce += 1
            o = OptionOrder(self.addr[who], series, signed, mark, self.nonce, 2**63)
            orders += [o.as_tuple(), sign_option_order(o, TRADER_KEYS[who], self.dep.chain_id, self.dep.matching)]
        self.send(self.client.matching.functions.match_option_orders(*orders))

    def summary(self, who: str) -> tuple:
        """The lens's (equity, IM, MM, health factor) of `who`, attestation applied."""
        return tuple(self.client.margin_summaries([self.addr[who]])[0])

    def standard(self, who: str) -> tuple[int, int]:
        """Standard (IM, MM) without any attestation: the engine's cross margin + the options' SRM."""
        account = self.addr[who]
        block = self.w3.eth.block_number
        snap = self.client.snapshot([account], block)
        r = margin(snap.book, snap.markets, self.client.risk_params(block), snap.prices)
        _, im, mm = self.client.option_margin(account, [int(p) for p in snap.prices], block)
        return int(r.initial_margin[0]) + im, int(r.maintenance_margin[0]) + mm


@pytest.fixture(scope="module")
def chain():
    with Anvil() as url:
        yield Chain(url)


def keeper(chain: Chain) -> Liquidator:
    client = ProtocolClient(chain.w3, chain.dep)
    tx = TxManager(chain.w3, KEEPER_KEY)
    metrics = KeeperMetrics()
    service = AttestationService(
        client, tx, ["0x" + k.hex() for k in RISK_KEYS], load_scenario_params(), metrics=metrics
    )
    service.check_governed()
    index = EventIndex(client, chain.dep.deploy_block)
    index.load()
    return Liquidator(client, tx, index, ChainFollower(chain.w3, 64, 1e9), metrics, attestation=service)


def step(chain: Chain, bot: Liquidator) -> None:
    """Mine a block and let the keeper process it (its own transactions are automined)."""
    chain.mine()
    assert bot.step().is_new


def test_attestations_and_option_liquidation(chain, tmp_path):
    c = chain
    expiry = c.now() + 30 * DAY
    c.post_vol(expiry)
    call_atm, put_atm = c.list(2000, expiry, True), c.list(2000, expiry, False)
    call_wing, put_wing = c.list(2200, expiry, True), c.list(1800, expiry, False)
    c.deposit_usd(c.addr["maker"], 10_000_000)
    c.deposit_usd(c.addr["fly"], 20_000)
    c.deposit_usd(c.addr["naked"], 12_500)
    c.deposit_usd(Account.from_key(KEEPER_KEY).address, 1_000_000)  # the liquidator takes positions over
    for series in (call_atm, put_atm):  # the butterfly: short the straddle, long the strangle
        c.trade("maker", "fly", series, 10 * WAD)
        c.trade("maker", "naked", series, 20 * WAD)
    for series in (call_wing, put_wing):
        c.trade("fly", "maker", series, 10 * WAD)

    bot = keeper(c)
    att = bot.client.attestor.functions
    fly, naked = c.addr["fly"], c.addr["naked"]
    std_im, std_mm = c.standard("fly")
    assert c.summary("fly")[1:3] == (std_im, std_mm)  # nothing attested yet
    step(c, bot)
    assert att.attestation_holds(fly).call()
    stored = bot.client.stored_attestation(fly)
    # the keeper's own portfolio margin, rounded up to the cent, below the standard margin
    block = c.w3.eth.block_number
    snap = bot.client.snapshot([fly], block)
    book = bot.client.risk_book(snap, bot.client.risk_params(block))
    pm = portfolio_margin(build_risk_tables(book.instruments, book.market, load_scenario_params()), book.positions)
    assert stored.initial_margin == usd_to_wad_up(float(pm.im[0])) < std_im
    assert stored.maintenance_margin == usd_to_wad_up(float(pm.mm[0])) < std_mm
    std_im, std_mm = c.standard("fly")  # at the same block as the lens (long marks decay with time)
    floor = att.margin_floor().call()
    ceil_floor = lambda x: -(-x * floor // WAD)  # noqa: E731
    on_im, on_mm = c.summary("fly")[1:3]
    assert on_im == max(stored.initial_margin, ceil_floor(std_im)) < std_im
    assert on_mm == max(stored.maintenance_margin, ceil_floor(std_mm)) < std_mm
    assert bot.metrics.value("keeper_attestations_submitted_total") >= 1

    # a trade voids it (position version), the keeper attests the new book
    c.trade("fly", "maker", call_wing, WAD)
    assert not att.attestation_holds(fly).call()
    step(c, bot)
    assert att.attestation_holds(fly).call()
    assert bot.client.stored_attestation(fly).position_version == bot.client.position_versions([fly])[0]

    # +0.6%: inside the attestor's 1% band (still holds) but past half of it: the keeper refreshes
    before = bot.client.stored_attestation(fly)
    c.set_eth(2012)
    assert att.attestation_holds(fly).call()
    step(c, bot)
    after = bot.client.stored_attestation(fly)
    assert after.issued_at > before.issued_at and after.prices[0] == 2012 * WAD

    # governance moves to another grid: the attestation is void, the keeper (old file) skips blocks
    governed = c.attestor.functions.scenario_params_hash().call()
    other = ScenarioParams(spot_range=0.2)
    c.send(c.attestor.functions.set_scenario_params_hash(scenario_params_hash(other)))
    assert not att.attestation_holds(fly).call()
    step(c, bot)
    assert bot.metrics.value("keeper_attestations_skipped_total", reason="scenario_params") == 1
    assert bot.client.stored_attestation(fly).issued_at == after.issued_at  # nothing sent
    # a keeper started with the old file is refused, naming both hashes
    fresh = AttestationService(
        bot.client,
        bot.tx,
        ["0x" + k.hex() for k in RISK_KEYS],
        load_scenario_params(),
        scenario_source="config/portfolio_margin.yaml",
    )
    with pytest.raises(
        ScenarioParamsNotGoverned,
        match=f"hash to 0x{bytes(governed).hex()} but the attestor is "
        f"governed to 0x{scenario_params_hash(other).hex()}; use the governed file",
    ):
        fresh.check_governed()
    # set back: the stored attestation (old hash) holds again; the keeper re-checks and attests on
    c.send(c.attestor.functions.set_scenario_params_hash(governed))
    assert att.attestation_holds(fly).call()
    step(c, bot)
    assert bot.metrics.value("keeper_attestations_skipped_total", reason="scenario_params") == 1

    # the crash: the naked straddle is liquidatable on chain; the bot moves its options first
    c.set_eth(1200)
    c.post_vol(expiry)
    equity, _, mm, _ = c.summary("naked")
    assert equity < mm
    step(c, bot)
    assert bot.stats.sent >= 1
    step(c, bot)  # the outcome of the liquidation
    logs = bot.client.options.events.OptionsLiquidation.get_logs(from_block=0)
    assert [ev["args"]["account"] for ev in logs] == [naked]
    assert bot.stats.succeeded >= 1
    assert abs(c.market.functions.positions(naked, put_atm).call()[0]) < 20 * WAD
    # the 40% move voided the butterfly's attestation; the keeper attested it again at the new price
    assert bot.client.stored_attestation(fly).prices[0] == 1200 * WAD and att.attestation_holds(fly).call()

    # keeper account: Greeks, scenario table, the three requirements, and the heat map
    manifest = save_manifest(c.dep, tmp_path / "deployment.json")
    png = tmp_path / "heat.png"
    result = CliRunner().invoke(
        cli, ["account", fly, "--rpc", c.url, "--manifest", str(manifest), "--plot", str(png)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "Greeks",
        "Scenario P&L",
        "(worst)",
        "isolated",
        "standard",
        "portfolio",
        "keeper = contract",
        "ETH-",
        "-2200-C",
    ):
        assert text in out, text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_keeper_process_settles_expired_future_and_series(chain, tmp_path):
    c = chain
    eth = c.dep.price_ids["ETH"]
    index = c.client.oracle.functions.index_prices().call()[eth]
    expiry = c.now() + 60
    market = c.client.engine.functions.market_count().call()
    c.send(c.client.engine.functions.list_market(c.dep.underlyings["ETH"], expiry))
    series = c.list(index // WAD, expiry, True)
    manifest = save_manifest(c.dep, tmp_path / "deployment.json")
    status, log_path = tmp_path / "status.json", tmp_path / "keeper.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}  # PYTHONPATH passes through
    env["KEEPER_PRIVATE_KEY"] = KEEPER_KEY
    args = [
        "--rpc",
        c.url,
        "--manifest",
        str(manifest),
        "--state-dir",
        str(tmp_path / "state"),
        "--status-file",
        str(status),
        "--poll",
        "0.05",
        "--log-json",
    ]
    with open(log_path, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keeper", "run", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def wait(block: int, until=lambda s: True, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, f"keeper exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            try:
                stats = json.loads(status.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                stats = {}
            if stats.get("block", -1) >= block and until(stats):
                return stats
            time.sleep(0.02)
        raise AssertionError(f"keeper did not reach block {block}: {stats}\n{log_path.read_text()[-3000:]}")

    try:
        c.mine()
        wait(c.w3.eth.block_number)
        # past expiry, no price published since: settle_* would revert "price before expiry"
        c.w3.provider.make_request("evm_increaseTime", [expiry - c.now() + 5])
        c.w3.provider.make_request("evm_mine", [])
        stats = wait(c.w3.eth.block_number)
        assert stats["settlements_sent"] == 0 and stats["settlement_errors"] == 0
        c.set_eth(index / WAD)  # a new round, stamped after expiry
        published = c.w3.eth.block_number
        stats = wait(published, lambda s: s["settlements_succeeded"] == 2)
        assert stats["settlements_sent"] == 2 and stats["settlements_failed"] == 0 and stats["settlement_errors"] == 0
        markets = c.client.engine.events.MarketSettled.get_logs(from_block=published)
        settled = c.market.events.SeriesSettled.get_logs(from_block=published)
        assert [ev["args"]["market"] for ev in markets] == [market] and [ev["args"]["series"] for ev in settled] == [
            series
        ]
        assert all(
            ev["blockNumber"] <= published + 2 for ev in markets + settled
        )  # automine: one block per transaction
        assert c.client.engine.functions.markets(market).call()[3] == index
        assert c.market.functions.series_states().call()[series][5] == index
    finally:
        process.terminate()
        process.wait(timeout=10)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    for kind, ident in (("market", market), ("series", series)):
        assert f"settle {kind} {ident}: expired, waiting for a price published after expiry" in messages
        assert any(m.startswith(f"settled {kind} {ident} at {index / WAD:.6f} USD in block ") for m in messages), (
            messages[-20:]
        )
    assert not [line for line in lines if line.get("logger") == "keeper.settle" and line["level"] != "INFO"]


def test_account_plot_without_positions_says_so(chain, tmp_path):
    """`keeper account --plot` on an account that holds nothing writes no PNG and says so in one
    line on stderr; the report itself is complete, so the exit code stays 0."""
    manifest = save_manifest(chain.dep, tmp_path / "deployment.json")
    png = tmp_path / "heat.png"
    empty = "0x" + "5a" * 20
    result = CliRunner().invoke(
        cli,
        ["account", empty, "--rpc", chain.url, "--manifest", str(manifest), "--plot", str(png)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no heat map written" in lines[0] and "has no positions" in lines[0], result.stderr
    assert not png.exists()
