"""Deployment manifest: the JSON file (chain id, addresses, ids, blocks, compiler, deployer,
time, the parameters as deployed, and the record of each deployment step) that `keeper run`,
`keeper account` and the scripts read to find a deployed protocol.

`abis` names each deployed contract's committed ABI (manifest field -> `abi/<Contract>.json`,
relative to the repository root); manifests written before it existed load with none.

A manifest with `"status": "partial"` records a deployment still in progress (or interrupted):
only the deploy script reads it (to resume); everything else refuses it. Manifests written
before these fields existed load as complete deployments.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path, PurePosixPath

from eth_utils import is_address, to_checksum_address

from keeper.chain.deployment import Deployment
from keeper.errors import KeeperError

ADDRESS_FIELDS = ("oracle", "vault", "engine", "settlement_token")


class ManifestError(KeeperError, ValueError):
    """A deployment manifest is missing, malformed, or does not match the chain."""


def save_manifest(deployment: Deployment, path: str | Path) -> Path:
    """Write `deployment` as pretty JSON (parent folders created); returns the path.

    Atomic: the JSON goes to a temporary file in the same folder, is flushed to disk and then
    renamed over `path`, so a crash leaves either the old or the new manifest, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(deployment.to_json(), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _is_address(value) -> bool:
    """A 20-byte hex address; mixed case must carry a correct EIP-55 checksum (all lower or all
    upper case carries none and is accepted)."""
    if not isinstance(value, str) or not is_address(value):
        return False
    digits = value[2:]
    return digits in (digits.lower(), digits.upper()) or value == to_checksum_address(value)


def _check_address(value, what: str) -> str:
    """`value` as a checksummed address, or an error text naming `what`."""
    if isinstance(value, str) and is_address(value) and not _is_address(value):
        raise _Bad(
            f"{what} has a wrong EIP-55 checksum (a typo?): {value!r}; "
            "check the address (all lower case carries no checksum)"
        )
    if not _is_address(value):
        raise _Bad(f"{what} is not an address: {_show(value, repr)}")
    return to_checksum_address(value)


def _show(value, fmt=json.dumps) -> str:
    """A value for an error line, cut to 60 characters."""
    text = fmt(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Bad(Exception):
    """A field problem; load_manifest adds the manifest path."""


def _uint(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Optional fields: name -> kind ("ids": object of name -> non-negative integer; "addresses":
# object of name -> address; "paths": object of name -> relative file path; "uint":
# non-negative integer; "address": an address or ""; "text": a string).
OPTIONAL_FIELDS = {
    "asset_ids": "ids",
    "asset_decimals": "ids",
    "feed_decimals": "ids",
    "price_ids": "ids",
    "underlyings": "ids",
    "markets": "ids",
    "market_expiries": "ids",
    "tokens": "addresses",
    "feeds": "addresses",
    "deploy_block": "uint",
    "admin": "address",
    "lens": "address",
    "compiler": "text",
    "timelock": "address",
    "deployer": "address",
    "deployed_at": "uint",
    "blocks": "ids",
    "parameters": "object",
    "steps": "steps",
    "status": "status",
    "option_market": "address",
    "vol_feed": "address",
    "health_attestor": "address",
    "option_series": "ids",
    "abis": "paths",
}
STATUSES = ("partial", "complete")


def _relative_path(value) -> bool:
    """A non-empty relative POSIX path that stays inside the folder it is relative to."""
    if not isinstance(value, str) or not value or "\\" in value or not value.isprintable():
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts


def _check_optional(key: str, value):
    kind = OPTIONAL_FIELDS[key]
    if kind == "uint":
        if not _uint(value):
            raise _Bad(f"{key} must be a non-negative integer, got {_show(value)}")
        return value
    if kind == "text":
        if not isinstance(value, str):
            raise _Bad(f"{key} must be a string, got {_show(value)}")
        return value
    if kind == "address":
        return value if value == "" else _check_address(value, key)
    if kind == "status":
        if value not in STATUSES:
            raise _Bad(f"{key} must be one of {', '.join(STATUSES)}, got {_show(value)}")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise _Bad(f"{key} must be a JSON object, got {_show(value)}")
        return value
    if kind == "steps":
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise _Bad(f"{key} must be a JSON object of step -> object, got {_show(value)}")
        for name, record in value.items():
            if "address" in record:
                record["address"] = _check_address(record["address"], f"{key}[{name!r}].address")
        return value
    if not isinstance(value, dict):
        what = {"addresses": "address", "paths": "relative path"}.get(kind, "non-negative integer")
        raise _Bad(f"{key} must be a JSON object of name -> {what}, got {_show(value)}")
    out = {}
    for name, item in value.items():
        label = f"{key}.{name}" if name.isprintable() else f"{key}[{name!r}]"
        if kind == "paths":
            if not _relative_path(item):
                raise _Bad(
                    f"{label} must be a path relative to the repository (such as abi/MarginEngine.json), "
                    f"got {_show(item)}"
                )
            out[name] = item
        elif kind == "ids":
            if not _uint(item):
                raise _Bad(f"{label} must be a non-negative integer, got {_show(item)}")
            out[name] = item
        else:
            out[name] = _check_address(item, label)
    return out


def load_manifest(path: str | Path, allow_partial: bool = False) -> Deployment:
    """Read and validate a manifest. Raises ManifestError with one clear line.

    A partial manifest (an unfinished deployment) is refused unless `allow_partial` (the deploy
    script, to resume it); its contract addresses may then still be missing or empty.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"deployment manifest {path} not found (deploy first, or pass --manifest)") from None
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"deployment manifest {path} is not a UTF-8 text file ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise ManifestError(f"deployment manifest {path} cannot be read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"deployment manifest {path} is not valid JSON (line {e.lineno})") from None
    except RecursionError:
        raise ManifestError(f"deployment manifest {path} is not valid JSON (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"deployment manifest {path} must hold a JSON object")
    known = {f.name for f in fields(Deployment)}
    partial = raw.get("status") == "partial"
    if partial and not allow_partial:
        raise ManifestError(
            f"deployment manifest {path} records an unfinished deployment (status partial): "
            "rerun the deploy script to resume it"
        )
    if partial:  # addresses not deployed yet are empty
        for key in ADDRESS_FIELDS:
            raw.setdefault(key, "")
    missing = [k for k in ("chain_id", "settlement_decimals", *ADDRESS_FIELDS) if k not in raw]
    if missing:
        raise ManifestError(f"deployment manifest {path} lacks {', '.join(missing)}")
    try:
        for key in ADDRESS_FIELDS:
            if not (partial and raw[key] == ""):
                raw[key] = _check_address(raw[key], key)
    except _Bad as e:
        raise ManifestError(f"deployment manifest {path}: {e}") from None
    for key in ("chain_id", "settlement_decimals"):
        if not _uint(raw[key]):
            raise ManifestError(f"deployment manifest {path}: {key} must be a non-negative integer")
    if raw["settlement_decimals"] > 18:
        raise ManifestError(
            f"deployment manifest {path}: settlement_decimals must be at most 18 (the vault lists 0..18), "
            f"got {raw['settlement_decimals']}"
        )
    try:
        for key in OPTIONAL_FIELDS:
            if key in raw:
                raw[key] = _check_optional(key, raw[key])
    except _Bad as e:
        raise ManifestError(f"deployment manifest {path}: {e}") from None
    return Deployment(**{k: v for k, v in raw.items() if k in known})
