"""What an operator reaches for first, against a real Anvil chain (the deployment of
`test_params_anvil`: a few positions, roles handed to a timelock): `keeper accounts` over every
account, the governance key from an encrypted keystore, and the calldata of a queue for a
multisig (`keeper params queue --calldata-only`)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from keeper.chain.anvil import Anvil
from keeper.chain.manifest import save_manifest
from keeper.cli import cli
from keeper.units import MAX_UINT256
from tests.integration.test_params_anvil import Chain

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def chain():
    with Anvil() as url:
        yield Chain(url)


@pytest.fixture
def env(chain, tmp_path, monkeypatch):
    snapshot = chain.rpc("evm_snapshot", [])
    chain.refresh_prices()
    monkeypatch.delenv("GOVERNANCE_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("KEEPER_KEYSTORE_PASSWORD", raising=False)
    manifest = save_manifest(chain.dep, tmp_path / "deployment.json")
    yield chain, manifest, tmp_path
    chain.rpc("evm_revert", [snapshot])


def keeper(chain, manifest, *args: str):
    result = CliRunner().invoke(cli, [*args, "--rpc", chain.url, "--manifest", str(manifest)], catch_exceptions=False)
    return result.exit_code, result.output


# ---------------------------------------------------------------- keeper accounts


def test_accounts_lists_every_account_with_the_contracts_margin(env):
    chain, manifest, _ = env
    code, out = keeper(chain, manifest, "accounts", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert {r["address"] for r in rows} == set(chain.addr.values())
    block = rows[0]["block"]
    onchain = chain.client.margin_summaries([r["address"] for r in rows], block)
    for r, m in zip(rows, onchain, strict=True):
        assert (r["equity"], r["initial_margin"], r["maintenance_margin"], r["health_factor"]) == tuple(m)
        assert r["liquidatable"] is (m.equity < m.maintenance_margin) is False
    health = [r["health_factor"] for r in rows]
    assert health == sorted(health) and health[-1] < MAX_UINT256  # riskiest first
    assert rows[0]["address"] == chain.addr["levered"]


def test_accounts_after_a_price_fall_shows_the_liquidatable_one(env):
    chain, manifest, _ = env
    feed = chain.feeds["ETH"]
    decimals = feed.functions.decimals().call()
    chain.send(feed.functions.set_answer(1800 * 10**decimals))  # levered: equity 2,000 < MM 3,600
    code, out = keeper(chain, manifest, "accounts", "--liquidatable-only", "--json")
    assert code == 0, out
    assert [r["address"] for r in json.loads(out)] == [chain.addr["levered"]]
    code, out = keeper(chain, manifest, "accounts", "--sort", "mm", "--limit", "2")
    assert code == 0, out
    assert "4 accounts at block" in out and "1 liquidatable (showing 2)" in out
    assert chain.addr["maker"] in out and chain.addr["btc_short"] not in out


# ---------------------------------------------------------------- keys from a keystore


def test_governance_queues_and_cancels_with_a_keystore(env, monkeypatch):
    from eth_account import Account

    from keeper.params.timelock import store_path
    from tests.integration.test_params_anvil import GOVERNANCE_KEY, HARMLESS, change_file

    chain, manifest, tmp_path = env
    keystore = tmp_path / "governance.json"
    keystore.write_text(json.dumps(Account.encrypt(GOVERNANCE_KEY, "s3cret", kdf="pbkdf2", iterations=1000)))
    monkeypatch.setenv("GOV_PASSWORD", "s3cret")
    key = ("--keystore", str(keystore), "--password-env", "GOV_PASSWORD")
    code, out = keeper(chain, manifest, "params", "queue", change_file(tmp_path, HARMLESS), *key)
    assert code == 0, out
    (op,) = json.loads(store_path(manifest).read_text())["operations"]
    code, out = keeper(chain, manifest, "params", "cancel", "--all", *key)
    assert code == 0, out
    assert f"cancelled {op['id'][:10]}" in out
    # a keystore of another key is named in the refusal
    other = tmp_path / "other.json"
    other.write_text(json.dumps(Account.encrypt("0x" + "22" * 32, "s3cret", kdf="pbkdf2", iterations=1000)))
    code, out = keeper(chain, manifest, "params", "queue", change_file(tmp_path, HARMLESS), "--keystore", str(other),
                       "--password-env", "GOV_PASSWORD")  # fmt: skip
    assert code == 1 and f"keystore {other} is {Account.from_key('0x' + '22' * 32).address}, but" in out


# ---------------------------------------------------------------- queue calldata for a multisig


def test_calldata_only_prints_and_writes_exactly_what_the_keyed_queue_sends(env, monkeypatch):
    from web3 import Web3

    from keeper import resources
    from keeper.params.timelock import store_path
    from tests.integration.test_params_anvil import GOVERNANCE, GOVERNANCE_KEY, change_file

    chain, manifest, tmp_path = env
    two_calls = "changes:\n  - {underlying: ETH, im_rate: 0.13, mm_rate: 0.06}\n  - {asset: WETH, haircut: 0.84}\n"
    changes = change_file(tmp_path, two_calls)
    eta = chain.w3.eth.get_block("latest")["timestamp"] + 2 * 86400
    safe = tmp_path / "safe.json"
    code, out = keeper(chain, manifest, "params", "queue", changes, "--eta", str(eta), "--safe-json", str(safe))
    assert code == 0, out  # no key in the environment: none needed
    assert not store_path(manifest).exists()  # nothing queued, nothing recorded
    timelock = chain.w3.eth.contract(
        address=chain.dep.timelock, abi=json.loads(resources.abi_file("Timelock").read_text())
    )
    assert list(timelock.events.Queued.get_logs(from_block=0)) == []
    batch = json.loads(safe.read_text())
    assert batch["version"] == "1.0" and batch["chainId"] == str(chain.w3.eth.chain_id)
    assert batch["meta"]["createdFromSafeAddress"] == GOVERNANCE
    txs = batch["transactions"]
    assert len(txs) == 2 and all(t["to"] == chain.dep.timelock and t["value"] == "0" for t in txs)
    # each is Timelock.queue(target, data, eta) of the shipped ABI, to the engine then the vault
    decoded = [timelock.decode_function_input(t["data"]) for t in txs]
    assert [fn.fn_name for fn, _ in decoded] == ["queue", "queue"]
    assert [args["target"] for _, args in decoded] == [chain.dep.engine, chain.dep.vault]
    assert {args["eta"] for _, args in decoded} == {eta}
    for t, (_, args) in zip(txs, decoded, strict=True):
        assert t["data"] in out and "0x" + bytes(args["data"]).hex() in out  # printed in full
    inner = [
        c.decode_function_input(args["data"])
        for c, (_, args) in zip((chain.client.engine, chain.client.vault), decoded)
    ]
    assert [(fn.fn_name, a.get("haircut")) for fn, a in inner] == [
        ("set_underlying_params", None),
        ("set_asset_params", 84 * 10**16),
    ]
    # the keyed queue at the same eta sends exactly these transactions, in this order
    monkeypatch.setenv("GOVERNANCE_PRIVATE_KEY", GOVERNANCE_KEY)
    code, out = keeper(chain, manifest, "params", "queue", changes, "--eta", str(eta))
    assert code == 0, out
    sent = [
        chain.w3.eth.get_transaction(op["queued_tx"])
        for op in json.loads(store_path(manifest).read_text())["operations"]
    ]
    assert [(s["to"], Web3.to_hex(s["input"]), s["from"]) for s in sent] == [
        (t["to"], t["data"], GOVERNANCE) for t in txs
    ]


def test_calldata_only_refusals(env, monkeypatch):
    from tests.integration.test_params_anvil import HARMLESS, LIQUIDATING, change_file

    chain, manifest, tmp_path = env
    now = chain.w3.eth.get_block("latest")["timestamp"]
    code, out = keeper(chain, manifest, "params", "queue", change_file(tmp_path, HARMLESS), "--calldata-only",
                       "--eta", str(now + 60))  # fmt: skip
    assert code == 1 and "is less than the timelock's delay (3600 s) after chain time" in out
    code, out = keeper(chain, manifest, "params", "queue", change_file(tmp_path, HARMLESS), "--calldata-only",
                       "--private-key-env", "GOVERNANCE_PRIVATE_KEY")  # fmt: skip
    assert code == 1 and "--calldata-only signs nothing" in out
    code, out = keeper(chain, manifest, "params", "queue", change_file(tmp_path, LIQUIDATING), "--calldata-only")
    assert code == 2 and "refusing to queue: 1 account(s) would become liquidatable" in out
    assert "queue transaction" not in out
