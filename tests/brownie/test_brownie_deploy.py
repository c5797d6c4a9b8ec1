"""`brownie test` works in this project: deploy the protocol with scripts/deploy.py on Anvil (brownie's
development network), then deposit and read the engine's views through brownie's contract objects."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.anvil

WAD = 10**18


@pytest.fixture(scope="module")
def deployed(module_isolation, tmp_path_factory):
    """The protocol deployed by scripts/deploy.py (once for this module, rolled back after it)."""
    from scripts.deploy import main as deploy

    manifest = tmp_path_factory.mktemp("brownie") / "deployment.json"
    deployment = deploy(manifest_path=manifest)
    return deployment, manifest


def test_deploy_script_writes_manifest(deployed, accounts, chain, web3):
    deployment, manifest = deployed
    data = json.loads(manifest.read_text())
    assert data["chain_id"] == chain.id
    assert data["engine"] == deployment.engine
    assert data["admin"] == accounts[0].address
    assert data["deploy_block"] >= 1
    assert data["compiler"].startswith("vyper 0.4")
    assert set(data["markets"]) == {"ETH-PERP", "ETH-FUT", "BTC-PERP", "BTC-FUT"}
    assert data["status"] == "complete" and data["deployer"] == accounts[0].address
    # the engine's block holds the one transaction that created it
    (tx,) = web3.eth.get_block(data["blocks"]["engine"])["transactions"]
    assert web3.eth.get_transaction_receipt(tx)["contractAddress"] == data["engine"]
    assert all(step["gas"] > 0 for step in data["steps"].values())


def test_second_run_refuses_and_verify_script_passes(deployed):
    from scripts.deploy import main as deploy
    from scripts.verify import main as verify

    _, manifest = deployed
    with pytest.raises(SystemExit) as e:
        deploy(manifest_path=manifest)
    assert str(e.value).startswith(f"deploy: {manifest} already records a complete deployment on chain ")
    assert verify(manifest_path=manifest) > 80  # every check OK (a mismatch raises SystemExit)


def test_deposit_and_engine_view(deployed, accounts, MockERC20, CollateralVault, MarginEngine, OracleRouter):
    deployment, _ = deployed
    vault = CollateralVault.at(deployment.vault)
    engine = MarginEngine.at(deployment.engine)
    oracle = OracleRouter.at(deployment.oracle)
    usdc = MockERC20.at(deployment.settlement_token)
    weth = MockERC20.at(deployment.tokens["WETH"])
    user = accounts[1]

    assert engine.margin_summary(user)["equity"] == 0
    usdc.mint(user, 1_000 * 10**6, {"from": user})
    usdc.approve(vault, 1_000 * 10**6, {"from": user})
    vault.deposit(usdc, 1_000 * 10**6, {"from": user})
    weth.mint(user, 2 * WAD, {"from": user})
    weth.approve(vault, 2 * WAD, {"from": user})
    vault.deposit(weth, 2 * WAD, {"from": user})

    assert vault.collateral_balances(user) == [2 * WAD, 0]
    # the deploy script hands every role to a timelock governed by the deployer
    assert deployment.timelock and oracle.admin() == deployment.timelock
    assert engine.risk_admin() == deployment.timelock and vault.admin() == deployment.timelock
    # cash 1,000 USD + 2 WETH at 2,000 USD with a 0.85 haircut; no positions: no margin needed
    summary = engine.margin_summary(user)
    assert summary["equity"] == 1_000 * WAD + 3_400 * WAD
    assert summary["maintenance_margin"] == 0
    assert summary["equity"] >= summary["maintenance_margin"]  # not liquidatable
