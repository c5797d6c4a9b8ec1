"""Deploy the whole protocol (oracle router, vault, engine, lens, listings; mocks where the
config gives no address; a timelock holding every admin role, see
`keeper.config.with_default_governance`) with brownie.

    brownie run scripts/deploy.py --network NAME
    DEPLOY_DRY_RUN=1 brownie run scripts/deploy.py --network NAME     # rehearse on an Anvil fork

Reuses `keeper.chain.deploy`, so brownie deploys exactly what the keeper, the replay and the
titanoboa tests deploy. Each step is recorded in the manifest as it completes: a second run on
the same chain resumes an unfinished deployment and refuses to repeat a complete one. At the
end, every parameter is read back and compared with the config (as `scripts/verify.py`).

Settings (environment variables, never a key in a file):

    PROTOCOL_CONFIG        listing config (default: config/local.yaml)
    DEPLOYMENT_MANIFEST    where to write the manifest (default: deployments/<network>.json)
    DEPLOYER_PRIVATE_KEY   deployer key, on a non-development network
    DEPLOYER_ACCOUNT       or the name of a brownie account (`brownie accounts`); asks for its password
    DEPLOY_FORCE_NEW=1     deploy afresh even if the manifest records a deployment (the old
                           manifest is kept as <name>.replaced-<unix time>.json)
    DEPLOY_DRY_RUN=1       deploy on an Anvil fork of the network's RPC instead, from the same
                           deployer address (impersonated on the fork: no key is unlocked), print
                           gas per step, run the check, and write <name>.dry-run.json; nothing
                           is sent to the network itself

On a development network (Anvil, started by brownie) the deployer is `accounts[0]`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from brownie import Contract, accounts, chain, network, project, rpc, web3

from keeper.chain.artifacts import compiler_version
from keeper.chain.deploy import DeployError, Web3Backend, deploy_to_manifest, env_flag, prepare
from keeper.chain.deployment import Deployment
from keeper.chain.manifest import ManifestError, save_manifest
from keeper.chain.verify import mismatches, print_checks, verify_deployment
from keeper.config import DEFAULT_CONFIG, DEPLOYER, ConfigError, ProtocolConfig, load_config, with_default_governance

ROOT = Path(__file__).resolve().parents[1]


class BrownieBackend:
    """`keeper.chain.deploy.Backend` over a loaded brownie project's contract containers."""

    def __init__(self, proj: Any, sender: Any, tx_params: dict | None = None):
        self.project = proj
        self.account = sender
        self.sender = str(sender.address)  # as Web3Backend: the sender's address
        self.tx = {"from": sender, **(tx_params or {})}
        self.last_block = 0
        self.last_gas = 0

    def _note(self, tx: Any) -> None:
        if tx is not None:
            self.last_block, self.last_gas = tx.block_number, tx.gas_used

    def deploy(self, name: str, *args: Any) -> Any:
        contract = getattr(self.project, name).deploy(*args, dict(self.tx))
        self._note(contract.tx)
        return contract

    def transact(self, contract: Any, fn: str, *args: Any) -> Any:
        # brownie raises (VirtualMachineError) if the transaction reverts
        tx = getattr(contract, fn)(*args, dict(self.tx))
        self._note(tx)
        return tx

    def timestamp(self) -> int:
        return web3.eth.get_block("latest")["timestamp"]

    def at(self, name: str, address: str) -> Any:
        # from_abi: an existing token or feed has other bytecode than our mock of it
        return Contract.from_abi(name, address, getattr(self.project, name).abi, persist=False)

    def view(self, contract: Any, fn: str, *args: Any) -> Any:
        return getattr(contract, fn)(*args)

    def code_at(self, address: str) -> bytes:
        return bytes(web3.eth.get_code(address))


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


