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

A separate endpoint for sending transactions, e.g. a private relay: `send_rpc: https://...`
(`KEEPER_SEND_RPC`, `keeper run --send-rpc`); reads, head-following and receipts stay on
`rpc_urls`. RPC URLs are http://, https://, ws:// or wss://.

Settlement of expired dated futures and option series (keeper.settle) is on by default:
`settle_expired: false` in the file, or `KEEPER_SETTLE_EXPIRED=0` (also false / no / off), or
`keeper run --no-settle-expired` turns it off.

Event-driven re-scoring (keeper.scoring), the `scoring:` section, all optional:

    scoring:
      event_driven: true          # KEEPER_SCORING_EVENT_DRIVEN=0: value every account every block
      cache_states: true          # KEEPER_SCORING_CACHE_STATES=0: read every account's state every block
      high_risk_health: 1.25      # KEEPER_SCORING_HIGH_RISK_HEALTH: below it, valued on every input change
      rescore_every_blocks: 20    # KEEPER_SCORING_RESCORE_EVERY_BLOCKS: every account at least this often
      resync_every_blocks: 200    # KEEPER_SCORING_RESYNC_EVERY_BLOCKS: a full read and re-score this often
      headroom_fraction: 0.5      # KEEPER_SCORING_HEADROOM_FRACTION: of equity - MM an input move may use
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from keeper.errors import KeeperError
from keeper.sharding import Shard
from keeper.units import GWEI
from keeper.validation import Float, Int, bounds, first_problem, is_integer_field


class SettingsError(KeeperError, ValueError):
    """A keeper settings file, environment variable or option is missing or malformed."""


