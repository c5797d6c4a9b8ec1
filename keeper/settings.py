"""Keeper settings: a YAML file, then `KEEPER_*` environment variables, then command-line
options, each overriding the one before (twelve-factor style: secrets and per-host values come
from the environment).

The private key itself is never read from the file: the file names the environment variable
that holds it (`private_key_env`). Every bad value raises SettingsError with one line naming
the source and the field.

Environment variables: `KEEPER_<FIELD>` in upper case for every top-level field
(`KEEPER_MIN_PROFIT_USD=5`, `KEEPER_STATE_DIR=/var/lib/keeper`), `KEEPER_GAS_<FIELD>` for the
gas section (`KEEPER_GAS_MAX_FEE_GWEI=300`), and `KEEPER_RPC_URLS` as a comma-separated list
(`KEEPER_RPC_URL`, a single URL, is accepted too). An empty variable counts as unset.

Health attestations (keeper.attest), the `attestation:` section, all optional:

    attestation:
      enabled: true                      # KEEPER_ATTESTATION_ENABLED=1
      signer_key_envs: [RISK_KEY_1, RISK_KEY_2]   # KEEPER_ATTESTATION_SIGNER_KEY_ENVS=RISK_KEY_1,RISK_KEY_2
      accounts: all                      # KEEPER_ATTESTATION_ACCOUNTS=all | 0xabc...,0xdef...
      validity_seconds: 600              # KEEPER_ATTESTATION_VALIDITY_SECONDS (clamped to the attestor's max)
      refresh_before_seconds: 120        # KEEPER_ATTESTATION_REFRESH_BEFORE_SECONDS
      price_move_fraction: 0.5           # KEEPER_ATTESTATION_PRICE_MOVE_FRACTION (of the attestor's band)
      scenario_config: config/portfolio_margin.yaml   # KEEPER_ATTESTATION_SCENARIO_CONFIG

`signer_key_envs` name the environment variables holding the m risk signers' private keys (at
least the attestor's threshold of them); the keys themselves never appear in settings.
`accounts: all` attests every tracked account that holds an option; a list opts in only those.

Settlement of expired dated futures and option series (keeper.settle) is on by default:
`settle_expired: false` in the file, or `KEEPER_SETTLE_EXPIRED=0` (also false / no / off), or
`keeper run --no-settle-expired` turns it off.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

import yaml

from keeper.errors import KeeperError

GWEI = 10**9


class SettingsError(KeeperError, ValueError):
    """A keeper settings file, environment variable or option is missing or malformed."""


@dataclass(frozen=True)
class GasSettings:
    """EIP-1559 fee policy: max fee = base_fee_multiplier x base fee + priority fee, <= max_fee."""

    max_fee_gwei: float = 500.0
    priority_fee_gwei: float = 1.0
    base_fee_multiplier: int = 2

    @property
    def max_fee_wei(self) -> int:
        return int(round(self.max_fee_gwei * GWEI))

    @property
    def priority_fee_wei(self) -> int:
        return int(round(self.priority_fee_gwei * GWEI))


@dataclass(frozen=True)
class AttestationSettings:
    """The attestation service (keeper.attest): off unless `enabled`. `accounts` None = all
    tracked accounts holding options, else checksummed addresses; times in seconds;
    `price_move_fraction` of the attestor's price band; `scenario_config` None = the default
    config/portfolio_margin.yaml."""

    enabled: bool = False
    signer_key_envs: tuple[str, ...] = ()
    accounts: tuple[str, ...] | None = None
    validity_seconds: int = 600
    refresh_before_seconds: int = 120
    price_move_fraction: float = 0.5
    scenario_config: Path | None = None


@dataclass(frozen=True)
class KeeperSettings:
    """Everything `keeper run` needs besides the key.

    Units: gas in gwei, amounts in USD or ETH as named, times in seconds, depths in blocks.
    A liquidation is sent only if its expected reward exceeds its gas cost x (1 + `gas_margin`)
    + `min_profit_usd`: the default 0 never liquidates at a loss; a negative number accepts a
    loss up to that much; None (written `always`) liquidates every liquidatable account whatever
    it earns, unscreened (a protocol's own backstop keeper). `liquidation_gas_floor` is the gas
    of the cheapest liquidation: an account whose reward upper bound cannot pay that much gas is
    skipped before any RPC call.
    """

    rpc_urls: tuple[str, ...] = ()
    manifest: Path | None = None
    private_key_env: str = "KEEPER_PRIVATE_KEY"
    state_dir: Path | None = None  # journal and event-index checkpoint; None = nothing persisted
    from_block: int | None = None  # None = the manifest's deploy block
    gas: GasSettings = field(default_factory=GasSettings)
    min_profit_usd: float | None = 0.0  # None = "always" (liquidate all)
    gas_margin: float = 0.25
    liquidation_gas_floor: int = 200_000
    metrics_port: int | None = None  # None = no /metrics endpoint
    metrics_addr: str = "127.0.0.1"
    log_format: str = "text"  # text | json
    log_level: str = "INFO"
    low_balance_eth: float = 0.05
    reorg_depth: int = 64
    stale_after_seconds: float = 120.0
    missed_after_blocks: int = 3
    poll_seconds: float = 0.5
    rpc_timeout_seconds: float = 10.0
    log_chunk_blocks: int = 2000
    settle_expired: bool = True  # settle expired dated futures and option series (keeper.settle)
    attestation: AttestationSettings = field(default_factory=AttestationSettings)


_TOP = {f.name for f in fields(KeeperSettings)} - {"gas", "attestation"}
_GAS = {f.name for f in fields(GasSettings)}
_ATT = {f.name for f in fields(AttestationSettings)}


def _bool(value, where: str) -> bool:
    """true/false, or (from the environment) 1/0, true/false, yes/no, on/off in any case."""
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise SettingsError(f"{where}: must be true or false, got {value!r}")
    return value


def _attestation_field(name: str, value, where: str):
    """One `attestation:` field, validated."""
    if name == "enabled":
        return _bool(value, where)
    if name == "signer_key_envs":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, str) and v.isidentifier() for v in value)
        ):
            raise SettingsError(f"{where}: must list environment variable names, got {value!r}")
        if len(set(value)) != len(value):
            raise SettingsError(f"{where}: a variable is named twice")
        return tuple(value)
    if name == "accounts":
        if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        from eth_utils import is_address, to_checksum_address

        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, str) and is_address(v) for v in value)
        ):
            raise SettingsError(f"{where}: must be all or a list of addresses, got {value!r}")
        return tuple(to_checksum_address(v) for v in value)
    if name == "scenario_config":
        if value is None:
            return None
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise SettingsError(f"{where}: must be a path, got {value!r}")
        return Path(value).expanduser()
    limits = {
        "validity_seconds": (60, 86400, True),
        "refresh_before_seconds": (0, 86400, True),
        "price_move_fraction": (0.01, 1.0, False),
    }
    lo, hi, integer = limits[name]
    return _number(value, where, lo, hi, integer)


def _number(value, where: str, lo: float, hi: float = math.inf, integer: bool = False):
    if isinstance(value, str):
        try:
            value = float(value) if not integer else int(value, 0)
        except ValueError:
            raise SettingsError(f"{where}: must be {'an integer' if integer else 'a number'}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{where}: must be {'an integer' if integer else 'a number'}, got {value!r}")
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise SettingsError(f"{where}: must be an integer, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise SettingsError(f"{where}: must be in [{lo:g}, {hi:g}], got {value!r}")
    return int(value) if integer else float(value)


def _url(value, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
        raise SettingsError(f"{where}: an RPC URL must start with http:// or https://, got {value!r}")
    return value


def _convert(name: str, value, where: str):
    """One field's value, validated; `where` names the source for the error line."""
    if name == "rpc_urls":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not value:
            raise SettingsError(f"{where}: must be a non-empty list of RPC URLs, got {value!r}")
        return tuple(_url(v, where) for v in value)
    if name in ("manifest", "state_dir"):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise SettingsError(f"{where}: must be a path, got {value!r}")
        return Path(value).expanduser()
    if name == "private_key_env":
        if not isinstance(value, str) or not value.isidentifier():
            raise SettingsError(f"{where}: must name an environment variable, got {value!r}")
        return value
    if name == "log_format":
        if value not in ("text", "json"):
            raise SettingsError(f"{where}: must be text or json, got {value!r}")
        return value
    if name == "log_level":
        if not isinstance(value, str) or value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"{where}: must be DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return value.upper()
    if name == "settle_expired":
        return _bool(value, where)
    if name == "metrics_addr":
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{where}: must be a host address, got {value!r}")
        return value
    if name == "min_profit_usd":
        if isinstance(value, str) and value.strip().lower() == "always":
            return None
        if value is None:
            raise SettingsError(
                f"{where}: must be a number (USD; 0 = never at a loss) or always (liquidate all, the old null), got null"
            )
    if name in ("metrics_port", "from_block") and value is None:
        return None
    limits = {
        "from_block": (0, math.inf, True),
        "min_profit_usd": (-1e12, 1e12, False),
        "gas_margin": (0, 100, False),
        "liquidation_gas_floor": (0, 30_000_000, True),
        "metrics_port": (1, 65535, True),
        "low_balance_eth": (0, 1e9, False),
        "reorg_depth": (1, 10_000, True),
        "stale_after_seconds": (1, 1e7, False),
        "missed_after_blocks": (1, 1e6, True),
        "poll_seconds": (0.01, 3600, False),
        "rpc_timeout_seconds": (0.1, 600, False),
        "log_chunk_blocks": (1, 1e7, True),
        "max_fee_gwei": (0, 1e7, False),
        "priority_fee_gwei": (0, 1e7, False),
        "base_fee_multiplier": (1, 100, True),
    }
    lo, hi, integer = limits[name]
    return _number(value, where, lo, hi, integer)


def _apply(base: KeeperSettings, values: Mapping[str, object], source: str) -> KeeperSettings:
    top: dict = {}
    gas: dict = {}
    att: dict = {}
    for name, value in values.items():
        if name == "attestation":
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: attestation: must be a mapping, got {value!r}")
            for k, v in value.items():
                if k not in _ATT:
                    raise SettingsError(
                        f"{source}: attestation: unknown field {k!r} (known: {', '.join(sorted(_ATT))})"
                    )
                att[k] = _attestation_field(k, v, f"{source}: attestation.{k}")
        elif name == "gas":
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: gas: must be a mapping, got {value!r}")
            for k, v in value.items():
                if k not in _GAS:
                    raise SettingsError(f"{source}: gas: unknown field {k!r} (known: {', '.join(sorted(_GAS))})")
                gas[k] = _convert(k, v, f"{source}: gas.{k}")
        elif name == "private_key":
            raise SettingsError(
                f"{source}: never put a private key in settings; name its environment variable in private_key_env"
            )
        elif name in _TOP:
            top[name] = _convert(name, value, f"{source}: {name}")
        else:
            raise SettingsError(
                f"{source}: unknown field {name!r} (known: {', '.join(sorted(_TOP | {'gas', 'attestation'}))})"
            )
    if gas:
        top["gas"] = replace(base.gas, **gas)
    if att:
        top["attestation"] = replace(base.attestation, **att)
    return replace(base, **top)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides) -> KeeperSettings:
    """Defaults, then the YAML file at `path` (if given), then `KEEPER_*` variables from `env`
    (default: os.environ), then `overrides` (command-line options; None values are ignored).
    Raises SettingsError naming the file, variable or option and the field."""
    settings = KeeperSettings()
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"{path}: settings file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SettingsError(f"{path}: cannot read: {e.__class__.__name__}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise SettingsError(f"{path}: not valid YAML{at}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: must be a mapping of settings, got {type(raw).__name__}")
        settings = _apply(settings, raw, str(path))
    env = os.environ if env is None else env
    # one variable at a time, so that an error names the variable
    if env.get("KEEPER_RPC_URL"):
        settings = _apply(settings, {"rpc_urls": env["KEEPER_RPC_URL"]}, "environment KEEPER_RPC_URL")
    for section, names, prefix in (
        (None, _TOP, "KEEPER_"),
        ("gas", _GAS, "KEEPER_GAS_"),
        ("attestation", _ATT, "KEEPER_ATTESTATION_"),
    ):
        for name in sorted(names):
            var = f"{prefix}{name.upper()}"
            value = env.get(var)
            if value:  # empty = unset
                settings = _apply(
                    settings, {name: value} if section is None else {section: {name: value}}, f"environment {var}"
                )
    # KEEPER_PRIVATE_KEY_ENV would be confusing next to KEEPER_PRIVATE_KEY; it is still honoured
    given = {k: v for k, v in overrides.items() if v is not None}
    gas_over = {k: given.pop(k) for k in list(given) if k in _GAS}
    if gas_over:
        given["gas"] = gas_over
    settings = _apply(settings, given, "command line")
    return settings