def deployer_address() -> str:
    """The deployer's address without unlocking anything (for a dry run): accounts[0] on a
    development network, else from DEPLOYER_PRIVATE_KEY or the brownie keystore file's
    (unencrypted) address field of DEPLOYER_ACCOUNT."""
    if is_development():
        return accounts[0].address
    key = os.environ.get("DEPLOYER_PRIVATE_KEY")
    if key:
        from eth_account import Account

        try:
            return Account.from_key(key).address
        except ValueError:
            raise SystemExit("deploy: DEPLOYER_PRIVATE_KEY is not a 32-byte hex private key") from None
    name = os.environ.get("DEPLOYER_ACCOUNT")
    if name:
        from brownie._config import _get_data_folder
        from eth_utils import to_checksum_address

        keystore = _get_data_folder() / "accounts" / f"{name}.json"
        try:
            return to_checksum_address(json.loads(keystore.read_text())["address"])
        except (OSError, ValueError, KeyError):
            raise SystemExit(f"deploy: no brownie account {name!r} with an address (`brownie accounts list`)") from None
    return deployer_account().address  # raises the one-line error


def tx_params() -> dict:
    """Extra transaction parameters. Brownie's development networks send gas price 0, which only
    works on a chain without base fee (the Anvil brownie launches: base_fee 0 in brownie-config.yaml).
    On a development chain started by hand (`node_modules/.bin/anvil`, base fee 1 gwei) brownie
    attaches to it instead: pay the base fee there (EIP-1559, brownie computes the max fee)."""
    if is_development() and (web3.eth.get_block("latest").get("baseFeePerGas") or 0) > 0:
        return {"priority_fee": "auto"}
    return {}


def dry_run_path(manifest_path: Path) -> Path:
    """`deployments/sepolia.json` -> `deployments/sepolia.dry-run.json`: never the real one."""
    return manifest_path.with_name(f"{manifest_path.stem}.dry-run{manifest_path.suffix or '.json'}")