_MODEL = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _listed(value: Any) -> Any:
    """A comma-separated string (from the environment) as a list."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _invalid(value: Any) -> Any:
    raise PydanticCustomError("invalid", "invalid")


def _bool(value: Any) -> Any:
    """true/false, or (from the environment) 1/0, true/false, yes/no, on/off in any case."""
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value if isinstance(value, bool) else _invalid(value)


def _path(value: Any) -> Any:
    return Path(value).expanduser() if isinstance(value, (str, Path)) and str(value).strip() else _invalid(value)


def _identifier(value: str) -> str:
    return value if value.isidentifier() else _invalid(value)


def _address(value: str) -> str:
    from eth_utils import is_address, to_checksum_address

    return to_checksum_address(value) if is_address(value) else _invalid(value)


def _distinct(names: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(names)) != len(names):
        raise ValueError("a variable is named twice")
    return names


def _all_or_listed(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and value.strip().lower() == "all") else _listed(value)


def _always(value: Any) -> Any:
    if value is None:
        raise ValueError(
            "must be a number (USD; 0 = never at a loss) or always (liquidate all, the old null), got null"
        )
    return None if isinstance(value, str) and value.strip().lower() == "always" else value


def _shard(value: Any) -> Shard | None:
    if value is None or isinstance(value, Shard):
        return value
    return Shard.parse(str(value))


Bool = Annotated[bool, BeforeValidator(_bool)]
OptPath = Annotated[Path | None, BeforeValidator(_path)]
EnvName = Annotated[str, AfterValidator(_identifier)]
Url = Annotated[str, Field(pattern=r"^(https?|wss?)://\S*$")]


class GasSettings(BaseModel):
    """EIP-1559 fee policy: max fee = base_fee_multiplier x base fee + priority fee, <= max_fee."""

    model_config = _MODEL

    max_fee_gwei: Float = Field(500.0, ge=0, le=1e7)
    priority_fee_gwei: Float = Field(1.0, ge=0, le=1e7)
    base_fee_multiplier: Int = Field(2, ge=1, le=100)

    @property
    def max_fee_wei(self) -> int:
        return int(round(self.max_fee_gwei * GWEI))

    @property
    def priority_fee_wei(self) -> int:
        return int(round(self.priority_fee_gwei * GWEI))


class AttestationSettings(BaseModel):
    """The attestation service (keeper.attest): off unless `enabled`. `accounts` None = all
    tracked accounts holding options, else checksummed addresses; times in seconds;
    `price_move_fraction` of the attestor's price band; `scenario_config` None = the default
    config/portfolio_margin.yaml."""

    model_config = _MODEL

    enabled: Bool = False
    signer_key_envs: Annotated[
        tuple[EnvName, ...], BeforeValidator(_listed), Field(min_length=1), AfterValidator(_distinct)
    ] = ()
    accounts: Annotated[
        Annotated[tuple[Annotated[str, AfterValidator(_address)], ...], Field(min_length=1)] | None,
        BeforeValidator(_all_or_listed),
    ] = None
    validity_seconds: Int = Field(600, ge=60, le=86400)
    refresh_before_seconds: Int = Field(120, ge=0, le=86400)
    price_move_fraction: Float = Field(0.5, ge=0.01, le=1.0)
    scenario_config: Annotated[Path | None, BeforeValidator(lambda v: v if v is None else _path(v))] = None


class ScoringSettings(BaseModel):
    """Which accounts `keeper run` values at each block (keeper.scoring, docs/keeper.md).

    `event_driven` false values every account every block (the full re-score). Otherwise an
    account is valued when its state changed, when an input it is exposed to (a price, a funding
    index) moved by more than `headroom_fraction` of its distance to maintenance margin allows,
    on every input change while its health is below `high_risk_health`, at least every
    `rescore_every_blocks` blocks, and at a full resync every `resync_every_blocks` blocks.

    `cache_states` keeps every account's raw state in memory and re-reads at each block only the
    accounts the block's logs name (keeper.chain.state_cache), with a full read at the same full
    resync every `resync_every_blocks` blocks and after a reorg; false reads every account every
    block."""

    model_config = _MODEL

    event_driven: Bool = True
    cache_states: Bool = True
    high_risk_health: Float = Field(1.25, ge=1.0, le=100.0)
    rescore_every_blocks: Int = Field(20, ge=1, le=100_000)
    resync_every_blocks: Int = Field(200, ge=1, le=1_000_000)
    headroom_fraction: Float = Field(0.5, gt=0.0, le=0.9)


class LiquidationSettings(BaseModel):
    """How `keeper run` liquidates perpetuals and futures (docs/keeper.md).

    `route` backstop (the default): when the deployment has a backstop vault, each liquidation
    is first simulated through `BackstopVault.liquidate`, which gives the positions to the vault
    and pays the keeper a fee; the keeper needs no inventory. When that simulation reverts (the
    vault is full, lacks equity or cash, or there is no vault) the keeper liquidates directly
    through `MarginEngine.liquidate` and takes the positions itself. `direct`: always the
    engine, as an operator that wants the positions. Options liquidations are unchanged.

    `deleverage` (on by default): a bankrupt account whose deficit the collateral sale, the
    insurance fund and the backstop vault cannot cover is first auto-deleveraged
    (`MarginEngine.deleverage`) against the opposite positions in profit, ranked by profit times
    leverage; off: such deficits become bad debt when the account is liquidated.

    The positions a direct liquidation leaves the keeper (its inventory) are reported every
    block (keeper.unwind). `unwind_quotes`: a JSON file of makers' signed orders, read every
    block, that the keeper closes its inventory against, at prices within `unwind_slippage_bps`
    of the index (None: report only); an inventory older than `unwind_blocks` blocks is logged
    at WARNING."""

    model_config = _MODEL

    route: Annotated[str, AfterValidator(str.lower), Field(pattern="^(backstop|direct)$")] = "backstop"
    deleverage: bool = True
    unwind_quotes: OptPath = None
    unwind_slippage_bps: Int = Field(50, ge=0, le=5_000)
    unwind_blocks: Int = Field(10, ge=1, le=1_000_000)


class KeeperSettings(BaseModel):
    """Everything `keeper run` needs besides the key.

    Units: gas in gwei, amounts in USD or ETH as named, times in seconds, depths in blocks.
    A liquidation is sent only if its expected reward exceeds its gas cost x (1 + `gas_margin`)
    + `min_profit_usd`: the default 0 never liquidates at a loss; a negative number accepts a
    loss up to that much; None (written `always`) liquidates every liquidatable account whatever
    it earns, unscreened (a protocol's own backstop keeper). `liquidation_gas_floor` is the gas
    of the cheapest liquidation: an account whose reward upper bound cannot pay that much gas is
    skipped before any RPC call.
    """

    model_config = _MODEL

    rpc_urls: Annotated[tuple[Url, ...], BeforeValidator(_listed), Field(min_length=1)] = ()
    send_rpc: Url | None = None  # transactions are broadcast here (e.g. a private relay); None = rpc_urls
    manifest: OptPath = None
    private_key_env: EnvName = "KEEPER_PRIVATE_KEY"
    state_dir: OptPath = None  # journal and event-index checkpoint; None = nothing persisted
    from_block: Int | None = Field(None, ge=0)  # None = the manifest's deploy block
    gas: GasSettings = GasSettings()
    min_profit_usd: Annotated[Float | None, BeforeValidator(_always)] = Field(0.0, ge=-1e12, le=1e12)  # None = "always"
    gas_margin: Float = Field(0.25, ge=0, le=100)
    liquidation_gas_floor: Int = Field(200_000, ge=0, le=30_000_000)
    metrics_port: Int | None = Field(None, ge=1, le=65535)  # None = no /metrics endpoint
    metrics_addr: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    log_format: Annotated[str, Field(pattern="^(text|json)$")] = "text"
    log_level: Annotated[str, AfterValidator(str.upper), Field(pattern="^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"
    low_balance_eth: Float = Field(0.05, ge=0, le=1e9)
    reorg_depth: Int = Field(64, ge=1, le=10_000)
    stale_after_seconds: Float = Field(120.0, ge=1, le=1e7)
    missed_after_blocks: Int = Field(3, ge=1, le=1e6)
    poll_seconds: Float = Field(0.5, ge=0.01, le=3600)
    rpc_timeout_seconds: Float = Field(10.0, ge=0.1, le=600)
    log_chunk_blocks: Int = Field(2000, ge=1, le=1e7)
    settle_expired: Bool = True  # settle expired dated futures and option series (keeper.settle)
    # this process's shard of the accounts (keeper.sharding): "I/N", None = the only keeper
    shard: Annotated[Shard | None, BeforeValidator(_shard)] = None
    takeover_blocks: Int = Field(2, ge=1, le=100_000)  # a stopped shard's accounts wait this x ring distance
    attestation: AttestationSettings = AttestationSettings()
    scoring: ScoringSettings = ScoringSettings()
    liquidation: LiquidationSettings = LiquidationSettings()

    @model_validator(mode="before")
    @classmethod
    def _no_private_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "private_key" in data:
            raise ValueError("never put a private key in settings; name its environment variable in private_key_env")
        return data


_SECTIONS: dict[str, type[BaseModel]] = {
    "gas": GasSettings,
    "attestation": AttestationSettings,
    "scoring": ScoringSettings,
    "liquidation": LiquidationSettings,
}
_TOP = set(KeeperSettings.model_fields) - set(_SECTIONS)
_GAS = set(GasSettings.model_fields)
_ATT = set(AttestationSettings.model_fields)
_SCORING = set(ScoringSettings.model_fields)
_LIQUIDATION = set(LiquidationSettings.model_fields)

# the wording for any bad value of these fields: "<where>: <wording>, got <value>"
_WORDING = {
    "rpc_urls": "must be a non-empty list of RPC URLs",
    "send_rpc": "must be one RPC URL starting with http://, https://, ws:// or wss://",
    "manifest": "must be a path",
    "state_dir": "must be a path",
    "scenario_config": "must be a path",
    "private_key_env": "must name an environment variable",
    "log_format": "must be text or json",
    "log_level": "must be DEBUG, INFO, WARNING or ERROR",
    "metrics_addr": "must be a host address",
    "enabled": "must be true or false",
    "settle_expired": "must be true or false",
    "signer_key_envs": "must list environment variable names",
    "accounts": "must be all or a list of addresses",
    "route": "must be backstop or direct",
    "unwind_quotes": "must be a path",
}


def _message(e: ValidationError, values: Mapping[str, Any], source: str) -> str:
    """pydantic's first error as today's one line: `<source>: <field>: <problem>, got <value>`."""
    p = first_problem(e)
    if not p.loc:  # a model-wide rule
        return f"{source}: {p.text}"
    section = p.loc[0] if p.loc[0] in _SECTIONS and len(p.loc) > 1 else None
    model = _SECTIONS[section] if section else KeeperSettings
    name = str(p.loc[1] if section else p.loc[0])
    if p.kind == "extra_forbidden":
        known = _SECTIONS[section].model_fields if section else _TOP | set(_SECTIONS)
        prefix = f"{section}: " if section else ""
        return f"{source}: {prefix}unknown field {name!r} (known: {', '.join(sorted(known))})"
    if p.kind == "model_type":
        return f"{source}: {name}: must be a mapping, got {p.value!r}"
    where = f"{source}: {section}.{name}" if section else f"{source}: {name}"
    if p.kind == "value_error":
        return f"{where}: {p.text}"
    if name == "rpc_urls" and len(p.loc) > 1:  # one URL of the list
        return f"{where}: an RPC URL must start with http://, https://, ws:// or wss://, got {p.value!r}"
    raw = values[section][name] if section else values[name]  # type: ignore[index]  # as given
    if name in _WORDING:
        return f"{where}: {_WORDING[name]}, got {_listed(raw) if name in _LISTS else raw!r}"
    integer = is_integer_field(model, name)
    if p.kind in ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing") or (
        integer and p.kind == "finite_number"
    ):
        return f"{where}: must be {'an integer' if integer else 'a number'}, got {p.value!r}"
    lo, hi = bounds(model, name)
    if isinstance(raw, str):  # from the environment: shown as the number it was read as
        raw = int(raw, 0) if integer else float(raw)
    return f"{where}: must be in [{lo:g}, {hi:g}], got {raw!r}"


_LISTS = {"rpc_urls", "signer_key_envs", "accounts"}


def _apply(base: KeeperSettings, values: Mapping[str, object], source: str) -> KeeperSettings:
    """`base` with the fields named in `values` (raw, from `source`) validated and set."""
    try:
        given = KeeperSettings.model_validate(values)
    except ValidationError as e:
        raise SettingsError(_message(e, values, source)) from None
    update: dict[str, Any] = {}
    for name in given.model_fields_set:
        value = getattr(given, name)
        if name in _SECTIONS:  # only the section's fields that were given
            value = getattr(base, name).model_copy(update={k: getattr(value, k) for k in value.model_fields_set})
        update[name] = value
    return base.model_copy(update=update)


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
        ("scoring", _SCORING, "KEEPER_SCORING_"),
        ("liquidation", _LIQUIDATION, "KEEPER_LIQUIDATION_"),
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


# ---------------------------------------------------------------- signing keys

DEFAULT_PASSWORD_ENV = "KEEPER_KEYSTORE_PASSWORD"


@dataclass(frozen=True)
class SigningKey:
    """A private key (0x hex, never shown: left out of the repr) and where it came from: the
    environment variable's name or `keystore <path>`, for messages."""

    key: str = field(repr=False)
    source: str


def load_signing_key(
    private_key_env: str | None,
    default_env: str,
    keystore: str | Path | None = None,
    password_env: str | None = None,
    *,
    what: str = "private key",
    env: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> SigningKey:
    """The signing key of every keyed command (`keeper run`, `keeper params queue/execute/cancel`):
    from the environment variable `private_key_env` (None: `default_env`, checked by
    `private_key_from_env`), or from an encrypted eth-account keystore (JSON v3) at `keystore`
    whose password is in the environment variable `password_env` (None: KEEPER_KEYSTORE_PASSWORD)
    or, when that is unset, asked through `prompt` (the commands pass one on a terminal only).

    Raises SettingsError with one line (never the key or the password): both sources given, a
    keystore that cannot be read or is not a keystore, no password, a wrong password."""
    if keystore is not None and private_key_env is not None:
        raise SettingsError("give either --private-key-env or --keystore, not both")
    if keystore is None:
        if password_env is not None:
            raise SettingsError("--password-env names the password of a keystore: give it with --keystore PATH")
        name = private_key_env or default_env
        if not (env if env is not None else os.environ).get(name, "").strip():
            raise SettingsError(f"no {what}: set the environment variable {name} (or give --keystore PATH)")
        return SigningKey(private_key_from_env(name, env), name)
    return SigningKey(
        key_from_keystore(Path(keystore), password_env or DEFAULT_PASSWORD_ENV, env=env, prompt=prompt),
        f"keystore {keystore}",
    )


def key_from_keystore(
    path: Path,
    password_env: str = DEFAULT_PASSWORD_ENV,
    *,
    env: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> str:
    """The private key (0x hex) in the eth-account keystore file `path` (JSON v3, as
    `eth_account.Account.encrypt` and geth write it), decrypted with the password held by the
    environment variable `password_env` (an empty value is an empty password), else the one
    `prompt` returns; see `load_signing_key`."""
    import json

    from eth_account import Account

    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingsError(f"cannot read keystore {path}: {e.strerror or e.__class__.__name__}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path} is not a keystore: not a UTF-8 text file") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise SettingsError(f"{path} is not a keystore: not valid JSON") from None
    crypto = data.get("crypto", data.get("Crypto")) if isinstance(data, dict) else None
    if not isinstance(crypto, dict) or data.get("version") != 3:
        raise SettingsError(f"{path} is not an eth-account keystore (JSON v3 with a 'crypto' section)")
    password = env.get(password_env)
    if password is None:
        if prompt is None:
            raise SettingsError(
                f"no password for keystore {path}: set the environment variable {password_env} "
                "(or run on a terminal to be asked)"
            )
        password = prompt(f"Password of keystore {path}")
    try:
        key = Account.decrypt(data, password)
    except ValueError as e:
        if "MAC mismatch" in str(e):
            raise SettingsError(f"wrong password for keystore {path}") from None
        raise SettingsError(f"cannot decrypt keystore {path} ({e.__class__.__name__})") from None
    except (KeyError, TypeError, AttributeError, NotImplementedError) as e:
        raise SettingsError(f"cannot decrypt keystore {path}: malformed keystore ({e.__class__.__name__})") from None
    return "0x" + bytes(key).hex()
