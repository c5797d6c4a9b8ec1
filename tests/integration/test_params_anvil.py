"""`keeper params` against a real Anvil chain: the protocol deployed with a few positions and
its roles handed to a timelock (1-hour delay, governance not the deployer), then rehearsals on
an Anvil fork, queue (refused without the flag when accounts would become liquidatable), time
travel, execute, cancel and status, all through the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner
from web3.exceptions import ContractLogicError

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Web3Backend, deploy_protocol
from keeper.chain.governance import accept_admin_roles, install_timelock
from keeper.chain.manifest import load_manifest, save_manifest
from keeper.chain.orders import Order, sign_order
from keeper.config import load_config
from keeper.params.changes import load_changes, parse_changes
from keeper.params.current import read_current
from keeper.params.plan import plan_calls
from keeper.params.rehearsal import rehearse
from keeper.params.timelock import store_path
from keeper.params_cli import params

pytestmark = pytest.mark.anvil

WAD = 10**18
USDC = 10**6
DELAY = 3600
ADMIN, ADMIN_KEY = DEV_ACCOUNTS[0]
GOVERNANCE, GOVERNANCE_KEY = DEV_ACCOUNTS[1]
# traders' keys (only sign orders; the admin sends every transaction)
KEYS = {name: bytes([i + 1]) * 32 for i, name in enumerate(("maker", "levered", "safe", "btc_short"))}

# ETH IM 10% -> 13%, MM 5% -> 6%: the levered account (equity 10,000 on 80,000 of ETH) falls
# below IM (10,400) but stays above MM (4,800)
HARMLESS = "changes:\n  - {underlying: ETH, im_rate: 0.13, mm_rate: 0.06}\n"
# ETH MM 13%: the levered account's MM becomes 10,400 > its equity of 10,000
LIQUIDATING = "changes:\n  - {underlying: ETH, im_rate: 0.15, mm_rate: 0.13}\n"


class Chain:
    def __init__(self, url: str):
        self.url = url
        self.w3 = connect(url)
        config = load_config()
        if getattr(config, "governance", None) is not None:
            config = dataclasses.replace(config, governance=None)  # installed below, by hand
        first_block = self.w3.eth.block_number + 1
        self.dep = deploy_protocol(Web3Backend(self.w3, ADMIN), config, ADMIN, self.w3.eth.chain_id)
        self.dep.deploy_block = first_block
        self.client = ProtocolClient(self.w3, self.dep)
        erc20 = load_artifact("MockERC20").abi
        self.usdc = self.w3.eth.contract(address=self.dep.settlement_token, abi=erc20)
        self.weth = self.w3.eth.contract(address=self.dep.tokens["WETH"], abi=erc20)
        agg = load_artifact("MockAggregator").abi
        self.feeds = {s: self.w3.eth.contract(address=a, abi=agg) for s, a in self.dep.feeds.items()}
        self.addr = {name: _address(key) for name, key in KEYS.items()}
        self.nonce = 0
        assert self.client.oracle.functions.index_prices().call() == [
            2000 * WAD,
            30000 * WAD,
            WAD,
        ]  # as config/local.yaml
        self._open_positions()
        # governance is not the deployer: the admin proposals stay pending until it accepts
        install_timelock(Web3Backend(self.w3, ADMIN), self.dep, GOVERNANCE, DELAY)
        assert self.client.engine.functions.admin().call() == ADMIN
        accept_admin_roles(Web3Backend(self.w3, GOVERNANCE), self.dep)

    def send(self, call) -> None:
        receipt = self.w3.eth.wait_for_transaction_receipt(call.transact({"from": ADMIN}))
        assert receipt["status"] == 1

    def deposit(self, token, who: str, amount: int) -> None:
        self.send(token.functions.mint(ADMIN, amount))
        self.send(token.functions.approve(self.dep.vault, amount))
        self.send(self.client.vault.functions.deposit_for(token.address, amount, self.addr[who]))

    def trade(self, buyer: str, seller: str, market: str, size: int, price: int) -> None:
        orders = []
        for who, signed in ((buyer, size), (seller, -size)):
            self.nonce += 1
            o = Order(self.addr[who], self.dep.markets[market], signed, price, self.nonce, 2**63)
            orders += [o.as_tuple(), sign_order(o, KEYS[who], self.dep.chain_id, self.dep.matching)]
        self.send(self.client.matching.functions.match_orders(*orders))

    def _open_positions(self) -> None:
        self.deposit(self.usdc, "maker", 10_000_000 * USDC)
        self.deposit(self.usdc, "levered", 10_000 * USDC)
        self.deposit(self.usdc, "safe", 100_000 * USDC)
        self.deposit(self.weth, "btc_short", 10 * WAD)  # 17,000 of margin at 2,000 x 0.85
        self.trade("levered", "maker", "ETH-PERP", 40 * WAD, 2000 * WAD)
        self.trade("safe", "maker", "ETH-PERP", 10 * WAD, 2000 * WAD)
        self.trade("maker", "btc_short", "BTC-PERP", 2 * WAD, 30000 * WAD)

    def rpc(self, method: str, args: list):
        response = self.w3.provider.make_request(method, args)
        assert "error" not in response, response
        return response["result"]

    def travel(self, seconds: int) -> None:
        """Move chain time on and publish fresh prices (the mock feeds would go stale)."""
        self.rpc("evm_increaseTime", [seconds])
        self.rpc("evm_mine", [])
        self.refresh_prices()

    def refresh_prices(self) -> None:
        for feed in self.feeds.values():
            self.send(feed.functions.set_answer(feed.functions.latestRoundData().call()[1]))


def _address(key: bytes) -> str:
    from eth_keys import keys

    return keys.PrivateKey(key).public_key.to_checksum_address()


@pytest.fixture(scope="module")
def chain():
    with Anvil() as url:
        yield Chain(url)


@pytest.fixture
def env(chain, tmp_path, monkeypatch):
    """Each test starts from the same chain state, with its own manifest and operations file."""
    snapshot = chain.rpc("evm_snapshot", [])
    chain.refresh_prices()  # whatever time a reverted test left behind
    monkeypatch.setenv("GOVERNANCE_PRIVATE_KEY", GOVERNANCE_KEY)
    manifest = save_manifest(chain.dep, tmp_path / "deployment.json")
    yield chain, manifest, tmp_path
    chain.rpc("evm_revert", [snapshot])


def keeper_params(chain, manifest, *args: str):
    result = CliRunner().invoke(
        params, [*args, "--rpc", chain.url, "--manifest", str(manifest)], catch_exceptions=False
    )
    return result.exit_code, result.output


def change_file(tmp_path, text: str):
    path = tmp_path / "changes.yaml"
    path.write_text(text)
    return str(path)


def test_manifest_records_the_timelock_holding_every_role(env):
    chain, manifest, _ = env
    dep = load_manifest(manifest)
    assert dep.timelock and dep.timelock == chain.dep.timelock
    roles = read_current(chain.w3, dep).roles
    assert roles == {name: (dep.timelock, dep.timelock) for name in ("oracle", "vault", "engine", "backstop_vault")}


def test_show_prints_current_and_new_values(env):
    chain, manifest, tmp_path = env
    code, out = keeper_params(chain, manifest, "show", change_file(tmp_path, HARMLESS))
    assert code == 0, out
    assert "engine.set_underlying_params" in out
    assert "im_rate" in out and "0.1" in out and "0.13" in out
    # a value outside the on-chain bounds is refused before anything is sent
    code, out = keeper_params(
        chain, manifest, "show", change_file(tmp_path, "changes:\n  - {underlying: ETH, im_rate: 2}\n")
    )
    assert code == 1
    assert "im_rate 2 is outside [0.01, 1] (engine: im_rate out of bounds)" in out


def test_rehearsal_of_a_harmless_change(env):
    chain, manifest, tmp_path = env
    dep = load_manifest(manifest)
    calls = plan_calls(
        parse_changes({"changes": [{"underlying": "ETH", "im_rate": 0.13, "mm_rate": 0.06}]}),
        read_current(chain.w3, dep),
        dep,
    )
    r = rehearse(chain.url, dep, calls)
    assert r.applied and r.safe and r.actor == dep.timelock
    assert set(r.accounts) == set(chain.addr.values())
    assert [r.accounts[i] for i in r.newly_below_im] == [chain.addr["levered"]]
    assert r.newly_liquidatable == []
    # hand calculation: ETH positions 40 + 10 long, 50 short, all at 2,000 -> 200,000 of net
    # notional; IM +3% = +6,000, MM +1% = +2,000; BTC unchanged
    assert r.total("after", 1) - r.total("before", 1) == 6_000 * WAD
    assert r.total("after", 2) - r.total("before", 2) == 2_000 * WAD
    assert chain.client.engine.functions.underlyings(0).call()[1] == 10 * 10**16  # the real chain is untouched
    code, out = keeper_params(chain, manifest, "rehearse", change_file(tmp_path, HARMLESS))
    assert code == 0, out
    assert "newly liquidatable: none" in out
    assert chain.addr["levered"] in out  # listed as newly below IM


def test_rehearsal_shows_accounts_becoming_liquidatable_and_fails(env):
    chain, manifest, tmp_path = env
    code, out = keeper_params(chain, manifest, "rehearse", change_file(tmp_path, LIQUIDATING))
    assert code == 2, out
    assert "NEWLY LIQUIDATABLE" in out and "LIQUIDATABLE once this change has phased in" in out
    assert chain.addr["levered"] in out
    assert "1 account(s) would become liquidatable" in out


def test_queue_refuses_liquidations_without_the_flag(env):
    chain, manifest, tmp_path = env
    code, out = keeper_params(chain, manifest, "queue", change_file(tmp_path, LIQUIDATING))
    assert code == 2, out
    assert "refusing to queue: 1 account(s) would become liquidatable; pass --accept-liquidations" in out
    timelock = chain.w3.eth.contract(address=chain.dep.timelock, abi=load_artifact("Timelock").abi)
    assert list(timelock.events.Queued.get_logs(from_block=0)) == []
    assert not store_path(manifest).exists()
    # with the explicit flag it is queued (and still shown)
    code, out = keeper_params(chain, manifest, "queue", change_file(tmp_path, LIQUIDATING), "--accept-liquidations")
    assert code == 0, out
    assert "NEWLY LIQUIDATABLE" in out
    assert len(json.loads(store_path(manifest).read_text())["operations"]) == 1


def test_queue_needs_the_governance_key(env, monkeypatch):
    chain, manifest, tmp_path = env
    monkeypatch.setenv("GOVERNANCE_PRIVATE_KEY", ADMIN_KEY)
    code, out = keeper_params(chain, manifest, "queue", change_file(tmp_path, HARMLESS))
    assert code == 1
    assert f"GOVERNANCE_PRIVATE_KEY is {ADMIN}, but the timelock's governance is {GOVERNANCE}" in out


def test_queue_wait_execute_changes_the_parameter(env):
    chain, manifest, tmp_path = env
    code, out = keeper_params(chain, manifest, "queue", change_file(tmp_path, HARMLESS))
    assert code == 0, out
    (op,) = json.loads(store_path(manifest).read_text())["operations"]
    assert op["label"].startswith(
        "underlying ETH: engine.set_underlying_params(0, 130000000000000000, 60000000000000000"
    )
    now = chain.w3.eth.get_block("latest")["timestamp"]
    assert DELAY <= op["eta"] - now <= DELAY + 300
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 1
    assert (
        f"operation {op['id'][:10]} (underlying ETH: engine.set_underlying_params" in out and "is not ready: eta" in out
    )
    code, out = keeper_params(chain, manifest, "status")
    assert code == 0 and "waiting" in out
    chain.travel(op["eta"] - now)
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 0, out
    assert tuple(chain.client.engine.functions.underlyings(0).call()[1:3]) == (13 * 10**16, 6 * 10**16)
    code, out = keeper_params(chain, manifest, "status")
    assert "executed" in out
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 1 and "nothing to execute" in out


def test_cancel_and_recovery_from_events(env):
    chain, manifest, tmp_path = env
    code, out = keeper_params(chain, manifest, "queue", change_file(tmp_path, HARMLESS))
    assert code == 0, out
    store_path(manifest).unlink()  # lost: rebuilt from the timelock's Queued events
    code, out = keeper_params(chain, manifest, "cancel", "--all")
    assert code == 0, out
    assert "cancelled" in out and "engine.set_underlying_params(0, 130000000000000000" in out
    chain.travel(DELAY + 300)
    code, out = keeper_params(chain, manifest, "status")
    assert "cancelled" in out
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 1 and "nothing to execute" in out
    assert chain.client.engine.functions.underlyings(0).call()[1] == 10 * 10**16


def test_rehearsal_warns_when_a_cap_outgrows_the_insurance_fund(env):
    """keeper.params.backstop on the fork after the change: with the $1,000,000 fund of
    config/local.yaml, a harmless change says nothing; raising the ETH-PERP cap to 5,000,000
    ETH (2,500,000,000 of gap loss at $2,000) prints one warning line and still exits 0."""
    chain, manifest, tmp_path = env
    fund = 1_000_000 * USDC
    chain.send(chain.usdc.functions.mint(ADMIN, fund))
    chain.send(chain.usdc.functions.approve(chain.dep.vault, fund))
    chain.send(chain.client.vault.functions.fund_insurance(fund))
    dep = load_manifest(manifest)
    calls = plan_calls(
        parse_changes({"changes": [{"underlying": "ETH", "im_rate": 0.13, "mm_rate": 0.06}]}),
        read_current(chain.w3, dep),
        dep,
    )
    assert rehearse(chain.url, dep, calls).backstop_warning is None
    wide = "changes:\n  - {market: ETH-PERP, max_open_interest: 5000000, max_position: 1000}\n"
    calls = plan_calls(load_changes(change_file(tmp_path, wide)), read_current(chain.w3, dep), dep)
    r = rehearse(chain.url, dep, calls)
    assert r.safe and r.backstop_warning is not None and "\n" not in r.backstop_warning
    assert r.backstop_warning.startswith("backstop: market ETH-PERP: cap 5,000,000 ETH x $2,000 x (0.3 gap - 0.05 mm)")
    assert "$2,500,000,000" in r.backstop_warning and "ETH-FUT" not in r.backstop_warning
    result = CliRunner().invoke(
        params,
        ["rehearse", change_file(tmp_path, wide), "--rpc", chain.url, "--manifest", str(manifest)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: backstop:")]
    assert len(warnings) == 1 and "cap at most 2,000 ETH" in warnings[0], result.stderr


# the backstop vault of config/local.yaml: one change of each of its setters
BACKSTOP_CHANGES = (
    "changes:\n"
    "  - {backstop_vault: {auction_discount: 0.02, request_delay_seconds: 172800}}\n"
    "  - {market: BTC-PERP, backstop_max_exposure: 40}\n"
)


def test_backstop_vault_parameters_through_the_timelock(env):
    """Read from chain, shown, printed for a multisig, queued, recovered from the timelock's
    events, executed and read back; a value out of range is refused in one line ending with the
    revert reason the contract gives."""
    chain, manifest, tmp_path = env
    dep = load_manifest(manifest)
    vault = chain.w3.eth.contract(address=dep.backstop_vault, abi=load_artifact("BackstopVault").abi)
    current = read_current(chain.w3, dep)
    assert current.values["backstop_vault"][""] == {
        "caller_fee_share": 20 * 10**16,
        "max_margin_usage": 50 * 10**16,
        "auction_discount": 10**16,
        "auction_seconds": 3600,
        "request_delay_seconds": 86400,
    }  # config/local.yaml
    btc = dep.markets["BTC-PERP"]
    assert current.values["market"]["BTC-PERP"]["backstop_max_exposure"] == 65 * WAD
    path = change_file(tmp_path, BACKSTOP_CHANGES)
    code, out = keeper_params(chain, manifest, "show", path)
    assert code == 0, out
    assert "backstop_vault.set_params" in out and "backstop_vault.set_max_exposure" in out
    assert "172800 s" in out
    code, out = keeper_params(chain, manifest, "queue", path, "--calldata-only")
    assert code == 0, out
    set_params = "backstop_vault: backstop_vault.set_params(200000000000000000, 500000000000000000, 20000000000000000, 3600, 172800)"
    set_cap = f"market BTC-PERP: backstop_vault.set_max_exposure({btc}, {40 * WAD})"
    assert set_params in out and set_cap in out
    code, out = keeper_params(chain, manifest, "queue", path)
    assert code == 0, out
    store_path(manifest).unlink()  # rebuilt from the Queued events, labelled from the vault's ABI
    chain.travel(DELAY + 300)
    code, out = keeper_params(chain, manifest, "execute")
    assert code == 0, out
    assert set_params.split(": ", 1)[1] in out and set_cap.split(": ", 1)[1] in out
    assert vault.functions.auction_discount().call() == 2 * 10**16
    assert vault.functions.request_delay().call() == 172800
    assert vault.functions.caller_fee_share().call() == 20 * 10**16  # left out: kept
    assert vault.functions.max_exposure(btc).call() == 40 * WAD
    # out of range: refused before anything is sent, with the contract's own reason
    code, out = keeper_params(
        chain, manifest, "show", change_file(tmp_path, "changes:\n  - {backstop_vault: {caller_fee_share: 0.6}}\n")
    )
    assert code == 1
    (line,) = [line for line in out.splitlines() if line.strip()]
    assert line.endswith(
        "changes[0] backstop_vault: caller_fee_share 0.6 is outside [0, 0.5] (backstop: caller fee share out of range)"
    ), line
    with pytest.raises(ContractLogicError, match="backstop: caller fee share out of range"):
        vault.functions.set_params(6 * 10**17, 5 * 10**17, 2 * 10**16, 3600, 172800).call({"from": dep.timelock})


def test_backstop_bounds_mirror_agrees_with_the_contract_at_every_edge(env):
    """keeper.params.bounds.check_backstop_params and `BackstopVault.set_params` (called from
    the timelock, its risk admin) accept and refuse the same values at and beside every bound,
    and the mirror's line ends with the contract's revert reason."""
    from keeper.params import bounds

    chain, manifest, _ = env
    dep = load_manifest(manifest)
    vault = chain.w3.eth.contract(address=dep.backstop_vault, abi=load_artifact("BackstopVault").abi)
    base = read_current(chain.w3, dep).values["backstop_vault"][""]
    edges = {
        "caller_fee_share": (0, bounds.MAX_CALLER_FEE_SHARE),
        "max_margin_usage": (bounds.MIN_MARGIN_USAGE, bounds.MAX_MARGIN_USAGE),
        "auction_discount": (0, bounds.MAX_AUCTION_DISCOUNT),
        "auction_seconds": (bounds.MIN_AUCTION_TIME, bounds.MAX_AUCTION_TIME),
        "request_delay_seconds": (bounds.MIN_REQUEST_DELAY, bounds.MAX_REQUEST_DELAY),
    }
    for name, (lo, hi) in edges.items():
        for value in (lo - 1, lo, hi, hi + 1):
            if value < 0:
                continue
            new = {**base, name: value}
            found = bounds.check_backstop_params(new)
            try:
                vault.functions.set_params(*new.values()).call({"from": dep.timelock})
                reason = None
            except ContractLogicError as e:
                reason = str(e.args[0]).removeprefix("execution reverted: ")
            assert (reason is None) == (found == []), (name, value, found, reason)
            if reason is not None:
                (line,) = found
                assert line.endswith(f"({reason})"), (line, reason)
