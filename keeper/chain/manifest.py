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
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from keeper.chain.deployment import Deployment
from keeper.errors import KeeperError
from keeper.validation import checksummed, first_problem

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


def _address(value: Any, info: ValidationInfo) -> str:
    """A checksummed address, or "" where the field may be empty (an optional address, or a
    contract a partial deployment has not deployed yet)."""
    if value == "" and (info.field_name not in ADDRESS_FIELDS or (info.context or {}).get("partial")):
        return value
    return checksummed(value)


def _relative_path(value: str) -> str:
    """A non-empty relative POSIX path that stays inside the folder it is relative to."""
    path = PurePosixPath(value)
    if not value or "\\" in value or not value.isprintable() or path.is_absolute() or ".." in path.parts:
        raise PydanticCustomError("path", "not a relative path")
    return value


def _show(value, fmt=json.dumps) -> str:
    """A value for an error line, cut to 60 characters."""
    text = fmt(value)
    return text if len(text) <= 60 else text[:57] + "..."


STATUSES = ("partial", "complete")
Address = Annotated[str, BeforeValidator(_address)]
Checksummed = Annotated[str, BeforeValidator(checksummed)]
Uint = Annotated[StrictInt, Field(ge=0)]
Ids = dict[str, Uint]


class _Step(BaseModel):
    """One deployment step's record: {"block", "gas"[, "address", "expiry"]}, kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    address: Checksummed = ""


class _Manifest(BaseModel):
    """The manifest's fields, checked in this order (the first problem is reported); unknown
    keys are ignored, so an older keeper reads a newer manifest."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    oracle: Address
    vault: Address
    engine: Address
    settlement_token: Address
    chain_id: Uint
    settlement_decimals: Annotated[StrictInt, Field(ge=0, le=18)]
    asset_ids: Ids = {}
    asset_decimals: Ids = {}
    feed_decimals: Ids = {}
    price_ids: Ids = {}
    underlyings: Ids = {}
    markets: Ids = {}
    market_expiries: Ids = {}
    tokens: dict[str, Checksummed] = {}
    feeds: dict[str, Checksummed] = {}
    deploy_block: Uint = 0
    admin: Address = ""
    lens: Address = ""
    compiler: StrictStr = ""
    timelock: Address = ""
    deployer: Address = ""
    deployed_at: Uint = 0
    blocks: Ids = {}
    parameters: dict[str, Any] = {}
    steps: dict[str, _Step] = {}
    status: Literal[STATUSES] = "complete"
    option_market: Address = ""
    vol_feed: Address = ""
    health_attestor: Address = ""
    backstop_vault: Address = ""
    option_series: Ids = {}
    abis: dict[str, Annotated[StrictStr, AfterValidator(_relative_path)]] = {}
    # passed through unchecked, as before
    matching: Any = ""
    engine_liquidation: Any = ""
    engine_deleveraging: Any = ""
    option_liquidation: Any = ""


# the wording of a problem with a whole field, by field (default: a non-negative integer)
_WORDING = {
    "status": f"must be one of {', '.join(STATUSES)}",
    "parameters": "must be a JSON object",
    "compiler": "must be a string",
    "tokens": "must be a JSON object of name -> address",
    "feeds": "must be a JSON object of name -> address",
    "abis": "must be a JSON object of name -> relative path",
    **{
        k: "must be a JSON object of name -> non-negative integer"
        for k, f in _Manifest.model_fields.items()
        if f.annotation == Ids
    },
}


def _problem(e: ValidationError, raw: dict) -> str:
    """pydantic's first error as today's line (after `deployment manifest <file>`)."""
    errors = e.errors(include_url=False)
    missing = {err["loc"][0] for err in errors if err["type"] == "missing"}
    if missing:  # every required field that is missing, at once
        return f" lacks {', '.join(k for k in ('chain_id', 'settlement_decimals', *ADDRESS_FIELDS) if k in missing)}"
    p = first_problem(e)
    key, name = str(p.loc[0]), str(p.loc[1]) if len(p.loc) > 1 else ""
    label = key if not name else f"{key}.{name}" if name.isprintable() else f"{key}[{name!r}]"
    if key == "steps":  # a step that is not an object is reported before a step's bad address
        if any(err["loc"][0] == "steps" and err["loc"][2:] != ("address",) for err in errors):
            return f": steps must be a JSON object of step -> object, got {_show(raw[key])}"
        label = f"steps[{name!r}].address"
    if p.kind == "checksum":
        return (
            f": {label} has a wrong EIP-55 checksum (a typo?): {p.value!r}; "
            "check the address (all lower case carries no checksum)"
        )
    if p.kind == "address":
        return f": {label} is not an address: {_show(p.value, repr)}"
    if key == "abis" and name:
        return (
            f": {label} must be a path relative to the repository (such as abi/MarginEngine.json), got {_show(p.value)}"
        )
    if key in ("chain_id", "settlement_decimals"):
        if p.kind == "less_than_equal":
            return f": {key} must be at most 18 (the vault lists 0..18), got {p.value}"
        return f": {key} must be a non-negative integer"
    if name:  # an item of an object of name -> non-negative integer
        return f": {label} must be a non-negative integer, got {_show(p.value)}"
    return f": {key} {_WORDING.get(key, 'must be a non-negative integer')}, got {_show(p.value)}"


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
    try:
        manifest = _Manifest.model_validate(raw, context={"partial": partial})
    except ValidationError as e:
        raise ManifestError(f"deployment manifest {path}{_problem(e, raw)}") from None
    checked = manifest.model_dump(exclude_unset=True)
    return Deployment(**{k: v for k, v in checked.items() if k in known})
