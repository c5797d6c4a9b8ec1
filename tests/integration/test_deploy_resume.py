"""Deployment to a real RPC (Anvil): manifest contents, resume after a failure at any step,
refusal to deploy twice, existing tokens and feeds, the timelock, the post-deploy check and
the dry run on an Anvil fork."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from web3 import Web3

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.chain.deploy import DeployError, Web3Backend, config_echo, deploy_to_manifest, prepare
from keeper.chain.manifest import ManifestError, load_manifest
from keeper.chain.verify import main as verify_main
from keeper.chain.verify import mismatches, verify_deployment
from keeper.config import DEFAULT_CONFIG, load_config

pytestmark = pytest.mark.anvil

ADMIN, OTHER = DEV_ACCOUNTS[0][0], DEV_ACCOUNTS[1][0]
CONFIG = load_config()
# transactions of a clean deployment of config/local.yaml: 13 contracts (USDC, 3 feeds (ETH, BTC,
# USDC / USD), oracle, vault, engine liquidation and deleveraging code, engine, matching, lens,
# WETH, WBTC) and 25 calls (3 x add_price_id + set_feeds, set_matching, set_engine, the depeg rule + settlement price
# id, 2 list_asset, liquidation + trade params, 2 add_underlying, penalty ramp, 4 x list_market + caps)
CLEAN_TXS = 13 + 31


@pytest.fixture(scope="module")
def anvil():
    with Anvil() as url:
        yield url


@pytest.fixture
def w3(anvil):
    """A Web3 on the module's Anvil, rolled back after each test."""
    w3 = Web3(Web3.HTTPProvider(anvil, request_kwargs={"timeout": 30}))
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield w3
    w3.provider.make_request("evm_revert", [snapshot])


def config_file(tmp_path: Path, mutate=None) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if mutate:
        mutate(raw)
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def deploy(w3, manifest: Path, config=CONFIG, backend=None, development=True, force_new=False):
    return deploy_to_manifest(
        backend or Web3Backend(w3, ADMIN),
        config,
        manifest,
        admin=ADMIN,
        chain_id=w3.eth.chain_id,
        development=development,
        compiler="vyper 0.4.3",
        force_new=force_new,
    )


class FailingBackend(Web3Backend):
    """Fails at its `fail_at`-th transaction (0-based): before sending it, or after it is mined
    but before the step is recorded (a crash between the two)."""

    def __init__(self, w3, fail_at: int, after_send: bool):
        super().__init__(w3, ADMIN)
        self.fail_at, self.after_send, self.count = fail_at, after_send, 0

    def _maybe_fail(self, send):
        if self.count == self.fail_at and not self.after_send:
            raise RuntimeError("node went away")
        out = send()
        self.count += 1
        if self.count - 1 == self.fail_at:
            raise RuntimeError("crashed after sending")
        return out

    def deploy(self, name, *args):
        return self._maybe_fail(lambda: super(FailingBackend, self).deploy(name, *args))

    def transact(self, contract, fn, *args):
        return self._maybe_fail(lambda: super(FailingBackend, self).transact(contract, fn, *args))


def test_clean_deployment_writes_full_manifest_and_passes_check(w3, tmp_path):
    manifest = tmp_path / "dev.json"
    first_block = w3.eth.block_number + 1
    dep = deploy(w3, manifest)
    data = json.loads(manifest.read_text())
    assert data["status"] == "complete"
    assert data["chain_id"] == 31337 and data["deployer"] == ADMIN and data["compiler"] == "vyper 0.4.3"
    assert data["parameters"] == config_echo(CONFIG)
    assert data["parameters"]["assets"][0]["haircut"] == 850_000_000_000_000_000  # 0.85 WAD, as listed
    assert data["deployed_at"] == w3.eth.get_block("latest")["timestamp"]
    # a block for every contract deployed, the first of them is the deploy block
    assert set(data["blocks"]) == {
        "settlement_token",
        "oracle",
        "feeds.ETH",
        "feeds.BTC",
        "feeds.USDC",
        "vault",
        "engine_liquidation",
        "engine_deleveraging",
        "engine",
        "matching",
        "lens",
        "backstop_vault",
        "tokens.WETH",
        "tokens.WBTC",
    }
    assert data["deploy_block"] == first_block == min(data["blocks"].values())
    for key, block in data["blocks"].items():
        address = data["steps"][key]["address"]
        assert (
            w3.eth.get_transaction_receipt(w3.eth.get_block(block, full_transactions=True)["transactions"][0]["hash"])[
                "contractAddress"
            ]
            == address
        )
    assert len(data["steps"]) == CLEAN_TXS and w3.eth.get_transaction_count(ADMIN) == CLEAN_TXS
    assert all(r["gas"] > 0 and r["block"] >= first_block for r in data["steps"].values())
    assert load_manifest(manifest) == dep
    checks = verify_deployment(w3, dep, CONFIG)
    assert len(checks) > 80 and mismatches(checks) == []


