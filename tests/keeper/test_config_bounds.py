"""A whole protocol config is checked against the contracts' bounds (`keeper.params.bounds`,
the same rules as a change file) when it is loaded and again before a deployment's first
transaction: a config the engine would refuse half-way is refused before anything is sent."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from keeper.chain.deploy import DeployError, deploy_protocol
from keeper.config import DEFAULT_CONFIG, ConfigError, load_config
from keeper.params.bounds import check_config


def write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mutate(raw)
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def mm_above_im(raw):
    raw["underlyings"][0].update(im_rate=0.10, mm_rate=0.20)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            mm_above_im,
            "underlyings[0] ETH: mm_rate 0.2 is outside [0.005, im_rate 0.1] (engine: mm_rate out of bounds)",
        ),
        (
            lambda raw: raw["underlyings"][1].update(im_rate=0.005),
            "underlyings[1] BTC: im_rate 0.005 is outside [0.01, 1]",
        ),
        (lambda raw: raw["underlyings"][1].update(mm_rate=0.03), "below 2 x the liquidation penalty"),
        (lambda raw: raw["liquidation"].update(penalty=0.2), "liquidation: penalty 0.2 is outside [0.001, 0.1]"),
        (
            lambda raw: raw["liquidation"].update(max_penalty=0.04),
            "liquidation: max_penalty needs every mm_rate in force >= 0.08",
        ),
        (lambda raw: raw["trading"].update(max_price_deviation=0.5), "trading: max_price_deviation 0.5 is outside"),
        (lambda raw: raw["underlyings"][0].update(spread_im_rate=0.2), "spread_im_rate 0.2 is above im_rate 0.1"),
    ],
)
def test_load_config_refuses_values_outside_the_onchain_bounds(tmp_path, mutate, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, mutate))
    text = str(e.value)
    assert "\n" not in text and text.startswith(str(tmp_path)), text
    assert needle in text, text


def test_shipped_configs_are_within_bounds():
    for path in sorted((DEFAULT_CONFIG.parent).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if isinstance(raw, dict) and "settlement" in raw or "extends" in (raw or {}):
            assert check_config(load_config(path)) == [], path


class RecordingBackend:
    """Counts what a deployment would send."""

    def __init__(self):
        self.sent = []

    def deploy(self, name, *args):
        self.sent.append(name)
        raise AssertionError("nothing may be deployed")

    def transact(self, contract, fn, *args):
        self.sent.append(fn)
        raise AssertionError("nothing may be sent")

    def timestamp(self):
        return 0


def test_deploy_refuses_before_the_first_transaction():
    config = load_config(DEFAULT_CONFIG)
    u = dataclasses.replace(config.underlyings[0], mm_rate=config.underlyings[0].im_rate * 2)
    bad = dataclasses.replace(config, underlyings=(u, *config.underlyings[1:]))
    backend = RecordingBackend()
    with pytest.raises(DeployError, match=r"nothing was sent: underlyings\[0\] ETH: mm_rate 0.2 is outside"):
        deploy_protocol(backend, bad, "0x" + "11" * 20, 31337)
    assert backend.sent == []


def test_replay_with_mm_above_im_is_one_line(tmp_path):
    path = write(tmp_path, mm_above_im)
    out = subprocess.run(
        [sys.executable, "-m", "keeper", "replay", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(lines) == 1 and "mm_rate 0.2 is outside" in lines[0], out.stderr
