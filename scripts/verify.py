"""Post-deploy check: read every parameter of a deployed protocol back and compare it with the config.

    brownie run scripts/verify.py --network NAME

Prints a table (OK / MISMATCH per parameter) and exits non-zero on any mismatch. Reads the
manifest (DEPLOYMENT_MANIFEST, default deployments/<network>.json) and the config
(PROTOCOL_CONFIG, default config/local.yaml). What is checked: `keeper.chain.verify`.
"""

from __future__ import annotations

import os
from pathlib import Path

from brownie import chain, network, project, web3
from brownie._config import CONFIG

from keeper.chain.manifest import ManifestError, load_manifest
from keeper.chain.verify import mismatches, print_checks, verify_deployment
from keeper.config import DEFAULT_CONFIG, ConfigError, load_config, with_default_governance

ROOT = Path(__file__).resolve().parents[1]


def main(config_path: str | Path | None = None, manifest_path: str | Path | None = None) -> int:
    """Check the deployment; returns the number of checks. SystemExit on a mismatch or bad input."""
    config_path = Path(config_path or os.environ.get("PROTOCOL_CONFIG") or DEFAULT_CONFIG)
    manifest_path = Path(
        manifest_path or os.environ.get("DEPLOYMENT_MANIFEST") or ROOT / "deployments" / f"{network.show_active()}.json"
    )
    try:
        deployment = load_manifest(manifest_path)
        development = CONFIG.network_type == "development"
        config = with_default_governance(load_config(config_path), deployment.deployer or deployment.admin, development)
    except (ManifestError, ConfigError) as e:
        raise SystemExit(f"verify: {e}") from None
    if deployment.chain_id != chain.id:
        raise SystemExit(
            f"verify: {manifest_path} is for chain {deployment.chain_id}, network "
            f"{network.show_active()!r} is chain {chain.id}"
        )
    loaded = project.get_loaded_projects()
    abi = (lambda name: getattr(loaded[0], name).abi) if loaded else None
    checks = verify_deployment(web3, deployment, config, abi=abi)
    print_checks(checks)
    bad = mismatches(checks)
    if bad:
        raise SystemExit(f"verify: {len(bad)} of {len(checks)} parameters MISMATCH")
    return len(checks)
