"""Deployment inputs without a chain: the optional config keys for existing tokens, feeds and
governance (one clear error line each), and manifests old and new (atomic writes, partial status)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from eth_utils import to_checksum_address

from keeper.chain.artifacts import ROOT
from keeper.chain.deploy import deploy_protocol
from keeper.chain.deployment import Deployment
from keeper.chain.manifest import ManifestError, load_manifest, save_manifest
from keeper.config import DEFAULT_CONFIG, ConfigError, FeedConfig, GovernanceConfig, load_config

FEED = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"  # checksummed
TOKEN = "0x9A676e781A523b5d0C0e43731313A708CB607508"


def load(tmp_path: Path, mutate) -> object:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mutate(raw)
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def error(tmp_path: Path, mutate) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, mutate)
    text = str(e.value)
    assert "\n" not in text
    return text.split(": ", 1)[1]  # without the file name


def test_existing_addresses_and_governance_load(tmp_path):
    def testnet(raw):
        raw["settlement"]["address"] = TOKEN.lower()
        raw["price_ids"][0] = {
            "symbol": "ETH",
            "feed_decimals": 8,
            "feeds": [{"address": FEED, "heartbeat": 3600}, {"address": TOKEN, "heartbeat": 86400}],
        }
        raw["governance"] = {"address": FEED, "timelock_delay": 172800}

    cfg = load(tmp_path, testnet)
    assert cfg.settlement_address == TOKEN  # checksummed
    assert cfg.price_ids[0].feeds == (FeedConfig(FEED, 3600), FeedConfig(TOKEN, 86400))
    assert (cfg.price_ids[0].feed_decimals, cfg.price_ids[0].heartbeat) == (8, 3600)
    assert cfg.governance == GovernanceConfig(FEED, 172800)
    assert cfg.mocks() == ["WETH", "WBTC", "BTC feed", "USDC feed"] and cfg.allow_mocks is False
    # without feed_decimals the deployment reads them from the feed
    cfg = load(
        tmp_path,
        lambda raw: raw["price_ids"].__setitem__(1, {"symbol": "BTC", "feeds": [{"address": FEED, "heartbeat": 60}]}),
    )
    assert cfg.price_ids[1].feed_decimals is None and cfg.price_ids[1].initial_price == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda raw: raw["settlement"].update(address="0x123"),
            "settlement: address: must be a 0x-prefixed 20-byte hex address, got '0x123'",
        ),
        (
            lambda raw: raw["assets"][0].update(address=FEED.replace("F", "f", 1)),
            "assets[0] WETH: address: wrong EIP-55 checksum (a typo?): " + FEED.replace("F", "f", 1),
        ),
        (lambda raw: raw["assets"][0].update(address="0x" + "00" * 20), "assets[0] WETH: address: is the zero address"),
        (
            lambda raw: (raw["settlement"].update(address=TOKEN), raw["assets"][1].update(address=TOKEN)),
            f"assets[1] WBTC: address {TOKEN} is already the token of settlement",
        ),
        (
            lambda raw: raw["price_ids"][0].update(feeds=[{"address": FEED, "heartbeat": 3600}] * 2),
            f"price_ids[0] ETH feeds: duplicate '{FEED}' (entries 0 and 1)",
        ),
        (
            lambda raw: raw["price_ids"][0].update(feeds=[]),
            "price_ids[0] ETH: feeds: must be a list of 1 to 3 {address, heartbeat} entries, got []",
        ),
        (
            lambda raw: raw["price_ids"][0].update(feeds=[{"address": FEED, "heartbeat": 30}]),
            "price_ids[0] ETH feeds[0]: heartbeat: must be an integer in [60, 172800] seconds, got 30",
        ),
        (
            lambda raw: raw["price_ids"][0].update(feeds=[{"address": FEED}]),
            "price_ids[0] ETH feeds[0]: missing 'heartbeat'",
        ),
        (lambda raw: raw.update(allow_mocks="yes"), "top level: allow_mocks: must be true or false, got 'yes'"),
        (
            lambda raw: raw.update(governance={"address": FEED, "timelock_delay": 600}),
            "governance: timelock_delay: must be an integer in [3600, 2592000] seconds, got 600",
        ),
        (lambda raw: raw.update(governance={"timelock_delay": 3600}), "governance: missing 'address'"),
        (lambda raw: raw.update(governance=[FEED]), f"governance: must be a mapping, got ['{FEED}']"),
    ],
    ids=[
        "short",
        "checksum",
        "zero",
        "same-token",
        "dup-feed",
        "no-feeds",
        "heartbeat",
        "feed-key",
        "allow-mocks",
        "delay",
        "gov-address",
        "gov-type",
    ],
)
def test_bad_optional_keys_give_one_line(tmp_path, mutate, message):
    assert error(tmp_path, mutate) == message


OLD_MANIFEST = {  # as written before steps, status, blocks, parameters existed
    "chain_id": 31337,
    "oracle": FEED,
    "vault": TOKEN,
    "engine": FEED,
    "settlement_token": TOKEN,
    "settlement_decimals": 6,
    "markets": {"ETH-PERP": 0},
    "deploy_block": 1,
    "compiler": "vyper 0.4.3",
}


def test_old_manifest_loads_as_complete(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_MANIFEST))
    dep = load_manifest(path)
    assert dep.status == "complete" and dep.steps == {} and dep.timelock == "" and dep.markets == {"ETH-PERP": 0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "done"}, 'status must be one of partial, complete, got "done"'),
        ({"steps": {"oracle": 5}}, 'steps must be a JSON object of step -> object, got {"oracle": 5}'),
        ({"steps": {"oracle": {"address": "0x12"}}}, "steps['oracle'].address is not an address: '0x12'"),
        ({"parameters": []}, "parameters must be a JSON object, got []"),
        ({"timelock": "0x12"}, "timelock is not an address: '0x12'"),
    ],
)
def test_bad_new_manifest_fields(tmp_path, change, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(OLD_MANIFEST | change))
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    assert str(e.value) == f"deployment manifest {path}: {message}"


def test_partial_manifest_only_for_the_deploy_script(tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(
        json.dumps(
            {
                "chain_id": 31337,
                "settlement_decimals": 6,
                "status": "partial",
                "settlement_token": TOKEN,
                "steps": {"settlement_token": {"address": TOKEN, "block": 1}},
            }
        )
    )
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    assert str(e.value) == (
        f"deployment manifest {path} records an unfinished deployment (status partial): "
        "rerun the deploy script to resume it"
    )
    dep = load_manifest(path, allow_partial=True)
    assert (dep.oracle, dep.settlement_token, dep.steps["settlement_token"]["block"]) == ("", TOKEN, 1)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(OLD_MANIFEST))
    dep = load_manifest(path)
    dep.markets = {"BTC-PERP": 1}

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_manifest(dep, path)
    assert json.loads(path.read_text()) == OLD_MANIFEST and list(tmp_path.iterdir()) == [path]
    monkeypatch.undo()
    save_manifest(dep, path)
    assert load_manifest(path).markets == {"BTC-PERP": 1} and isinstance(load_manifest(path), Deployment)


def test_testnet_example_config_loads():
    cfg = load_config(DEFAULT_CONFIG.parent / "testnet.example.yaml")
    assert cfg.settlement_address == "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
    assert [p.feeds[0].address for p in cfg.price_ids] == [
        "0x694AA1769357215DE4FAC081bf1f309aDC325306",
        "0x1b44F3514812d835EB1BDB0acB33d3fA3351Ee43",
    ]
    assert cfg.mocks() == ["WETH", "WBTC"] and cfg.allow_mocks
    # the marked placeholder: the deploying account governs until the user names a multisig
    assert cfg.governance == GovernanceConfig("deployer", 86400)


class _PaperBackend:
    """Deploys nothing: hands out fresh addresses and records what would be sent."""

    sender = "0x" + "11" * 20

    def __init__(self):
        self.sent = []

    def deploy(self, name, *args):
        self.sent.append(name)
        return SimpleNamespace(address=to_checksum_address(f"0x{len(self.sent):040x}"))

    def transact(self, contract, fn, *args):
        self.sent.append(fn)

    def at(self, name, address):
        return SimpleNamespace(address=address)

    def view(self, contract, fn, *args):
        assert fn == "index_price", fn  # the strike of each option series
        return 2000 * 10**18

    def timestamp(self):
        return 1_700_000_000


def test_manifest_names_each_contracts_abi(tmp_path):
    """Every deployed deployable is named with its committed ABI (`abis`: manifest field ->
    abi/<Contract>.json, a file bin/abi writes); mocks have none. A manifest without `abis`
    (written before it existed) loads with none, and resuming it records them, sending nothing."""
    config = load_config(DEFAULT_CONFIG.parent / "options.yaml")
    config = dataclasses.replace(config, governance=GovernanceConfig(_PaperBackend.sender, 3600))
    dep = deploy_protocol(_PaperBackend(), config, _PaperBackend.sender, 31337)
    expected = {
        "oracle": "OracleRouter",
        "vault": "CollateralVault",
        "engine": "MarginEngine",
        "lens": "MarginLens",
        "vol_feed": "VolFeed",
        "option_market": "OptionMarket",
        "health_attestor": "HealthAttestor",
        "timelock": "Timelock",
        "matching": "Matching",
        "engine_liquidation": "EngineLiquidation",
        "engine_deleveraging": "EngineDeleveraging",
        "option_liquidation": "OptionLiquidation",
        "backstop_vault": "BackstopVault",
    }
    assert dep.abis == {key: f"abi/{name}.json" for key, name in expected.items()}
    assert all((ROOT / p).is_file() for p in dep.abis.values()), dep.abis  # committed by bin/abi
    assert all(getattr(dep, key) for key in dep.abis)  # each names a deployed address
    path = save_manifest(dep, tmp_path / "m.json")
    assert load_manifest(path).abis == dep.abis

    raw = json.loads(path.read_text())
    del raw["abis"]
    path.write_text(json.dumps(raw | {"status": "partial"}))
    old = load_manifest(path, allow_partial=True)
    assert old.abis == {}
    backend = _PaperBackend()
    assert deploy_protocol(backend, config, _PaperBackend.sender, 31337, progress=old).abis == dep.abis
    assert backend.sent == []


@pytest.mark.parametrize(
    ("abis", "message"),
    [
        ([], "abis must be a JSON object of name -> relative path, got []"),
        (
            {"engine": "/etc/passwd"},
            'abis.engine must be a path relative to the repository (such as abi/MarginEngine.json), got "/etc/passwd"',
        ),
        (
            {"engine": "../abi/MarginEngine.json"},
            'abis.engine must be a path relative to the repository (such as abi/MarginEngine.json), got "../abi/MarginEngine.json"',
        ),
        ({"engine": 5}, "abis.engine must be a path relative to the repository (such as abi/MarginEngine.json), got 5"),
    ],
    ids=["not-object", "absolute", "parent", "not-text"],
)
def test_bad_manifest_abis(tmp_path, abis, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(OLD_MANIFEST | {"abis": abis}))
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    assert str(e.value) == f"deployment manifest {path}: {message}"