def validate_for_run(settings: KeeperSettings) -> None:
    """Raise SettingsError if `keeper run` lacks an RPC URL or a manifest, or attestations are
    enabled without signer keys."""
    if not settings.rpc_urls:
        raise SettingsError("no RPC URL: give --rpc, rpc_urls in the settings file, or KEEPER_RPC_URLS")
    if settings.manifest is None:
        raise SettingsError(
            "no deployment manifest: give --manifest, manifest in the settings file, or KEEPER_MANIFEST"
        )
    if settings.attestation.enabled and not settings.attestation.signer_key_envs:
        raise SettingsError("attestation.enabled needs signer_key_envs (or KEEPER_ATTESTATION_SIGNER_KEY_ENVS)")


def attestation_keys(settings: AttestationSettings, env: Mapping[str, str] | None = None) -> list[str]:
    """The risk signers' private keys from the environment variables the settings name.
    Raises SettingsError naming the first variable that is unset."""
    env = os.environ if env is None else env
    keys = []
    for name in settings.signer_key_envs:
        if not env.get(name):
            raise SettingsError(f"attestation signer key: the environment variable {name} is not set")
        keys.append(env[name])
    return keys


SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def private_key_from_env(name: str, env: Mapping[str, str] | None = None) -> str:
    """The private key held by the environment variable `name`, checked before anything uses it:
    64 hex digits (with or without 0x) whose value is in [1, secp256k1 order - 1]. A placeholder
    of 64 zeros or 0xff...f would otherwise fail deep inside coincurve. Raises SettingsError with
    one line naming the variable (never the key)."""
    env = os.environ if env is None else env
    value = (env.get(name) or "").strip()
    if not value:
        raise SettingsError(f"no private key: set the environment variable {name}")
    digits = value[2:] if value[:2].lower() == "0x" else value
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise SettingsError(
            f"{name} does not hold a valid private key: expected 64 hex digits (32 bytes), got {len(digits)} characters"
        )
    number = int(digits, 16)
    if number == 0:
        raise SettingsError(f"{name} does not hold a valid private key: it is zero (a placeholder?); set a real key")
    if number >= SECP256K1_ORDER:
        raise SettingsError(f"{name} does not hold a valid private key: it is not below the secp256k1 group order")
    return "0x" + digits.lower()
