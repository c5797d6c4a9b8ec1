"""Compiled contract artifacts (ABI + bytecode), compiled from `contracts/` with the pinned Vyper.

Artifacts are cached under `build/keeper/` (outside a checkout, the per-user cache of
`keeper.resources.cache_dir`) keyed by a hash of every contract source, so a changed contract is
recompiled and nothing stale is ever deployed. `contracts/` is the checkout's, or the installed
package's data (`keeper.resources`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from keeper import resources

ROOT = resources.data_root()  # holds contracts/, abi/ and config/: the checkout, else the package data
CONTRACTS = resources.contracts_dir()
CACHE = resources.cache_dir("keeper")
EVM_VERSION = "cancun"

NAMES = {
    "OracleRouter": "OracleRouter.vy",
    "CollateralVault": "CollateralVault.vy",
    "MarginEngine": "MarginEngine.vy",
    "EngineLiquidation": "EngineLiquidation.vy",
    "EngineDeleveraging": "EngineDeleveraging.vy",
    "Matching": "Matching.vy",
    "MarginLens": "MarginLens.vy",
    "Timelock": "Timelock.vy",
    "MockERC20": "mocks/MockERC20.vy",
    "MockAggregator": "mocks/MockAggregator.vy",
    "VolFeed": "VolFeed.vy",
    "HealthAttestor": "HealthAttestor.vy",
    "MockVersioned": "mocks/MockVersioned.vy",
    "OptionMarket": "OptionMarket.vy",
    "OptionLiquidation": "OptionLiquidation.vy",
    "MockContractWallet": "mocks/MockContractWallet.vy",
    "BackstopVault": "BackstopVault.vy",
}


# A deployable that runs another's code by delegatecall emits that code's events from its own
# address: its ABI lists them too (MarginEngine.liquidate logs EngineLiquidation's `Liquidation`).
DELEGATES = {"MarginEngine": ("EngineLiquidation", "EngineDeleveraging"), "OptionMarket": ("OptionLiquidation",)}


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str  # 0x-prefixed creation code


def sources_digest() -> str:
    """A digest of every contract source under contracts/ (16 hex digits): the key of what is
    compiled from them."""
    h = hashlib.sha256()
    for path in sorted(CONTRACTS.rglob("*.vy")):
        h.update(str(path.relative_to(CONTRACTS)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def load_artifact(name: str) -> Artifact:
    """ABI and bytecode of a protocol contract by name (see NAMES); the ABI of a contract in
    DELEGATES also lists the events its delegate's code emits from its address.

    Raises KeyError for an unknown name and vyper's exception if a source does not compile.
    """
    artifact = _compiled(name)
    if name not in DELEGATES:
        return artifact
    abi = list(artifact.abi)
    for delegate in DELEGATES[name]:
        own = {e["name"] for e in abi if e["type"] == "event"}
        abi += [e for e in _compiled(delegate).abi if e["type"] == "event" and e["name"] not in own]
    return Artifact(name, abi, artifact.bytecode)


def _compiled(name: str) -> Artifact:
    source = NAMES[name]
    cache_file = CACHE / f"{name}-{sources_digest()}.json"
    if cache_file.exists():
        data = json.loads(cache_file.read_text())
        return Artifact(name, data["abi"], data["bytecode"])
    from vyper.cli.vyper_compile import compile_files
    from vyper.compiler.settings import Settings

    path = CONTRACTS / source
    out = compile_files(
        [str(path)], ("abi", "bytecode"), paths=[str(CONTRACTS)], settings=Settings(evm_version=EVM_VERSION)
    )
    data = next(iter(out.values()))
    CACHE.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"abi": data["abi"], "bytecode": data["bytecode"]}))
    return Artifact(name, data["abi"], data["bytecode"])


def storage_slot(name: str, *path: str) -> int:
    """The storage slot of a top-level variable of a protocol contract, by its path in Vyper's
    storage layout (a module's variables under the module's name: `("core", "rates_changed_at")`).
    An element of a HashMap lives at keccak256(slot ++ key) (Vyper's `sha3_64`)."""
    cache_file = CACHE / f"{name}-{sources_digest()}-layout.json"
    if cache_file.exists():
        layout = json.loads(cache_file.read_text())
    else:
        from vyper.cli.vyper_compile import compile_files
        from vyper.compiler.settings import Settings

        out = compile_files(
            [str(CONTRACTS / NAMES[name])],
            ("layout",),
            paths=[str(CONTRACTS)],
            settings=Settings(evm_version=EVM_VERSION),
        )
        layout = next(iter(out.values()))["layout"]["storage_layout"]
        CACHE.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(layout))
    node = layout
    for key in path:
        node = node[key]
    return int(node["slot"])


def compiler_version() -> str:
    import vyper

    return vyper.__version__
