"""The testnet walkthrough's settings are checked before brownie connects (`bin/deploy`,
`bin/verify` -> keeper.chain.preflight): a missing WEB3_INFURA_PROJECT_ID or governance section
is one line, and config/testnet.example.yaml works as copied (placeholder `address: deployer`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from keeper.chain.preflight import PreflightError, network_name, preflight
from keeper.config import DEFAULT_CONFIG, ConfigError, load_config, with_default_governance

ROOT = Path(__file__).resolve().parents[2]
SEPOLIA = {"name": "Sepolia (Infura)", "id": "sepolia", "host": "https://sepolia.infura.io/v3/$WEB3_INFURA_PROJECT_ID"}
NETWORKS = {"sepolia": SEPOLIA, "development": {"id": "development", "cmd": "anvil", "host": "http://127.0.0.1"}}
DEPLOYER = "0x" + "ab" * 20


def test_network_name():
    assert network_name(["--network", "sepolia"]) == "sepolia"
    assert network_name(["--network=sepolia"]) == "sepolia"
    assert network_name([]) == "development"


def test_missing_infura_id_is_one_line_naming_it(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight(["--network", "sepolia"], NETWORKS, {}, ROOT)
    text = str(e.value)
    assert "\n" not in text
    assert "set WEB3_INFURA_PROJECT_ID" in text and "brownie networks modify sepolia host=" in text


def test_testnet_example_works_as_copied(tmp_path):
    copied = tmp_path / "sepolia.yaml"
    shutil.copy(ROOT / "config" / "testnet.example.yaml", copied)
    env = {"WEB3_INFURA_PROJECT_ID": "x", "PROTOCOL_CONFIG": str(copied)}
    preflight(["--network", "sepolia"], NETWORKS, env, ROOT)  # no error
    config = with_default_governance(load_config(copied), DEPLOYER, development=False)
    assert config.governance.address == DEPLOYER and config.governance.timelock_delay == 86400


def test_live_network_without_governance_is_one_line(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())  # local.yaml: no governance section
    path = tmp_path / "nogov.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PreflightError, match=r"nogov.yaml: .*no `governance` section.*address: deployer"):
        preflight(
            ["--network", "sepolia"], NETWORKS, {"WEB3_INFURA_PROJECT_ID": "x", "PROTOCOL_CONFIG": str(path)}, ROOT
        )
    preflight([], NETWORKS, {"PROTOCOL_CONFIG": str(path)}, ROOT)  # development: the deployer governs


def test_governance_placeholder_is_only_the_word_deployer(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["governance"] = {"address": "the deployer", "timelock_delay": 86400}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="governance: address: must be a 0x-prefixed 20-byte hex address"):
        load_config(path)


def test_bin_deploy_without_infura_id_prints_one_line():
    env = {k: v for k, v in os.environ.items() if k != "WEB3_INFURA_PROJECT_ID"}
    env["PROTOCOL_CONFIG"] = str(ROOT / "config" / "testnet.example.yaml")
    out = subprocess.run(
        [str(ROOT / "bin" / "deploy"), "--network", "sepolia"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(lines) == 1 and "WEB3_INFURA_PROJECT_ID" in lines[0], out.stderr
