"""`keeper dev` against a real Anvil: the protocol deployed as `scripts/deploy.py` deploys it on
a development chain (mocks, roles handed to a timelock), a book opened with `keeper dev
accounts`, a price move that makes some accounts liquidatable, a time jump that keeps the
oracle fresh, and the refusals on a non-development chain or a deployment without mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Web3Backend, deploy_to_manifest
from keeper.config import load_config, with_default_governance
from keeper.dev_cli import LIQUIDATOR_DEPOSIT_USD, dev, dev_account
from keeper.params import bounds
from keeper.params_cli import params

pytestmark = pytest.mark.anvil

WAD = 10**18
ADMIN = DEV_ACCOUNTS[0][0]
TRADERS = [dev_account(i)[0] for i in range(3, 9)]  # --count 6
EXAMPLE_CHANGES = str(Path(__file__).resolve().parents[2] / "config" / "changes.example.yaml")
KINDS = ("long", "short", "future", "basis", "cross_hedge", "collateral_long")


class Chain:
    def __init__(self, url: str, manifest):
        self.url = url
        self.manifest = manifest
        self.w3 = connect(url)
        config = with_default_governance(load_config(), ADMIN, development=True)
        self.dep = deploy_to_manifest(
            Web3Backend(self.w3, ADMIN), config, manifest, admin=ADMIN, chain_id=self.w3.eth.chain_id, development=True
        )
        self.client = ProtocolClient(self.w3, self.dep)
        agg = load_artifact("MockAggregator").abi
        self.feeds = {s: self.w3.eth.contract(address=a, abi=agg) for s, a in self.dep.feeds.items()}
        self.accounts_output = keeper_dev(self, "accounts")

    def rpc(self, method: str, args: list):
        response = self.w3.provider.make_request(method, args)
        assert "error" not in response, response
        return response["result"]

    def index(self) -> dict[str, int]:
        prices = self.client.oracle.functions.index_prices().call()
        return {s: prices[i] for s, i in self.dep.price_ids.items()}


def keeper_dev(chain, *args: str, manifest=None) -> tuple[int, str]:
    result = CliRunner().invoke(
        dev, [*args, "--rpc", chain.url, "--manifest", str(manifest or chain.manifest)], catch_exceptions=False
    )
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    with Anvil() as url:  # base fee 1 gwei, as a hand-started `anvil`
        yield Chain(url, tmp_path_factory.mktemp("dev") / "development.json")


@pytest.fixture
def env(chain):
    """Every test starts from the deployed protocol with the book open."""
    snapshot = chain.rpc("evm_snapshot", [])
    yield chain
    chain.rpc("evm_revert", [snapshot])


def test_accounts_opens_a_varied_book_from_the_dev_accounts(env):
    code, out = env.accounts_output
    assert code == 0, out
    for kind in KINDS:
        assert kind in out
    states = env.client.margin_summaries(TRADERS)
    snap = env.client.snapshot([*TRADERS, dev_account(2)[0]], env.w3.eth.block_number)
    for address, (equity, im, mm, _health) in zip(TRADERS, states):
        assert address in out
        assert equity >= im > mm > 0  # every trade met initial margin
    # the market maker (account 2) holds the other side: each market sums to zero
    assert all(sum(snap.book.size[:, m]) == 0 for m in range(snap.book.size.shape[1]))
    assert snap.book.size[:6].any(axis=1).all()  # every trader holds a position
    # one trader posts WETH, the others USDC cash
    weth = env.dep.asset_ids["WETH"]
    assert sum(1 for row in range(6) if snap.book.collateral[row, weth]) == 1
    assert env.client.vault.functions.cash(dev_account(1)[0]).call() == LIQUIDATOR_DEPOSIT_USD * WAD
    assert "liquidator 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 has 1,000,000 USDC" in out


def test_price_move_makes_some_accounts_liquidatable(env):
    code, out = keeper_dev(env, "price", "eth", "1500")
    assert code == 0, out
    assert env.index()["ETH"] == 1500 * WAD
    assert env.feeds["ETH"].functions.latestRoundData().call()[1] == 1500 * 10**8  # 8-decimal feed
    assert "index price ETH: 2,000.00 -> 1,500.00 USD" in out
    states = dict(zip(TRADERS, env.client.margin_summaries(TRADERS)))
    liquidatable = [a for a, s in states.items() if s[0] < s[2]]
    assert liquidatable and len(liquidatable) < len(TRADERS)
    assert f"liquidatable now (equity < maintenance margin): {len(liquidatable)} of 8 accounts" in out
    for address in liquidatable:
        assert address in out
    # hand calculation for the future (ETH-FUT long on USDC cash, seed 23: 16,400.421664 USDC,
    # 30.494134 ETH at 2,000; funding does not touch futures): equity = cash + size x (1,500 -
    # 2,000) = 16,400.421664 - 15,247.067 = 1,153.354664 USD; MM = size x 1,500 x 5% = 2,287.06005 USD
    future = TRADERS[2]
    snap = env.client.snapshot([future], env.w3.eth.block_number)
    fut = env.dep.markets["ETH-FUT"]
    assert snap.book.cash[0] == 16_400_421_664 * 10**12
    assert (snap.book.size[0, fut], snap.book.entry_price[0, fut]) == (30_494_134 * 10**12, 2000 * WAD)
    assert states[future][0] == 1_153_354_664 * 10**12
    assert states[future][2] == 2_287_060_050 * 10**12
    assert future in liquidatable


def test_warp_moves_time_and_keeps_the_feeds_fresh(env):
    before = env.index()
    start = env.w3.eth.get_block("latest")["timestamp"]
    # time alone makes the mock feeds stale: the oracle ignores them (heartbeat 3,600 s; the
    # USDC / USD feed of the depeg rule has a one-day heartbeat)
    env.rpc("evm_increaseTime", [3700])
    env.rpc("evm_mine", [])
    assert env.index() == {"ETH": 0, "BTC": 0, "USDC": 10**18}
    code, out = keeper_dev(env, "warp", "0")
    assert code == 0, out
    assert env.index() == before
    code, out = keeper_dev(env, "warp", "3700")
    assert code == 0, out
    now = env.w3.eth.get_block("latest")["timestamp"]
    assert now >= start + 2 * 3700
    assert env.index() == before
    for feed in env.feeds.values():
        assert feed.functions.latestRoundData().call()[3] >= now - 1
    assert "re-posted the latest answer of 3 mock feed(s) so the oracle is fresh" in out
    assert "index prices BTC 30,000.00, ETH 2,000.00, USDC 1.00 USD" in " ".join(out.split())  # may wrap


def test_bad_input_is_one_line(env):
    for args, message in (
        (("price", "DOGE", "1"), "unknown price id 'DOGE': the deployment has"),
        (("price", "ETH", "0"), "USD must be a positive number, got '0'"),
        (("price", "ETH", "abc"), "USD must be a number like 1500 or 1500.25, got 'abc'"),
        (("price", "ETH", "0.000000001"), "is not a positive int256 answer at the feed's 8 decimals"),
        (("accounts", "--count", "8"), "the node unlocks 10 accounts; --count 8 needs 11"),
        (("accounts", "--liquidator", "0x123"), "--liquidator is not an address: '0x123'"),
        (("accounts", "--options"), "--options: the deployment has no option market"),
    ):
        code, out = keeper_dev(env, *args)
        assert code == 1, out
        assert message in out and len(out.strip().splitlines()) == 1, out


def test_refuses_a_deployment_without_mock_feeds(env, tmp_path):
    # as a deployment that took its ETH feed by address (config `feeds:`): no mock step recorded
    raw = json.loads(env.manifest.read_text())
    del raw["steps"]["feeds.ETH"]
    manifest = tmp_path / "real-feeds.json"
    manifest.write_text(json.dumps(raw))
    for args in (("price", "BTC", "25000"), ("warp", "60"), ("accounts",)):
        code, out = keeper_dev(env, *args, manifest=manifest)
        assert code == 1, out
        assert f"the deployment's feed ETH {env.dep.feeds['ETH']} is not a mock it created" in out
    assert env.index()["BTC"] == 30000 * WAD  # nothing was sent


def test_refuses_a_chain_that_is_not_a_development_chain(env):
    with Anvil(extra_args=("--chain-id", "11155111")) as url:
        result = CliRunner().invoke(dev, ["warp", "60", "--rpc", url, "--manifest", str(env.manifest)])
        assert result.exit_code == 1
        assert "chain 11155111 is not a local development chain (Anvil's chain id is 31337)" in result.output
        assert connect(url).eth.block_number == 0  # no time moved, nothing mined


def _wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_walkthrough_keeper_liquidates_after_a_crash_and_after_a_parameter_change(env, tmp_path, monkeypatch):
    """The README's flow: the keeper liquidates the three accounts ETH at 1,500 leaves under
    MM, then the example change (WETH haircut 0.85 -> 0.80), queued with
    --accept-liquidations and executed after `warp`, phases in over 7 days: the WETH account
    stays healthy in the block of the change and, once it has phased in (a second `warp`),
    the running keeper liquidates it (it reads the haircuts and rates in force every block)."""
    status = tmp_path / "status.json"
    keeper_env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    keeper_env["KEEPER_PRIVATE_KEY"] = DEV_ACCOUNTS[1][1]
    cmd = [
        sys.executable,
        "-m",
        "keeper",
        "run",
        "--rpc",
        env.url,
        "--manifest",
        str(env.manifest),
        "--status-file",
        str(status),
        "--poll",
        "0.05",
        "--log-json",
    ]
    with open(tmp_path / "keeper.log", "w") as log:
        keeper = subprocess.Popen(cmd, env=keeper_env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def stats():
            assert keeper.poll() is None, (tmp_path / "keeper.log").read_text()
            try:
                return json.loads(status.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return None

        _wait(lambda: stats(), "the keeper's first block")
        assert keeper_dev(env, "price", "ETH", "1500")[0] == 0
        _wait(lambda: (stats() or {}).get("succeeded") == 3, "three liquidations")

        monkeypatch.setenv("GOVERNANCE_PRIVATE_KEY", DEV_ACCOUNTS[0][1])
        chain_args = ["--rpc", env.url, "--manifest", str(env.manifest), "--operations", str(tmp_path / "ops.json")]
        runner = CliRunner()
        queued = runner.invoke(params, ["queue", EXAMPLE_CHANGES, *chain_args])
        assert queued.exit_code == 2 and "would become LIQUIDATABLE" in queued.output, queued.output
        queued = runner.invoke(params, ["queue", EXAMPLE_CHANGES, "--accept-liquidations", *chain_args])
        assert queued.exit_code == 0, queued.output
        early = runner.invoke(params, ["execute", *chain_args])
        assert early.exit_code == 1 and "is not ready: eta" in early.output
        assert keeper_dev(env, "warp", "3900")[0] == 0
        before = env.w3.eth.block_number  # the keeper may act between two of the executions
        executed = runner.invoke(params, ["execute", *chain_args])
        assert executed.exit_code == 0, executed.output
        weth = env.dep.asset_ids["WETH"]
        # seconds into a week-long phase-in: the haircut in force is still about 0.85
        assert 84 * 10**16 < env.client.vault.functions.haircut_now(weth).call() <= 85 * 10**16
        assert not env.client.engine.functions.is_liquidatable(TRADERS[5]).call()
        assert keeper_dev(env, "warp", str(bounds.REQUIREMENT_RAMP))[0] == 0
        assert env.client.vault.functions.haircut_now(weth).call() == 80 * 10**16
        _wait(lambda: (stats() or {}).get("succeeded") == 4, "the liquidation after the change")
        assert [e["account"] for e in env.client.liquidations(before + 1, env.w3.eth.block_number)] == [TRADERS[5]]
        assert env.client.vault.functions.assets(weth).call()[3] == 80 * 10**16
    finally:
        keeper.terminate()
        keeper.wait(timeout=10)


def test_account_pnl_includes_the_funding_the_engine_charges(env):
    """`keeper account --json`: a perpetual trade 2% above the index sets a funding rate; a day
    later the P&L of a perpetual holder includes its accrued funding, so cash value + collateral
    value + P&L is the engine's equity, to the wei."""
    from keeper.cli import cli
    from keeper.dev_cli import FUNDER, LIQUIDATOR, MAKER, NONCE_STRIDE
    from keeper.replay.driver import User

    perp = env.dep.markets["ETH-PERP"]
    snap = env.client.snapshot(TRADERS, env.w3.eth.block_number)
    holder = next(a for row, a in enumerate(TRADERS) if snap.book.size[row, perp])
    nonce = (env.w3.eth.block_number + 1) * NONCE_STRIDE
    taker, maker = User(*dev_account(LIQUIDATOR), nonce=nonce), User(*dev_account(MAKER), nonce=nonce)
    size, price = 50 * WAD, env.index()["ETH"] * 102 // 100
    ours, our_sig = taker.order(perp, size, price, env.dep.chain_id, env.dep.matching)
    theirs, their_sig = maker.order(perp, -size, price, env.dep.chain_id, env.dep.matching)
    tx = env.client.matching.functions.match_orders(ours, our_sig, theirs, their_sig).transact(
        {"from": dev_account(FUNDER)[0]}
    )
    assert env.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert env.client.market_states()[perp].funding_rate > 0
    code, out = keeper_dev(env, "warp", "86400")  # a day of funding, feeds kept fresh
    assert code == 0, out

    result = CliRunner().invoke(
        cli, ["account", holder, "--rpc", env.url, "--manifest", str(env.manifest), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    block = report["block"]
    engine = env.client.engine.functions
    equity = engine.margin_summary(holder).call(block_identifier=block)[0]
    assert report["margin"]["equity"] == equity and report["keeper_agrees"]
    assert report["unrealized_pnl"] == equity - report["cash"]["value"] - report["collateral_value"]
    (row,) = [p for p in report["positions"] if p["market"] == "ETH-PERP"]
    # MarginEngine._position_value: funding owed = ceil(size x (funding_index_now - entry index) / 1e18)
    _, _, entry_index = engine.positions(holder, perp).call(block_identifier=block)
    owed = -((row["size"] * (entry_index - engine.funding_index_now(perp).call(block_identifier=block))) // WAD)
    assert row["funding"] == owed != 0
    assert row["unrealized_pnl"] == row["price_pnl"] - owed
    assert report["unrealized_pnl"] == sum(p["unrealized_pnl"] for p in report["positions"])

    table = CliRunner().invoke(cli, ["account", holder, "--rpc", env.url, "--manifest", str(env.manifest)])
    assert table.exit_code == 0, table.output
    assert "funding owed" in table.output and "keeper = contract" in table.output