@pytest.mark.parametrize(
    ("fail_at", "step", "after_send"),
    [
        (1, "oracle", False),
        (1, "oracle", True),
        (3, "add_price_id ETH", True),
        (16, "set_matching", True),
        (17, "set_engine", True),
        (20, "set_backstop", True),
        (21, "set_max_exposure ETH-PERP", False),
        (25, "set_depeg_params", True),
        (26, "set_settlement_price_id", True),
        (28, "list_asset WETH", False),
        (38, "list_market ETH-FUT", True),
    ],
    ids=lambda v: {False: "before-send", True: "after-mined"}.get(v, str(v)) if isinstance(v, bool) else str(v),
)
def test_resume_after_failure_equals_clean_deployment(w3, tmp_path, fail_at, step, after_send):
    manifest = tmp_path / "dev.json"
    with pytest.raises(RuntimeError):
        deploy(w3, manifest, backend=FailingBackend(w3, fail_at, after_send))
    partial = load_manifest(manifest, allow_partial=True)
    assert partial.status == "partial" and len(partial.steps) == fail_at and step not in partial.steps
    with pytest.raises(ManifestError, match="unfinished deployment"):
        load_manifest(manifest)  # keeper run refuses a half protocol

    dep = deploy(w3, manifest)  # the rerun resumes
    assert dep.status == "complete" and len(dep.steps) == CLEAN_TXS
    assert dep.steps[step].get("found_on_chain", False) == (after_send and not step == "oracle")
    # nothing listed twice: counts equal the config, and every parameter reads back as configured
    assert mismatches(verify_deployment(w3, dep, CONFIG)) == []
    # transactions: as a clean deployment, plus the orphan contract of a deploy mined but unrecorded
    orphan = after_send and step == "oracle"
    assert w3.eth.get_transaction_count(ADMIN) == CLEAN_TXS + orphan
    assert load_manifest(manifest) == dep


def test_second_run_refuses_then_force_new_deploys_afresh(w3, tmp_path):
    manifest = tmp_path / "dev.json"
    first = deploy(w3, manifest)
    with pytest.raises(DeployError) as e:
        deploy(w3, manifest)
    assert str(e.value) == (
        f"{manifest} already records a complete deployment on chain 31337; "
        "refusing to deploy again: set DEPLOY_FORCE_NEW=1 to write a fresh one"
    )
    assert w3.eth.get_transaction_count(ADMIN) == CLEAN_TXS
    second = deploy(w3, manifest, force_new=True)
    assert second.engine != first.engine and load_manifest(manifest).engine == second.engine
    (kept,) = tmp_path.glob("dev.replaced-*.json")
    assert load_manifest(kept).engine == first.engine


def test_refusals_for_other_chain_changed_config_missing_code_and_mocks(w3, tmp_path):
    manifest = tmp_path / "dev.json"
    with pytest.raises(RuntimeError):
        deploy(w3, manifest, backend=FailingBackend(w3, 12, after_send=False))
    backend = Web3Backend(w3, ADMIN)
    with pytest.raises(DeployError, match=r"records a deployment on chain 31337, this is chain 5:"):
        prepare(backend, CONFIG, manifest, 5, development=True)
    other = load_config(config_file(tmp_path, lambda raw: raw["assets"][0].update(haircut=0.8)))
    with pytest.raises(DeployError, match="unfinished deployment of other parameters than this config"):
        prepare(backend, other, manifest, 31337, development=True)
    data = json.loads(manifest.read_text())
    data["steps"]["vault"]["address"] = "0x" + "11" * 20
    manifest.write_text(json.dumps(data))
    with pytest.raises(
        DeployError,
        match=r"step 'vault' recorded 0x1111111111111111111111111111111111111111, "
        r"which has no code on chain 31337",
    ):
        prepare(backend, CONFIG, manifest, 31337, development=True)
    with pytest.raises(DeployError) as e:
        prepare(backend, CONFIG, tmp_path / "none.json", 11155111, development=False)
    assert str(e.value).startswith(
        "the config deploys mocks for USDC, WETH, WBTC, ETH feed, BTC feed, USDC feed on a non-development chain:"
    )
    allowed = load_config(config_file(tmp_path, lambda raw: raw.update(allow_mocks=True)))
    assert prepare(backend, allowed, tmp_path / "none.json", 11155111, development=False) is None


