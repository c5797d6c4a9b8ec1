"""The published interface files describe what the contracts really call and expose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from keeper.chain.artifacts import load_artifact

ROOT = Path(__file__).resolve().parents[2]


def interface_abi(name: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "abi", str(ROOT / "interfaces" / name)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def signature(entry: dict) -> tuple:
    return (
        entry["name"],
        tuple(i["type"] for i in entry["inputs"]),
        tuple(o["type"] for o in entry["outputs"]),
        entry["stateMutability"],
    )


def test_mock_feed_implements_aggregator_v3():
    wanted = {signature(e) for e in interface_abi("AggregatorV3.vyi") if e["type"] == "function"}
    have = {signature(e) for e in load_artifact("MockAggregator").abi if e["type"] == "function"}
    assert wanted <= have