def print_gas(deployment: Deployment, gas_price_wei: int | None = None) -> int:
    """A table of gas used per step and the total; returns the total."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Gas per deployment step")
    for column, justify in (("step", "left"), ("block", "right"), ("gas used", "right")):
        table.add_column(column, justify=justify)
    total = 0
    for key, record in deployment.steps.items():
        table.add_row(key, str(record.get("block", "")), f"{record.get('gas', 0):,}")
        total += record.get("gas", 0)
    table.add_row("[bold]total[/bold]", "", f"[bold]{total:,}[/bold]")
    console = Console()
    console.print(table)
    if gas_price_wei:
        console.print(f"at {gas_price_wei / 1e9:.3f} gwei: {total * gas_price_wei / 1e18:.6f} ETH")
    return total


def check(w3: Any, deployment: Deployment, config: ProtocolConfig, abi: Any = None) -> None:
    """The post-deploy check; SystemExit (non-zero) on any mismatch."""
    checks = verify_deployment(w3, deployment, config, abi=abi)
    print_checks(checks)
    bad = mismatches(checks)
    if bad:
        raise SystemExit(f"deploy: post-deploy check: {len(bad)} of {len(checks)} parameters MISMATCH")


def dry_run(
    config: ProtocolConfig,
    manifest_path: Path,
    *,
    target_url: str,
    deployer: str,
    development: bool,
    force_new: bool = False,
    artifacts: Any = None,
) -> Deployment:
    """Deploy on an Anvil fork of `target_url` from `deployer` (impersonated), writing the
    manifest to `dry_run_path(manifest_path)`; an unfinished real deployment recorded at
    `manifest_path` is resumed on the fork, a complete one refused, as the real run would.
    Prints gas per step and the post-deploy check; returns the Deployment."""
    from web3 import Web3

    from keeper.chain.anvil import Anvil

    out = dry_run_path(manifest_path)
    with Anvil(extra_args=("--fork-url", target_url)) as url:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
        w3.provider.make_request("anvil_impersonateAccount", [deployer])
        backend = Web3Backend(w3, deployer, artifacts=artifacts)
        chain_id = w3.eth.chain_id
        previous = prepare(backend, config, manifest_path, chain_id, development=development, force_new=force_new)
        if previous is not None:
            save_manifest(previous, out)
        else:
            out.unlink(missing_ok=True)
        deployment = deploy_to_manifest(
            backend,
            config,
            out,
            admin=deployer,
            chain_id=chain_id,
            development=development,
            compiler=f"vyper {compiler_version()}",
        )
        print(f"\nDry run on an Anvil fork of chain {chain_id} from {deployer}; manifest: {out}")
        print_gas(deployment, w3.eth.gas_price)
        check(w3, deployment, config, abi=None if artifacts is None else (lambda name: artifacts(name).abi))
    return deployment


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


def _brownie_artifacts(proj: Any):
    from keeper.chain.artifacts import Artifact

    def load(name: str) -> Artifact:
        container = getattr(proj, name)
        return Artifact(name, container.abi, container.bytecode)

    return load


def main(config_path: str | Path | None = None, manifest_path: str | Path | None = None) -> Deployment:
    """Deploy from `config_path` and write the manifest to `manifest_path`; returns the Deployment."""
    config_path = Path(config_path or os.environ.get("PROTOCOL_CONFIG") or DEFAULT_CONFIG)
    manifest_path = Path(
        manifest_path or os.environ.get("DEPLOYMENT_MANIFEST") or ROOT / "deployments" / f"{network.show_active()}.json"
    )
    try:
        loaded = load_config(config_path)
        config = with_default_governance(loaded, deployer_address(), is_development())
    except ConfigError as e:
        raise SystemExit(f"deploy: {e}") from None
    if loaded.governance is not None and loaded.governance.address == DEPLOYER and not is_development():
        print(
            f"deploy: note: {config_path} has the placeholder `governance: address: deployer`: the deployer "
            f"{config.governance.address} governs; use a multisig's address for anything others rely on"
        )
    proj = active_project()
    force_new = env_flag("DEPLOY_FORCE_NEW")
    if env_flag("DEPLOY_DRY_RUN"):
        try:
            return dry_run(
                config,
                manifest_path,
                target_url=web3.provider.endpoint_uri,
                deployer=deployer_address(),
                development=is_development(),
                force_new=force_new,
                artifacts=_brownie_artifacts(proj),
            )
        except (DeployError, ManifestError) as e:
            raise SystemExit(f"deploy (dry run): {e}") from None
        except Exception as e:  # e.g. the deployer lacks ether on the target, a contract is too large
            raise SystemExit(
                f"deploy (dry run): stopped ({_one_line(e)}); nothing was sent to the real network"
            ) from None

    sender = deployer_account()
    backend = BrownieBackend(proj, sender, tx_params())
    try:
        deployment = deploy_to_manifest(
            backend,
            config,
            manifest_path,
            admin=sender.address,
            chain_id=chain.id,
            development=is_development(),
            compiler=f"vyper {compiler_version()}",
            force_new=force_new,
        )
    except (DeployError, ManifestError) as e:
        raise SystemExit(f"deploy: {e}") from None
    except Exception as e:  # a transaction failed: the steps done so far are in the manifest
        raise SystemExit(
            f"deploy: stopped ({_one_line(e)}); {manifest_path} records the steps done: run again to resume"
        ) from None

    print(f"\nDeployed on {network.show_active()} (chain {deployment.chain_id}) from {sender.address}:")
    rows = [
        ("OracleRouter", deployment.oracle),
        ("CollateralVault", deployment.vault),
        ("MarginEngine", deployment.engine),
        ("EngineLiquidation", deployment.engine_liquidation),
        ("EngineDeleveraging", deployment.engine_deleveraging),
        ("Matching", deployment.matching),
        ("MarginLens", deployment.lens),
        (f"settlement {config.settlement_symbol}", deployment.settlement_token),
    ]
    rows += [(f"token {s}", a) for s, a in deployment.tokens.items()]
    rows += [(f"feed {s}/USD", a) for s, a in deployment.feeds.items()]
    if deployment.timelock:
        rows.append(("Timelock", deployment.timelock))
    for label, address in rows:
        print(f"  {label:<20} {address}")
    print(f"  markets: {', '.join(deployment.markets)}")
    print(f"Manifest: {manifest_path}")
    print_gas(deployment)
    check(web3, deployment, config, abi=lambda name: getattr(proj, name).abi)
    if is_development() and rpc.is_child():
        print("Note: brownie started this Anvil and stops it on exit; to keep the deployment, start")
        print("`node_modules/.bin/anvil` first (brownie then attaches to it on port 8545).")
    return deployment