def existing_assets(w3) -> dict:
    """Tokens and feeds already on the chain, as on a testnet (two feeds for ETH)."""
    backend = Web3Backend(w3, OTHER)
    return {
        "USDC": backend.deploy("MockERC20", "USD Coin", "USDC", 6).address,
        "WETH": backend.deploy("MockERC20", "Wrapped Ether", "WETH", 18).address,
        "WBTC": backend.deploy("MockERC20", "Wrapped BTC", "WBTC", 8).address,
        "ETH": [
            backend.deploy("MockAggregator", 8, "ETH / USD", 2000 * 10**8).address,
            backend.deploy("MockAggregator", 18, "ETH / USD", 2001 * 10**18).address,
        ],
        "BTC": [backend.deploy("MockAggregator", 8, "BTC / USD", 30000 * 10**8).address],
        "USDC / USD": [backend.deploy("MockAggregator", 8, "USDC / USD", 10**8).address],
    }


def test_existing_tokens_and_feeds_no_mocks_on_non_development_chain(w3, tmp_path):
    have = existing_assets(w3)

    def use_existing(raw):
        raw["settlement"]["address"] = have["USDC"].lower()  # no checksum: accepted
        for a in raw["assets"]:
            a["address"] = have[a["symbol"]]
        for p in raw["price_ids"]:
            p["feeds"] = [
                {"address": f, "heartbeat": 7200}
                for f in have[p["symbol"] + (" / USD" if p["symbol"] == "USDC" else "")]
            ]
            del p["feed_decimals"], p["initial_price"], p["heartbeat"]

    config = load_config(config_file(tmp_path, use_existing))
    assert config.mocks() == []
    dep = deploy(w3, tmp_path / "testnet.json", config=config, development=False)
    assert dep.settlement_token == have["USDC"] and dep.tokens == {"WETH": have["WETH"], "WBTC": have["WBTC"]}
    assert dep.feeds == {"ETH": have["ETH"][0], "BTC": have["BTC"][0], "USDC": have["USDC / USD"][0]}
    assert dep.feed_decimals == {"ETH": 8, "BTC": 8, "USDC": 8}
    assert dep.blocks.keys() == {
        "oracle",
        "vault",
        "engine_liquidation",
        "engine_deleveraging",
        "engine",
        "matching",
        "lens",
        "backstop_vault",
    }  # nothing but the protocol deployed
    checks = verify_deployment(w3, dep, config)
    assert mismatches(checks) == []
    feeds = next(c for c in checks if c.parameter == "ETH feeds")
    assert feeds.actual == have["ETH"] and next(c for c in checks if c.parameter == "ETH heartbeats (s)").actual == [
        7200,
        7200,
    ]

    wrong = load_config(config_file(tmp_path, lambda raw: (use_existing(raw), raw["assets"][1].update(decimals=18))))
    with pytest.raises(DeployError) as e:
        deploy(w3, tmp_path / "wrong.json", config=wrong, development=False)
    assert str(e.value) == f"assets[1] WBTC: {have['WBTC']} has 8 decimals on chain, the config says 18"


@pytest.mark.parametrize("governance", [ADMIN, OTHER], ids=["deployer-governs", "multisig-governs"])
def test_timelock_takes_the_roles(w3, tmp_path, governance):
    config = load_config(
        config_file(tmp_path, lambda raw: raw.update(governance={"address": governance, "timelock_delay": 86400}))
    )
    dep = deploy(w3, tmp_path / "gov.json", config=config)
    assert dep.timelock and load_manifest(tmp_path / "gov.json").timelock == dep.timelock
    assert dep.steps["timelock"]["gas"] > 0 and dep.blocks["timelock"] > 0
    checks = verify_deployment(w3, dep, config)
    assert mismatches(checks) == []
    admins = [c for c in checks if c.parameter == "admin"]
    assert len(admins) == 4 and all(c.expected == dep.timelock for c in admins)
    # governance other than the deployer accepts the admin role later: shown as PENDING
    assert {c.result for c in admins} == ({"OK"} if governance == ADMIN else {"PENDING"})
    assert all(c.actual == dep.timelock for c in checks if c.parameter == "risk_admin")


