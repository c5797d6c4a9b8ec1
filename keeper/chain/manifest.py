"""Deployment manifest: the JSON file (chain id, addresses, ids, block, compiler) that
`keeper run`, `keeper account` and the scripts read to find a deployed protocol."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from keeper.chain.deploy import Deployment

ADDRESS_FIELDS = ("oracle", "vault", "engine", "settlement_token")


class ManifestError(ValueError):
    """A deployment manifest is missing, malformed, or does not match the chain."""


def save_manifest(deployment: Deployment, path: str | Path) -> Path:
    """Write `deployment` as pretty JSON (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(deployment.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def load_manifest(path: str | Path) -> Deployment:
    """Read and validate a manifest. Raises ManifestError with one clear line."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"deployment manifest {path} not found (deploy first, or pass --manifest)") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"deployment manifest {path} is not valid JSON (line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"deployment manifest {path} must hold a JSON object")
    known = {f.name for f in fields(Deployment)}
    missing = [k for k in ("chain_id", "settlement_decimals", *ADDRESS_FIELDS) if k not in raw]
    if missing:
        raise ManifestError(f"deployment manifest {path} lacks {', '.join(missing)}")
    for key in ADDRESS_FIELDS:
        if not isinstance(raw[key], str) or not is_address(raw[key]):
            raise ManifestError(f"deployment manifest {path}: {key} is not an address: {raw[key]!r}")
        raw[key] = to_checksum_address(raw[key])
    for key in ("chain_id", "settlement_decimals"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 0:
            raise ManifestError(f"deployment manifest {path}: {key} must be a non-negative integer")
    return Deployment(**{k: v for k, v in raw.items() if k in known})
