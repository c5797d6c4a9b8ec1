"""Deploy the whole protocol (mock tokens and feeds, oracle router, vault, engine, listings) with brownie.

    brownie run scripts/deploy.py --network development

Reuses `keeper.chain.deploy.deploy_protocol`, so brownie deploys exactly what the keeper, the replay
and the titanoboa tests deploy. Settings (environment variables, never a key in a file):

    PROTOCOL_CONFIG        listing config (default: config/local.yaml)
    DEPLOYMENT_MANIFEST    where to write the manifest (default: deployments/<network>.json)
    DEPLOYER_PRIVATE_KEY   deployer key, on a non-development network
    DEPLOYER_ACCOUNT       or the name of a brownie account (`brownie accounts`); asks for its password

On a development network (Anvil, started by brownie) the deployer is `accounts[0]`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from brownie import accounts, chain, network, project, rpc, web3

from keeper.chain.artifacts import compiler_version
from keeper.chain.deploy import Deployment, deploy_protocol
from keeper.config import DEFAULT_CONFIG, load_config

ROOT = Path(__file__).resolve().parents[1]


class BrownieBackend:
    """`keeper.chain.deploy.Backend` over a loaded brownie project's contract containers."""

    def __init__(self, proj: Any, sender: Any, tx_params: dict | None = None):
        self.project = proj
        self.sender = sender
        self.tx = {"from": sender, **(tx_params or {})}
        self.first_block: int | None = None

    def deploy(self, name: str, *args: Any) -> Any:
        contract = getattr(self.project, name).deploy(*args, dict(self.tx))
        if self.first_block is None and contract.tx is not None:
            self.first_block = contract.tx.block_number
        return contract

    def transact(self, contract: Any, fn: str, *args: Any) -> Any:
        # brownie raises (VirtualMachineError) if the transaction reverts
        return getattr(contract, fn)(*args, dict(self.tx))

    def timestamp(self) -> int:
        return chain.time()


def active_project() -> Any:
    """The brownie project that `brownie run` / `brownie test` loaded (this repository)."""
    loaded = project.get_loaded_projects()
    if not loaded:
        raise SystemExit("deploy: no brownie project loaded (run it with `brownie run scripts/deploy.py`)")
    return loaded[0]


def is_development() -> bool:
    from brownie._config import CONFIG

    return CONFIG.network_type == "development"


def deployer_account() -> Any:
    """accounts[0] on a development network; otherwise from the environment (never from a file)."""
    if is_development():
        return accounts[0]
    key = os.environ.get("DEPLOYER_PRIVATE_KEY")
    if key:
        return accounts.add(key)
    name = os.environ.get("DEPLOYER_ACCOUNT")
    if name:
        return accounts.load(name)
    raise SystemExit(
        f"deploy: network {network.show_active()!r} is not a development network: "
        "set DEPLOYER_PRIVATE_KEY or DEPLOYER_ACCOUNT"
    )


def tx_params() -> dict:
    """Extra transaction parameters. Brownie's development networks send gas price 0, which only
    works on a chain without base fee (the Anvil brownie launches: base_fee 0 in brownie-config.yaml).
    On a development chain started by hand (`node_modules/.bin/anvil`, base fee 1 gwei) brownie
    attaches to it instead: pay the base fee there (EIP-1559, brownie computes the max fee)."""
    if is_development() and (web3.eth.get_block("latest").get("baseFeePerGas") or 0) > 0:
        return {"priority_fee": "auto"}
    return {}


def write_manifest(deployment: Deployment, path: Path) -> Path:
    try:
        from keeper.chain.manifest import save_manifest
    except ImportError:  # older keeper without the manifest module: the same JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(deployment.to_json(), indent=2, sort_keys=True) + "\n")
        return path
    return Path(save_manifest(deployment, path))


def main(config_path: str | Path | None = None, manifest_path: str | Path | None = None) -> Deployment:
    """Deploy from `config_path` and write the manifest to `manifest_path`; returns the Deployment."""
    config_path = Path(config_path or os.environ.get("PROTOCOL_CONFIG") or DEFAULT_CONFIG)
    manifest_path = Path(
        manifest_path
        or os.environ.get("DEPLOYMENT_MANIFEST")
        or ROOT / "deployments" / f"{network.show_active()}.json"
    )
    config = load_config(config_path)
    sender = deployer_account()
    backend = BrownieBackend(active_project(), sender, tx_params())
    deployment = deploy_protocol(backend, config, sender.address, chain.id)
    deployment.deploy_block = backend.first_block or 0
    deployment.compiler = f"vyper {compiler_version()}"
    written = write_manifest(deployment, manifest_path)

    print(f"\nDeployed on {network.show_active()} (chain {deployment.chain_id}) from {sender.address}:")
    rows = [
        ("OracleRouter", deployment.oracle),
        ("CollateralVault", deployment.vault),
        ("MarginEngine", deployment.engine),
        (f"settlement {config.settlement_symbol}", deployment.settlement_token),
    ]
    rows += [(f"token {s}", a) for s, a in deployment.tokens.items()]
    rows += [(f"feed {s}/USD", a) for s, a in deployment.feeds.items()]
    for label, address in rows:
        print(f"  {label:<20} {address}")
    print(f"  markets: {', '.join(deployment.markets)}")
    print(f"Manifest: {written}")
    if is_development() and rpc.is_child():
        print("Note: brownie started this Anvil and stops it on exit; to keep the deployment, start")
        print("`node_modules/.bin/anvil` first (brownie then attaches to it on port 8545).")
    return deployment