def test_interrupted_governance_handover_is_retried_or_refused(w3, tmp_path):
    config = load_config(
        config_file(tmp_path, lambda raw: raw.update(governance={"address": ADMIN, "timelock_delay": 3600}))
    )
    # after the protocol's CLEAN_TXS (43) transactions: deploy the timelock (43), set_risk_admin +
    # propose_admin on oracle, vault, engine, backstop vault (44-51), accept_admin_of each (52-55)
    retry = tmp_path / "retry.json"
    with pytest.raises(RuntimeError):
        deploy(w3, retry, config=config, backend=FailingBackend(w3, CLEAN_TXS + 3, after_send=False))
    dep = deploy(w3, retry, config=config)  # nobody accepted yet: a new timelock takes over
    assert mismatches(verify_deployment(w3, dep, config)) == []

    refused = tmp_path / "refused.json"
    with pytest.raises(RuntimeError):
        deploy(w3, refused, config=config, backend=FailingBackend(w3, CLEAN_TXS + 10, after_send=False), force_new=True)
    with pytest.raises(
        DeployError,
        match=r"^the governance handover was interrupted after OracleRouter accepted "
        r"admin 0x[0-9a-fA-F]{40}: finish it by hand",
    ):
        deploy(w3, refused, config=config)


def test_check_reports_a_tampered_parameter(w3, tmp_path, capsys):
    manifest = tmp_path / "dev.json"
    dep = deploy(w3, manifest)
    vault = w3.eth.contract(address=dep.vault, abi=load_artifact("CollateralVault").abi)
    cap = CONFIG.assets[0].deposit_cap
    vault.functions.set_asset_params(0, 800_000_000_000_000_000, cap).transact({"from": ADMIN})
    bad = mismatches(verify_deployment(w3, dep, CONFIG))
    assert [(c.contract, c.parameter, c.expected, c.actual) for c in bad] == [
        ("CollateralVault", "WETH haircut", 850_000_000_000_000_000, 800_000_000_000_000_000)
    ]
    config = config_file(tmp_path)
    assert verify_main(["--rpc", w3.provider.endpoint_uri, "--manifest", str(manifest), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "0.85" in out and "0.8 " in out and "1 of " in out
    vault.functions.set_asset_params(0, 850_000_000_000_000_000, cap).transact({"from": ADMIN})
    assert verify_main(["--rpc", w3.provider.endpoint_uri, "--manifest", str(manifest), "--config", str(config)]) == 0


def test_dry_run_forks_the_target_and_never_writes_the_real_manifest(w3, tmp_path, capsys):
    from scripts.deploy import dry_run

    real = tmp_path / "development.json"
    dep = dry_run(CONFIG, real, target_url=w3.provider.endpoint_uri, deployer=ADMIN, development=True)
    assert not real.exists()
    written = load_manifest(tmp_path / "development.dry-run.json")
    assert written == dep and written.chain_id == 31337
    # the fork deployed from the deployer's real nonce: the same addresses the real run would get
    assert dep.settlement_token == Web3.to_checksum_address(
        Web3.keccak(b"\xd6\x94" + bytes.fromhex(ADMIN[2:]) + b"\x80")[12:]
    )  # CREATE address, nonce 0
    assert w3.eth.get_code(dep.engine) == b"" and w3.eth.get_transaction_count(ADMIN) == 0  # target untouched
    out = capsys.readouterr().out
    assert "Gas per deployment step" in out and "total" in out and "checks OK" in out
    total = sum(r["gas"] for r in dep.steps.values())
    assert f"{total:,}" in out and 10_000_000 < total < 40_000_000


def test_deployer_key_is_required_off_development(monkeypatch):
    import scripts.deploy as script

    monkeypatch.setattr(script, "is_development", lambda: False)
    monkeypatch.setattr(script.network, "show_active", lambda: "sepolia")
    monkeypatch.delenv("DEPLOYER_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("DEPLOYER_ACCOUNT", raising=False)
    for get in (script.deployer_account, script.deployer_address):
        with pytest.raises(SystemExit) as e:
            get()
        assert str(e.value) == (
            "deploy: network 'sepolia' is not a development network: set DEPLOYER_PRIVATE_KEY or DEPLOYER_ACCOUNT"
        )
    monkeypatch.setenv("DEPLOYER_PRIVATE_KEY", DEV_ACCOUNTS[1][1])
    assert script.deployer_address() == OTHER
