"""`keeper run`'s production plumbing on a real Anvil with the development book open (`keeper dev
accounts`): the startup checks (every failure in one report, warnings that do not stop it), the
dry run (a liquidatable account is reported and left alone), a separate send endpoint (the raw
transactions go there, everything else to --rpc) and a WebSocket --rpc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from eth_account import Account

from keeper.chain.anvil import DEV_ACCOUNTS
from keeper.dev_cli import dev_account
from tests.integration.test_dev_cli import Chain, keeper_dev
from tests.integration.test_keeper_stall import RpcProxy

pytestmark = pytest.mark.anvil

LIQUIDATOR = DEV_ACCOUNTS[1]  # `keeper dev accounts` deposits 1,000,000 USDC for it
UNFUNDED_KEY = "0x" + "02" * 32  # no ETH, nothing in the vault


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from keeper.chain.anvil import Anvil

    with Anvil() as url:
        yield Chain(url, tmp_path_factory.mktemp("plumbing") / "development.json")


@pytest.fixture
def env(chain):
    snapshot = chain.rpc("evm_snapshot", [])
    yield chain
    chain.rpc("evm_revert", [snapshot])


def keeper_run(*args: str, key: str | None = None, extra_env: dict | None = None, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    if key is not None:
        env["KEEPER_PRIVATE_KEY"] = key
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "keeper", "run", "--poll", "0.05", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def errors(out: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in out.stderr, out.stderr
    return [line for line in out.stderr.splitlines() if line.startswith("error: ")]


def liquidatable(chain) -> list[str]:
    traders = [dev_account(i)[0] for i in range(3, 9)]
    return [a for a, s in zip(traders, chain.client.margin_summaries(traders, "latest")) if s[0] < s[2]]


def test_startup_reports_every_failure_together_then_exits(env, tmp_path):
    """Wrong chain id, a manifest address without code, a stale head and an unfunded key: four
    `error:` lines, each naming the fix, exit code 1, nothing followed."""
    manifest = json.loads(env.manifest.read_text())
    manifest["chain_id"] = 1
    manifest["tokens"]["WETH"] = dev_account(7)[0]  # an account, not a contract
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(manifest))
    time.sleep(2.1)  # the head is now older than the 1 s bound below
    out = keeper_run(
        "--rpc", env.url, "--manifest", str(bad), key=UNFUNDED_KEY, extra_env={"KEEPER_STALE_AFTER_SECONDS": "1"}
    )
    assert out.returncode == 1
    lines = errors(out)
    assert len(lines) == 4, out.stderr
    chain_line, code_line, head_line, gas_line = lines
    assert "RPC is chain 31337 but the manifest is for chain 1" in chain_line and "point the keeper" in chain_line
    assert f"no contract at the manifest's tokens.WETH address {dev_account(7)[0]}" in code_line
    assert "the node's head" in head_line and "stale_after_seconds 1 s" in head_line
    address = Account.from_key(UNFUNDED_KEY).address
    assert f"keeper {address} has 0.000000 ETH" in gas_line and "send it ETH for gas" in gas_line
    assert "has no balance in the vault" in out.stderr  # a warning, logged before the errors
    assert "startup checks passed" not in out.stderr


def test_startup_warns_about_an_empty_vault_and_starts(env, tmp_path):
    status = tmp_path / "status.json"
    key = "0x" + dev_account(9)[1].hex()  # 10,000 ETH, nothing in the vault
    out = keeper_run("--rpc", env.url, "--manifest", str(env.manifest), "--max-blocks", "1",
                     "--status-file", str(status), key=key)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert errors(out) == []
    assert "startup: keeper" in out.stderr and "has no balance in the vault" in out.stderr
    assert "deposit settlement tokens with CollateralVault.deposit" in out.stderr
    assert "startup checks passed" in out.stderr
    assert json.loads(status.read_text())["dry_run"] is False


def test_dry_run_reports_a_liquidatable_account_and_leaves_it_alone(env, tmp_path):
    assert keeper_dev(env, "price", "ETH", "1500")[0] == 0
    accounts = liquidatable(env)
    assert accounts
    before = env.client.account_states(accounts, "latest")
    block = env.w3.eth.block_number
    nonce = env.w3.eth.get_transaction_count(LIQUIDATOR[0])
    status = tmp_path / "status.json"
    # no key at all: the address to simulate from is enough
    out = keeper_run("--rpc", env.url, "--manifest", str(env.manifest), "--dry-run", "--from", LIQUIDATOR[0],
                     "--max-blocks", "1", "--status-file", str(status), "--log-json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    messages = [json.loads(line)["message"] for line in out.stderr.splitlines() if line.startswith("{")]
    assert any(m.startswith("DRY RUN: nothing is signed or sent") for m in messages)
    for account in accounts:
        line = next(m for m in messages if m.startswith(f"dry-run: would liquidate {account} with liquidate"))
        assert "expected reward" in line and "gas estimate" in line and line.endswith("not sent")
    stats = json.loads(status.read_text())
    assert stats["dry_run"] is True and stats["would_liquidate"] == len(accounts) and stats["sent"] == 0
    assert env.w3.eth.block_number == block  # nothing was mined (Anvil automines every transaction)
    assert env.w3.eth.get_transaction_count(LIQUIDATOR[0]) == nonce
    assert env.client.account_states(accounts, "latest") == before
    assert liquidatable(env) == accounts

    # an unfunded key is enough too; with nothing in the vault the simulation reverts, reported
    out = keeper_run("--rpc", env.url, "--manifest", str(env.manifest), "--dry-run", "--max-blocks", "1",
                     key=UNFUNDED_KEY)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "has no balance in the vault" in out.stderr
    assert "dry-run: skip" in out.stderr and "simulation reverted" in out.stderr
    assert env.w3.eth.block_number == block


def test_send_rpc_gets_the_raw_transactions_and_rpc_the_rest(env, tmp_path):
    assert keeper_dev(env, "price", "ETH", "1500")[0] == 0
    accounts = liquidatable(env)
    reads, sends = RpcProxy(env.url), RpcProxy(env.url)
    status = tmp_path / "status.json"
    try:
        out = keeper_run("--rpc", reads.url, "--send-rpc", sends.url, "--manifest", str(env.manifest),
                         "--max-blocks", "2", "--status-file", str(status), key=LIQUIDATOR[1])  # fmt: skip
    finally:
        reads.close()
        sends.close()
    assert out.returncode == 0, out.stderr
    stats = json.loads(status.read_text())
    assert stats["sent"] == len(accounts) and stats["succeeded"] == len(accounts), stats
    assert sends.methods["eth_sendRawTransaction"] == len(accounts)
    assert set(sends.methods) == {"eth_chainId", "eth_sendRawTransaction"}, sends.methods
    assert reads.methods["eth_sendRawTransaction"] == 0
    assert reads.methods["eth_getTransactionReceipt"] >= len(accounts)  # receipts from the read endpoint
    assert liquidatable(env) == []


def test_websocket_rpc(env, tmp_path):
    from web3.providers.legacy_websocket import LegacyWebSocketProvider

    from keeper.chain.client import connect_any
    from keeper.chain.rpc import FallbackProvider

    ws = env.url.replace("http://", "ws://")  # Anvil serves WebSocket on its HTTP port
    w3 = connect_any([ws, env.url])
    assert isinstance(w3.provider, FallbackProvider)
    assert isinstance(w3.provider.websockets[ws], LegacyWebSocketProvider) and env.url not in w3.provider.websockets
    assert w3.eth.chain_id == 31337 and w3.eth.block_number == env.w3.eth.block_number

    status = tmp_path / "status.json"
    out = keeper_run("--rpc", ws, "--manifest", str(env.manifest), "--max-blocks", "1", "--status-file", str(status),
                     key=LIQUIDATOR[1])  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"following FallbackProvider({ws})" in out.stderr
    assert json.loads(status.read_text())["block"] == env.w3.eth.block_number
