"""`keeper params` on a deployment with options (config/options.yaml) whose roles a timelock
holds (1-hour delay, governance not the deployer): an option writer the rehearsal shows becoming
liquidatable when the option rates rise, and an attestation floor plus an option rate changed
through queue -> time travel -> execute, read back from chain."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Web3Backend, deploy_protocol
from keeper.chain.governance import accept_admin_roles
from keeper.chain.manifest import save_manifest
from keeper.chain.orders import OptionOrder, sign_option_order
from keeper.chain.volfeed import post_vols, vol_update
from keeper.config import GovernanceConfig, load_config
from keeper.params.changes import parse_changes
from keeper.params.current import read_current
from keeper.params.plan import plan_calls
from keeper.params.rehearsal import rehearse
from keeper.params.timelock import store_path
from keeper.params_cli import params
from keeper.replay.option_books import dev_keys

pytestmark = pytest.mark.anvil

OPTIONS_CONFIG = Path(__file__).resolve().parents[2] / "config" / "options.yaml"
WAD = 10**18
E16 = 10**16
USDC = 10**6
DELAY = 3600
ADMIN = DEV_ACCOUNTS[0][0]
GOVERNANCE, GOVERNANCE_KEY = DEV_ACCOUNTS[1]
KEYS = {"buyer": b"\x11" * 32, "writer": b"\x12" * 32}
SERIES = "ETH-30D-C-2200"  # strike 1.1 x the 2,000 USD mock index
SIZE = 10 * WAD
# short calls: MM = size x short_mm_rate x index = 10 x 0.09 x 2,000 = 1,800 USD; at 20% it is
# 4,000, above the writer's 3,000 USD of equity
LIQUIDATING = "changes:\n  - {options: {short_im_rate: 0.2, short_im_floor: 0.2, short_mm_rate: 0.2}}\n"
FLOOR_AND_RATE = "changes:\n  - {attestation: {margin_floor: 0.3}}\n  - {options: {short_im_rate: 0.16}}\n"


def _address(key: bytes) -> str:
    from eth_keys import keys

    return keys.PrivateKey(key).public_key.to_checksum_address()


class Chain:
    def __init__(self, url: str):
        self.url = url
        self.w3 = connect(url)
        config = load_config(OPTIONS_CONFIG)
        config = dataclasses.replace(config, governance=GovernanceConfig(GOVERNANCE, DELAY))
        first_block = self.w3.eth.block_number + 1
        self.dep = deploy_protocol(Web3Backend(self.w3, ADMIN), config, ADMIN, self.w3.eth.chain_id)
        self.dep.deploy_block = first_block
        accept_admin_roles(Web3Backend(self.w3, GOVERNANCE), self.dep)  # governance is not the deployer
        self.client = ProtocolClient(self.w3, self.dep)
        self.market = self.w3.eth.contract(address=self.dep.option_market, abi=load_artifact("OptionMarket").abi)
        self.attestor = self.w3.eth.contract(address=self.dep.health_attestor, abi=load_artifact("HealthAttestor").abi)
        self.addr = {name: _address(key) for name, key in KEYS.items()}
        self.series = self.dep.option_series[SERIES]
        self._write_calls(dev_keys(config.options.vol_feed.signers.signers))

    def send(self, call) -> None:
        assert self.w3.eth.wait_for_transaction_receipt(call.transact({"from": ADMIN}))["status"] == 1

    def _write_calls(self, vol_keys) -> None:
        """The writer (3,000 USDC) sells 10 calls to the buyer at the mark, with a fresh vol."""
        usdc = self.w3.eth.contract(address=self.dep.settlement_token, abi=load_artifact("MockERC20").abi)
        for who, amount in (("buyer", 100_000 * USDC), ("writer", 3_000 * USDC)):
            self.send(usdc.functions.mint(ADMIN, amount))
            self.send(usdc.functions.approve(self.dep.vault, amount))
            self.send(self.client.vault.functions.deposit_for(usdc.address, amount, self.addr[who]))
        expiry = self.market.functions.series(self.series).call()[3]
        now = self.w3.eth.get_block("latest")["timestamp"]
        post_vols(self.w3, self.dep, vol_keys, [vol_update(0, expiry, 0.8, 0.0, now)], ADMIN)
        mark = self.market.functions.series_states().call()[self.series][-1]
        orders = []
        for n, (who, size) in enumerate((("buyer", SIZE), ("writer", -SIZE))):
            o = OptionOrder(self.addr[who], self.series, size, mark, n + 1, 2**63)
            orders += [o.as_tuple(), sign_option_order(o, KEYS[who], self.dep.chain_id, self.dep.matching)]
        self.send(self.client.matching.functions.match_option_orders(*orders))

    def rpc(self, method: str, args: list):
        response = self.w3.provider.make_request(method, args)
        assert "error" not in response, response
        return response["result"]


@pytest.fixture(scope="module")
def chain():
    with Anvil() as url:
        yield Chain(url)


@pytest.fixture
def env(chain, tmp_path, monkeypatch):
    snapshot = chain.rpc("evm_snapshot", [])
    monkeypatch.setenv("GOVERNANCE_PRIVATE_KEY", GOVERNANCE_KEY)
    yield chain, save_manifest(chain.dep, tmp_path / "deployment.json"), tmp_path
    chain.rpc("evm_revert", [snapshot])


def keeper_params(chain, manifest, *args: str):
    result = CliRunner().invoke(
        params, [*args, "--rpc", chain.url, "--manifest", str(manifest)], catch_exceptions=False
    )
    return result.exit_code, result.output


def change_file(tmp_path, text: str) -> str:
    path = tmp_path / "changes.yaml"
    path.write_text(text)
    return str(path)


def test_timelock_holds_the_option_contracts_roles(env):
    chain, _, _ = env
    roles = read_current(chain.w3, chain.dep).roles
    assert roles == {
        name: (chain.dep.timelock, chain.dep.timelock)
        for name in ("oracle", "vault", "engine", "option_market", "vol_feed", "health_attestor", "backstop_vault")
    }


def test_rehearsal_shows_the_option_writer_becoming_liquidatable(env):
    chain, manifest, tmp_path = env
    calls = plan_calls(parse_changes({"changes": [{"options": {"short_im_rate": 0.2, "short_im_floor": 0.2,
                                                               "short_mm_rate": 0.2}}]}),
                       read_current(chain.w3, chain.dep), chain.dep)  # fmt: skip
    r = rehearse(chain.url, chain.dep, calls)
    assert r.applied and r.actor == chain.dep.timelock
    assert set(r.accounts) == set(chain.addr.values())
    w = r.accounts.index(chain.addr["writer"])
    # hand calculation: MM of 10 short calls = 10 x rate x 2,000 -> 1,800 before, 4,000 after
    assert (r.before[w][2], r.after[w][2]) == (1_800 * WAD, 4_000 * WAD)
    assert r.before[w][0] >= r.before[w][1]  # the writer met IM when it sold
    assert [r.accounts[i] for i in r.newly_liquidatable] == [chain.addr["writer"]]
    assert chain.market.functions.risk_params().call()[2] == 9 * E16  # the real chain is untouched

    code, out = keeper_params(chain, manifest, "rehearse", change_file(tmp_path, LIQUIDATING))
    assert code == 2, out
    assert "option_market.set_risk_params" in out and "NEWLY LIQUIDATABLE" in out and chain.addr["writer"] in out


def test_queue_wait_execute_changes_the_attestation_floor_and_an_option_rate(env):
    chain, manifest, tmp_path = env
    code, out = keeper_params(chain, manifest, "queue", change_file(tmp_path, FLOOR_AND_RATE))
    assert code == 0, out
    ops = json.loads(store_path(manifest).read_text())["operations"]
    assert [op["label"].split("(")[0] for op in ops] == [
        "attestation: health_attestor.set_margin_floor",
        "options: option_market.set_risk_params",
    ]
    assert ops[1]["label"].startswith(f"options: option_market.set_risk_params([{16 * E16}, {13 * E16}, {9 * E16}")
    now = chain.w3.eth.get_block("latest")["timestamp"]
    chain.rpc("evm_increaseTime", [ops[0]["eta"] - now])
    chain.rpc("evm_mine", [])
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 0, out
    assert chain.attestor.functions.margin_floor().call() == 30 * E16
    assert tuple(chain.market.functions.risk_params().call()) == (
        16 * E16,
        13 * E16,
        9 * E16,
        75 * E16,
        80 * E16,
        5 * 10**15,
        10 * E16,
    )
    store_path(manifest).unlink()  # rebuilt from the timelock's events, with readable labels
    code, out = keeper_params(chain, manifest, "status")
    assert code == 0, out
    assert out.count("executed") == 2 and "health_attestor.set_margin_floor" in out


def test_portfolio_margin_file_queues_and_executes_its_hash(env):
    """A new grid file: `show` prints both hashes and the changed parameters (the current file,
    config/portfolio_margin.yaml, is known by its hash); queue -> wait -> execute governs the
    attestor to the new hash."""
    from keeper.config import DEFAULT_PM_CONFIG, load_scenario_params
    from keeper.risk.scenarios import scenario_params_hash

    chain, manifest, tmp_path = env
    old = scenario_params_hash(load_scenario_params(DEFAULT_PM_CONFIG))
    assert chain.attestor.functions.scenario_params_hash().call() == old  # the deployment committed the file
    grid = tmp_path / "pm.yaml"
    grid.write_text(DEFAULT_PM_CONFIG.read_text().replace("spot_range: 0.15", "spot_range: 0.2"))
    new = scenario_params_hash(load_scenario_params(grid))
    changes = change_file(tmp_path, f"changes:\n  - {{portfolio_margin: {grid}}}\n")
    code, out = keeper_params(chain, manifest, "show", changes)
    assert code == 0, out
    assert "health_attestor.set_scenario_param" in out and f"0x{old.hex()[:16]}" in out and f"0x{new.hex()[:16]}" in out
    assert "spot_range" in out and "0.15" in out and "0.2" in out and "im_factor" not in out
    code, out = keeper_params(chain, manifest, "queue", changes)
    assert code == 0, out
    (op,) = json.loads(store_path(manifest).read_text())["operations"]
    now = chain.w3.eth.get_block("latest")["timestamp"]
    chain.rpc("evm_increaseTime", [op["eta"] - now])
    chain.rpc("evm_mine", [])
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 0, out
    assert chain.attestor.functions.scenario_params_hash().call() == new
    # the same file again changes nothing
    with pytest.raises(Exception, match="changes nothing"):
        plan_calls(
            parse_changes({"changes": [{"portfolio_margin": str(grid)}]}), read_current(chain.w3, chain.dep), chain.dep
        )
